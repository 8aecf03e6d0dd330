"""DICOM films go through the one imaging path: pixels as a viewer shows them, tags read."""

import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from factories import set_pixels, to_bytes  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from boneage.imaging.dicom import parse_patient_age  # noqa: E402
from boneage.kernel.errors import ImageError  # noqa: E402
from boneage.imaging.decoding import Film, decode, read_film  # noqa: E402
from boneage.imaging.transforms import ImagingSettings, prepare  # noqa: E402


def make_dicom(pixels: np.ndarray | None, *, photometric="MONOCHROME2", slope=None,
               intercept=None, centre=None, width=None, sex=None, age=None, frames=None,
               rows=None, columns=None, syntax=ExplicitVRLittleEndian) -> bytes:
    """A DICOM Part 10 file in memory (synthetic; no patient data). ``rows``/``columns``
    override the header's size (the pixel data stays as given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset("film.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if sex:
        ds.PatientSex = sex
    if age:
        ds.PatientAge = age
    if pixels is not None:
        set_pixels(ds, pixels, photometric)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if centre is not None:
        ds.WindowCenter, ds.WindowWidth = centre, width
    if frames is not None:
        ds.NumberOfFrames = frames
    if rows is not None:
        ds.Rows, ds.Columns = rows, columns
    return to_bytes(ds)


def test_monochrome2_8bit_without_window_matches_the_png_of_the_same_pixels(hand_film, encode):
    film = hand_film(120, 100)
    film[0, 0], film[-1, -1] = 0, 255  # full range, so min-max scaling is the identity
    settings = ImagingSettings(size=32, crop="hand")
    from_dicom = prepare(read_film(make_dicom(film), "film.dcm"), settings)
    from_png = prepare(read_film(encode(film), "film.png"), settings)
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
    prepared = prepare(Film(image), ImagingSettings(crop="none", size=16, contrast="none"))
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


# ----------------------------------------------------------------------------- hostile files

MB = 1024 * 1024


def replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with one value swapped for another of the same length (the file stays valid)."""
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


@pytest.mark.parametrize("tags, old, new, message", [
    ({"slope": "7.25", "intercept": "0"}, b"7.25", b"abcd",
     r"bad\.dcm: DICOM tag RescaleSlope \(0028,1053\) is not a number: 'abcd'"),
    ({"slope": "1", "intercept": "-1024"}, b"-1024", b"-10x4",
     r"bad\.dcm: DICOM tag RescaleIntercept \(0028,1052\) is not a number: '-10x4'"),
    ({"centre": "1234", "width": "400"}, b"1234", b"c=12",
     r"bad\.dcm: DICOM tag WindowCenter \(0028,1050\) is not a number: 'c=12'"),
    ({"centre": "1000", "width": "4567"}, b"4567", b"wide",
     r"bad\.dcm: DICOM tag WindowWidth \(0028,1051\) is not a number: 'wide'"),
    ({"centre": "1357", "width": "400"}, b"1357", b"NaN ",
     r"bad\.dcm: DICOM tag WindowCenter \(0028,1050\) is nan, not a finite number"),
])
def test_malformed_numbers_are_image_errors_naming_file_and_tag(hand_film, tags, old, new, message):
    data = make_dicom(hand_film().astype(np.uint16) * 16, **tags)
    decode(data, "good.dcm")
    with pytest.raises(ImageError, match=message):
        decode(replaced(data, old, new), "bad.dcm")
    with pytest.raises(ImageError, match=message):
        prepare(read_film(replaced(data, old, new), "bad.dcm"), ImagingSettings(crop="none", size=16))


def test_malformed_frame_count_is_an_image_error(hand_film):
    data = make_dicom(hand_film(), frames="1")
    with pytest.raises(ImageError, match=r"bad\.dcm: DICOM tag NumberOfFrames \(0028,0008\) is not "
                                         r"a whole number: 'x'"):
        decode(replaced(data, b"1 ", b"x "), "bad.dcm")


def test_other_patient_sex_is_kept_to_be_named(hand_film):
    film = read_film(make_dicom(hand_film(), sex="O"), "o.dcm")
    assert film.meta["sex"] is None and film.meta["sex_tag"] == "O"
    assert "sex_tag" not in read_film(make_dicom(hand_film()), "none.dcm").meta


def test_frames_and_samples_count_towards_the_size_limit():
    data = make_dicom(np.zeros((16, 16), np.uint8), rows=8000, columns=8000, frames="2")
    with pytest.raises(ImageError, match=r"many\.dcm: DICOM holds 2 frames of 8000x8000 px with 1 "
                                         r"samples per pixel, 128,000,000 values"):
        decode(data, "many.dcm")


