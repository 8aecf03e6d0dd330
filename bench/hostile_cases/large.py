"""Films at the size limit (issue 22): the reference film enlarged to 10,000 x 10,000 px
(MAX_PIXELS, 100 M px) in each format a film may come in, every one under the 20 MB upload
limit, so the whole read path runs (decode, film check, model, heatmap) and its peak memory
is what is measured."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from hostile_cases.dicom import CR_STORAGE, DEFLATED_LE, _file_meta, _uid, dicom_element
from hostile_cases.images import encode

LIMIT_SIDE = 10_000  # 10,000 x 10,000 = MAX_PIXELS


def enlarged(grey: np.ndarray, side: int = LIMIT_SIDE) -> np.ndarray:
    """``grey`` enlarged to ``side`` x ``side`` (nearest neighbour: it compresses like the
    original, so the file stays under the upload limit)."""
    import cv2

    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_NEAREST)


def png8(grey: np.ndarray) -> bytes:
    return encode(enlarged(grey), ".png")


def png16(grey: np.ndarray) -> bytes:
    return encode(enlarged(grey).astype(np.uint16) * 257, ".png")


def jpeg(grey: np.ndarray) -> bytes:
    import cv2

    return encode(enlarged(grey), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])


def float_tiff(grey: np.ndarray) -> bytes:
    """A deflate-compressed float32 TIFF (grey levels in [0, 1])."""
    import cv2

    return encode(enlarged(grey).astype(np.float32) / np.float32(255.0), ".tiff",
                  [cv2.IMWRITE_TIFF_COMPRESSION, 8])


def deflated_dicom16(path: Path, grey: np.ndarray, sex: str = "M") -> Path:
    """A Deflated Explicit VR Little Endian 16-bit MONOCHROME2 DICOM of ``grey`` enlarged:
    200 MB of pixels once inflated, about 10 MB on disk."""
    pixels = enlarged(grey).astype(np.uint16) * 257
    rows, columns = pixels.shape
    instance = _uid()
    head = b"".join([
        dicom_element(0x0008, 0x0016, "UI", CR_STORAGE),
        dicom_element(0x0008, 0x0018, "UI", instance),
        dicom_element(0x0008, 0x0060, "CS", "CR"),
        dicom_element(0x0010, 0x0010, "PN", "HOSTILE^LARGE"),
        dicom_element(0x0010, 0x0040, "CS", sex),
        dicom_element(0x0028, 0x0002, "US", 1),
        dicom_element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        dicom_element(0x0028, 0x0010, "US", rows),
        dicom_element(0x0028, 0x0011, "US", columns),
        dicom_element(0x0028, 0x0100, "US", 16),
        dicom_element(0x0028, 0x0101, "US", 16),
        dicom_element(0x0028, 0x0102, "US", 15),
        dicom_element(0x0028, 0x0103, "US", 0),
        dicom_element(0x7FE0, 0x0010, "OW", b"", length=rows * columns * 2),
    ])
    squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
    with open(path, "wb") as out:
        out.write(_file_meta(DEFLATED_LE, instance))
        out.write(squeeze.compress(head))
        for top in range(0, rows, 500):
            out.write(squeeze.compress(pixels[top:top + 500].tobytes()))
        out.write(squeeze.flush())
    return path
