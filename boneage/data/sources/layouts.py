"""Layout search: which label CSV, and which image folder, in the shapes the data ships.

The CSV may sit at the top of the source or one folder deeper; the images in the CSV's own
folder or up to two deeper (Kaggle nests ``boneage-training-dataset`` twice). The pair whose
ids match the most images wins, ties broken by name and depth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from boneage.kernel.errors import DataError
from boneage.kernel.artifacts import FILM_SUFFIXES, LABELS_CSV
from boneage.data.sources.archives import Dir, _Entry, _Tree
from boneage.data.sources.labels import _EXPECTED, _Csv, _inspect_csv, _natural_key, _read_ids


def _images_in(tree: _Tree, d: Dir) -> dict[str, _Entry]:
    """``id -> entry`` for the images directly in folder ``d``; two files for one id is an error."""
    out: dict[str, _Entry] = {}
    for name in sorted(tree.dirs.get(d, {})):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in FILM_SUFFIXES or stem.startswith("._"):
            continue
        if stem in out:
            raise DataError(
                f"{tree.where(d)}: two images for id {stem!r}: {out[stem].name} and {name}; "
                "keep one"
            )
        out[stem] = tree.dirs[d][name]
    return out


@dataclass
class _Layout:
    name: str
    labels: _Csv
    images_dir: Dir
    images: dict[str, _Entry]


def _find_layout(tree: _Tree) -> _Layout:
    """Pick the label CSV (top folder or one deeper) and the image folder (the CSV's own,
    or up to two deeper) whose ids match the most images."""
    csvs = sorted(
        (
            e
            for d, files in tree.dirs.items()
            if len(d) <= 1
            for e in files.values()
            if e.name.lower().endswith(".csv")
        ),
        key=lambda e: (len(e.dir), e.rel),
    )
    infos = [_inspect_csv(tree, e) for e in csvs]
    complete = [i for i in infos if i.complete]
    if not complete:
        partial = [i for i in infos if i.spelling is not None]
        if partial:
            i = partial[0]
            raise DataError(
                f"{tree.where(i.entry)} line 1 (header): missing column(s) "
                f"{', '.join(repr(m) for m in i.missing)}; found columns {i.header}; "
                f"expected {_EXPECTED}"
            )
        listed = "; ".join(
            f"{tree.where(i.entry)} {'(empty CSV)' if i.empty else i.header}" for i in infos
        )
        raise DataError(
            f"no label CSV found in {tree.label} (searched its top folder and one level deeper); "
            f"CSVs found: {listed or 'none'}; expected columns {_EXPECTED}"
        )

    images: dict[Dir, dict[str, _Entry]] = {}
    best_key, best = None, None
    for info in complete:
        ids = _read_ids(tree, info)
        base = info.entry.dir
        for d in sorted(tree.dirs):
            depth = len(d) - len(base)
            if d[: len(base)] != base or not 0 <= depth <= 2:
                continue
            if d not in images:
                images[d] = _images_in(tree, d)
            if not images[d]:
                continue
            hits = len(ids & images[d].keys())
            stem = os.path.splitext(info.entry.name)[0].lower()
            key = (
                -hits,
                info.entry.name.lower() != LABELS_CSV,
                len(base),
                stem not in {p.lower() for p in d[len(base) :]},
                depth,
                info.entry.rel,
                d,
            )
            if best_key is None or key < best_key:
                best_key, best = key, (info, d, images[d], hits)
    if best is None or best[3] == 0:
        sample = sorted(_read_ids(tree, complete[0]), key=_natural_key)[:5]
        dirs = [f"{tree.where(d)} (e.g. {sorted(v)[:3]})" for d, v in images.items() if v]
        raise DataError(
            f"no image matches a label id: {tree.where(complete[0].entry)} has ids like {sample}; "
            f"image folders searched: {dirs or 'none with .png/.jpg/.jpeg/.dcm files'}"
        )
    info, d, imgs, _ = best
    name = info.spelling.layout  # type: ignore[union-attr]
    if name == "plain" and info.entry.name.lower().startswith("boneage-"):
        name = "kaggle"
    return _Layout(name, info, d, imgs)
