"""The ``fetch`` stage's library: turn whatever data a user has into one canonical raw form.

Users hold the RSNA bone-age data in many shapes: the Kaggle copy (zipped, often with the
image folder nested twice), the RSNA validation/test CSV spellings, a home-made
``labels.csv`` beside a folder of PNGs, an archive on a web server, or nothing at all (the
synthetic phantom). Every later stage should see exactly one form, so :func:`fetch` writes

``out_dir/films.zip``
    a ZIP_STORED archive of each image's original bytes as ``<id><ext>``. One file instead of
    ~12,000 keeps DVC hashing and caching fast; STORED because PNG/JPEG are already
    compressed. Member timestamps are fixed, so the same input gives byte-identical output
    and DVC does not rerun the downstream stages.
``out_dir/labels.csv``
    ``id,boneage,male`` (months as float, male 1/0), only ids that have an image, sorted
    in natural (numeric-aware) order.
``out_dir/fetch-report.json``
    the :class:`FetchReport`: what was found, what was dropped and why, and a fingerprint.

Archives are read in place, never extracted: the full-resolution Kaggle zip is ~9 GB, and
extracting it first would need that much again on disk and twice the I/O.

Everything the user can get wrong (bad label rows, missing columns, archives that try to
write outside their folder, downloads cut short) ends in a :class:`DataError` that names
the file, the line and the field, because "KeyError: 'boneage'" three stages later costs
an afternoon. Archive members are bounded before they are read (``integrity.MAX_FILM_BYTES``,
``archives.MAX_RATIO``): a 1 MB zip can hold a 1 GiB "film" of zeros.

The package, one module per concern (this file: the public API and the orchestration)::

    staging      the output folder: FetchReport, labels.csv, fingerprint, the swap into place
    archives     folders, zips and tars read in place, with path guards and size/ratio bounds
    integrity    the forward tar reader and the checks that an archive is whole
    labels       the label CSV spellings and the per-row checks
    layouts      which CSV and which image folder, in the layouts Kaggle/RSNA ship
    filmzip      writing films.zip, byte-reproducibly
    synthetic    phantom films rendered over a process pool
    downloads    resumable HTTP download (If-Range sidecar, length, checksums, complete archive)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from boneage.kernel.artifacts import FILMS_ZIP
from boneage.kernel.config import FetchParams
from boneage.kernel.errors import DataError
from boneage.data.sources.archives import (
    _archive_kind,
    _FolderTree,
    _TarTree,
    _Tree,
    _ZipTree,
)
from boneage.data.sources.downloads import download
from boneage.data.sources.filmzip import _FilmsWriter
from boneage.data.sources.labels import MAX_SHOWN, _Label, _natural_key, _read_labels
from boneage.data.sources.layouts import _find_layout, _Layout
from boneage.data.sources.staging import (
    FetchReport,
    _finish,
    _swap_in,
)
from boneage.data.sources.synthetic import _fetch_synthetic

__all__ = [
    "FetchReport",
    "fetch",
    "download",
]

log = logging.getLogger("boneage.data.sources")  # one logger for the package, as before the split


# --------------------------------------------------------------------------------------
# entry point


def fetch(params: FetchParams, out_dir: Path, download_dir: Path | None = None) -> FetchReport:
    """Build the canonical ``films.zip`` + ``labels.csv`` + report in ``out_dir``.

    The output is assembled in a hidden sibling folder and swapped in at the end, so a
    failed fetch leaves the previous ``out_dir`` untouched and a successful one never
    mixes old and new files.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    source = params.source.strip()
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-staging-", dir=parent))
    try:
        if source.lower() == "synthetic":
            report = _fetch_synthetic(params.synthetic, staging)
        else:
            report = _fetch_real(params, source, out_dir, staging, download_dir)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "fetch: wrote %d films (%s layout) to %s in %.1f s; fingerprint %s",
        report.n_written,
        report.layout,
        out_dir,
        time.perf_counter() - started,
        report.fingerprint[:12],
    )
    return report


