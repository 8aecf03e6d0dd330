"""DICOM files written by hand, so invalid values go in as they are: a film with a given
PatientSex and RescaleSlope, and a deflated dataset that inflates to 1 GiB."""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

import numpy as np

from hostile_cases.limits import DEFLATED_SIDE, MB

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    return value


def dicom_element(group: int, element: int, vr: str, value: bytes | str | int,
                  length: int | None = None) -> bytes:
    """One explicit-VR little-endian element; ``length`` overrides the value's (for a
    pixel data header whose bytes are streamed after it)."""
    if isinstance(value, int):
        value = struct.pack("<H" if vr == "US" else "<I", value)
    elif isinstance(value, str):
        value = value.encode("ascii")
    value = _pad(value, vr) if length is None else value
    size = len(value) if length is None else length
    head = struct.pack("<HH", group, element) + vr.encode("ascii")
    if vr in _LONG_VRS:
        head += b"\0\0" + struct.pack("<I", size)
    else:
        head += struct.pack("<H", size)
    return head + value


def _file_meta(transfer_syntax: str, instance: str) -> bytes:
    body = b"".join([
        dicom_element(0x0002, 0x0001, "OB", b"\0\1"),
        dicom_element(0x0002, 0x0002, "UI", CR_STORAGE),
        dicom_element(0x0002, 0x0003, "UI", instance),
        dicom_element(0x0002, 0x0010, "UI", transfer_syntax),
        dicom_element(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1451.1"),
    ])
    return (b"\0" * 128 + b"DICM" + dicom_element(0x0002, 0x0000, "UL", len(body)) + body)


def _dataset_head(rows: int, columns: int, sex: str, slope: str, instance: str) -> bytes:
    """Everything of an 8-bit MONOCHROME2 CR dataset up to (not including) the pixel data."""
    return b"".join([
        dicom_element(0x0008, 0x0016, "UI", CR_STORAGE),
        dicom_element(0x0008, 0x0018, "UI", instance),
        dicom_element(0x0008, 0x0060, "CS", "CR"),
        dicom_element(0x0010, 0x0010, "PN", "HOSTILE^CASE"),
        dicom_element(0x0010, 0x0040, "CS", sex),
        dicom_element(0x0028, 0x0002, "US", 1),
        dicom_element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        dicom_element(0x0028, 0x0010, "US", rows),
        dicom_element(0x0028, 0x0011, "US", columns),
        dicom_element(0x0028, 0x0100, "US", 8),
        dicom_element(0x0028, 0x0101, "US", 8),
        dicom_element(0x0028, 0x0102, "US", 7),
        dicom_element(0x0028, 0x0103, "US", 0),
        dicom_element(0x0028, 0x1052, "DS", "0"),
        dicom_element(0x0028, 0x1053, "DS", slope),
    ])


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def dicom_film(path: Path, grey: np.ndarray, *, sex: str = "M", slope: str = "1") -> Path:
    """An uncompressed 8-bit DICOM of ``grey``, with PatientSex and RescaleSlope as given
    (written by hand, so invalid values go in as they are)."""
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    instance = _uid()
    pixels = grey.tobytes()
    path.write_bytes(_file_meta(EXPLICIT_LE, instance)
                     + _dataset_head(grey.shape[0], grey.shape[1], sex, slope, instance)
                     + dicom_element(0x7FE0, 0x0010, "OB", _pad(pixels, "OB")))
    return path


def deflated_dicom(path: Path, side: int = DEFLATED_SIDE) -> Path:
    """A Deflated Explicit VR Little Endian DICOM whose dataset inflates to ``side``**2 bytes
    of zero pixels (1 GiB by default) from about a thousandth of that on disk; streamed, so
    building it needs no memory."""
    instance = _uid()
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as the standard says
    with open(path, "wb") as out:
        out.write(_file_meta(DEFLATED_LE, instance))
        size = side * side + side * side % 2
        out.write(squeeze.compress(_dataset_head(side, side, "M", "1", instance)
                                   + dicom_element(0x7FE0, 0x0010, "OB", b"", length=size)))
        zeros = bytes(min(size, 16 * MB))
        left = size
        while left:
            out.write(squeeze.compress(zeros[:min(left, len(zeros))]))
            left -= min(left, len(zeros))
        out.write(squeeze.flush())
    return path
