"""Large films are reduced as they are read (issue 22): memory bounded by the model, not the
film; films up to READ_PIXELS read exactly as before.

The limit is lowered here (monkeypatched) so that small synthetic films stand for the
100 M px ones; bench/hostile.py measures the real sizes' memory.
"""

import cv2
import numpy as np
import pytest
from factories import hand_radiograph

from boneage.imaging import headers as reduction
from boneage.imaging.decoding import read_film
from boneage.imaging.transforms import ImagingSettings, prepare_with_geometry
from boneage.reading.explain import display_grey, explain_png, output_shape, to_original

make_dicom = pytest.importorskip("test_dicom").make_dicom


@pytest.mark.parametrize("width, height, factor", [
    (5000, 5000, 1), (4096, 6100, 1), (4300, 4300, 1), (5001, 5000, 2), (10000, 10000, 4),
    (10001, 10000, 4), (16384, 6103, 4), (14142, 7071, 4), (6000, 6000, 4), (5300, 5300, 2),
])
def test_read_factor_leaves_every_radiograph_size_in_use_alone(width, height, factor):
    assert reduction.read_factor(width, height) == factor
    if factor > 1:
        assert width * height / factor ** 2 <= reduction.REDUCED_PIXELS
        assert width * height / (factor // 2) ** 2 > reduction.REDUCED_PIXELS  # the smallest


def test_read_factor_is_enough_for_the_largest_legal_film():
    from boneage.imaging.headers import MAX_PIXELS

    side = int(MAX_PIXELS ** 0.5)
    factor = reduction.read_factor(side, side)
    assert side * side / factor ** 2 <= reduction.REDUCED_PIXELS


def _films(film8: np.ndarray) -> dict[str, tuple[bytes, np.ndarray]]:
    """Encoded films and the stored pixels they decode to at full size."""
    film16 = film8.astype(np.uint16) * 257 + 100
    as_float = film8.astype(np.float32) / 7.0 - 3.0
    colour = cv2.merge([film8, film8, np.clip(film8.astype(int) + 5, 0, 255).astype(np.uint8)])
    return {
        "png8.png": (cv2.imencode(".png", film8)[1].tobytes(), film8),
        "png16.png": (cv2.imencode(".png", film16)[1].tobytes(), film16),
        "colour.png": (cv2.imencode(".png", colour)[1].tobytes(), colour),
        "float.tif": (cv2.imencode(".tiff", as_float)[1].tobytes(), as_float),
        "jpeg.jpg": (cv2.imencode(".jpg", film8, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
                     film8),
        "dicom16.dcm": (make_dicom(film16, sex="M", slope=1, intercept=0, centre=30000,
                                   width=50000), film16),
    }


@pytest.fixture(scope="module")
def film8():
    return hand_radiograph(100, 1, seed=5, height=320)  # 320 x 256 px


def test_films_at_or_under_the_limit_are_read_unreduced(film8):
    for name, (data, stored) in _films(film8).items():
        film = read_film(data, name)
        assert "reduced_by" not in film.meta, name
        assert film.pixels.shape[:2] == stored.shape[:2], name
        if name.endswith(".png"):
            np.testing.assert_array_equal(film.pixels, stored, err_msg=name)


@pytest.mark.parametrize("target, factor", [(320 * 256 // 4, 2), (320 * 256 // 16, 4)])
def test_films_over_the_limit_are_reduced_as_read_in_every_format(film8, monkeypatch, target,
                                                                  factor):
    monkeypatch.setattr(reduction, "READ_PIXELS", 320 * 256 - 1)
    monkeypatch.setattr(reduction, "REDUCED_PIXELS", target)
    for name, (data, stored) in _films(film8).items():
        film = read_film(data, name)
        assert film.meta["reduced_by"] == factor, name
        assert film.pixels.shape[:2] == (320 // factor, 256 // factor), name
        # the box average of the stored pixels (JPEG: libjpeg's own scaled decode)
        if name in ("png8.png", "png16.png"):
            expected = cv2.resize(stored, (256 // factor, 320 // factor),
                                  interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(film.pixels, expected, err_msg=name)
        if name == "dicom16.dcm":
            assert film.pixels.dtype == np.float32  # windowed after the integer average
        # the reduced film still prepares (and crops to the hand)
        prepared, geometry = prepare_with_geometry(film, ImagingSettings(size=32))
        assert prepared.shape == (32, 32) and geometry.height == 320 // factor


def test_a_reduced_dicom_equals_windowing_the_averaged_integers(film8, monkeypatch):
    film16 = film8.astype(np.uint16) * 200
    data = make_dicom(film16, sex="F", slope=2, intercept=-100, centre=20000, width=30000)
    monkeypatch.setattr(reduction, "READ_PIXELS", 100)
    monkeypatch.setattr(reduction, "REDUCED_PIXELS", 100)
    film = read_film(data, "f.dcm")
    averaged = cv2.resize(film16, (256 // 8, 320 // 8), interpolation=cv2.INTER_AREA)
    expected = np.clip((averaged * 2.0 - 100 - (20000 - 0.5)) / (30000 - 1) + 0.5, 0, 1)
    np.testing.assert_array_equal(film.pixels, expected.astype(np.float32))


def test_dicom_rescale_in_bands_equals_the_whole_array_arithmetic(film8, monkeypatch):
    """The banded float64 rescale (no full-size float64 copy) gives the float32 pixels the
    whole-array arithmetic gave, bit for bit, windowed or not, MONOCHROME1 or 2."""
    from boneage.imaging import dicom

    monkeypatch.setattr(dicom, "_BAND_ROWS", 7)  # many bands, a ragged last one
    film16 = film8.astype(np.uint16) * 131 + 7
    for kwargs in ({"slope": 1.5, "intercept": -20, "centre": 15000, "width": 20000},
                   {"slope": 0.25, "intercept": 3}, {}):
        for photometric in ("MONOCHROME2", "MONOCHROME1"):
            data = make_dicom(film16, photometric=photometric, sex="M", **kwargs)
            got = read_film(data, "f.dcm").pixels
            image = film16.astype(np.float64) * kwargs.get("slope", 1.0) + kwargs.get(
                "intercept", 0.0)
            if "centre" in kwargs:
                image = np.clip((image - (kwargs["centre"] - 0.5)) / (kwargs["width"] - 1)
                                + 0.5, 0.0, 1.0)
            else:
                image = (image - image.min()) / (image.max() - image.min())
            if photometric == "MONOCHROME1":
                image = 1.0 - image
            np.testing.assert_array_equal(got, image.astype(np.float32))


def test_the_heatmap_is_drawn_at_the_picture_size_never_the_film_size(film8):
    big = cv2.resize(film8, (2560, 3200), interpolation=cv2.INTER_LINEAR)
    settings = ImagingSettings(size=32)
    film = read_film(cv2.imencode(".png", big)[1].tobytes(), "big.png")
    _, geometry = prepare_with_geometry(film, settings)
    shape = output_shape(3200, 2560)
    assert shape == (1024, 819)
    cam = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    small = to_original(cam, geometry, settings, shape)
    assert small.shape == shape
    full = to_original(cam, geometry, settings)
    scaled = cv2.resize(full, (819, 1024), interpolation=cv2.INTER_AREA)
    assert np.abs(small - scaled).mean() < 0.02  # the same map, drawn small
    png = explain_png(film.pixels, small)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert picture.shape == (1024, 819, 3)
    assert display_grey(film.pixels, shape).dtype == np.uint8
    grey16 = display_grey((big.astype(np.uint16) * 257), shape)
    np.testing.assert_allclose(grey16, display_grey(big, shape), atol=1)


@pytest.mark.parametrize("kind", ["8-bit", "16-bit", "12-of-16-bit", "signed 16-bit"])
def test_a_deflated_dicom_is_reduced_as_it_inflates_like_the_plain_one(film8, monkeypatch,
                                                                        kind):
    """A deflated film over the limit is reduced band by band as it inflates (never whole);
    the pixels are those of the uncompressed file reduced after decoding."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from boneage.imaging import dicom

    pixels = {"8-bit": film8, "16-bit": film8.astype(np.uint16) * 250 + 3,
              "12-of-16-bit": film8.astype(np.uint16) * 16,
              "signed 16-bit": film8.astype(np.uint16) * 100}[kind]

    def encoded(syntax) -> bytes:
        data = make_dicom(pixels, sex="M", syntax=syntax)
        if kind in ("12-of-16-bit", "signed 16-bit"):
            import io

            ds = pydicom.dcmread(io.BytesIO(data))
            if kind == "12-of-16-bit":  # garbage in the 4 unused high bits
                ds.BitsStored, ds.HighBit = 12, 11
                ds.PixelData = (pixels | 0xF000).astype(np.uint16).tobytes()
            else:
                ds.PixelRepresentation = 1
                ds.PixelData = (pixels.astype(np.int16) - 12000).tobytes()
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            data = out.getvalue()
        return data

    monkeypatch.setattr(reduction, "READ_PIXELS", 1000)
    monkeypatch.setattr(reduction, "REDUCED_PIXELS", 320 * 256 // 16)  # by 4
    plain = read_film(encoded(pydicom.uid.ExplicitVRLittleEndian), "plain.dcm")
    streamed: list = []
    real = dicom._PixelReducer.feed
    monkeypatch.setattr(dicom._PixelReducer, "feed",
                        lambda self, data: (streamed.append(len(data)), real(self, data))[1])
    monkeypatch.setattr(dicom, "HEADER_BYTES", 4096)  # bound (and stream) after 4 KB
    deflated = read_film(encoded(DeflatedExplicitVRLittleEndian), "deflated.dcm")
    assert streamed, "the deflated pixels were not streamed through the reducer"
    assert plain.meta["reduced_by"] == deflated.meta["reduced_by"] == 4
    assert deflated.pixels.shape == (80, 64)
    np.testing.assert_array_equal(deflated.pixels, plain.pixels)


def test_a_deflated_dicom_cut_short_is_refused_as_truncated(film8, monkeypatch):
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from boneage.imaging import dicom
    from boneage.kernel.errors import ImageError

    monkeypatch.setattr(reduction, "READ_PIXELS", 1000)
    monkeypatch.setattr(dicom, "HEADER_BYTES", 4096)
    data = make_dicom(film8.astype(np.uint16), sex="M", syntax=DeflatedExplicitVRLittleEndian)
    # the deflated data set follows the file meta: (0002,0000) UL gives that group's length
    start = 132 + 12 + int.from_bytes(data[140:144], "little")
    head, body = data[:start], zlib.decompress(data[start:], -15)
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    cut = head + squeeze.compress(body[:len(body) // 2]) + squeeze.flush()
    with pytest.raises(ImageError, match="truncated"):
        read_film(cut, "cut.dcm")
