"""The DICOM header speaks first (boneage.imaging.dicom_header), and compressed transfer
syntaxes are read through pydicom's pip-installed decoders with their frame size checked."""

import io

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom import uid  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from test_dicom import make_dicom  # noqa: E402

from boneage.imaging.decoding import read_film  # noqa: E402
from boneage.imaging.dicom_header import body_part_verdict, header_reasons  # noqa: E402
from boneage.imaging.film_check import check_read_film  # noqa: E402
from boneage.kernel.errors import ImageError, NotAFilmError  # noqa: E402


def with_tags(data: bytes, **tags) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in tags.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "MG", "XA", "IO", "PX"])
def test_a_modality_that_is_not_a_projection_radiograph_is_refused_from_the_header(
        hand_film, modality, monkeypatch):
    data = with_tags(make_dicom(hand_film()), Modality=modality)
    decoded = []
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda self: decoded.append(1)))
    with pytest.raises(NotAFilmError, match=rf"ct\.dcm: not read: its DICOM header says it is "
                                            rf"not a hand radiograph: Modality \(0008,0060\) "
                                            rf"is {modality} \(.+\), not a projection "
                                            r"radiograph \(CR, DX or RG\); read it anyway "
                                            r"with --force") as caught:
        read_film(data, "ct.dcm")
    assert not decoded  # refused before the pixels were decoded
    assert caught.value.checks["header"]["modality"] == modality
    assert caught.value.checks["failed"] == ["header"]


@pytest.mark.parametrize("modality", ["CR", "DX", "RG", "OT", None])
def test_projection_radiographs_and_unspecific_modalities_are_read(hand_film, modality):
    film = read_film(with_tags(make_dicom(hand_film()), Modality=modality), "ok.dcm")
    assert film.pixels.shape == (200, 160)
    assert film.meta["header"]["reasons"] == []


@pytest.mark.parametrize("value, verdict", [
    ("HAND", "hand"), ("WRIST", "hand"), ("L HAND PA", "hand"), ("HAND_LT", "hand"),
    ("Hand", "hand"), ("FINGER", "hand"), ("HANDGELENK", "hand"), ("MAIN GAUCHE", "hand"),
    ("BONE AGE", "hand"), ("HAND FOOT", "hand"),
    ("EXTREMITY", "unspecific"), ("UPPER EXTREMITY", "unspecific"), ("UPPEREXTREMITY", "unspecific"),
    ("OTHER", "unspecific"), ("XR PAED", "unspecific"),
    ("CHEST", "other"), ("KNEE", "other"), ("ANKLE", "other"), ("FOOT", "other"),
    ("FOREARM", "other"), ("CSPINE", "other"), ("ABDOMENPELVIS", "other"), ("SKULL", "other"),
    ("LOWER EXTREMITY", "other"), ("L KNEE AP", "other"),
])
def test_body_part_verdicts(value, verdict):
    assert body_part_verdict(value) == verdict


def test_a_body_part_naming_another_part_is_refused_naming_the_attribute(hand_film):
    data = with_tags(make_dicom(hand_film()), BodyPartExamined="KNEE")
    with pytest.raises(NotAFilmError, match=r"k\.dcm: not read: .*BodyPartExamined "
                                            r"\(0018,0015\) is 'KNEE', not the hand or wrist"):
        read_film(data, "k.dcm")
    for part in ("HAND", "WRIST", "EXTREMITY", None):
        read_film(with_tags(data, BodyPartExamined=part), "h.dcm")


def test_for_processing_images_are_refused(hand_film):
    data = with_tags(make_dicom(hand_film()), PresentationIntentType="FOR PROCESSING")
    with pytest.raises(NotAFilmError, match=r"PresentationIntentType \(0008,0068\) is FOR "
                                            "PROCESSING"):
        read_film(data, "raw.dcm")


def test_force_reads_it_and_the_reading_says_why_it_should_not_have(hand_film):
    data = with_tags(make_dicom(hand_film()), Modality="CT", BodyPartExamined="ANKLE")
    film = read_film(data, "ct.dcm", force=True)
    reasons = film.meta["header"]["reasons"]
    assert len(reasons) == 2 and "Modality" in reasons[0] and "ANKLE" in reasons[1]
    with pytest.raises(NotAFilmError, match="Modality"):  # the film check, unforced, refuses
        check_read_film(film, "ct.dcm")
    checked = check_read_film(film, "ct.dcm", force=True)
    checks = checked.meta["checks"]
    assert checks["forced"] and not checks["accepted"]
    assert checks["reasons"][:2] == reasons
    assert checks["header"]["modality"] == "CT"


def test_a_clean_header_leaves_the_film_check_verdict_alone(hand_film):
    checked = check_read_film(read_film(make_dicom(hand_film()), "ok.dcm"), "ok.dcm", force=True)
    assert checked.meta["checks"]["header"] == {"modality": "DX", "body_part_examined": None,
                                               "reasons": []}


def test_a_dicom_without_pixels_still_says_so_whatever_its_modality():
    data = with_tags(make_dicom(None), Modality="SR")
    with pytest.raises(ImageError, match="holds no image"):
        read_film(data, "sr.dcm")


def test_header_reasons_on_a_multivalued_or_odd_tag_do_not_crash():
    ds = pydicom.Dataset()
    ds.Modality = "CT"
    ds.BodyPartExamined = ["HAND", "WRIST"]
    assert len(header_reasons(ds)) == 1


# --------------------------------------------------------------- compressed transfer syntaxes

