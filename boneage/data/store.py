"""Packed film store: every prepared film in one ``.npy`` array the trainer memory-maps.

Thousands of small PNGs make DVC slow to hash and the trainer slow to read; one
uint8 array (N x size x size) plus a small index is fast for both. Films are
prepared in parallel and streamed into the memory-mapped array in order, so peak
memory does not grow with the number of films.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from boneage.kernel.artifacts import (
    read_json,
    write_json,
    FETCH_REPORT,
    FILMS_ZIP,
    LABELS_CSV,
    STORE_IMAGES,
    STORE_INDEX,
    STORE_INFO,
)
from boneage.imaging.decoding import read_film
from boneage.kernel.errors import DataError, ImageError
from boneage.imaging.transforms import ImagingSettings, prepare
from boneage.kernel.machine import usable_cores

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("id", "boneage", "male")


@dataclass
class FilmStore:
    """A prepared data set: ``images[row]`` is the film of ``index`` row with that ``row``."""

    images: np.ndarray  # uint8 (N, size, size), memory-mapped
    index: pd.DataFrame  # id, boneage, male, row  (only films that were prepared)
    settings: ImagingSettings
    info: dict

    def select(self, ids) -> pd.DataFrame:
        """Index rows for ``ids`` in that order; unknown ids are an error naming them."""
        by_id = self.index.set_index("id")
        missing = [i for i in ids if i not in by_id.index]
        if missing:
            raise DataError(
                f"{len(missing)} ids are not in the film store (first: {missing[:5]}); "
                "was the split made from another data set? Run `dvc repro` to rebuild."
            )
        return by_id.loc[list(ids)].reset_index()


def open_store(directory: str | Path) -> FilmStore:
    directory = Path(directory)
    for name in (STORE_IMAGES, STORE_INDEX, STORE_INFO):
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: missing; run the preprocess stage first")
    info = read_json(directory / STORE_INFO, "preprocess")
    index = pd.read_csv(directory / STORE_INDEX, dtype={"id": str})
    images = np.load(directory / STORE_IMAGES, mmap_mode="r")
    return FilmStore(images, index, ImagingSettings.from_dict(info["imaging"]), info)


# Worker state: each process opens the archive once.
_SETTINGS: ImagingSettings | None = None
_FILM_CHECK = False


class _MemberReader:
    """Reads members of the fetch stage's ZIP_STORED archive with one ``os.pread`` each.

    ``ZipFile.read`` opens a member object and checks its CRC-32 as it copies: on a
    full-resolution film that is several per cent of its decode, for a check the archive
    does not need here (DVC hashes ``films.zip``; PNG chunks carry their own CRCs, and a
    damaged film fails to decode and is reported). Compressed or encrypted members, and
    systems without ``pread``, take ``ZipFile.read``.
    """

    _LOCAL_HEADER = 30  # fixed part of a ZIP local file header

    def __init__(self, archive_path: str):
        self.archive = zipfile.ZipFile(archive_path)
        self.descriptor = os.open(archive_path, os.O_RDONLY) if hasattr(os, "pread") else None

    def read(self, member: str) -> bytes:
        info = self.archive.getinfo(member)
        if (self.descriptor is None or info.compress_type != zipfile.ZIP_STORED
                or info.flag_bits & 0x1):
            return self.archive.read(member)
        header = os.pread(self.descriptor, self._LOCAL_HEADER, info.header_offset)
        if len(header) < self._LOCAL_HEADER or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{self.archive.filename}: bad local header for {member}")
        start = (info.header_offset + self._LOCAL_HEADER
                 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"))
        data = os.pread(self.descriptor, info.file_size, start)
        if len(data) != info.file_size:
            raise zipfile.BadZipFile(f"{self.archive.filename}: {member} is truncated "
                                     f"({len(data)} of {info.file_size} bytes)")
        return data

    def close(self) -> None:
        self.archive.close()
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


MAX_LISTED = 100  # films named per kind in store.json's film-check report


def _init_worker(archive_path: str, settings: dict, film_check: bool = False) -> None:
    # (cv2.setNumThreads here would deadlock: a forked child cannot resize OpenCV's pool.)
    global _READER, _SETTINGS, _FILM_CHECK
    _READER = _MemberReader(archive_path)
    _SETTINGS = ImagingSettings.from_dict(settings)
    _FILM_CHECK = film_check


def _prepare_member(member: str) -> tuple[np.ndarray | None, str | None, dict | None]:
    """(prepared film, None, film check) or (None, the error, None)."""
    try:
        film = read_film(_READER.read(member), member)  # decoded once: prepared and checked
        prepared = prepare(film, _SETTINGS)  # the one imaging path, as predict and serve
        if not _FILM_CHECK:
            return prepared, None, None
        return prepared, None, _check(film)
    except ImageError as exc:
        return None, str(exc), None
    except (zipfile.BadZipFile, OSError, ValueError, cv2.error) as exc:
        return None, f"{member}: {type(exc).__name__}: {exc}", None


def _check(film) -> dict:
    """The film check's verdict on a decoded film (:func:`boneage.imaging.film_check.check_decoded`,
    as predict and serve judge it): reported, never enforced here."""
    from boneage.imaging.film_check import check_decoded

    check = check_decoded(film)
    return {"accepted": check.accepted, "inverted": check.inverted, "reasons": check.reasons}


def _members_by_id(archive: zipfile.ZipFile) -> dict[str, str]:
    members = {}
    for name in archive.namelist():
        if name.endswith("/"):
            continue
        stem = Path(name).stem
        if stem in members:
            raise DataError(f"{archive.filename}: two images for id {stem!r}: {members[stem]}, {name}")
        members[stem] = name
    return members


def _provenance(raw_dir: Path) -> dict:
    """Source and fingerprint from the fetch report, so the model card can name its data."""
    report_path = raw_dir / FETCH_REPORT
    if not report_path.is_file():
        return {"source": None, "source_fingerprint": None}
    report = read_json(report_path, "fetch")
    return {"source": report.get("source"), "source_fingerprint": report.get("fingerprint")}


def _check_report(checks: list[tuple[str, dict]]) -> dict:
    refused = [{"id": i, "reasons": c["reasons"]} for i, c in checks if not c["accepted"]]
    inverted = [i for i, c in checks if c["inverted"]]
    if refused or inverted:
        log.warning("film check: %d of %d films do not look like hand radiographs, %d look "
                    "inverted (kept; listed in store.json)", len(refused), len(checks),
                    len(inverted))
    return {"n_checked": len(checks), "n_not_hand": len(refused), "n_inverted": len(inverted),
            "not_hand": refused[:MAX_LISTED], "inverted": inverted[:MAX_LISTED]}


def build_store(
    raw_dir: str | Path,
    out_dir: str | Path,
    settings: ImagingSettings,
    *,
    workers: int = 0,
    on_error: str = "skip",
    film_check: bool = False,
) -> dict:
    """Prepare every labelled film of a fetched data set into a packed store.

    ``raw_dir`` holds ``films.zip`` and ``labels.csv`` as the fetch stage writes them.
    Unreadable films are reported by id; with ``on_error='fail'`` the stage fails after
    listing all of them, with ``'skip'`` they are left out of the index.
    With ``film_check`` every film also goes through :func:`boneage.imaging.film_check.check_film`,
    and ``store.json`` reports those that do not look like hand radiographs or look inverted
    (kept all the same: a training set is curated by people, not dropped by a heuristic).
    Returns the summary also written to ``store.json``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    labels_path, archive_path = raw_dir / LABELS_CSV, raw_dir / FILMS_ZIP
    for path in (labels_path, archive_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; run the fetch stage first")
    labels = pd.read_csv(labels_path, dtype={"id": str})
    missing_columns = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing_columns:
        raise DataError(f"{labels_path}: missing column(s) {missing_columns}")
    with zipfile.ZipFile(archive_path) as archive:
        members = _members_by_id(archive)
    absent = [i for i in labels["id"] if i not in members]
    if absent:
        raise DataError(f"{labels_path}: {len(absent)} labelled ids have no image in "
                        f"{archive_path} (first: {absent[:5]})")

    out_dir.mkdir(parents=True, exist_ok=True)
    count, size = len(labels), settings.size
    images = np.lib.format.open_memmap(out_dir / STORE_IMAGES, mode="w+", dtype=np.uint8,
                                       shape=(count, size, size))
    workers = workers or usable_cores()
    ordered = [members[i] for i in labels["id"]]
    failures: list[dict] = []
    checks: list[tuple[str, dict]] = []
    ok = np.zeros(count, dtype=bool)
    log.info("preparing %d films from %s with %d worker(s): %s", count, archive_path, workers,
             settings.to_dict())
    chunk = max(1, min(64, count // (workers * 8) or 1))
    if workers == 1:
        _init_worker(str(archive_path), settings.to_dict(), film_check)
        results = map(_prepare_member, ordered)
        pool = None
    else:
        context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
        # One OpenCV thread per worker: the workers already fill the cores, and OpenCV's own
        # thread pool in each of them only adds hand-offs. Set before forking (the children
        # inherit it) and restored after.
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            pool = context.Pool(workers, initializer=_init_worker,
                                initargs=(str(archive_path), settings.to_dict(), film_check))
        finally:
            cv2.setNumThreads(threads)
        results = pool.imap(_prepare_member, ordered, chunksize=chunk)
    try:
        for row, (film, error, check) in enumerate(tqdm(results, total=count, desc="preprocess",
                                                        unit="film", mininterval=1.0)):
            if check is not None:
                checks.append((labels["id"].iat[row], check))
            if film is None:
                failures.append({"id": labels["id"].iat[row], "error": error})
                log.warning("skipping film %s: %s", labels["id"].iat[row], error)
                continue
            images[row] = film
            ok[row] = True
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        else:
            _READER.close()
    images.flush()
    del images

    if failures and on_error == "fail":
        shown = "\n  ".join(f"{f['id']}: {f['error']}" for f in failures[:10])
        raise DataError(f"{len(failures)} of {count} films could not be read "
                        f"(preprocess.on_error=fail):\n  {shown}")
    if not ok.any():
        raise DataError(f"none of the {count} films in {archive_path} could be read")
    index = labels.loc[ok, list(LABEL_COLUMNS)].copy()
    index["row"] = np.flatnonzero(ok)
    index.to_csv(out_dir / STORE_INDEX, index=False)
    summary = {
        **_provenance(raw_dir),
        "imaging": settings.to_dict(),
        "n_labels": int(count),
        "n_films": int(ok.sum()),
        "n_failed": len(failures),
        "failures": failures,
    }
    if film_check:
        summary["film_check"] = _check_report(checks)
    write_json(out_dir / STORE_INFO, summary)
    log.info("store written to %s: %d films, %d skipped", out_dir, ok.sum(), len(failures))
    return summary
