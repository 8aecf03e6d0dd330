"""The data set: numbered, labelled films, each made from ``(seed, i)`` alone.

:func:`generate` yields :class:`SyntheticFilm` rows (id, image, bone age, sex) like the
RSNA training CSV; ages are whole months, uniform up to a maximum, and sex is 50/50.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from boneage.data.phantom.film import render_film


@dataclass(frozen=True)
class SyntheticFilm:
    """One synthetic film and its labels, like a row of the RSNA training CSV."""

    id: str
    image: np.ndarray
    boneage: float
    male: bool


def _film(i: int, height: int, seed: int, max_age_months: float) -> SyntheticFilm:
    """Film ``i`` of the set ``seed``: age, sex, then the film, all from rng (seed, i)."""
    rng = np.random.default_rng([int(seed), int(i)])
    oldest = max(1, int(round(max_age_months)))  # months
    age = float(rng.integers(1, oldest + 1))
    male = bool(rng.random() < 0.5)
    return SyntheticFilm(f"syn-{i:06d}", render_film(age, male, rng, height), age, male)


def generate(count: int, height: int = 320, seed: int = 0,
             max_age_months: float = 228.0, start: int = 0) -> Iterator[SyntheticFilm]:
    """Yield films ``start .. start+count-1``; film ``i`` depends only on ``(seed, i)``.

    So a prefix of a bigger set equals the smaller set, and slices can be rendered in
    parallel. Ages are whole months, uniform over 1..max_age_months; sex is 50/50.
    """
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got {count}, {start}")
    for i in range(int(start), int(start) + int(count)):
        yield _film(i, height, seed, max_age_months)
