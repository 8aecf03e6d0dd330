"""DICOM films go through the one imaging path: pixels as a viewer shows them, tags read."""

import io

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from boneage.dicom import parse_patient_age  # noqa: E402
from boneage.errors import ImageError  # noqa: E402
from boneage.imaging import ImagingSettings, decode, prepare, prepare_array, read_film  # noqa: E402


def make_dicom(pixels: np.ndarray | None, *, photometric="MONOCHROME2", slope=None,
               intercept=None, centre=None, width=None, sex=None, age=None) -> bytes:
    """A DICOM Part 10 file in memory (synthetic; no patient data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("film.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if sex:
        ds.PatientSex = sex
    if age:
        ds.PatientAge = age
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        bits = 16 if pixels.dtype == np.uint16 else 8
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if centre is not None:
        ds.WindowCenter, ds.WindowWidth = centre, width
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_monochrome2_8bit_without_window_matches_the_png_of_the_same_pixels(hand_film, encode):
    film = hand_film(120, 100)
    film[0, 0], film[-1, -1] = 0, 255  # full range, so min-max scaling is the identity
    settings = ImagingSettings(size=32, crop="hand")
    from_dicom = prepare(make_dicom(film), settings, "film.dcm")
    from_png = prepare(encode(film), settings, "film.png")
    np.testing.assert_array_equal(from_dicom, from_png)


def test_monochrome1_is_inverted_so_bone_is_bright(hand_film):
    film = hand_film(120, 100)
    film[0, 0], film[-1, -1] = 0, 255
    normal = decode(make_dicom(film))
    inverted = decode(make_dicom(255 - film, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, normal, atol=1e-6)
    # the hand (bright in MONOCHROME2) stays bright after inversion
    assert inverted[70, 40] > inverted[5, 5] + 0.3


def test_16bit_rescale_and_window_are_applied():
    # Stored values v; modality value = 2 v - 1000; window centre 1000, width 1001
    # maps modality 500 -> 0 and 1500 -> 1 (DICOM's linear function).
    stored = np.full((64, 64), 750, dtype=np.uint16)  # modality 500: the window's bottom
    stored[:, 32:] = 1250  # modality 1500: the window's top
    stored[:8, :8] = 1000  # modality 1000: the centre
    stored[8:16, :8] = 100  # modality -800: clipped to 0
    image = decode(make_dicom(stored, slope=2, intercept=-1000, centre=1000, width=1001))
    assert image.dtype == np.float32 and image.shape == (64, 64)
    assert image[20, 20] == pytest.approx(0.0, abs=1e-3)
    assert image[20, 40] == pytest.approx(1.0, abs=1e-3)
    assert image[2, 2] == pytest.approx(0.5, abs=1e-3)
    assert image[10, 2] == 0.0


def test_16bit_without_window_uses_the_full_range_of_the_rescaled_values():
    stored = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = decode(make_dicom(stored, slope=1, intercept=0))
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)
    prepared = prepare_array(image, ImagingSettings(size=16, contrast="none"))
    assert prepared.dtype == np.uint8 and prepared.shape == (16, 16)


def test_patient_sex_and_age_are_read_from_the_tags(hand_film):
    film = read_film(make_dicom(hand_film(), sex="F", age="010Y"), "f.dcm")
    assert film.meta["sex"] == "F" and film.meta["age_months"] == 120
    film = read_film(make_dicom(hand_film(), sex="O"), "f.dcm")
    assert film.meta["sex"] is None and film.meta["age_months"] is None


@pytest.mark.parametrize("text, months", [("010Y", 120), ("006M", 6), ("008W", 56 / 30.4375),
                                          ("030D", 30 / 30.4375), ("", None), ("abc", None)])
def test_patient_age_strings(text, months):
    assert parse_patient_age(text) == (pytest.approx(months) if months is not None else None)


def test_dicom_without_pixels_is_refused_with_a_clear_message():
    with pytest.raises(ImageError, match="no.dcm: DICOM file holds no image"):
        decode(make_dicom(None, sex="M"), "no.dcm")


def test_huge_dicom_is_refused_from_the_header():
    data = bytearray(make_dicom(np.zeros((16, 16), np.uint8)))
    # Claim 20,000 columns in the header: refused before any pixel decoding.
    meta = pydicom.dcmread(io.BytesIO(bytes(data)))
    meta.Columns = 20000
    buffer = io.BytesIO()
    meta.save_as(buffer)
    with pytest.raises(ImageError, match="20000x16 px"):
        decode(buffer.getvalue(), "big.dcm")


def test_truncated_dicom_pixels_are_an_image_error(hand_film):
    data = make_dicom(hand_film(120, 100))
    with pytest.raises(ImageError, match="cut.dcm"):
        decode(data[:-5000], "cut.dcm")


def test_png_still_decodes_and_is_tagged_png(hand_film, encode):
    film = read_film(encode(hand_film()), "a.png")
    assert film.meta == {"format": "png"}
    film16 = read_film(encode((hand_film().astype(np.uint16) * 257)), "b.png")
    assert film16.image.max() <= 1.0
    assert cv2.__version__  # cv2 is the PNG/JPEG decoder
