"""The single imaging path: decode, crop to the hand, normalise contrast, resize."""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from boneage.imaging import decoding, headers
from boneage.imaging import transforms as imaging
from boneage.kernel.config import PreprocessParams
from boneage.kernel.errors import ImageError
from boneage.imaging.decoding import Film, decode, read_film, to_grey_float
from boneage.imaging.transforms import (
    ImagingSettings,
    crop_to_hand,
    normalise_contrast,
    prepare,
    resize,
)


def prepare_film(image: np.ndarray, settings: ImagingSettings) -> np.ndarray:
    """prepare() of a grey float32 film in [0, 1] (as DICOM decodes to)."""
    return prepare(Film(np.asarray(image, np.float32)), settings)


def prepare_bytes(data: bytes, settings: ImagingSettings, name: str = "image") -> np.ndarray:
    return prepare(read_film(data, name), settings)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) claiming ``width x height`` grey 8-bit pixels,
    followed by a tiny IDAT: decoding it for real would allocate width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def disc(height: int, width: int, radius: float, value: float = 0.8) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    out = np.full((height, width), 0.05, np.float32)
    out[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= radius ** 2] = value
    return out


# ----------------------------------------------------------------------------- decode


def test_decode_8bit_png_is_exact(encode):
    arr = np.tile(np.array([0, 1, 64, 128, 254, 255, 7, 200], np.uint8), (12, 2))
    out = decode(encode(arr))
    assert out.dtype == np.float32
    assert out.shape == arr.shape
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-7)


def test_decode_16bit_png_keeps_precision(encode):
    arr = np.tile(np.array([0, 1000, 1001, 1002, 30000, 65535, 256, 257], np.uint16), (10, 2))
    out = decode(encode(arr))
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out * 65535.0, arr.astype(np.float64), atol=0.02)
    # values one 16-bit step apart stay distinct (an 8-bit path would merge them)
    assert out[0, 1] < out[0, 2] < out[0, 3]
    assert out[0, 6] < out[0, 7]


def test_decode_jpeg_keeps_relative_values(encode):
    arr = np.zeros((64, 64), np.uint8)
    arr[:, 16:32], arr[:, 32:48], arr[:, 48:] = 80, 160, 240
    out = decode(encode(arr, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), "film.jpg")
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert 0.0 <= out.min() and out.max() <= 1.0
    means = [out[8:56, c:c + 8].mean() for c in (4, 20, 36, 52)]
    np.testing.assert_allclose(means, [0, 80 / 255, 160 / 255, 240 / 255], atol=0.02)


def test_decode_colour_png_uses_luminance_of_bgr(encode):
    arr = np.zeros((24, 24, 3), np.uint8)
    arr[:, :8] = (0, 0, 255)  # red in OpenCV's BGR order
    arr[:, 8:16] = (0, 255, 0)  # green
    arr[:, 16:] = (255, 0, 0)  # blue
    out = decode(encode(arr))
    assert out.ndim == 2 and out.dtype == np.float32
    red, green, blue = out[0, 0], out[0, 8], out[0, 16]
    np.testing.assert_allclose([red, green, blue], [0.299, 0.587, 0.114], atol=0.01)


def test_decode_rgba_png_ignores_alpha(encode):
    grey = np.full((16, 16), 100, np.uint8)
    bgra = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    out = decode(encode(bgra))
    np.testing.assert_allclose(out, 100 / 255.0, atol=1 / 255)


def test_decode_16bit_colour_png(encode):
    arr = np.full((16, 16, 3), 40000, np.uint16)
    out = decode(encode(arr))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 40000 / 65535.0, atol=1e-3)


