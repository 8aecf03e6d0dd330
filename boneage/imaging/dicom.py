"""DICOM films: pixels as the radiologist's viewer shows them, plus the patient's sex, age and
size (height).

Called by :func:`boneage.imaging.decoding.read_film` when the bytes carry the DICOM magic, so a DICOM
becomes the same grey float [0, 1] array a PNG does and then goes through the one imaging
path (:func:`boneage.imaging.transforms.prepare`). What is applied, in DICOM's order (PS3.3
C.11): the modality rescale (RescaleSlope/RescaleIntercept), the first VOI window
(WindowCenter/WindowWidth, linear function), and for MONOCHROME1 (bone dark) an inversion so
bone is bright as in every training film.

Files come from anyone (uploads to ``boneage serve``), so nothing is decoded or inflated
before its size is known: Rows x Columns x frames x samples from the header, a deflated data
set inflated only as far as that header needs, and a compressed first frame's own size
checked against the header. Only the first frame is decoded. Before any of that, the header
says whether this is a hand radiograph at all (:mod:`boneage.imaging.dicom_header`).

Compressed transfer syntaxes are everyday PACS traffic: JPEG Baseline and Extended, JPEG
Lossless (Process 14 and SV1), JPEG-LS, JPEG 2000 (and HTJ2K) and RLE Lossless are decoded by
pydicom's pip-installed plugins (pylibjpeg with pylibjpeg-libjpeg, -openjpeg and -rle;
pyjpegls), each after its first frame's own header (JPEG SOF, J2K SIZ, RLE segment runs) has
been checked against Rows x Columns. A tag that should be a number
and is not is an :class:`ImageError` naming the file and tag.
"""

from __future__ import annotations

import io
import re

import numpy as np

from boneage.imaging.dicom_header import header_reasons, header_summary
from boneage.kernel.errors import FORCE_HINT, ImageError, NotAFilmError

MAGIC_OFFSET = 128
MAGIC = b"DICM"


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return data[MAGIC_OFFSET:MAGIC_OFFSET + 4] == MAGIC


def parse_patient_age(text: str | None) -> float | None:
    """DICOM AS value ('010Y', '006M', '012W', '030D') -> months; None when absent or odd."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(text).upper())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2)
    return {"D": number / 30.4375, "W": number * 7 / 30.4375, "M": float(number),
            "Y": number * 12.0}[unit]


HEADER_BYTES = 4 * 1024 * 1024  # inflated bytes allowed before the pixel data (tags: KBs)
TRAILER_BYTES = 64 * 1024  # inflated bytes allowed after the pixel data (padding, odd tags)
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # PixelData, FloatPixelData, DoubleFloat...


def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else ""


def _number(dataset, keyword: str, name: str, default: float | None = None,
            whole: bool = False) -> float | None:
    """A numeric tag's (first) value; ``default`` when absent or empty.

    A value that is not a finite number (RescaleSlope 'abc') is an :class:`ImageError` naming
    the file and the tag, so one malformed film is reported and the others are still read.
    """
    if keyword not in dataset:
        return default
    try:
        value = dataset[keyword].value
        if value is None or value == "":
            return default
        if not isinstance(value, (str, bytes, int, float)):  # multi-valued: the first
            value = value[0]
        number = float(value)
        if whole and number != int(number):
            raise ValueError(number)
    except Exception as exc:  # pydicom keeps an unreadable DS/IS as its text
        try:
            shown = dataset.get_item(keyword).value
        except Exception:  # noqa: BLE001 - only for the message
            shown = "?"
        shown = shown.decode("latin-1", "replace") if isinstance(shown, bytes) else shown
        kind = "a whole number" if whole else "a number"
        raise ImageError(f"{name}: DICOM tag {keyword} {_tag(keyword)} is not {kind}: "
                         f"{str(shown).strip()!r}") from exc
    if not np.isfinite(number):
        raise ImageError(f"{name}: DICOM tag {keyword} {_tag(keyword)} is {number}, "
                         "not a finite number")
    return int(number) if whole else number


def _text(dataset, keyword: str) -> str:
    """A text tag's value, stripped; '' when absent or unreadable (e.g. a bad character set)."""
    try:
        return str(dataset.get(keyword, "") or "").strip()
    except Exception:  # noqa: BLE001 - an unreadable text tag is as good as none
        return ""


