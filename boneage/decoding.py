"""Decoding: film bytes -> the pixels as stored, with sizes checked before anything is decoded.

Readers apart from transforms (:mod:`boneage.imaging` turns a decoded :class:`Film` into
model input). Films come from anyone (``boneage serve`` takes uploads), so no format is
decoded unless its header has been read and its width and height checked first
(:data:`FORMATS`; anything else, GIF or JPEG 2000 say, is refused rather than handed to
OpenCV unchecked). Films are read upright: the EXIF orientation of a JPEG or PNG is applied.
Grey 8/16-bit PNGs (how radiographs are stored) take imagecodecs' faster decoder; DICOM is
read by :mod:`boneage.dicom`.

Every error is an :class:`~boneage.errors.ImageError` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from boneage.errors import ImageError

MAX_PIXELS = 100_000_000  # a 10,000 x 10,000 film; bigger is not a hand radiograph


MAX_SIDE = 16_384


FORMATS = "PNG, JPEG, TIFF, BMP, WebP, PNM or DICOM"  # what read_film accepts


@dataclass
class Film:
    """A decoded film and what its file said about the patient.

    ``pixels``: as stored, upright: uint8/uint16 (H, W) or (H, W, 3|4) for PNG, JPEG and the
    other image formats; float32 (H, W) grey in [0, 1], bone bright, for DICOM (after its
    rescale, VOI window and MONOCHROME1 inversion) and float TIFFs (their range stretched).
    :func:`boneage.imaging.prepare` takes the stored levels as they are (percentiles from
    their histogram), so the preprocess stage and ``boneage predict`` make the same model
    input from the same file.
    ``meta``: DICOM tags (sex, age) or just ``{"format": ...}``.
    """

    pixels: np.ndarray
    meta: dict = field(default_factory=dict)

    @cached_property
    def image(self) -> np.ndarray:
        """The film as float32 grey in [0, 1] (H, W): what the film check and the heatmap
        overlay look at."""
        return self.pixels if self.pixels.dtype == np.float32 else to_grey_float(self.pixels)


def read_film(data: bytes, name: str = "image") -> Film:
    """Decode a film (any of :data:`FORMATS`, 8- or 16-bit, grey or colour) to a :class:`Film`.

    Sizes are checked from the header before the pixels are decoded, so a decompression
    bomb costs nothing. Raises :class:`~boneage.errors.ImageError` naming ``name``.
    """
    from boneage import dicom

    if data and dicom.is_dicom(data):
        image, meta = dicom.read_dicom(data, name, MAX_PIXELS, MAX_SIDE)
        return Film(image, meta)
    pixels = decode_raw(data, name)
    if pixels.dtype in (np.uint8, np.uint16):  # kept as stored; shape and size checked now
        grey_plane(pixels, name)
        if min(pixels.shape[:2]) < 8:
            raise ImageError(f"{name}: image is only {pixels.shape[1]}x{pixels.shape[0]} px")
    else:  # a float or 32-bit TIFF: its own range stretched to [0, 1] once, here
        pixels = to_grey_float(pixels, name)
    return Film(pixels, {"format": sniff(data) or "other"})


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """Decode a film (any of :data:`FORMATS`) to float32 grey in [0, 1]."""
    return read_film(data, name).image


def decode_raw(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes (not DICOM) to the array as stored (uint8/uint16, 1-3 channels),
    upright (EXIF orientation applied) and checked.

    Only formats whose header this module reads are decoded: the size check must hold for
    every format the decoder accepts, or a 20,000 px film in a format we cannot read the
    header of would be decoded in full.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    kind = sniff(data)
    if kind not in _HEADER_READERS:
        raise ImageError(f"{name}: not a readable {FORMATS} image "
                         f"(unrecognised content {data[:8]!r})")
    size = _HEADER_READERS[kind](data)
    if size is None:
        raise ImageError(f"{name}: not a readable {kind.upper()} image (corrupt or truncated?): "
                         "its header gives no width and height")
    width, height = size
    check_size(width, height, name)
    image = _decode_grey_png(data, name) if _is_plain_grey_png(data) else None
    if image is None:
        buffer = np.frombuffer(data, dtype=np.uint8)
        try:
            # Not IMREAD_UNCHANGED (-1, every flag bit): it skips the EXIF orientation, and a
            # film stored sideways must be read upright. ANYDEPTH keeps 16 bits, ANYCOLOR the
            # channels (alpha is dropped: films are grey).
            image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        except cv2.error as exc:  # OpenCV's own size limit (boneage/__init__.py), bad data
            raise ImageError(f"{name}: not a readable {kind.upper()} image ({exc})") from exc
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable {kind.upper()} image "
                         "(corrupt or truncated?)")
    check_size(image.shape[1], image.shape[0], name)  # belt and braces: what was decoded
    return image


def _is_plain_grey_png(data: bytes) -> bool:
    """An 8- or 16-bit greyscale PNG (IHDR bit depth and colour type), how radiographs are
    stored; colour, palette and 1-4 bit films take OpenCV's path, and so do PNGs with an
    eXIf chunk (OpenCV applies its orientation; imagecodecs does not)."""
    return sniff(data) == "png" and len(data) > 25 and data[12:16] == b"IHDR" \
        and data[24] in (8, 16) and data[25] == 0 and not _png_has_exif(data)


def _png_has_exif(data: bytes) -> bool:
    """Whether an eXIf chunk comes before the image data (walks the chunk lengths)."""
    position = 8
    while position + 8 <= len(data):
        kind = data[position + 4:position + 8]
        if kind == b"eXIf":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        position += 12 + int.from_bytes(data[position:position + 4], "big")
    return False


def _decode_grey_png(data: bytes, name: str) -> np.ndarray | None:
    """Decode a grey PNG with imagecodecs (libpng over zlib-ng): the same pixels as
    ``cv2.imdecode`` (a test checks) and faster (bench/README.md); decoding is most of what
    preprocessing a full-resolution film costs. None (OpenCV decodes
    instead, and words the error for a bad file) when imagecodecs fails or gives anything
    but one grey plane. Imported on first use, not at start-up."""
    import imagecodecs

    try:
        image = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - any failure: OpenCV reads the file or reports it
        return None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image if image.ndim == 2 and image.dtype in (np.uint8, np.uint16) else None


def sniff(data: bytes) -> str | None:
    """'png', 'jpeg', 'tiff', 'bmp', 'webp', 'pnm' or 'dicom' from the magic bytes; None for
    anything else (GIF, JPEG 2000, HDR, ...: formats whose header this module does not read)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[128:132] == b"DICM":
        return "dicom"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"
    return None