@pytest.mark.parametrize("data, expected", [(b"", "empty"), (b"not an image at all" * 10, "not a readable")])
def test_decode_bad_bytes_names_the_file(data, expected):
    with pytest.raises(ImageError, match=rf"^0042\.png: .*{expected}"):
        decode(data, "0042.png")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_decode_truncated_png_names_the_file(encode, hand_film, keep):
    data = encode(hand_film(64, 48, seed=3))
    with pytest.raises(ImageError, match=r"^cut\.png: "):
        decode(data[: int(len(data) * keep)], "cut.png")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_png_fast_decoder_gives_opencvs_pixels(dtype):
    """Grey PNGs are decoded by imagecodecs (faster); the pixels must be OpenCV's, bit for bit."""
    top = np.iinfo(dtype).max
    film = np.random.default_rng(5).integers(0, top, (301, 217), endpoint=True).astype(dtype)
    film[100:200, 50:150] = top // 3  # flat areas and noise: every PNG filter type gets used
    data = cv2.imencode(".png", film)[1].tobytes()
    assert decoding._is_plain_grey_png(data)
    fast = decoding._decode_grey_png(data, "film.png")
    assert fast is not None and fast.dtype == dtype
    np.testing.assert_array_equal(fast, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(decoding.decode_raw(data), film)


def test_grey_png_falls_back_to_opencv_when_the_fast_decoder_fails(monkeypatch):
    imagecodecs = pytest.importorskip("imagecodecs")

    def broken(data):
        raise imagecodecs.PngError("simulated failure")

    monkeypatch.setattr(imagecodecs, "png_decode", broken)
    film = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    data = cv2.imencode(".png", film)[1].tobytes()
    np.testing.assert_array_equal(decoding.decode_raw(data, "film.png"), film)
    with pytest.raises(ImageError, match=r"^cut\.png: .*truncated"):
        decoding.decode_raw(data[: len(data) // 2], "cut.png")


def test_colour_png_takes_opencvs_path():
    colour = np.zeros((40, 30, 3), np.uint8)
    colour[..., 2] = 200  # red in OpenCV's BGR order
    data = cv2.imencode(".png", colour)[1].tobytes()
    assert not decoding._is_plain_grey_png(data)
    np.testing.assert_array_equal(decoding.decode_raw(data), colour)
    assert decode(data)[0, 0] == pytest.approx(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)[0, 0] / 255)


def test_decode_refuses_tiny_images(encode):
    with pytest.raises(ImageError, match=r"small\.png: .*4x6"):
        decode(encode(np.zeros((6, 4), np.uint8)), "small.png")


@pytest.mark.parametrize("width, height", [(20000, 20000), (12000, 12000), (20000, 100)])
def test_huge_png_header_is_refused_before_decoding(monkeypatch, width, height):
    def no_decode(*args, **kwargs):
        raise AssertionError("cv2.imdecode called on a decompression bomb")

    monkeypatch.setattr(decoding.cv2, "imdecode", no_decode)
    monkeypatch.setattr(decoding, "_decode_grey_png", no_decode)
    with pytest.raises(ImageError, match=rf"bomb\.png: image is {width}x{height} px"):
        decode(png_claiming(width, height), "bomb.png")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 header is patched to claim ``width x height``."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))[1].tobytes())
    at = data.find(b"\xff\xc0")  # SOF0: marker, length(2), precision(1), height(2), width(2)
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def test_patched_jpeg_header_is_what_the_decoder_sees():
    # guards the helper below: the patched size is the size OpenCV decodes to
    out = decode(jpeg_claiming(64, 40), "small.jpg")
    assert out.shape == (40, 64)


def test_huge_jpeg_header_is_refused_before_decoding(monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("cv2.imdecode called on a decompression bomb")

    monkeypatch.setattr(decoding.cv2, "imdecode", no_decode)
    with pytest.raises(ImageError, match=r"bomb\.jpg: image is 20000x20000 px"):
        decode(jpeg_claiming(20000, 20000), "bomb.jpg")


def test_crafted_header_is_read_correctly_when_small():
    # The same crafted bytes with a sane size pass the size check and reach the decoder.
    with pytest.raises(ImageError, match="not a readable"):
        decode(png_claiming(64, 64), "ok-size.png")


def with_stray_byte(jpeg: bytes) -> bytes:
    """The JPEG with one stray byte after its first segment (APP0): libjpeg skips it."""
    end = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:end] + b"\x00" + jpeg[end:]


def test_jpeg_with_a_stray_byte_is_still_decoded_so_its_header_must_be_read():
    data = with_stray_byte(jpeg_claiming(64, 40))
    assert headers.jpeg_size(data) == (64, 40)
    assert decode(data, "stray.jpg").shape == (40, 64)


def refuse_decoding(monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("decoder called on a decompression bomb")

    monkeypatch.setattr(decoding.cv2, "imdecode", no_decode)
    monkeypatch.setattr(decoding, "_decode_grey_png", no_decode)


def tiff_claiming(width: int, height: int, big: bool = False) -> bytes:
    """A TIFF (or BigTIFF) header whose first directory claims ``width x height``."""
    if big:
        entries = b"".join(struct.pack("<HHQQ", tag, 16, 1, value)
                           for tag, value in ((256, width), (257, height)))
        return b"II+\x00" + struct.pack("<HHQQ", 8, 0, 16, 2) + entries + struct.pack("<Q", 0)
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, value)
                       for tag, value in ((256, width), (257, height)))
    return b"II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0) + bytes(64)


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 8, 0, 0, 0, 0, 256, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 1024 + 64, 0, 0, 54 + 1024) + info + bytes(1088)


