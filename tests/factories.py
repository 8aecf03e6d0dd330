"""Small data made in the tests: raw dirs and stores of generated films (no shared data)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def blob_film(age: float, male: int, rng: np.random.Generator, height: int = 80) -> np.ndarray:
    """A dark film with a bright blob and a number of 'bones' that grows with age (learnable)."""
    width = height * 4 // 5
    film = rng.normal(20, 4, (height, width)).clip(0, 255).astype(np.uint8)
    cv2.ellipse(film, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 90, -1)
    dots = int(age // 30) + 1
    for i in range(dots):
        cv2.circle(film, (width // 4 + (i % 4) * width // 8, height // 3 + (i // 4) * height // 8),
                   max(2, height // 30), 220, -1)
    return film


def write_raw(directory: Path, count: int = 40, seed: int = 0, height: int = 80) -> pd.DataFrame:
    """A raw dir as the fetch stage writes it: films.zip + labels.csv + fetch-report.json."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    with zipfile.ZipFile(directory / "films.zip", "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            age, male = float(rng.integers(1, 229)), int(rng.integers(0, 2))
            ok, png = cv2.imencode(".png", blob_film(age, male, rng, height))
            archive.writestr(f"f{i:04d}.png", png.tobytes())
            rows.append({"id": f"f{i:04d}", "boneage": age, "male": male})
    labels = pd.DataFrame(rows)
    labels.to_csv(directory / "labels.csv", index=False)
    (directory / "fetch-report.json").write_text('{"source": "test", "fingerprint": "test"}')
    return labels


def make_store(tmp_path: Path, count: int = 40, size: int = 32, seed: int = 0):
    """A packed store and train/val/test split in ``tmp_path``; returns (store_dir, split_dir)."""
    from boneage.imaging import ImagingSettings
    from boneage.splits import write_split
    from boneage.store import build_store

    labels = write_raw(tmp_path / "raw", count=count, seed=seed)
    build_store(tmp_path / "raw", tmp_path / "prepared", ImagingSettings(size=size), workers=1)
    write_split(tmp_path / "split", labels, val=0.2, test=0.2, seed=1, band_months=60)
    return tmp_path / "prepared", tmp_path / "split"
