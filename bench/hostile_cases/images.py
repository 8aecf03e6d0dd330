"""Image files for the cases: headers claiming huge sizes (JPEG, TIFF, BMP, WebP, PGM), a
sideways JPEG with an EXIF rotation, and the reference film they are judged against."""

from __future__ import annotations

import io
import struct

import numpy as np


def encode(image: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise RuntimeError(f"cv2 cannot encode {ext}")
    return buf.tobytes()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length incl. the 2 length bytes) of each header segment up to SOS."""
    out, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        out.append((marker, at, length))
        if marker == 0xDA:
            break
        at += 2 + length
    return out


def jpeg_claiming(width: int, height: int, stray: bytes = b"\x00") -> bytes:
    """A small real JPEG whose SOF says ``width`` x ``height``, with ``stray`` inserted after
    its first segment (a strict marker walker stops there; libjpeg skips it with a warning)."""
    data = bytearray(encode(np.full((64, 64), 128, np.uint8), ".jpg"))
    segments = jpeg_segments(bytes(data))
    for marker, at, _ in segments:
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            break
    else:
        raise RuntimeError("no SOF segment in the JPEG cv2 wrote")
    _, first, length = segments[0]
    end = first + 2 + length
    return bytes(data[:end]) + stray + bytes(data[end:])


def sof_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first SOF0-2 marker found by scanning (stray bytes and all)."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
    return None


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian 8-bit grey TIFF header of ``width`` x ``height`` with 64 bytes of data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + ifd + bytes(64)


def bmp_claiming(width: int, height: int) -> bytes:
    """An 8-bit grey-palette BMP header of ``width`` x ``height`` with 64 bytes of data."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    pixels = bytes(64)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def webp_claiming(width: int = 16383, height: int = 16383) -> bytes:
    """A small lossy WebP whose VP8 frame header says ``width`` x ``height`` (14 bits each)."""
    data = bytearray(encode(np.full((64, 64, 3), 128, np.uint8), ".webp", [64, 80]))
    at = data.find(b"\x9d\x01\x2a")  # the VP8 key frame start code, then width and height
    if data[:4] != b"RIFF" or data[12:16] != b"VP8 " or at < 0:
        raise RuntimeError("cv2 did not write a lossy VP8 WebP")
    data[at + 3:at + 7] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def pgm_claiming(width: int, height: int) -> bytes:
    return f"P5\n{width} {height}\n255\n".encode("ascii") + bytes(64)


def exif_sideways_jpeg(upright: np.ndarray) -> bytes:
    """``upright`` stored turned 90 degrees anticlockwise, with EXIF Orientation 6 ("turn 90
    degrees clockwise to view"): a viewer that honours EXIF shows it upright."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(buf, "JPEG", quality=95,
                                                                   exif=exif.tobytes())
    return buf.getvalue()


def reference_film() -> tuple[np.ndarray, str, bool]:
    """(grey film, where it came from, real?): an RSNA full-resolution sample film when the
    shared folder is there, else a synthetic phantom film."""
    import cv2

    from serving import SAMPLE

    paths = sorted(SAMPLE.glob("*.png")) if SAMPLE.is_dir() else []
    if paths:
        grey = cv2.imdecode(np.frombuffer(paths[0].read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
        return grey, f"{paths[0].name} ({SAMPLE.parent.name})", True
    from boneage.data.phantom import render_film

    film = render_film(120.0, True, np.random.default_rng(0), height=1024)
    return film, "synthetic phantom film (120 months)", False


def shrink(grey: np.ndarray, height: int) -> np.ndarray:
    import cv2

    if grey.shape[0] <= height:
        return grey
    width = round(grey.shape[1] * height / grey.shape[0])
    return cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