def _geometry(dataset, name: str, max_pixels: int,
              max_side: int) -> tuple[int, int, int, int, int]:
    """(rows, columns, frames, samples per pixel, bits allocated), checked against the size
    limits from the header alone, before any pixel is decoded or inflated."""
    rows = _number(dataset, "Rows", name, whole=True)
    columns = _number(dataset, "Columns", name, whole=True)
    if rows is None or columns is None:
        missing = " and ".join(f"{keyword} {_tag(keyword)}" for keyword, value
                               in (("Rows", rows), ("Columns", columns)) if value is None)
        raise ImageError(f"{name}: DICOM header has no {missing}, so the image size is unknown; "
                         "the file is malformed (its pixels cannot be laid out)")
    frames = _number(dataset, "NumberOfFrames", name, 1, whole=True) or 1
    samples = _number(dataset, "SamplesPerPixel", name, 1, whole=True) or 1
    bits = _number(dataset, "BitsAllocated", name, 16, whole=True) or 16
    if min(rows, columns, frames, samples, bits) < 0 or samples > 4 or bits > 64:
        raise ImageError(f"{name}: DICOM header is inconsistent: {columns}x{rows} px, "
                         f"{frames} frames, {samples} samples per pixel, {bits} bits")
    if rows * columns > max_pixels or max(rows, columns) > max_side:
        raise ImageError(f"{name}: DICOM image is {columns}x{rows} px; films larger than "
                         f"{max_side} px a side or {max_pixels:,} px are refused")
    if rows * columns * frames * samples > max_pixels:
        raise ImageError(f"{name}: DICOM holds {frames} frames of {columns}x{rows} px with "
                         f"{samples} samples per pixel, {rows * columns * frames * samples:,} "
                         f"values; more than {max_pixels:,} are refused")
    return rows, columns, frames, samples, bits


def _inflate(compressed, name: str, bound):
    """Inflate a deflated data set (PS3.5 A.5) in bounded steps, never past what it needs.

    pydicom inflates the whole data set before reading a tag, so a few MB that inflate to
    GBs (a decompression bomb) would cost the memory before any size check. Here the first
    :data:`HEADER_BYTES` are inflated, ``bound(head)`` reads the header from them and says
    how many bytes the whole data set may take (or refuses), and inflation stops there.

    ``bound`` also returns a :class:`_PixelReducer` for a film over
    :data:`~boneage.imaging.headers.READ_PIXELS`: its pixel bytes are then reduced as they
    are inflated and never held whole. Returns ``(buffer at its start, reducer or None)``: the
    buffer holds the whole data set, or with a reducer everything before the pixel values.
    """
    import zlib

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    sink = io.BytesIO()
    total, limit, bounded, reducer = 0, HEADER_BYTES, False, None

    def too_much() -> ImageError:
        return ImageError(f"{name}: the deflated DICOM data set inflates to more than {limit:,} "
                          "bytes, more than its header's image needs (a decompression bomb?)")

    try:
        while not inflater.eof:
            left = len(compressed)
            piece = inflater.decompress(compressed, min(limit + 1 - total, 16 * 1024 * 1024))
            compressed = inflater.unconsumed_tail
            if reducer is None:
                sink.write(piece)
            else:
                reducer.feed(piece)
            total += len(piece)
            if total > limit:
                if bounded:
                    raise too_much()
                limit, reducer = bound(sink.getvalue())
                bounded = True
                if total > limit:
                    raise too_much()
                if reducer is not None:  # the pixel bytes inflated so far go to it
                    sink.seek(reducer.start)
                    reducer.feed(sink.read())
                    sink.seek(reducer.start)
                    sink.truncate()
            elif not piece and (not compressed or len(compressed) == left):
                raise ImageError(f"{name}: the deflated DICOM data set is truncated")
    except zlib.error as exc:
        raise ImageError(f"{name}: the deflated DICOM data set is corrupt ({exc})") from exc
    sink.seek(0)
    return sink, reducer


