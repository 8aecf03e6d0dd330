"""Hand films: every RSNA 100 px film (ids ending in 0 are "dev"), the full-resolution
sample, and phantom films at 200, 320 and 97 px."""

from __future__ import annotations

from typing import Iterator

from film_check_sets.samples import FULLRES, SMALL, Sample, png


def rsna_small(quick: bool) -> Iterator[Sample]:
    paths = sorted(SMALL.glob("*.png"))
    if quick:
        paths = paths[::10]
    for path in paths:
        yield Sample("positive", "RSNA 100 px", path.stem, path.read_bytes(),
                     dev=path.stem.endswith("0"))


def rsna_fullres() -> Iterator[Sample]:
    for path in sorted(FULLRES.glob("*.png")):
        yield Sample("positive", "RSNA full resolution", path.stem, path.read_bytes())


def phantoms(count: int) -> Iterator[Sample]:
    from boneage.data.phantom import generate

    for height, seed, share in ((200, 0, 0.6), (320, 1, 0.25), (97, 2, 0.15)):
        for film in generate(max(1, round(count * share)), height=height, seed=seed):
            yield Sample("positive", f"phantom {height} px", film.id, png(film.image))