EXPERIMENT_FOLDERS = (".dvc", "tmp", "exps")  # where DVC puts experiments' temporary copies


def local_source(source: str, cwd: str | Path | None = None) -> Path:
    """A local ``fetch.source`` as a path; a relative one is taken from the stage's folder in
    the user's own repository, however DVC runs the stage.

    ``dvc repro`` and ``dvc exp run`` run in the repository itself. ``dvc exp run --temp``
    (``<repo>/.dvc/tmp/exps/standalone/<tmp>/``) and queued runs (``dvc exp run --queue``,
    ``dvc queue start``: ``<repo>/.dvc/tmp/exps/<tmp>/``) run in a temporary copy that holds
    the tracked files only, where ``../datasets/rsna`` would point into ``.dvc/tmp``; there it is
    resolved against the original repository. A relative path found in the copy itself (a
    tracked folder) is used as it is.
    """
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists():
        return path
    here = Path(cwd or os.getcwd()).resolve()
    copy = _experiment_copy(here)
    if copy is None:
        return path
    repository, workspace = copy
    # normpath: the stage's folder (release/) may exist in the copy only
    original = Path(os.path.normpath(repository / here.relative_to(workspace) / path))
    if not original.exists():
        raise DataError(
            f"fetch.source {source!r}: not found: tried {original} (the "
            f"stage runs in DVC's temporary copy {workspace}, so a relative path is taken "
            f"from the repository {repository}); fix the path or give it as an absolute path")
    log.info("fetch: experiment in a temporary copy; %s resolved against the repository: %s",
             source, original)
    return original


def _experiment_copy(here: Path) -> tuple[Path, Path] | None:
    """``(repository, workspace)`` when ``here`` lies in a temporary experiment copy under
    ``<repository>/.dvc/tmp/exps/``, else None. The workspace is the copy's root: the first
    folder below ``exps`` that holds the copy's own ``.dvc/`` (``<tmp>`` for the queue,
    ``standalone/<tmp>`` for ``--temp``)."""
    parts = here.parts
    starts = [i for i in range(len(parts) - len(EXPERIMENT_FOLDERS))
              if parts[i:i + len(EXPERIMENT_FOLDERS)] == EXPERIMENT_FOLDERS]
    if not starts:
        return None
    first = starts[-1]
    repository = Path(*parts[:first])
    below = first + len(EXPERIMENT_FOLDERS)
    for depth in range(below + 1, len(parts) + 1):
        if (Path(*parts[:depth]) / ".dvc").is_dir():
            return repository, Path(*parts[:depth])
    return repository, Path(*parts[:below + 1])


def _fetch_real(
    params: FetchParams, source: str, out_dir: Path, staging: Path, download_dir: Path | None
) -> FetchReport:
    note = ""
    if re.match(r"^https?://", source, re.IGNORECASE):
        ddir = Path(download_dir) if download_dir is not None else Path("data/downloads")
        _refuse_inside(ddir, out_dir, "download_dir")
        path = download(source, ddir, sha256=params.sha256)
        note = f"; it was downloaded from {source}: delete {path} to download it again"
    else:
        path = local_source(source)
        if not path.exists():
            raise DataError(
                f"fetch.source {source!r}: no such folder or archive: tried "
                f"{os.path.abspath(path)} (expected 'synthetic', a folder, a "
                ".zip/.tar.gz/.tgz/.tar archive or an http(s) URL; a relative path is taken "
                "from the folder of the stage's dvc.yaml)"
            )
        _refuse_inside(path, out_dir, "fetch.source")
    if path.is_dir():
        log.info("fetch: reading folder %s", path)
        tree: _Tree = _FolderTree(path)
    else:
        kind = _archive_kind(path, note)
        log.info("fetch: reading %s archive %s in place", kind, path)
        tree = _ZipTree(path, note) if kind == "zip" else _TarTree(path, note)
    with tree, tree.reading():
        return _fetch_tree(params, source, tree, staging)