def check_size(width: int, height: int, name: str = "image") -> None:
    """Refuse films too large to be a hand radiograph (and decompression bombs)."""
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image header gives {width}x{height} px (corrupt?)")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ImageError(
            f"{name}: image is {width}x{height} px; films larger than "
            f"{MAX_SIDE} px a side or {MAX_PIXELS:,} px are refused"
        )


def grey_plane(image: np.ndarray, name: str = "image") -> np.ndarray:
    """One grey plane of a decoded array (1-4 channels), in its own dtype."""
    if image.ndim == 3:
        if image.shape[2] == 1:
            return image[:, :, 0]
        if image.shape[2] in (3, 4):
            return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
        raise ImageError(f"{name}: unsupported channel count {image.shape[2]}")
    if image.ndim != 2:
        raise ImageError(f"{name}: unsupported image shape {image.shape}")
    return image


def to_grey_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded array (uint8/uint16/float, 1-4 channels) to float32 grey in [0, 1]."""
    image = grey_plane(image, name)
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageError(f"{name}: image is only {image.shape[1]}x{image.shape[0]} px")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ImageError(f"{name}: image holds NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


# Frame headers: baseline, extended, progressive, lossless (Huffman and arithmetic) and
# JPEG-LS (0xF7, met inside DICOM). 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header (SOFn); None when there is none.

    Markers are found the way libjpeg finds them (its ``next_marker``): bytes that are not
    0xFF between segments are skipped, as are fill bytes and stuffed zeros. Stopping at the
    first stray byte instead would let a stray byte hide the frame header from the size
    check while the decoder still reads it. A scan (SOS) or the end (EOI) before any frame
    header gives None: the decoder cannot decode that either.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position, end = 2, len(data)
    while True:
        position = data.find(b"\xff", position)
        if position < 0:
            return None
        while position < end and data[position] == 0xFF:
            position += 1
        if position >= end:
            return None
        marker = data[position]
        position += 1
        if marker == 0x00:  # a stuffed zero: not a marker
            continue
        if marker in _JPEG_SOF:
            if position + 7 > end:
                return None
            height = int.from_bytes(data[position + 3:position + 5], "big")
            width = int.from_bytes(data[position + 5:position + 7], "big")
            return width, height
        if marker in (0xD9, 0xDA):  # EOI, SOS
            return None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # SOI, TEM, RSTn: no length
            continue
        position += max(2, int.from_bytes(data[position:position + 2], "big"))


def _png_size(data: bytes) -> tuple[int, int] | None:
    """IHDR must be the first chunk (libpng refuses anything else)."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory, the page OpenCV
    decodes; classic TIFF and BigTIFF. The first of duplicate tags counts, as in libtiff."""
    import struct

    order = "<" if data[:2] == b"II" else ">"
    try:
        if data[2:4] == (b"*\x00" if order == "<" else b"\x00*"):
            (offset,) = struct.unpack_from(order + "I", data, 4)
            count_format, entry_format, entry_size = "H", "HHI4s", 12
        else:  # BigTIFF
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            count_format, entry_format, entry_size = "Q", "HHQ8s", 20
        (count,) = struct.unpack_from(order + count_format, data, offset)
        found: dict[int, int] = {}
        start = offset + struct.calcsize(count_format)
        for index in range(min(count, 4096)):
            tag, kind, values, value = struct.unpack_from(order + entry_format, data,
                                                          start + index * entry_size)
            if tag in (256, 257) and tag not in found:
                if kind not in _TIFF_TYPES or values != 1:
                    return None
                found[tag] = struct.unpack_from(order + _TIFF_TYPES[kind], value)[0]
            if len(found) == 2:
                return found[256], found[257]
    except struct.error:  # the directory runs past the end of the file
        return None
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    """From the DIB header: OS/2 (12 bytes, unsigned 16-bit) or Windows (>= 40, signed 32-bit;
    a negative height means top-down rows)."""
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    if header >= 40:
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return (width, abs(height)) if width >= 0 else None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """From the first chunk: VP8X (the canvas), VP8 (lossy key frame) or VP8L (lossless)."""
    kind, payload = data[12:16], data[20:30]
    if kind == b"VP8X" and len(payload) >= 10:
        return (int.from_bytes(payload[4:7], "little") + 1,
                int.from_bytes(payload[7:10], "little") + 1)
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        return (int.from_bytes(payload[6:8], "little") & 0x3FFF,
                int.from_bytes(payload[8:10], "little") & 0x3FFF)
    if kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """The first two numbers after the magic (P1-P6), skipping white space and # comments."""
    numbers = re.match(rb"P[1-6](?:\s|#[^\n\r]*)+(\d{1,9})(?:\s|#[^\n\r]*)+(\d{1,9})",
                       data[:4096])
    return (int(numbers.group(1)), int(numbers.group(2))) if numbers else None


_HEADER_READERS = {"png": _png_size, "jpeg": jpeg_size, "tiff": _tiff_size, "bmp": _bmp_size,
                   "webp": _webp_size, "pnm": _pnm_size}
