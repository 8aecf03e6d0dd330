"""Synthetic films: the ``fetch.source: synthetic`` data set, rendered over a process pool.

``phantom.generate`` makes film i from (seed, i) alone, so chunks of indices rendered in
worker processes come out identical to a serial run, and the result is reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from boneage.kernel.config import SyntheticParams
from boneage.kernel.errors import DataError
from boneage.kernel.machine import usable_cores
from boneage.data.sources.filmzip import _FilmsWriter
from boneage.data.sources.labels import MAX_AGE_MONTHS, _Label
from boneage.kernel.artifacts import FILMS_ZIP
from boneage.data.sources.staging import FetchReport, _finish

log = logging.getLogger("boneage.data.sources")  # one logger for the package, as before the split


def _encode_png(image, film_id: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"synthetic film {film_id!r}: PNG encoding failed")
    return buf.tobytes()


def _synth_chunk(args: tuple[int, int, SyntheticParams]) -> list[tuple[str, bytes, float, bool]]:
    """Worker: films ``start..stop-1``."""
    start, stop, sp = args
    from boneage.data import phantom

    films = phantom.generate(
        count=stop - start,
        start=start,
        height=sp.height,
        seed=sp.seed,
        max_age_months=sp.max_age_months,
    )
    return [(f.id, _encode_png(f.image, f.id), float(f.boneage), bool(f.male)) for f in films]


def _synth_stream(sp: SyntheticParams) -> Iterator[tuple[str, bytes, float, bool]]:
    """Encoded films in order, rendered over a process pool.

    ``phantom.generate`` makes film i from (seed, i) alone, so chunks of indices can be
    rendered independently and still come out identical to a serial run.
    """
    from boneage.data import phantom

    workers = min(usable_cores(), 8)
    if workers > 1 and sp.count >= 64:
        import multiprocessing

        step = max(8, min(128, sp.count // (workers * 4)))
        chunks = [(a, min(a + step, sp.count), sp) for a in range(0, sp.count, step)]
        log.info("fetch: rendering %d chunks over %d processes", len(chunks), workers)
        with multiprocessing.Pool(workers) as pool:
            for chunk in pool.imap(_synth_chunk, chunks):
                yield from chunk
        return
    films = phantom.generate(
        sp.count, height=sp.height, seed=sp.seed, max_age_months=sp.max_age_months
    )
    for f in films:
        yield f.id, _encode_png(f.image, f.id), float(f.boneage), bool(f.male)


def _fetch_synthetic(sp: SyntheticParams, staging: Path) -> FetchReport:
    log.info(
        "fetch: generating %d synthetic films (height %d, seed %d)", sp.count, sp.height, sp.seed
    )
    labels: list[_Label] = []
    seen: set[str] = set()
    writer = _FilmsWriter(staging / FILMS_ZIP)
    try:
        for fid, png, age, male in tqdm(
            _synth_stream(sp),
            total=sp.count,
            desc="fetch: synthetic",
            unit="film",
            disable=None,
            leave=False,
        ):
            if fid in seen or not math.isfinite(age) or not 0 <= age <= MAX_AGE_MONTHS:
                raise DataError(
                    f"phantom produced an invalid film: id {fid!r}, boneage {age!r} "
                    "(duplicate id or age out of range)"
                )
            seen.add(fid)
            writer.add_bytes(fid + ".png", png)
            labels.append(_Label(fid, age, int(male)))
    finally:
        writer.close()
    report = FetchReport(
        source="synthetic",
        layout="synthetic",
        n_labels=len(labels),
        n_images=len(labels),
        n_written=len(labels),
    )
    return _finish(staging, report, labels, writer.members)