class _PixelReducer:
    """Native 8/16-bit grey pixel values, reduced by ``factor`` a band of rows at a time as
    their bytes arrive (:func:`boneage.imaging.headers.reduce_by`: the same box average as
    on the whole array), so a deflated 100 M px film never exists at full size."""

    def __init__(self, start: int, rows: int, columns: int, dtype: np.dtype, factor: int,
                 mask: int | None, name: str):
        self.start, self.rows, self.columns, self.dtype = start, rows, columns, dtype
        self.factor, self.mask, self.name = factor, mask, name
        self.band = factor * columns * dtype.itemsize  # bytes of one output row
        self.needed = (rows // factor) * self.band  # whole bands; the rest is trimmed
        self.pending = bytearray()
        self.out = np.empty((rows // factor, columns // factor), dtype)
        self.row = 0

    def feed(self, data: bytes) -> None:
        done = self.row * self.band
        if done >= self.needed or not data:
            return  # the trimmed rows and whatever follows the pixel data
        self.pending += data[:self.needed - done - len(self.pending)]
        whole = len(self.pending) // self.band
        if whole:
            from boneage.imaging.headers import reduce_by

            values = np.frombuffer(self.pending, self.dtype, whole * self.band // self.dtype.itemsize)
            values = values.reshape(whole * self.factor, self.columns)
            if self.mask is not None:
                values = values & self.mask
            self.out[self.row:self.row + whole] = reduce_by(values, self.factor)
            self.row += whole
            del values
            self.pending = self.pending[whole * self.band:]

    def finish(self) -> np.ndarray:
        if self.row * self.band < self.needed:
            raise ImageError(f"{self.name}: the deflated DICOM data set is truncated (its pixel "
                             "data ends early)")
        return self.out


def _inflation_bound(head: bytes, name: str, max_pixels: int, max_side: int) -> int:
    """The bytes a deflated data set may inflate to: its tags up to the pixel data, the
    pixels its (size-checked) header describes, and a little after them."""
    from pydicom.filereader import read_dataset

    seen = []

    def at_pixels(tag, vr, length) -> bool:
        if tag in _PIXEL_TAGS:
            seen.append(length)
            return True
        return False

    buffer = io.BytesIO(head)
    try:
        header = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True,
                              stop_when=at_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise ImageError(f"{name}: not a readable DICOM file ({exc})") from exc
    if not seen:
        raise ImageError(f"{name}: the deflated DICOM data set holds more than "
                         f"{HEADER_BYTES // (1024 * 1024)} MB of tags before any pixel data")
    rows, columns, frames, samples, bits = _geometry(header, name, max_pixels, max_side)
    pixels = -(-rows * columns * frames * samples * bits // 8)
    at = buffer.tell()
    return at + 16 + pixels + TRAILER_BYTES, _reducer_for(header, head, at, name)


def _reducer_for(header, head: bytes, at: int, name: str) -> "_PixelReducer | None":
    """A :class:`_PixelReducer` for the pixel data element at ``head[at:]`` when the film is
    over READ_PIXELS and is one frame of native 8-bit unsigned or 16-bit grey values (the
    layout every radiograph has); None otherwise (inflated whole, reduced after)."""
    from boneage.imaging.headers import read_factor

    element = head[at:at + 12]
    if len(element) < 12:
        return None
    tag = (int.from_bytes(element[0:2], "little") << 16) | int.from_bytes(element[2:4], "little")
    vr, length = element[4:6], int.from_bytes(element[8:12], "little")
    try:
        rows, columns = int(header.Rows), int(header.Columns)
        bits, stored = int(header.BitsAllocated), int(header.get("BitsStored", header.BitsAllocated))
        signed = int(header.get("PixelRepresentation", 0)) == 1
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
    except Exception:  # noqa: BLE001 - an odd header: the ordinary path words the error
        return None
    factor = read_factor(columns, rows)
    if factor == 1 or tag != 0x7FE00010 or vr not in (b"OB", b"OW") or frames != 1 \
            or samples != 1 or bits not in (8, 16) or (bits == 8 and signed) \
            or length != rows * columns * bits // 8 or not 1 <= stored <= bits \
            or (signed and stored != bits):
        return None
    dtype = np.dtype({(8, False): "<u1", (16, False): "<u2", (16, True): "<i2"}[(bits, signed)])
    mask = (1 << stored) - 1 if stored < bits else None  # unused high bits are not pixel
    return _PixelReducer(at + 12, rows, columns, dtype, factor, mask, name)


def _read(data: bytes, name: str, max_pixels: int, max_side: int):
    """Parse a DICOM file; a deflated data set is inflated by :func:`_inflate` (bounded)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filereader import read_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    def group_2_ends(tag, vr, length) -> bool:
        return tag >> 16 != 2

    buffer = io.BytesIO(data)
    buffer.seek(MAGIC_OFFSET + len(MAGIC))
    try:
        file_meta = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True,
                                 stop_when=group_2_ends)
        deflated = file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - an odd file meta: dcmread below words the error
        # ... unless pydicom might find a deflated data set in it and inflate it unbounded
        if DeflatedExplicitVRLittleEndian.encode() in data[:64 * 1024]:
            raise ImageError(f"{name}: not a readable DICOM file (its file meta information "
                             "is malformed)") from None
        deflated = False
    try:
        if not deflated:
            # The whole file is in memory already; parsing only walks the tags. The pixels
            # are decoded by pixel_array, after the size checks.
            return pydicom.dcmread(io.BytesIO(data))
        start = buffer.tell()
        inflated, reducer = _inflate(
            memoryview(data)[start:], name,
            lambda head: _inflation_bound(head, name, max_pixels, max_side))
        if reducer is None:
            dataset = _without_copying_pixels(inflated)
        else:  # the pixels came reduced: the header, and the reduced pixels as its data
            dataset = _with_reduced_pixels(inflated, reducer)
        out = FileDataset(name, dataset, preamble=data[:MAGIC_OFFSET],
                          file_meta=FileMetaDataset(file_meta), is_implicit_VR=False,
                          is_little_endian=True)
        out.set_original_encoding(False, True, dataset._character_set)
        if reducer is not None:
            out.boneage_reduced_by = reducer.factor  # said in the film's meta
        return out
    except ImageError:
        raise
    except Exception as exc:  # pydicom raises many types on bad files
        raise ImageError(f"{name}: not a readable DICOM file ({exc})") from exc


def read_header(data: bytes, name: str, max_pixels: int, max_side: int):
    """The parsed data set (pydicom), nothing decoded: what a DICOM node needs to answer a
    film it cannot read (its Study, Series and SOP Instance UIDs). A deflated data set is
    inflated only as far as its header allows. :class:`ImageError` when unreadable."""
    if not is_dicom(data):
        raise ImageError(f"{name}: not a DICOM Part 10 file (no 'DICM' after the preamble)")
    return _read(data, name, max_pixels, max_side)
def _with_reduced_pixels(inflated: io.BytesIO, reducer: _PixelReducer):
    """The header in ``inflated`` (everything before the pixel values) with the reducer's
    pixels as its pixel data, Rows and Columns those of the reduced film."""
    from pydicom.dataelem import DataElement
    from pydicom.filereader import read_dataset

    def at_pixels(tag, vr, length) -> bool:
        return tag in _PIXEL_TAGS

    pixels = reducer.finish()
    dataset = read_dataset(inflated, is_implicit_VR=False, is_little_endian=True,
                           stop_when=at_pixels)
    dataset.Rows, dataset.Columns = pixels.shape
    if reducer.mask is not None:  # masked already: what is stored now is all pixel
        dataset.BitsStored = pixels.dtype.itemsize * 8
        dataset.HighBit = pixels.dtype.itemsize * 8 - 1
    dataset.add(DataElement(0x7FE00010, "OW" if pixels.dtype.itemsize == 2 else "OB",
                            pixels.tobytes()))
    return dataset


def _without_copying_pixels(inflated: io.BytesIO):
    """The data set in an inflated buffer, its (native) pixel data a view of that buffer
    rather than a second copy of it; the elements after the pixel data (padding) are left
    out. A layout this does not expect is parsed the ordinary way."""
    import warnings

    from pydicom.dataelem import DataElement
    from pydicom.filereader import read_dataset

    def at_pixels(tag, vr, length) -> bool:
        return tag in _PIXEL_TAGS

    dataset = read_dataset(inflated, is_implicit_VR=False, is_little_endian=True,
                           stop_when=at_pixels)
    position, buffer = inflated.tell(), inflated.getbuffer()
    head = bytes(buffer[position:position + 12])
    tag = (int.from_bytes(head[0:2], "little") << 16) | int.from_bytes(head[2:4], "little")
    vr, length = head[4:6].decode("latin-1"), int.from_bytes(head[8:12], "little")
    if len(head) == 12 and tag in _PIXEL_TAGS and vr in ("OB", "OW", "OF", "OD") \
            and length != 0xFFFFFFFF and position + 12 + length <= len(buffer):
        with warnings.catch_warnings():  # pydicom notes a memoryview value; it reads it
            warnings.simplefilter("ignore")
            dataset.add(DataElement(tag, vr, buffer[position + 12:position + 12 + length]))
        return dataset
    del buffer
    inflated.seek(0)
    return read_dataset(inflated, is_implicit_VR=False, is_little_endian=True)


_JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                 "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
_RLE_SYNTAX = "1.2.840.10008.1.2.5"


def _check_first_frame(dataset, name: str, rows: int, columns: int, frames: int) -> None:
    """The compressed first frame must describe the image the header does.

    A decoder sizes its output from the codestream, not from Rows and Columns: a 16x16 px
    header over a JPEG frame of 20,000 x 20,000 px would pass the header check and then
    decode in full. JPEG and JPEG 2000 frames have their size read from their own header;
    RLE segments are measured (without decoding) against Rows x Columns. Other compressed
    syntaxes are refused: their size cannot be checked before decoding.
    """
    from pydicom.encaps import get_frame

    uid = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        encapsulated = "PixelData" in dataset and uid is not None and uid.is_encapsulated
    except ValueError:  # not a transfer syntax pydicom knows: it cannot decode it either
        encapsulated = False
    if not encapsulated:
        return  # native pixels (deflated included): the header's size is what is read
    syntax = str(uid)
    if syntax not in _JPEG_SYNTAXES | _J2K_SYNTAXES | {_RLE_SYNTAX}:
        raise ImageError(f"{name}: DICOM transfer syntax {getattr(uid, 'name', syntax)} is not "
                         "supported (its frame size cannot be checked before decoding)")
    offsets = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    try:
        frame = get_frame(dataset.PixelData, 0, number_of_frames=frames,
                          extended_offsets=offsets)
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation
        raise ImageError(f"{name}: cannot read the first compressed DICOM frame ({exc})") from exc
    if syntax == _RLE_SYNTAX:
        _check_rle(frame, rows * columns, name)
        return
    if syntax in _JPEG_SYNTAXES:
        from boneage.imaging.headers import jpeg_size

        size = jpeg_size(frame)
    else:
        size = _j2k_size(frame)
    if size is None:
        raise ImageError(f"{name}: the compressed DICOM frame has no readable image header")
    if size != (columns, rows):
        raise ImageError(f"{name}: the compressed DICOM frame is {size[0]}x{size[1]} px but "
                         f"the header says {columns}x{rows} px")


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG 2000 codestream's SIZ segment (Xsiz - XOsiz, ...).

    Some writers wrap the frame in a JP2 file (signature box, then boxes up to the
    contiguous codestream box); the decoder reads the codestream inside, so its SIZ is read.
    """
    if frame[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        start = frame.find(b"jp2c")
        frame = frame[start + 4:] if start >= 0 else b""
    if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 24:
        return None
    xsiz, ysiz, xo, yo = (int.from_bytes(frame[at:at + 4], "big") for at in (8, 12, 16, 20))
    return xsiz - xo, ysiz - yo


def _check_rle(frame: bytes, plane: int, name: str) -> None:
    """Refuse an RLE frame any of whose segments decodes to more than a plane of bytes.

    pydicom decodes each segment in full before comparing its length with Rows x Columns,
    and two bytes can replicate to 128: a few MB of segment would inflate to a hundred times
    that. The run headers are walked (not decoded), stopping as soon as a segment has gone
    past the plane.
    """
    count = int.from_bytes(frame[:4], "little")
    if len(frame) < 64 or not 1 <= count <= 15:
        raise ImageError(f"{name}: the RLE DICOM frame has no valid RLE header")
    offsets = [int.from_bytes(frame[4 + 4 * i:8 + 4 * i], "little") for i in range(count)]
    offsets.append(len(frame))
    limit = plane + 1024  # some writers pad a segment a little
    for index in range(count):
        segment = frame[offsets[index]:offsets[index + 1]]
        position, produced, end = 0, 0, len(segment)
        while position < end and produced <= limit:
            header = segment[position]
            if header < 128:  # copy the next header + 1 bytes
                produced += min(header + 1, end - position - 1)
                position += header + 2
            elif header > 128:  # repeat the next byte 257 - header times
                produced += 257 - header if position + 1 < end else 0
                position += 2
            else:
                position += 1
        if produced > limit:
            raise ImageError(f"{name}: RLE segment {index} of the DICOM frame decodes to more "
                             f"than {limit:,} bytes, more than Rows x Columns needs (a "
                             "decompression bomb?)")


def read_dicom(data: bytes, name: str, max_pixels: int, max_side: int,
               force: bool = False) -> tuple[np.ndarray, dict]:
    """DICOM bytes -> (float32 grey in [0, 1], bone bright; metadata with sex, age and height).

    The header speaks first (:mod:`boneage.imaging.dicom_header`): a Modality that is not a
    projection radiograph, or a BodyPartExamined naming another part than the hand or wrist,
    is a :class:`NotAFilmError` naming the attribute, before any pixel is decoded, unless
    ``force`` (then ``meta["header"]["reasons"]`` says why it should not have been read).
    Sizes are checked from the header before any pixel is decoded (and before a deflated
    data set is inflated past its header); only the first frame is decoded.
    """
    dataset = _read(data, name, max_pixels, max_side)
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData",
                                                  "DoubleFloatPixelData")):
        raise ImageError(f"{name}: DICOM file holds no image (no pixel data); is it a report "
                         "or a structured document rather than a radiograph?")
    header = {**header_summary(dataset), "reasons": header_reasons(dataset)}
    if header["reasons"] and not force:
        raise NotAFilmError(f"{name}: not read: its DICOM header says it is not a hand "
                            "radiograph: " + "; ".join(header["reasons"]) + f"; {FORCE_HINT}",
                            {"accepted": False, "inverted": False, "failed": ["header"],
                             "reasons": header["reasons"], "scores": {}, "forced": False,
                             "header": header})
    rows, columns, frames, _, _ = _geometry(dataset, name, max_pixels, max_side)
    _check_first_frame(dataset, name, rows, columns, frames)
    photometric = _text(dataset, "PhotometricInterpretation").upper() or "MONOCHROME2"
    if photometric.startswith("MONOCHROME"):  # read the numbers before decoding anything
        slope = _number(dataset, "RescaleSlope", name, 1.0) or 1.0
        intercept = _number(dataset, "RescaleIntercept", name, 0.0)
        centre = _number(dataset, "WindowCenter", name)
        width = _number(dataset, "WindowWidth", name)
    try:
        # The first frame only; native pixels as a read-only view of the data set's bytes
        # (no copy: they are reduced or converted below).
        dataset.pixel_array_options(index=0, view_only=True)
        pixels = dataset.pixel_array
    except Exception as exc:  # missing codec, truncated pixel data, bad attributes
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ImageError(f"{name}: cannot read the DICOM pixels ({exc}); transfer syntax "
                         f"{getattr(syntax, 'name', syntax)}") from exc
    factor = getattr(dataset, "boneage_reduced_by", 1)  # reduced as it was inflated
    if pixels.ndim >= 2 and factor == 1:
        from boneage.imaging.headers import read_factor, reduce_by

        # A film over READ_PIXELS is box-averaged in its stored integers, before any float
        # copy exists (the rescale and window are linear, so they commute with the average).
        factor = read_factor(pixels.shape[1], pixels.shape[0])
        if factor > 1:
            pixels = reduce_by(pixels, factor)
    if "PixelData" in dataset:
        del dataset.PixelData  # the bytes the view was of: kept alive by ``pixels`` if needed
    if photometric.startswith("MONOCHROME"):
        grey = _monochrome(pixels, slope, intercept, centre, width, photometric == "MONOCHROME1")
    elif pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]).astype(np.float32),
                            cv2.COLOR_RGB2GRAY)
        low, high = float(grey.min()), float(grey.max())
        grey = (grey - low) / (high - low) if high > low else np.zeros_like(grey)
    else:
        raise ImageError(f"{name}: unsupported DICOM photometric interpretation {photometric}")
    if grey.ndim != 2 or min(grey.shape) < 8:
        raise ImageError(f"{name}: DICOM image has unusable shape {grey.shape}")
    if not np.isfinite(grey).all():
        raise ImageError(f"{name}: DICOM pixels are not finite numbers (NaN or infinite)")
    sex = _text(dataset, "PatientSex").upper()
    meta = {
        "format": "dicom",
        "sex": sex if sex in ("M", "F") else None,
        "age_months": parse_patient_age(_text(dataset, "PatientAge")),
        "patient_size": _text(dataset, "PatientSize") or None,  # metres, as written
        "photometric": photometric,
        "header": header,
    }
    if sex and sex not in ("M", "F"):
        meta["sex_tag"] = sex  # 'O' (other) and the like: said so when sex is needed
    if factor > 1:
        meta["reduced_by"] = factor
    return grey, meta


_BAND_ROWS = 256  # rows converted to float64 at a time: a few MB, whatever the film's size


def _monochrome(pixels: np.ndarray, slope: float, intercept: float, centre: float | None,
                width: float | None, invert: bool) -> np.ndarray:
    """Stored values -> float32 grey in [0, 1]: the modality rescale, the VOI window (else the
    film's own range), and MONOCHROME1's inversion, in float64 a band of rows at a time (the
    same arithmetic as on the whole array, so the same float32 result, without a full-size
    float64 copy)."""
    windowed = centre is not None and width is not None and width >= 1
    if not windowed:
        low = high = None
        for top in range(0, pixels.shape[0], _BAND_ROWS):
            band = pixels[top:top + _BAND_ROWS].astype(np.float64) * slope + intercept
            band_low, band_high = float(band.min()), float(band.max())
            low = band_low if low is None else min(low, band_low)
            high = band_high if high is None else max(high, band_high)
    out = np.empty(pixels.shape, dtype=np.float32)
    for top in range(0, pixels.shape[0], _BAND_ROWS):
        band = pixels[top:top + _BAND_ROWS].astype(np.float64) * slope + intercept
        if windowed:
            # PS3.3 C.11.2.1.2.1, the default LINEAR function, onto [0, 1].
            band = np.clip((band - (centre - 0.5)) / max(width - 1, 1e-6) + 0.5, 0.0, 1.0)
        elif high > low:
            band = (band - low) / (high - low)
        else:
            band = np.zeros_like(band)
        if invert:
            band = 1.0 - band
        out[top:top + _BAND_ROWS] = band
    return out