def webp_claiming(width: int, height: int, kind: str) -> bytes:
    if kind == "VP8X":
        payload = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        payload = b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little") + bytes(16)
    else:  # lossy key frame: tag, start code, 14-bit width and height
        payload = b"\x50\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(16)
    chunk = kind.ljust(4).encode() + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


CLAIMING = {
    "tiff": lambda: tiff_claiming(20000, 20000),
    "bigtiff": lambda: tiff_claiming(20000, 20000, big=True),
    "bmp": lambda: bmp_claiming(20000, 20000),
    "pnm": lambda: b"P5\n# a comment\n20000 20000\n255\n" + bytes(64),
    "jpeg_stray_byte": lambda: with_stray_byte(jpeg_claiming(20000, 20000)),
}


@pytest.mark.parametrize("kind", sorted(CLAIMING))
def test_huge_header_of_every_accepted_format_is_refused_before_decoding(monkeypatch, kind):
    data = CLAIMING[kind]()
    refuse_decoding(monkeypatch)
    with pytest.raises(ImageError, match=r"^bomb: image is 20000x20000 px"):
        decode(data, "bomb")


@pytest.mark.parametrize("kind", ["VP8X", "VP8L", "VP8"])
def test_huge_webp_header_is_refused_before_decoding(monkeypatch, kind):
    refuse_decoding(monkeypatch)  # WebP sides stop at 16,383 px: 268 M px is still too many
    with pytest.raises(ImageError, match=r"^bomb\.webp: image is 16383x16383 px"):
        decode(webp_claiming(16383, 16383, kind), "bomb.webp")


