"""DICOM films: pixels as the radiologist's viewer shows them, plus the patient's sex and age.

Called by :func:`boneage.imaging.read_film` when the bytes carry the DICOM magic, so a DICOM
becomes the same grey float [0, 1] array a PNG does and then goes through the one imaging
path (:func:`boneage.imaging.prepare_array`). What is applied, in DICOM's order (PS3.3
C.11): the modality rescale (RescaleSlope/RescaleIntercept), the first VOI window
(WindowCenter/WindowWidth, linear function), and for MONOCHROME1 (bone dark) an inversion so
bone is bright as in every training film.
"""

from __future__ import annotations

import io
import re

import numpy as np

from boneage.errors import ImageError

MAGIC_OFFSET = 128
MAGIC = b"DICM"


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return data[MAGIC_OFFSET:MAGIC_OFFSET + 4] == MAGIC


def _first(value) -> float:
    """WindowCenter/Width may hold several windows; the first is the default view."""
    if value is None:
        raise TypeError
    try:
        return float(value[0])
    except TypeError:
        return float(value)


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


def read_dicom(data: bytes, name: str, max_pixels: int, max_side: int) -> tuple[np.ndarray, dict]:
    """DICOM bytes -> (float32 grey in [0, 1], bone bright; metadata with sex and age)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # The whole file is in memory already; parsing only walks the tags. The pixels are
        # decoded by pixel_array below, after the size check.
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, Exception) as exc:  # pydicom raises many types on bad files
        raise ImageError(f"{name}: not a readable DICOM file ({exc})") from exc
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if rows is None or columns is None or not any(
            keyword in dataset for keyword in ("PixelData", "FloatPixelData",
                                               "DoubleFloatPixelData")):
        raise ImageError(f"{name}: DICOM file holds no image (no pixel data); is it a report "
                         "or a structured document rather than a radiograph?")
    if int(rows) * int(columns) > max_pixels or max(int(rows), int(columns)) > max_side:
        raise ImageError(f"{name}: DICOM image is {columns}x{rows} px; films larger than "
                         f"{max_side} px a side or {max_pixels:,} px are refused")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # missing codec, truncated pixel data, bad attributes
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ImageError(f"{name}: cannot read the DICOM pixels ({exc}); transfer syntax "
                         f"{getattr(syntax, 'name', syntax)}") from exc
    if pixels.ndim == 3 and int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]  # a multi-frame file: the first frame
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    image = pixels.astype(np.float64)
    if photometric.startswith("MONOCHROME"):
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        intercept = float(dataset.get("RescaleIntercept", 0) or 0)
        image = image * slope + intercept
        try:
            centre, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
        except (TypeError, ValueError, IndexError):
            centre = width = None
        if width is not None and width >= 1:
            # PS3.3 C.11.2.1.2.1, the default LINEAR function, onto [0, 1].
            image = np.clip((image - (centre - 0.5)) / max(width - 1, 1e-6) + 0.5, 0.0, 1.0)
        else:
            low, high = float(image.min()), float(image.max())
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if photometric == "MONOCHROME1":
            image = 1.0 - image
        grey = image.astype(np.float32)
    elif pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        import cv2

        grey = cv2.cvtColor(pixels[..., :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
        low, high = float(grey.min()), float(grey.max())
        grey = (grey - low) / (high - low) if high > low else np.zeros_like(grey)
    else:
        raise ImageError(f"{name}: unsupported DICOM photometric interpretation {photometric}")
    if grey.ndim != 2 or min(grey.shape) < 8:
        raise ImageError(f"{name}: DICOM image has unusable shape {grey.shape}")
    sex = str(dataset.get("PatientSex", "") or "").strip().upper()
    meta = {
        "format": "dicom",
        "sex": sex if sex in ("M", "F") else None,
        "age_months": parse_patient_age(dataset.get("PatientAge")),
        "photometric": photometric,
    }
    return grey, meta

