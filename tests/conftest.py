"""Small shared fixtures: synthetic films made with numpy/cv2 and a raw dir like fetch writes."""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest


def _encode(array: np.ndarray, ext: str = ".png", params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, array, params or [])
    assert ok, f"cv2 could not encode {ext}"
    return buf.tobytes()


def _hand_film(height: int = 200, width: int = 160, *, seed: int = 0, marker: bool = True,
               background: int = 20, hand: int = 170, marker_value: int = 250) -> np.ndarray:
    """A grey uint8 'radiograph': a bright elliptical hand-like blob with some bone texture on
    a dark noisy background, plus (optionally) a bright square marker in the top-right corner,
    well away from the blob."""
    rng = np.random.default_rng(seed)
    img = rng.normal(background, 3, (height, width))
    cy, cx = int(height * 0.58), int(width * 0.42)
    ay, ax = int(height * 0.33), int(width * 0.28)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1.0
    texture = hand + 25 * np.sin(yy / 5.0 + seed) * np.cos(xx / 7.0)
    img[inside] = texture[inside] + rng.normal(0, 3, inside.sum())
    if marker:
        side = max(8, width // 10)
        top, left = int(height * 0.05), width - side - int(width * 0.06)
        img[top:top + side, left:left + side] = marker_value
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture
def encode():
    """``encode(array, ext='.png', params=None) -> bytes`` via cv2.imencode."""
    return _encode


@pytest.fixture
def hand_film():
    """``hand_film(height=200, width=160, *, seed=0, marker=True, ...) -> uint8 array``."""
    return _hand_film


@pytest.fixture
def make_png(tmp_path):
    """``make_png(array, name='film.png') -> Path``: write an array as an image in tmp_path."""

    def make(array: np.ndarray, name: str = "film.png") -> Path:
        path = tmp_path / name
        path.write_bytes(_encode(array, Path(name).suffix or ".png"))
        return path

    return make


@dataclass
class RawDir:
    path: Path
    ids: list[str]
    films: dict[str, bytes] = field(default_factory=dict)
    labels: list[tuple[str, float, int]] = field(default_factory=list)


def _write_raw_dir(path: Path, films: dict[str, bytes], labels: list[tuple[str, float, int]],
                   ext: str = ".png") -> RawDir:
    """``films.zip`` (ZIP_STORED, ``<id>.png``) + ``labels.csv`` (``id,boneage,male``)."""
    path.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path / "films.zip", "w", zipfile.ZIP_STORED) as zf:
        for fid, data in films.items():
            zf.writestr(f"{fid}{ext}", data)
    with open(path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "boneage", "male"])
        for fid, age, male in labels:
            writer.writerow([fid, repr(float(age)), int(male)])
    return RawDir(path, [lab[0] for lab in labels], dict(films), list(labels))


@pytest.fixture
def make_raw_dir(tmp_path):
    """``make_raw_dir(films: {id: bytes}, labels: [(id, months, male)], name='raw') -> RawDir``."""

    def make(films, labels, name: str = "raw") -> RawDir:
        return _write_raw_dir(tmp_path / name, films, labels)

    return make


@pytest.fixture
def tiny_raw_dir(tmp_path) -> RawDir:
    """Ten distinct films (ids with leading zeros, labels not in id order) like fetch writes."""
    ids = [f"{i:04d}" for i in (7, 3, 12, 1, 9, 4, 15, 2, 11, 5)]
    films = {}
    labels = []
    for k, fid in enumerate(ids):
        h, w = (180, 140) if k % 2 else (150, 190)
        films[fid] = _encode(_hand_film(h, w, seed=k, hand=120 + 10 * k))
        labels.append((fid, 12.0 + 19.5 * k, k % 2))
    return _write_raw_dir(tmp_path / "raw", films, labels)