@pytest.mark.parametrize("ext, params", [(".png", []), (".jpg", []), (".tif", []), (".bmp", []),
                                         (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                         (".pgm", []), (".ppm", []), (".pbm", [])])
def test_every_accepted_format_reads_its_header_and_decodes_as_opencv_does(ext, params):
    film = (np.arange(40 * 64) % 256).astype(np.uint8).reshape(40, 64)
    if ext in (".ppm", ".webp"):
        film = np.dstack([film, film // 2, 255 - film])
    data = cv2.imencode(ext, film, params)[1].tobytes()
    kind = headers.sniff(data)
    assert headers.HEADER_READERS[kind](data) == (64, 40)
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    np.testing.assert_array_equal(decoding.decode_raw(data, "film" + ext), expected)


@pytest.mark.parametrize("data", [
    b"GIF89a" + struct.pack("<HH", 20000, 20000) + bytes(64),  # OpenCV decodes GIF: unchecked
    b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64),  # JPEG 2000
    b"#?RADIANCE\n" + bytes(64),
])
def test_formats_without_a_header_check_are_refused_without_decoding(monkeypatch, data):
    refuse_decoding(monkeypatch)
    with pytest.raises(ImageError, match=r"^odd\.img: not a readable PNG, JPEG, TIFF, BMP, WebP, "
                                         r"PNM or DICOM image \(unrecognised content"):
        decode(data, "odd.img")


@pytest.mark.parametrize("data", [
    tiff_claiming(64, 64)[:20],  # the directory is cut off
    jpeg_claiming(64, 64)[:40],  # no frame header before the end
    b"\x89PNG\r\n\x1a\n" + png_chunk(b"tEXt", b"a" * 16),  # IHDR must come first
    bmp_claiming(64, 64)[:20],
    b"P5\n64",
])
def test_headers_that_give_no_size_are_refused_without_decoding(monkeypatch, data):
    refuse_decoding(monkeypatch)
    with pytest.raises(ImageError, match=r"^cut: not a readable .* gives no width and height"):
        decode(data, "cut")


def test_opencvs_own_size_ceiling_matches_the_header_check():
    """boneage/__init__.py sets OpenCV's ceiling (a backstop, read when cv2 loads)."""
    import os

    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == str(headers.MAX_PIXELS)
    assert os.environ["OPENCV_IO_MAX_IMAGE_WIDTH"] == str(headers.MAX_SIDE)
    assert os.environ["OPENCV_IO_MAX_IMAGE_HEIGHT"] == str(headers.MAX_SIDE)


def test_opencv_refuses_oversized_images_itself_when_boneage_comes_first():
    """The backstop works: in a fresh process that imports boneage before cv2, OpenCV refuses
    a 12,000 x 9,000 px header itself (without it: no error, the bad data just fails)."""
    import subprocess
    import sys

    code = ("import sys, boneage, cv2, numpy as np\n"
            "data = np.frombuffer(sys.stdin.buffer.read(), np.uint8)\n"
            "try:\n"
            "    cv2.imdecode(data, cv2.IMREAD_ANYDEPTH)\n"
            "    print('not refused')\n"
            "except cv2.error as exc:\n"
            "    print('refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(exc) else exc)\n")
    result = subprocess.run([sys.executable, "-c", code], input=png_claiming(12000, 9000),
                            capture_output=True, timeout=60)
    assert result.stdout.decode().strip() == "refused", result.stderr.decode()[-2000:]


def sideways() -> tuple[np.ndarray, np.ndarray]:
    """A wide film with a bright top-left corner, and the same film turned upright (EXIF
    orientation 6: the stored rows must be turned 90 degrees clockwise to be viewed)."""
    film = np.full((32, 48), 40, np.uint8)
    film[:8, :8] = 230
    return film, cv2.rotate(film, cv2.ROTATE_90_CLOCKWISE)


def exif_orientation(order: str, value: int) -> bytes:
    """A TIFF-structured EXIF block holding only the Orientation tag (0x0112)."""
    head = b"II*\x00" if order == "<" else b"MM\x00*"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, value, 0)  # SHORT, one value
    return head + struct.pack(order + "IH", 8, 1) + entry + struct.pack(order + "I", 0)


def test_jpeg_with_exif_orientation_is_read_upright():
    film, upright = sideways()
    jpeg = cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    app1 = b"Exif\x00\x00" + exif_orientation("<", 6)
    data = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    out = decoding.decode_raw(data, "sideways.jpg")
    assert out.shape == upright.shape == (48, 32)
    np.testing.assert_allclose(out.astype(int), upright.astype(int), atol=12)
    assert decode(data).shape == (48, 32)


def test_grey_png_with_exif_orientation_is_read_upright():
    film, upright = sideways()
    png = cv2.imencode(".png", film)[1].tobytes()
    data = png[:33] + png_chunk(b"eXIf", exif_orientation(">", 6)) + png[33:]  # after IHDR
    assert not decoding._is_plain_grey_png(data)  # the fast decoder would ignore the chunk
    np.testing.assert_array_equal(decoding.decode_raw(data, "sideways.png"), upright)


def test_to_grey_float_rejects_nan_and_scales_floats():
    arr = np.linspace(-3, 5, 100, dtype=np.float64).reshape(10, 10)
    out = to_grey_float(arr)
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)
    arr[3, 3] = np.nan
    with pytest.raises(ImageError, match="bad.tif: .*NaN"):
        to_grey_float(arr, "bad.tif")


# ----------------------------------------------------------------------------- resize


def test_squash_fills_the_square_and_distorts_aspect():
    image = disc(100, 200, 40)
    out = resize(image, ImagingSettings(crop="none", size=32, resize="squash", contrast="none"))
    assert out.shape == (32, 32)
    top, bottom, left, right = bbox(out > 0.4)
    # a circle in a 1:2 film becomes an ellipse about twice as tall as wide
    assert (bottom - top) / (right - left) == pytest.approx(2.0, rel=0.25)


def test_pad_keeps_aspect_and_pads_with_black():
    image = disc(100, 200, 40)
    settings = ImagingSettings(crop="none", size=32, resize="pad", contrast="none")
    out = resize(image, settings)
    assert out.shape == (32, 32)
    # 100x200 -> 16x32 placed at rows 8..23; the rest is exactly black
    assert np.all(out[:8] == 0) and np.all(out[24:] == 0)
    assert np.all(out[8:24] > 0)  # the film's own background (0.05) is not black
    top, bottom, left, right = bbox(out > 0.4)
    assert (bottom - top) / (right - left) == pytest.approx(1.0, rel=0.15)


