"""Film headers: the format from the magic bytes and the width and height from the header,
read before a single pixel is decoded.

Films come from anyone (``boneage serve`` takes uploads, the DICOM node takes associations), so
no format is decoded unless its header has been read here and its size checked against
:data:`MAX_PIXELS` and :data:`MAX_SIDE`. Used by :mod:`boneage.imaging.decoding` for image
files and by :mod:`boneage.imaging.dicom` for JPEG frames inside a DICOM.

What the size means for reading is here too: a film over :data:`READ_PIXELS` is reduced as
it is read (:func:`read_factor`, :func:`reduce_by`; issue 22), so memory is bounded by the
model, not the film. :mod:`boneage.imaging.decoding` and :mod:`boneage.imaging.dicom` apply
it in their stored dtype (or libjpeg does, for a JPEG) before any float copy is made, and
both the preprocess stage and ``boneage predict`` read through them.
"""

from __future__ import annotations

import re

from boneage.kernel.errors import ImageError

MAX_PIXELS = 100_000_000  # a 10,000 x 10,000 film; bigger is not a hand radiograph


MAX_SIDE = 16_384


FORMATS = "PNG, JPEG, TIFF, BMP, WebP, PNM or DICOM"  # what read_film accepts


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


HEADER_READERS = {"png": _png_size, "jpeg": jpeg_size, "tiff": _tiff_size, "bmp": _bmp_size,
                   "webp": _webp_size, "pnm": _pnm_size}


# ----------------------------------------------------------------------------- reduction

READ_PIXELS = 25_000_000
"""Films with more pixels than this (5,000 x 5,000) are reduced as they are read; every
radiograph in use (RSNA's full resolution: about 2,000 x 2,500; the largest detector plates:
about 4,300 x 4,300) stays under it and is read exactly as before. What is saved is the memory:
a 100 M px 16-bit film is 200 MB as stored, 400 MB as float32, and one such upload must not
cost gigabytes (issue 22)."""

REDUCED_PIXELS = 8_000_000
"""... by the smallest of 2, 4 or 8 that brings them to at most this many pixels (a 100 M px
film: by 4, to 2,500 x 2,500). The model input is at most a few hundred px a side (prepared
from at least twice that) and the heatmap picture is 1,024 px, so nothing downstream loses
detail, and everything after the decode costs a sixteenth."""

READ_FACTORS = (2, 4, 8)  # libjpeg's (and OpenCV's IMREAD_REDUCED_*) scales


def read_factor(width: int, height: int) -> int:
    """The whole factor a ``width x height`` film is reduced by as it is read (1: not at all)."""
    pixels = width * height
    if pixels <= READ_PIXELS:
        return 1
    for factor in READ_FACTORS:
        if pixels <= REDUCED_PIXELS * factor * factor:
            return factor
    return READ_FACTORS[-1]


def reduce_by(image, factor: int):
    """Box average of each ``factor x factor`` block (the edges trimmed by < ``factor`` px), in
    the array's own dtype where OpenCV averages it (uint8, uint16, int16, float32, float64);
    other dtypes (int32, uint32, ...) are averaged as float32, a band of rows at a time, so
    no full-size float copy is made."""
    import cv2
    import numpy as np

    if factor == 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if height < 1 or width < 1:
        return image
    trimmed = image[:height * factor, :width * factor]
    if image.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        return cv2.resize(trimmed, (width, height), interpolation=cv2.INTER_AREA)
    band = max(1, 1024 // factor) * factor
    out = np.empty((height, width) + image.shape[2:], dtype=np.float32)
    for top in range(0, height * factor, band):
        rows = trimmed[top:top + band].astype(np.float32)
        out[top // factor:(top + rows.shape[0]) // factor] = cv2.resize(
            rows, (width, rows.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return out
