"""Crops of the full-resolution films that show no hand, and every negative set by name."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from boneage.imaging.decoding import read_film
from film_check_sets.drawn import blanks, gradients, noises, shapes, text_pages
from film_check_sets.medical import medical
from film_check_sets.photos import colour_photos, grey_photos
from film_check_sets.samples import FULLRES, Sample, enlarge, png


def crops_without_hand() -> Iterator[Sample]:
    for path in sorted(FULLRES.glob("*.png")):
        film = np.round(read_film(path.read_bytes(), path.name).image * 255).astype(np.uint8)
        h, w = film.shape
        parts = {
            "corner": film[: h // 6, : w // 6],
            "forearm": film[int(h * 0.82):, int(w * 0.3):int(w * 0.7)],
        }
        for part, crop in parts.items():
            yield Sample("negative", f"crop without a hand: {part}", f"{path.stem} {part}",
                         png(enlarge(crop, 512)))


NEGATIVES: dict[str, Callable[[], Iterator[Sample]]] = {
    "colour": colour_photos, "grey": grey_photos, "medical": medical, "blank": blanks,
    "noise": noises, "gradient": gradients, "text": text_pages, "shapes": shapes,
    "crops": crops_without_hand,
}