def test_pad_tall_film_pads_columns():
    out = prepare_film(np.full((120, 60), 0.6, np.float32),
                        ImagingSettings(crop="none", size=40, resize="pad", contrast="none"))
    assert out.shape == (40, 40) and out.dtype == np.uint8
    assert np.all(out[:, :10] == 0) and np.all(out[:, 30:] == 0)
    assert np.all(out[:, 10:30] == round(0.6 * 255))


# ----------------------------------------------------------------------------- contrast


def dark_low_contrast(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :80]
    image = 0.10 + 0.06 * (yy / 95) + 0.02 * np.sin(xx / 4) + rng.normal(0, 0.003, yy.shape)
    return image.astype(np.float32)


def test_percentile_stretch_spans_full_range():
    image = dark_low_contrast()
    assert image.max() < 0.2
    out = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="percentile"))
    assert out.dtype == np.uint8
    assert out.min() <= 3 and out.max() >= 252
    assert np.percentile(out, 2) < 20 and np.percentile(out, 98) > 235
    flat = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="none"))
    assert flat.max() <= 0.2 * 255 + 1  # without normalisation it stays dark


def test_percentile_stretch_clips_outliers():
    image = dark_low_contrast()
    image[0, 0], image[0, 1] = 1.0, 0.0
    out = normalise_contrast(image, ImagingSettings(crop="none", percentiles=(1.0, 99.0)))
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    # the two outliers do not compress the rest: the middle of the film is mid-grey
    assert 0.3 < np.median(out) < 0.7


def test_flat_image_does_not_divide_by_zero():
    out = prepare_film(np.full((32, 32), 0.4, np.float32), ImagingSettings(crop="none", size=16))
    assert np.isfinite(out).all() and out.shape == (16, 16)


def test_clahe_runs_and_differs_from_percentile():
    image = dark_low_contrast()
    clahe = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="clahe"))
    stretched = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="percentile"))
    assert clahe.dtype == np.uint8 and clahe.shape == (64, 64)
    assert np.abs(clahe.astype(int) - stretched.astype(int)).mean() > 2
    assert clahe.max() - clahe.min() > 150


def test_clahe_tiles_matter():
    image = dark_low_contrast()
    few = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="clahe", clahe_tiles=2))
    many = prepare_film(image, ImagingSettings(crop="none", size=64, contrast="clahe", clahe_tiles=8))
    assert not np.array_equal(few, many)


def test_clahe_clip_limit_matters(hand_film):
    image = hand_film(200, 160, marker=False).astype(np.float32) / 255.0
    low = normalise_contrast(image, ImagingSettings(crop="none", contrast="clahe", clahe_clip=1.0))
    high = normalise_contrast(image, ImagingSettings(crop="none", contrast="clahe", clahe_clip=8.0))
    assert np.abs(high - low).max() > 0.05


# ----------------------------------------------------------------------------- crop


def test_crop_to_hand_drops_separate_marker(hand_film):
    film = hand_film(200, 160, marker=True).astype(np.float32) / 255.0
    assert film.max() > 0.95  # the marker is the brightest thing on the film
    out = crop_to_hand(film)
    assert out.dtype == np.float32
    assert out.max() < 0.9  # marker gone
    # the blob spans rows 50..182 and cols 23..111 (see conftest): crop is about that
    assert 133 <= out.shape[0] <= 165
    assert 89 <= out.shape[1] <= 115


def test_crop_to_hand_blanks_marker_inside_the_hand_box(hand_film):
    film = hand_film(200, 160, marker=False).astype(np.float32) / 255.0
    film[50:58, 23:31] = 250 / 255  # inside the blob's bounding box, not touching it
    out = crop_to_hand(film)
    assert out.max() < 0.9
    background = np.percentile(film[film < 0.3], 50)
    assert out.min() < background + 0.05


def test_crop_to_hand_ignores_a_thick_plate_border(hand_film):
    film = hand_film(200, 160, marker=True).astype(np.float32) / 255.0
    border = np.zeros(film.shape, bool)
    border[:15], border[-15:], border[:, :15], border[:, -15:] = True, True, True, True
    film[border] = 0.9  # a hollow frame with more area than the hand
    out = crop_to_hand(film)
    assert out.shape[0] < 180 and out.shape[1] < 130
    assert out.max() < 0.85


