"""What a film set yields (a Sample), how its films are encoded, and where the shared films are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
SMALL = SHARED / "rsna-bone-age-100px" / "boneage-training-dataset"
FULLRES = SHARED / "rsna-bone-age-fullres-sample" / "boneage-training-dataset"


@dataclass
class Sample:
    group: str  # positive | inverted | negative
    category: str
    name: str
    data: bytes | None = None  # an encoded file, decoded by read_film
    image: np.ndarray | None = None  # or an already decoded film (the inverted positives)
    dev: bool = False  # used to tune the thresholds


def png(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    assert ok
    return buffer.tobytes()


def jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buffer.tobytes()


def to8(array: np.ndarray) -> np.ndarray:
    """Any grey array scaled to uint8 over its own range."""
    array = np.asarray(array, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, np.uint8)
    return np.round((array - low) / (high - low) * 255).astype(np.uint8)


def enlarge(array: np.ndarray, side: int = 512) -> np.ndarray:
    height, width = array.shape[:2]
    scale = side / max(height, width)
    return cv2.resize(array, (round(width * scale), round(height * scale)),
                      interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