def smooth_film(bits: int = 12) -> np.ndarray:
    """A 12-bit grey film with smooth structure (lossy codecs keep it closely)."""
    yy, xx = np.mgrid[:48, :64]
    film = 1500 + 1200 * np.sin(yy / 6.0) * np.cos(xx / 9.0) + 10 * xx
    return np.clip(film, 0, 2 ** bits - 1).astype(np.uint16 if bits > 8 else np.uint8)


def compressed(film: np.ndarray, syntax, frame: bytes | None = None, **kwargs) -> bytes:
    """The film as a DICOM in ``syntax``: encoded by pydicom (``ds.compress``) or, for the
    JPEG processes pydicom cannot encode, from a frame encoded by imagecodecs."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(film)))
    if film.dtype == np.uint16:
        ds.BitsStored, ds.HighBit = 12, 11
    if frame is None:
        ds.compress(syntax, **kwargs)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _imagecodecs():
    return pytest.importorskip("imagecodecs")


SYNTAXES = {
    # name: (syntax, encode(film) -> DICOM bytes, largest difference allowed in [0, 1])
    "JPEG Baseline": (uid.JPEGBaseline8Bit, lambda f: compressed(
        (f >> 4).astype(np.uint8), uid.JPEGBaseline8Bit,
        _imagecodecs().jpeg8_encode((f >> 4).astype(np.uint8), level=95)), 0.03),
    "JPEG Extended 12 bit": (uid.JPEGExtended12Bit, lambda f: compressed(
        f, uid.JPEGExtended12Bit, _imagecodecs().jpeg8_encode(f, level=95, bitspersample=12)),
        0.01),
    "JPEG Lossless SV1": (uid.JPEGLosslessSV1, lambda f: compressed(
        f, uid.JPEGLosslessSV1,
        _imagecodecs().jpeg8_encode(f, lossless=True, predictor=1, bitspersample=12)), 0.0),
    "JPEG Lossless process 14": (uid.JPEGLossless, lambda f: compressed(
        f, uid.JPEGLossless,
        _imagecodecs().jpeg8_encode(f, lossless=True, predictor=5, bitspersample=12)), 0.0),
    "JPEG-LS Lossless": (uid.JPEGLSLossless, lambda f: compressed(f, uid.JPEGLSLossless), 0.0),
    "JPEG-LS Near-lossless": (uid.JPEGLSNearLossless, lambda f: compressed(
        f, uid.JPEGLSNearLossless, jls_error=2), 0.002),
    "JPEG 2000 Lossless": (uid.JPEG2000Lossless, lambda f: compressed(f, uid.JPEG2000Lossless),
                           0.0),
    "JPEG 2000": (uid.JPEG2000, lambda f: compressed(f, uid.JPEG2000, j2k_cr=[4]), 0.02),
    "HTJ2K Lossless": (uid.HTJ2KLossless, lambda f: compressed(
        f, uid.HTJ2KLossless, _imagecodecs().htj2k_encode(f)), 0.0),
    "RLE Lossless": (uid.RLELossless, lambda f: compressed(f, uid.RLELossless), 0.0),
}


@pytest.mark.parametrize("name", sorted(SYNTAXES))
def test_each_compressed_syntax_reads_as_the_uncompressed_film(name):
    syntax, encode, tolerance = SYNTAXES[name]
    film = smooth_film()
    data = encode(film)
    assert str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID) == str(syntax)
    reference = film if name != "JPEG Baseline" else (film >> 4).astype(np.uint8)
    expected = read_film(make_dicom(reference), "plain.dcm").pixels
    pixels = read_film(data, f"{name}.dcm").pixels
    assert pixels.shape == (48, 64)
    assert float(np.abs(pixels - expected).max()) <= tolerance + 1e-6


@pytest.mark.parametrize("name", ["JPEG Lossless SV1", "JPEG-LS Lossless", "JPEG 2000 Lossless",
                                  "HTJ2K Lossless"])
def test_a_compressed_frame_larger_than_its_header_is_refused_before_decoding(name):
    """The frame's own header (SOF, SIZ) is read: a 48x64 px header over a 96x128 px frame."""
    syntax, encode, _ = SYNTAXES[name]
    big = np.tile(smooth_film(), (2, 2))
    frame = pydicom.encaps.get_frame(pydicom.dcmread(io.BytesIO(encode(big))).PixelData, 0,
                                     number_of_frames=1)
    data = compressed(smooth_film(), syntax, frame)
    with pytest.raises(ImageError, match=r"the compressed DICOM frame is 128x96 px but the "
                                         r"header says 64x48 px"):
        read_film(data, "lie.dcm")


def test_a_j2k_frame_wrapped_in_a_jp2_file_has_its_size_read_from_the_codestream():
    imagecodecs = _imagecodecs()
    film = smooth_film()
    jp2 = imagecodecs.jpeg2k_encode(film, level=0, codecformat="jp2")
    assert jp2[4:8] == b"jP  "
    pixels = read_film(compressed(film, uid.JPEG2000Lossless, jp2), "jp2.dcm").pixels
    np.testing.assert_array_equal(pixels, read_film(make_dicom(film), "plain.dcm").pixels)
    big = imagecodecs.jpeg2k_encode(np.tile(film, (2, 2)), level=0, codecformat="jp2")
    with pytest.raises(ImageError, match=r"frame is 128x96 px but the header says 64x48"):
        read_film(compressed(film, uid.JPEG2000Lossless, big), "jp2.dcm")