def test_crop_leaves_a_film_without_a_hand_alone():
    flat = np.full((64, 48), 0.3, np.float32)
    np.testing.assert_array_equal(crop_to_hand(flat), flat)


def test_prepare_with_crop_differs_from_without(encode, hand_film):
    data = encode(hand_film(200, 160, marker=True))
    cropped = prepare_bytes(data, ImagingSettings(size=48, crop="hand"))
    whole = prepare_bytes(data, ImagingSettings(size=48, crop="none"))
    assert cropped.shape == whole.shape == (48, 48)
    assert not np.array_equal(cropped, whole)
    # without the crop the marker square sits at the top right and is saturated
    # (film rows 10..26, cols 135..151 -> rows 2.4..6.2, cols 40.5..45.3 at 48 px)
    assert whole[3:6, 41:45].min() == 255
    # the crop is to the hand: the dark margin around it is thin, so far fewer dark pixels
    assert (cropped < 40).mean() < (whole < 40).mean() - 0.2


# ----------------------------------------------------------------------------- prepare


@pytest.mark.parametrize("settings", [
    ImagingSettings(crop="none", size=64),
    ImagingSettings(size=64, resize="pad", contrast="clahe", crop="hand"),
])
def test_prepare_is_deterministic(encode, hand_film, settings):
    data = encode(hand_film(210, 170, seed=5))
    first, second = prepare_bytes(data, settings), prepare_bytes(data, settings)
    assert first.dtype == np.uint8 and first.shape == (64, 64)
    np.testing.assert_array_equal(first, second)
    assert first.max() > first.min()


def test_prepare_bad_bytes_name_the_film():
    with pytest.raises(ImageError, match="^0007.png: "):
        prepare_bytes(b"\x89PNG\r\n\x1a\nrubbish", ImagingSettings(crop="none"), name="0007.png")


# ----------------------------------------------------------------------------- settings


def test_settings_round_trip_through_json():
    settings = ImagingSettings(size=96, resize="pad", contrast="clahe", percentiles=[2, 98],
                               clahe_clip=3.5, clahe_tiles=4, crop="hand")
    assert settings.percentiles == (2.0, 98.0)
    data = settings.to_dict()
    assert data["percentiles"] == [2.0, 98.0]
    again = ImagingSettings.from_dict(json.loads(json.dumps(data)))
    assert again == settings
    assert again != ImagingSettings()


def test_settings_from_params():
    params = PreprocessParams(size=64, resize="pad", crop="hand", workers=3, on_error="fail")
    settings = ImagingSettings.from_params(params)
    assert (settings.size, settings.resize, settings.crop) == (64, "pad", "hand")
    assert "workers" not in settings.to_dict()


def test_settings_reject_unknown_keys():
    data = ImagingSettings().to_dict() | {"sharpen": True}
    with pytest.raises(ValueError, match="sharpen"):
        ImagingSettings.from_dict(data)


@pytest.mark.parametrize("kwargs, key", [
    ({"resize": "stretch"}, "resize"),
    ({"contrast": "hist"}, "contrast"),
    ({"crop": "auto"}, "crop"),
    ({"size": 4}, "size"),
])
def test_settings_reject_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        ImagingSettings(**kwargs)
    with pytest.raises(ValueError, match=key):
        ImagingSettings.from_dict(ImagingSettings().to_dict() | kwargs)


def test_settings_are_frozen():
    with pytest.raises(Exception):
        ImagingSettings().size = 3  # type: ignore[misc]


def test_hand_crop_ignores_a_bright_surround_larger_than_the_hand():
    """Outside the collimated field a plate can be brighter and larger than the hand."""
    from boneage.imaging.transforms import hand_mask

    film = np.full((200, 160), 0.15, dtype=np.float32)
    film[:60, :] = 0.9  # bright surround along the top edge ...
    film[:, 120:] = 0.9  # ... and the right edge: meets three edges, off-centre
    cv2.ellipse(film, (60, 140), (28, 45), 0, 0, 360, 0.7, -1)  # the hand, touching nothing
    mask = hand_mask(film)
    assert mask[140, 60]  # the hand is in
    assert not mask[10, 10] and not mask[100, 150]  # the surround is out
    assert mask.mean() < 0.2


# ----------------------------------------------------------------------------- reduction