def _refuse_inside(path: Path, out_dir: Path, what: str) -> None:
    """fetch replaces ``out_dir`` wholesale; a source or cache inside it would be deleted."""
    p, o = path.resolve(), out_dir.resolve()
    if p == o or o in p.parents:
        raise DataError(
            f"{what} {str(path)!r} lies inside the output folder {str(out_dir)!r}, "
            "which fetch replaces"
        )


# --------------------------------------------------------------------------------------
# a real source: layout, labels, size bounds, films.zip


def _preview(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _fetch_tree(params: FetchParams, source: str, tree: _Tree, staging: Path) -> FetchReport:
    layout = _find_layout(tree)
    info = layout.labels
    log.info(
        "fetch: %s layout: labels %s (columns %s), images in %s (%d files)",
        layout.name,
        tree.where(info.entry),
        ",".join(h.strip() for h in info.header),
        tree.where(layout.images_dir),
        len(layout.images),
    )
    labels, bad = _read_labels(tree, info, params.on_error)
    by_id = {lab.id: lab for lab in labels}
    kept = sorted(
        (lab for lab in labels if lab.id in layout.images), key=lambda lab: _natural_key(lab.id)
    )
    no_image = sorted((i for i in by_id if i not in layout.images), key=_natural_key)
    no_label = sorted(
        (e.name for i, e in layout.images.items() if i not in by_id), key=_natural_key
    )
    log.info(
        "fetch: %d valid label rows, %d skipped, %d images",
        len(labels),
        len(bad),
        len(layout.images),
    )
    if no_image:
        log.warning("fetch: %d label(s) have no image: %s", len(no_image), _preview(no_image))
    if no_label:
        log.warning(
            "fetch: %d image(s) have no usable label: %s", len(no_label), _preview(no_label)
        )
    refused = _refuse_big(tree, layout, kept, params.on_error)
    if refused:
        gone = {r["id"] for r in refused}
        kept = [lab for lab in kept if lab.id not in gone]
    if not kept:
        raise DataError(
            f"nothing left to write: none of the {len(labels)} valid labels in "
            f"{tree.where(info.entry)} ({len(bad)} bad rows skipped) has an image in "
            f"{tree.where(layout.images_dir)}"
        )
    writer = _FilmsWriter(staging / FILMS_ZIP)
    try:
        items = []
        for lab in kept:
            entry = layout.images[lab.id]
            items.append((lab.id + os.path.splitext(entry.name)[1].lower(), entry))
        tree.copy(items, writer)
    finally:
        writer.close()
    report = FetchReport(
        source=source,
        layout=layout.name,
        n_labels=len(labels),
        n_images=len(layout.images),
        n_written=len(kept),
        labels_without_images=no_image,
        images_without_labels=no_label,
        skipped_rows=bad,
        skipped_films=refused,
    )
    return _finish(staging, report, kept, writer.members)


def _refuse_big(tree: _Tree, layout: _Layout, kept: list[_Label], on_error: str) -> list[dict]:
    """The labelled films too big (or too compressible) to be radiographs, judged before any
    is read; raise on 'fail', else return them to be reported and skipped."""
    refused = []
    for lab in kept:
        entry = layout.images[lab.id]
        why = entry.too_big()
        if why:
            refused.append({"file": tree.where(entry), "id": lab.id, "size": entry.size,
                            "packed": entry.packed, "reason": why})
    if not refused:
        return []
    lines = [f"  {r['file']} {r['reason']}" for r in refused]
    more = [f"  ... and {len(refused) - MAX_SHOWN} more"] if len(refused) > MAX_SHOWN else []
    head = f"{len(refused)} film(s) refused unread"
    shown = [*lines[:MAX_SHOWN], *more]
    if on_error == "fail":
        raise DataError("\n".join([head + " (set fetch.on_error: skip to drop them):", *shown]))
    log.warning("\n".join([head + "; skipped (fetch.on_error=skip):", *shown]))
    return refused