def test_deflated_dicom_reads_as_the_uncompressed_one(hand_film):
    film = hand_film(120, 100)
    plain = read_film(make_dicom(film, sex="F", age="009Y"), "plain.dcm")
    data = make_dicom(film, sex="F", age="009Y", syntax=DeflatedExplicitVRLittleEndian)
    deflated = read_film(data, "deflated.dcm")
    np.testing.assert_array_equal(deflated.image, plain.image)
    assert deflated.meta == plain.meta


def deflated_bomb(inflated_mb: int) -> bytes:
    """A deflated DICOM whose header says 64x64 px but whose pixel data element holds
    ``inflated_mb`` MB of zeros: about 1 KB per MB once deflated."""
    from pydicom.filereader import read_dataset

    data = make_dicom(np.zeros((64, 64), np.uint8), syntax=DeflatedExplicitVRLittleEndian)
    buffer = io.BytesIO(data)
    buffer.seek(132)
    read_dataset(buffer, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)
    start = buffer.tell()
    body = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    at = body.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData, little endian
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [deflater.compress(body[:at] + b"\xe0\x7f\x10\x00OB\x00\x00"
                             + struct.pack("<I", inflated_mb * MB))]
    zeros = bytes(MB)
    out += [deflater.compress(zeros) for _ in range(inflated_mb)]
    out.append(deflater.flush())
    return data[:start] + b"".join(out)


def test_deflated_bomb_is_refused_while_inflating():
    data = deflated_bomb(64)
    assert len(data) < MB
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"bomb\.dcm: the deflated DICOM data set inflates to "
                                             r"more than .* bytes, more than its header's image"):
            decode(data, "bomb.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * MB  # the header's first MBs, never the 64 MB


def test_deflated_dicom_claiming_a_huge_film_is_refused_from_its_header():
    data = make_dicom(np.zeros((16, 16), np.uint8), rows=20000, columns=20000,
                      syntax=DeflatedExplicitVRLittleEndian)
    with pytest.raises(ImageError, match=r"big\.dcm: DICOM image is 20000x20000 px"):
        decode(data, "big.dcm")


def encapsulated(frame: bytes, syntax, rows: int, columns: int) -> bytes:
    """A DICOM holding one compressed 8-bit grey frame."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((rows, columns), np.uint8))))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_jpeg_dicom_is_decoded_when_its_frame_matches_the_header(hand_film):
    pytest.importorskip("PIL")
    film = hand_film(40, 64)
    data = encapsulated(cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes(),
                        JPEGBaseline8Bit, 40, 64)
    image = decode(data, "jpeg.dcm")
    assert image.shape == (40, 64)
    assert np.abs(image - decode(make_dicom(film))).mean() < 0.02  # JPEG's loss only


def test_jpeg_dicom_whose_frame_is_larger_than_its_header_is_refused():
    from test_imaging import jpeg_claiming

    data = encapsulated(jpeg_claiming(12000, 12000), JPEGBaseline8Bit, 64, 64)
    with pytest.raises(ImageError, match=r"j\.dcm: the compressed DICOM frame is 12000x12000 "
                                         r"px but the header says 64x64 px"):
        decode(data, "j.dcm")


def test_rle_dicom_still_decodes(hand_film):
    film = hand_film(40, 64)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(film)))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    np.testing.assert_array_equal(decode(buffer.getvalue()), decode(make_dicom(film)))


def test_rle_segment_that_decodes_past_rows_x_columns_is_refused():
    # One segment of 20,000 two-byte runs of 128 zeros: 2.5 MB for a 64x64 px (4 KB) plane.
    segment = b"\x81\x00" * 20000
    frame = struct.pack("<16I", 1, 64, *([0] * 14)) + segment
    data = encapsulated(frame, RLELossless, 64, 64)
    with pytest.raises(ImageError, match=r"r\.dcm: RLE segment 0 of the DICOM frame decodes "
                                         r"to more than 5,120 bytes"):
        decode(data, "r.dcm")


@pytest.mark.parametrize("missing", [("Rows",), ("Columns",), ("Rows", "Columns")])
def test_a_dicom_without_rows_or_columns_says_so_not_no_pixel_data(missing):
    """Issue 22: pixel data present, its size tags absent: a malformed file, not a report."""
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(np.full((16, 16), 9, np.uint8), sex="M")))
    for keyword in missing:
        delattr(dataset, keyword)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageError) as error:
        decode(buffer.getvalue(), "size.dcm")
    message = str(error.value)
    assert "no pixel data" not in message and "malformed" in message
    for keyword in missing:
        assert keyword in message