def test_reduce_for_averages_whole_blocks_and_keeps_unaveraged_samples():
    rng = np.random.default_rng(0)
    film = rng.integers(0, 256, (203, 165), dtype=np.uint8)  # shorter side 165 // (2*16) = 5
    reduced, samples = imaging.reduce_for(film, 16)
    assert reduced.shape == samples.shape == (40, 33) and reduced.dtype == np.uint8
    blocks = film[:200, :165].reshape(40, 5, 33, 5).astype(float).mean(axis=(1, 3))
    assert np.abs(reduced - blocks).max() <= 0.5 + 1e-9  # box average, rounded
    np.testing.assert_array_equal(samples, film[:200:5, :165:5])
    # averaging narrows the spread; the samples keep the film's own extremes
    assert reduced.std() < film.std() / 3
    assert samples.min() < 5 and samples.max() > 250


def test_reduce_for_leaves_films_near_the_output_size_alone():
    film = np.zeros((200, 160), np.float32)
    reduced, samples = imaging.reduce_for(film, 48)  # 160 // 96 = 1: nothing to gain
    assert reduced is film and samples is film


def test_prepare_of_a_large_film_matches_the_full_resolution_path(encode, hand_film):
    """The reduced path gives what cropping, stretching and resizing every pixel gives: the
    same hand area and brightness; crop edges may move by under one output pixel."""
    small = hand_film(260, 200, seed=4, marker=True)
    rng = np.random.default_rng(1)
    large = cv2.resize(small, (1600, 2080), interpolation=cv2.INTER_CUBIC).astype(float)
    large = np.clip(large + rng.normal(0, 6, large.shape), 0, 255).astype(np.uint8)  # film grain
    for settings in (ImagingSettings(size=96, crop="hand"),
                     ImagingSettings(size=128, crop="hand", resize="pad"),
                     ImagingSettings(size=96, crop="none")):
        fast = prepare_bytes(encode(large), settings).astype(int)
        full = large.astype(np.float32) / 255.0
        if settings.crop == "hand":
            full = crop_to_hand(full)
        full = resize(normalise_contrast(full, settings), settings)
        slow = np.clip(np.round(full * 255.0), 0, 255).astype(int)
        difference = np.abs(fast - slow)
        assert abs((fast > 128).mean() - (slow > 128).mean()) < 0.02, settings  # same hand area
        assert abs(fast.mean() - slow.mean()) < 3.0, settings
        assert np.median(difference) <= 4, settings
        if settings.crop == "none":
            assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_levels_percentiles_equal_numpys(dtype):
    """The histogram percentiles are np.percentile's (linear interpolation) of the same pixels,
    with blanked pixels at a fractional level among them."""
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    for trial in range(60):
        values = rng.integers(0, int(rng.integers(1, top + 1)), int(rng.integers(1, 2000)),
                              dtype=np.int64).astype(dtype)
        fill, fill_count = float(rng.uniform(0, 1)), int(rng.integers(0, 40)) * (trial % 2)
        qs = [0.0, 1.0, 5.0, 50.0, 99.0, 100.0, float(rng.uniform(0, 100))]
        levels = imaging.Levels.of(values, fill=fill, fill_count=fill_count)
        expected = np.percentile(np.concatenate([values / float(top), np.full(fill_count, fill)]), qs)
        np.testing.assert_allclose(levels.percentiles(qs), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("crop", ["hand", "none"])
def test_prepare_from_stored_levels_matches_float_samples(encode, hand_film, dtype, crop):
    """prepare() takes the percentiles (background level, contrast stretch) from a histogram
    of the stored integers instead of sorting them as floats: the same film comes out, up
    to the rounding of a level sitting on .5."""
    film = hand_film(260, 200, seed=5, marker=True).astype(np.float64) / 255.0
    stored = np.round(film * np.iinfo(dtype).max).astype(dtype)
    for settings in (ImagingSettings(size=48, crop=crop), ImagingSettings(size=96, crop=crop)):
        reduced, samples = imaging.reduce_for(stored, settings.size)
        image = to_grey_float(reduced)
        float_samples = image if samples is reduced else to_grey_float(samples)
        from_levels = imaging._transform(image, samples, settings)[0].astype(int)
        from_floats = imaging._transform(image, float_samples, settings)[0].astype(int)
        np.testing.assert_array_equal(prepare_bytes(encode(stored), settings), from_levels)
        assert np.abs(from_levels - from_floats).max() <= 1, settings
        assert (from_levels != from_floats).mean() < 0.01, settings
