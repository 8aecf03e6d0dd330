"""Test-time augmentation: a film read at a few fixed shifts and zooms, the readings averaged.

The evaluate stage, the release assembly and ``boneage predict`` (for a release that uses it)
take the very same transforms, so a TTA figure in a model card is what a user gets.
"""

from __future__ import annotations

import numpy as np

from boneage.learning.recipe import pose_matrix, warp

# Deterministic test-time augmentation: (shift_x, shift_y) as a fraction of the side, zoom.
TTA_TRANSFORMS = ((0.0, 0.0, 1.0), (0.03, 0.0, 1.0), (-0.03, 0.0, 1.0), (0.0, 0.03, 1.0),
                  (0.0, -0.03, 1.0), (0.0, 0.0, 1.06), (0.0, 0.0, 0.94), (0.03, 0.03, 1.0))


def tta_films(films: np.ndarray, index: int) -> np.ndarray:
    """The ``index``-th fixed shift/zoom of prepared uint8 films (index 0 is the films as they are)."""
    shift_x, shift_y, zoom = TTA_TRANSFORMS[index]
    if index == 0:
        return films
    size = films.shape[1]
    matrix = pose_matrix(size, size, scale=zoom, shift=(shift_x * size, shift_y * size))
    return np.stack([warp(film, matrix) for film in films])
