"""A fixed small sample for the film check's tight test (tests/test_film_check_sample.py):
phantom films, films made to sit near a threshold, drawn non-films, and RSNA films where
../shared/datasets is present."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT.parent / "shared" / "datasets" / "rsna-bone-age-100px" / "boneage-training-dataset"


def phantoms() -> list[tuple[str, np.ndarray]]:
    """180 phantom films: 97, 200 and 320 px, ages and sexes spread by seed."""
    from boneage.data.phantom import render_film

    out = []
    for height in (97, 200, 320):
        for seed in range(60):
            age = 6 + (seed * 37) % 220
            film = render_film(float(age), bool(seed % 2), np.random.default_rng(seed), height)
            out.append((f"phantom {height}-{seed}", film))
    return out


def near_thresholds() -> list[tuple[str, np.ndarray]]:
    """One phantom film changed to sit near a threshold: blurred until its hand barely stands
    out of its surroundings; cut to a few grey levels; clipped."""
    from boneage.data.phantom import render_film

    film = render_film(120.0, True, np.random.default_rng(3), 320)
    blurred = np.clip(cv2.GaussianBlur(film.astype(np.float32), (0, 0), 8), 0, 255)
    low, high = float(film.min()), float(film.max())

    def posterised(levels: int) -> np.ndarray:
        step = (high - low) / levels
        index = np.clip(((film - low) / step).astype(int), 0, levels - 1)
        return (low + (index + 0.5) * step).astype(np.uint8)

    def clipped(share: float) -> np.ndarray:
        return np.minimum(film, np.percentile(film, 100 * (1 - share))).astype(np.uint8)

    return [("blurred, low local contrast", blurred.astype(np.uint8)),
            ("posterised to 7 levels", posterised(7)),
            ("posterised to 14 levels", posterised(14)),
            ("posterised to 28 levels", posterised(28)),
            ("clipped, 18% at the top level", clipped(0.18)),
            ("clipped, 30% at the top level", clipped(0.30))]


def spotted_gradients() -> list[tuple[str, np.ndarray]]:
    """A smooth gradient with 5 or 9 round marks: edges on 1.7 % and 2.6 % of the frame, one
    under the "smooth" threshold (2 %) and one over it, both within a factor of 2."""
    height, width = 640, 512
    base = np.tile(np.linspace(40, 200, width, dtype=np.float32), (height, 1))
    rng = np.random.default_rng(0)
    spots = [(int(rng.integers(40, width - 40)), int(rng.integers(40, height - 40)))
             for _ in range(9)]
    out = []
    for count in (5, 9):
        image = base.copy()
        for x, y in spots[:count]:
            cv2.circle(image, (x, y), 9, 255, -1)
        out.append((f"gradient with {count} marks", image.astype(np.uint8)))
    return out


def drawn() -> list[tuple[str, np.ndarray]]:
    """The drawn non-films of bench/film_check.py: blanks, noise, gradients, text, shapes."""
    sys.path.insert(0, str(ROOT / "bench"))
    from film_check_sets import drawn as sets

    from boneage.imaging.decoding import read_film

    out = []
    for make in (sets.blanks, sets.noises, sets.gradients, sets.text_pages, sets.shapes):
        for sample in make():
            out.append((f"{sample.category}: {sample.name}", read_film(sample.data).pixels))
    return out


def rsna(count: int = 200) -> list[tuple[str, np.ndarray]]:
    """The first ``count`` RSNA 100 px films by id; [] where ../shared is absent."""
    from boneage.imaging.decoding import read_film

    if not SMALL.is_dir():
        return []
    paths = sorted(SMALL.glob("*.png"), key=lambda p: int(p.stem))[:count]
    return [(f"rsna {p.stem}", read_film(p.read_bytes()).pixels) for p in paths]
