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

Everything the user can get wrong (bad label rows, missing columns, archives that try to
write outside their folder, downloads cut short) ends in a :class:`DataError` that names
the file, the line and the field, because "KeyError: 'boneage'" three stages later costs
an afternoon.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from boneage.config import FetchParams, SyntheticParams
from boneage.errors import DataError

__all__ = [
    "FetchReport",
    "fetch",
    "download",
    "FILMS_NAME",
    "LABELS_NAME",
    "REPORT_NAME",
    "IMAGE_EXTENSIONS",
]

log = logging.getLogger(__name__)

FILMS_NAME = "films.zip"
LABELS_NAME = "labels.csv"
REPORT_NAME = "fetch-report.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAX_AGE_MONTHS = 240.0
MAX_SHOWN = 10  # problems listed in one error message
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: same input, same bytes
_USER_AGENT = "boneage-fetch/1 (python urllib)"
_CHUNK = 1 << 20


@dataclass
class FetchReport:
    """What ``fetch`` found and wrote; saved as ``fetch-report.json`` beside the data.

    Invariants: ``n_labels == n_written + len(labels_without_images)`` (valid label rows
    only; bad rows are in ``skipped_rows``) and ``n_images == n_written +
    len(images_without_labels)`` (an image whose row was skipped counts as without label).
    """

    source: str
    layout: str
    n_labels: int
    n_images: int
    n_written: int
    labels_without_images: list[str] = field(default_factory=list)
    images_without_labels: list[str] = field(default_factory=list)
    skipped_rows: list[dict] = field(default_factory=list)
    fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


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


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``staging`` with two renames (no half-written state visible)."""
    old = None
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
    elif out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
        old.rmdir()
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fetch_real(
    params: FetchParams, source: str, out_dir: Path, staging: Path, download_dir: Path | None
) -> FetchReport:
    if re.match(r"^https?://", source, re.IGNORECASE):
        ddir = Path(download_dir) if download_dir is not None else Path("data/downloads")
        _refuse_inside(ddir, out_dir, "download_dir")
        path = download(source, ddir)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"fetch.source {source!r}: no such folder or archive "
                f"(expected 'synthetic', a folder, a .zip/.tar.gz/.tgz/.tar archive or an http(s) URL)"
            )
        _refuse_inside(path, out_dir, "fetch.source")

    if path.is_dir():
        log.info("fetch: reading folder %s", path)
        return _fetch_tree(params, source, path, staging, lambda p: str(p))

    kind = _archive_kind(path)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-extract-", dir=out_dir.parent))
    try:
        log.info("fetch: extracting %s archive %s", kind, path)
        _extract(path, kind, scratch)
        name = path.name

        def where(p: Path) -> str:
            rel = p.relative_to(scratch).as_posix()
            return name if rel == "." else f"{rel} (in {name})"

        return _fetch_tree(params, source, scratch, staging, where)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _refuse_inside(path: Path, out_dir: Path, what: str) -> None:
    """fetch replaces ``out_dir`` wholesale; a source or cache inside it would be deleted."""
    p, o = path.resolve(), out_dir.resolve()
    if p == o or o in p.parents:
        raise DataError(f"{what} {str(path)!r} lies inside the output folder {str(out_dir)!r}, which fetch replaces")


# --------------------------------------------------------------------------------------
# labels: the CSV spellings in the wild


@dataclass(frozen=True)
class _Spelling:
    layout: str
    id: str
    boneage: str
    sex: str

    @property
    def columns(self) -> tuple[str, str, str]:
        return (self.id, self.boneage, self.sex)


_SPELLINGS = (
    _Spelling("plain", "id", "boneage", "male"),
    _Spelling("rsna-validation", "image id", "bone age (months)", "male"),
    _Spelling("rsna-test", "case id", "ground truth bone age (months)", "sex"),
)
_EXPECTED = "'id,boneage,male' | 'Image ID,male,Bone Age (months)' | 'Case ID,Sex,Ground truth bone age (months)'"

_SEX = {
    "true": 1, "1": 1, "m": 1, "male": 1,
    "false": 0, "0": 0, "f": 0, "female": 0,
}  # fmt: skip


def _norm(header: str) -> str:
    return " ".join(header.strip().lower().split())


@dataclass
class _Csv:
    path: Path
    header: list[str]
    spelling: _Spelling | None = None
    index: dict[str, int] = field(default_factory=dict)  # spelling column -> position
    missing: list[str] = field(default_factory=list)
    empty: bool = False

    @property
    def complete(self) -> bool:
        return self.spelling is not None and not self.missing


def _open_csv(path: Path) -> io.TextIOWrapper:
    return open(path, newline="", encoding="utf-8-sig")


def _inspect_csv(path: Path, where: Callable[[Path], str]) -> _Csv:
    """Read the header and decide which spelling (if any) the file uses."""
    try:
        with _open_csv(path) as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{where(path)}: not UTF-8 text ({exc})") from None
    if not header or not any(h.strip() for h in header):
        return _Csv(path, [], empty=True)
    names = [_norm(h) for h in header]
    best, best_n = None, 0
    for sp in _SPELLINGS:
        n = sum(c in names for c in sp.columns)
        if n > best_n:
            best, best_n = sp, n
    info = _Csv(path, header)
    if best is None or not (best_n >= 2 or best.id in names):
        return info  # some other CSV: not labels
    info.spelling = best
    info.index = {c: names.index(c) for c in best.columns if c in names}
    info.missing = [c for c in best.columns if c not in names]
    return info


def _read_ids(info: _Csv) -> set[str]:
    col = info.index[info.spelling.id]
    with _open_csv(info.path) as f:
        rows = csv.reader(f)
        next(rows, None)
        return {r[col].strip() for r in rows if len(r) > col and r[col].strip()}


@dataclass
class _Label:
    id: str
    boneage: float
    male: int


def _read_labels(
    info: _Csv, where: Callable[[Path], str], on_error: str
) -> tuple[list[_Label], list[dict]]:
    """Validate every row; return the good labels and the bad rows (raise on 'fail')."""
    sp = info.spelling
    assert sp is not None and not info.missing
    name = where(info.path)
    cols = {k: info.index[getattr(sp, k)] for k in ("id", "boneage", "sex")}
    shown = {k: info.header[v].strip() for k, v in cols.items()}  # the file's own spelling
    labels: list[_Label] = []
    bad: list[dict] = []
    first_line: dict[str, int] = {}
    n_rows = 0
    with _open_csv(info.path) as f:
        reader = csv.reader(f)
        next(reader, None)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line, or Excel's trailing ',,'
            n_rows += 1
            line = reader.line_num
            get = lambda k: row[cols[k]].strip() if len(row) > cols[k] else ""  # noqa: E731
            problems: list[tuple[str, str, str]] = []  # (field, value, reason)
            rid, age_s, sex_s = get("id"), get("boneage"), get("sex")
            if not rid:
                problems.append((shown["id"], rid, "is empty"))
            elif rid in first_line:
                problems.append((shown["id"], rid, f"duplicate id (first on line {first_line[rid]})"))
            else:
                first_line[rid] = line
            age = math.nan
            try:
                age = float(age_s)
            except ValueError:
                problems.append((shown["boneage"], age_s, "is not a number"))
            else:
                if not math.isfinite(age) or not 0 <= age <= MAX_AGE_MONTHS:
                    problems.append((shown["boneage"], age_s, f"is outside 0..{MAX_AGE_MONTHS:g} months"))
            male = _SEX.get(sex_s.lower())
            if male is None:
                problems.append(
                    (shown["sex"], sex_s, "is not a sex value (expected True/False, 1/0, M/F or male/female)")
                )
            if problems:
                bad.append(
                    {
                        "file": name,
                        "line": line,
                        "row": n_rows,
                        "id": rid,
                        "field": ", ".join(p[0] for p in problems),
                        "value": problems[0][1],
                        "reason": "; ".join(f"{p[0]} {p[1]!r} {p[2]}" for p in problems),
                    }
                )
            else:
                labels.append(_Label(rid, age, male))
    if n_rows == 0:
        raise DataError(f"{name}: empty CSV, no data rows below the header")
    if bad:
        lines = [f"  {name} line {b['line']} (data row {b['row']}), field {b['field']!r}: {b['reason']}" for b in bad]
        head = f"{name}: {len(bad)} bad label row(s) of {n_rows}"
        more = [f"  ... and {len(bad) - MAX_SHOWN} more"] if len(bad) > MAX_SHOWN else []
        if on_error == "fail":
            raise DataError(
                "\n".join([head + " (set fetch.on_error: skip to drop them):", *lines[:MAX_SHOWN], *more])
            )
        log.warning("\n".join([head + "; skipped (fetch.on_error=skip):", *lines[:MAX_SHOWN], *more]))
    return labels, bad


# --------------------------------------------------------------------------------------
# layouts: which CSV, which image folder


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name != "__MACOSX"


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return sorted(Path(e.path) for e in it if _visible(e) and e.is_dir())
    except OSError:
        return []


def _csvs(root: Path) -> list[Path]:
    """CSV files in the root and one level deeper."""
    found = []
    for d in [root, *_subdirs(root)]:
        with os.scandir(d) as it:
            found += [Path(e.path) for e in it if _visible(e) and e.name.lower().endswith(".csv") and e.is_file()]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _images_in(path: Path, where: Callable[[Path], str]) -> dict[str, Path]:
    """``id -> file`` for the images directly in ``path``; two files for one id is an error."""
    out: dict[str, Path] = {}
    with os.scandir(path) as it:
        for e in it:
            if not _visible(e):
                continue
            stem, ext = os.path.splitext(e.name)
            if ext.lower() not in IMAGE_EXTENSIONS or not e.is_file():
                continue
            if stem in out:
                raise DataError(
                    f"{where(path)}: two images for id {stem!r}: {out[stem].name} and {e.name}; keep one"
                )
            out[stem] = Path(e.path)
    return out


@dataclass
class _Layout:
    name: str
    labels: _Csv
    images_dir: Path
    images: dict[str, Path]


def _find_layout(root: Path, where: Callable[[Path], str]) -> _Layout:
    """Pick the label CSV and image folder whose ids match the most images."""
    infos = [_inspect_csv(p, where) for p in _csvs(root)]
    complete = [i for i in infos if i.complete]
    if not complete:
        partial = [i for i in infos if i.spelling is not None]
        if partial:
            i = partial[0]
            raise DataError(
                f"{where(i.path)} line 1 (header): missing column(s) "
                f"{', '.join(repr(m) for m in i.missing)}; found columns {i.header}; expected {_EXPECTED}"
            )
        listed = ", ".join(f"{where(i.path)}{' (empty CSV)' if i.empty else f' {i.header}'}" for i in infos)
        raise DataError(
            f"no label CSV found in {where(root)} (searched the top folder and one level "
            f"deeper); CSVs found: {listed or 'none'}; expected columns {_EXPECTED}"
        )

    image_dirs: dict[Path, dict[str, Path]] = {}

    def images(d: Path) -> dict[str, Path]:
        if d not in image_dirs:
            image_dirs[d] = _images_in(d, where)
        return image_dirs[d]

    best_key, best = None, None
    for info in complete:
        ids = _read_ids(info)
        base = info.path.parent
        for depth, d in [(0, base)] + [(1, s) for s in _subdirs(base)] + [
            (2, ss) for s in _subdirs(base) for ss in _subdirs(s)
        ]:
            imgs = images(d)
            if not imgs:
                continue
            hits = len(ids & imgs.keys())
            key = (
                -hits,
                info.path.name.lower() != LABELS_NAME,
                len(info.path.relative_to(root).parts),
                info.path.stem.lower() not in {p.lower() for p in d.relative_to(base).parts},
                depth,
                str(info.path),
                str(d),
            )
            if best_key is None or key < best_key:
                best_key, best = key, (info, d, imgs, hits)
    if best is None or best[3] == 0:
        sample_ids = sorted(_read_ids(complete[0]), key=_natural_key)[:5]
        dirs = [f"{where(d)} (e.g. {sorted(v)[:3]})" for d, v in image_dirs.items() if v]
        raise DataError(
            f"no image matches a label id: {where(complete[0].path)} has ids like {sample_ids}; "
            f"image folders searched: {dirs or 'none with .png/.jpg/.jpeg/.dcm files'}"
        )
    info, d, imgs, _ = best
    name = info.spelling.layout
    if name == "plain" and info.path.name.lower().startswith("boneage-"):
        name = "kaggle"
    return _Layout(name, info, d, imgs)


def _natural_key(s: str) -> tuple:
    """'2' < '10', deterministic for any string (raw string breaks ties like '01' vs '1')."""
    parts = re.split(r"(\d+)", s)
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), s)


# --------------------------------------------------------------------------------------
# canonical output


class _FilmsWriter:
    """Streams members into a ZIP_STORED archive with fixed metadata (byte-reproducible)."""

    def __init__(self, path: Path):
        self.path = path
        self.zf = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.members: list[tuple[str, int, int]] = []

    def _info(self, name: str, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        info.file_size = size  # lets zipfile choose ZIP64 for huge members up front
        return info

    def add_file(self, name: str, src: Path) -> None:
        with open(src, "rb") as f:
            info = self._info(name, os.fstat(f.fileno()).st_size)
            with self.zf.open(info, "w") as dst:
                shutil.copyfileobj(f, dst, _CHUNK)
        self.members.append((name, info.file_size, info.CRC))

    def add_bytes(self, name: str, data: bytes) -> None:
        info = self._info(name, len(data))
        with self.zf.open(info, "w") as dst:
            dst.write(data)
        self.members.append((name, info.file_size, info.CRC))

    def close(self) -> None:
        self.zf.close()


def _labels_bytes(labels: Iterable[_Label]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "boneage", "male"])
    for lab in sorted(labels, key=lambda lab: _natural_key(lab.id)):
        w.writerow([lab.id, repr(float(lab.boneage)), int(lab.male)])
    return buf.getvalue().encode("utf-8")


def _fingerprint(labels_csv: bytes, members: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256(labels_csv)
    for name, size, crc in sorted(members):
        h.update(f"{name}\t{size}\t{crc:08x}\n".encode("utf-8"))
    return h.hexdigest()


def _finish(staging: Path, report: FetchReport, labels: list[_Label], members) -> FetchReport:
    data = _labels_bytes(labels)
    (staging / LABELS_NAME).write_bytes(data)
    report.fingerprint = _fingerprint(data, members)
    (staging / REPORT_NAME).write_text(report.to_json(), encoding="utf-8")
    return report


def _preview(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _fetch_tree(
    params: FetchParams, source: str, root: Path, staging: Path, where: Callable[[Path], str]
) -> FetchReport:
    layout = _find_layout(root, where)
    info = layout.labels
    log.info(
        "fetch: %s layout: labels %s (columns %s), images in %s (%d files)",
        layout.name,
        where(info.path),
        ",".join(h.strip() for h in info.header),
        where(layout.images_dir),
        len(layout.images),
    )
    labels, bad = _read_labels(info, where, params.on_error)
    by_id = {lab.id: lab for lab in labels}
    kept = sorted((lab for lab in labels if lab.id in layout.images), key=lambda lab: _natural_key(lab.id))
    no_image = sorted((i for i in by_id if i not in layout.images), key=_natural_key)
    no_label = sorted(
        (layout.images[i].name for i in layout.images if i not in by_id), key=_natural_key
    )
    if no_image:
        log.warning("fetch: %d label(s) have no image: %s", len(no_image), _preview(no_image))
    if no_label:
        log.warning("fetch: %d image(s) have no usable label: %s", len(no_label), _preview(no_label))
    if not kept:
        raise DataError(
            f"nothing left to write: none of the {len(labels)} valid labels in {where(info.path)} "
            f"has an image in {where(layout.images_dir)}"
        )
    writer = _FilmsWriter(staging / FILMS_NAME)
    try:
        for lab in tqdm(kept, desc="fetch: films.zip", unit="film", disable=None, leave=False):
            src = layout.images[lab.id]
            writer.add_file(lab.id + src.suffix.lower(), src)
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
    )
    return _finish(staging, report, kept, writer.members)


# --------------------------------------------------------------------------------------
# synthetic


def _encode_png(image, film_id: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"synthetic film {film_id!r}: PNG encoding failed")
    return buf.tobytes()


def _synth_chunk(args: tuple[int, int, SyntheticParams]) -> list[tuple[str, bytes, float, bool]]:
    """Worker: films ``start..stop-1``; needs ``phantom.generate`` to take ``start``."""
    start, stop, sp = args
    from boneage import phantom

    films = phantom.generate(
        count=stop - start, start=start, height=sp.height, seed=sp.seed, max_age_months=sp.max_age_months
    )
    return [(f.id, _encode_png(f.image, f.id), float(f.boneage), bool(f.male)) for f in films]


def _synth_stream(sp: SyntheticParams) -> Iterator[tuple[str, bytes, float, bool]]:
    """Encoded films in order; over a process pool when the generator can start mid-sequence.

    ``phantom.generate`` makes film i from (seed, i) alone, so chunks of indices can be
    rendered independently; that needs a ``start`` argument, used when present.
    """
    import inspect

    from boneage import phantom

    workers = min(os.cpu_count() or 1, 8)
    can_split = "start" in inspect.signature(phantom.generate).parameters
    if can_split and workers > 1 and sp.count >= 64:
        import multiprocessing

        step = max(8, min(128, sp.count // (workers * 4)))
        chunks = [(a, min(a + step, sp.count), sp) for a in range(0, sp.count, step)]
        with multiprocessing.Pool(workers) as pool:
            for chunk in pool.imap(_synth_chunk, chunks):
                yield from chunk
        return
    films = phantom.generate(sp.count, height=sp.height, seed=sp.seed, max_age_months=sp.max_age_months)
    for f in films:
        yield f.id, _encode_png(f.image, f.id), float(f.boneage), bool(f.male)


def _fetch_synthetic(sp: SyntheticParams, staging: Path) -> FetchReport:
    log.info("fetch: generating %d synthetic films (height %d, seed %d)", sp.count, sp.height, sp.seed)
    labels: list[_Label] = []
    seen: set[str] = set()
    writer = _FilmsWriter(staging / FILMS_NAME)
    try:
        for fid, png, age, male in tqdm(
            _synth_stream(sp), total=sp.count, desc="fetch: synthetic", unit="film", disable=None, leave=False
        ):
            if fid in seen or not math.isfinite(age) or not 0 <= age <= MAX_AGE_MONTHS:
                raise DataError(f"phantom produced an invalid film: id {fid!r}, boneage {age!r} (duplicate or out of range)")
            seen.add(fid)
            writer.add_bytes(fid + ".png", png)
            labels.append(_Label(fid, age, int(male)))
    finally:
        writer.close()
    report = FetchReport(
        source="synthetic", layout="synthetic", n_labels=len(labels), n_images=len(labels), n_written=len(labels)
    )
    return _finish(staging, report, labels, writer.members)


# --------------------------------------------------------------------------------------
# archives


def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES):
        return "tar"
    try:  # a URL without a telling name: sniff
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise DataError(f"{path}: not a folder or a .zip/.tar.gz/.tgz/.tar archive")


_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's path inside the target, or DataError if it could land outside it."""
    n = name.replace("\\", "/")
    if "\x00" in n:
        raise DataError(f"{archive.name}: member {name!r} has a NUL byte in its name; refusing to extract")
    if n.startswith("/") or _DRIVE.match(n):
        raise DataError(f"{archive.name}: member {name!r} has an absolute path; refusing to extract")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive.name}: member {name!r} climbs out of the target folder ('..'); refusing to extract")
    return PurePosixPath(*parts)


def _link_inside(member: PurePosixPath, target: str, relative_to_member: bool) -> bool:
    t = target.replace("\\", "/")
    if t.startswith("/") or _DRIVE.match(t):
        return False
    base = member.parent.parts if relative_to_member else ()
    depth = list(base)
    for p in t.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not depth:
                return False
            depth.pop()
        else:
            depth.append(p)
    return True


def _wanted(rel: PurePosixPath) -> bool:
    """Only label CSVs and images are extracted; macOS resource forks are not."""
    if not rel.parts or "__MACOSX" in rel.parts or rel.name.startswith("._"):
        return False
    return rel.suffix.lower() in (".csv", *IMAGE_EXTENSIONS)


def _extract(archive: Path, kind: str, target: Path) -> None:
    """Check every member, then extract the CSVs and images; DataError on anything unsafe."""
    try:
        if kind == "zip":
            _extract_zip(archive, target)
        else:
            _extract_tar(archive, target)
    except DataError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, NotImplementedError, OSError) as exc:
        raise DataError(f"{archive}: cannot read the archive: {exc}") from None


def _extract_zip(archive: Path, target: Path) -> None:
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        todo = []
        for info in zf.infolist():
            rel = _member_path(info.filename, archive)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                link = zf.read(info).decode("utf-8", "replace")
                if not _link_inside(rel, link, relative_to_member=True):
                    raise DataError(
                        f"{archive.name}: member {info.filename!r} is a symlink to {link!r}, outside the archive; refusing to extract"
                    )
                log.debug("fetch: skipping symlink member %s -> %s", info.filename, link)
                continue
            if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                raise DataError(f"{archive.name}: member {info.filename!r} is a device/special file; refusing to extract")
            if not info.is_dir() and _wanted(rel):
                todo.append((info, rel))
        for info, rel in tqdm(todo, desc="fetch: unzip", unit="file", disable=None, leave=False):
            dest = target.joinpath(*rel.parts)
            if root not in dest.resolve().parents:
                raise DataError(f"{archive.name}: member {info.filename!r} resolves outside the target; refusing")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        todo = []
        for m in tf.getmembers():
            rel = _member_path(m.name, archive)
            if m.issym() or m.islnk():
                if not _link_inside(rel, m.linkname, relative_to_member=m.issym()):
                    kind = "symlink" if m.issym() else "hard link"
                    raise DataError(
                        f"{archive.name}: member {m.name!r} is a {kind} to {m.linkname!r}, outside the archive; refusing to extract"
                    )
            elif m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                raise DataError(f"{archive.name}: member {m.name!r} is a device/special file; refusing to extract")
            elif not (m.isfile() or m.isdir()):
                raise DataError(f"{archive.name}: member {m.name!r} has an unsupported type; refusing to extract")
            if (m.isfile() or m.issym() or m.islnk()) and _wanted(rel):
                todo.append(m)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tf.extractall(target, members=todo, **kwargs)
        except tarfile.FilterError as exc:  # our checks should have caught it first
            raise DataError(f"{archive.name}: unsafe member refused: {exc}") from None


# --------------------------------------------------------------------------------------
# download


def _download_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def download(url: str, download_dir: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``download_dir/<hash of url>/<name>``, resuming a ``.part``.

    The data streams to ``<name>.part`` and is renamed to ``<name>`` only once the byte
    count matches the server's length, so a cut-off download is never mistaken for a
    complete one; the next run resumes it with an HTTP Range request (or restarts when
    the server ignores ranges). The URL hash in the path stops two URLs that end in the
    same file name from sharing a cache entry. A finished file is reused as is: delete it
    to download again.
    """
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    folder = Path(download_dir) / key
    final = folder / _download_name(url)
    if final.is_file():
        log.info("fetch: using the earlier download %s of %s", final, url)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for _ in range(2):  # a second round only after the .part was found unusable
        if _download_once(url, part, timeout):
            os.replace(part, final)
            log.info("fetch: downloaded %s to %s (%d bytes)", url, final, final.stat().st_size)
            return final
    raise DataError(f"download of {url} could not be resumed or restarted")


def _download_once(url: str, part: Path, timeout: float) -> bool:
    """One request; True when ``part`` now holds the whole file, False to start over."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: whole, or stale and longer
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total == have:
                return True
            log.warning("fetch: partial download %s does not fit the server's file; starting over", part)
            part.unlink()
            return False
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"download of {url} failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"download of {url} failed: {exc}") from None

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                log.warning("fetch: server resumed %s at byte %s, not %d; starting over", url, start, have)
                part.unlink()
                return False
            if total is None and length is not None:
                total = have + length
            mode = "ab"
            log.info("fetch: resuming %s at byte %d", url, have)
        else:
            if have:
                log.info("fetch: server does not resume (HTTP %d); downloading %s again", resp.status, url)
            have, total, mode = 0, length, "wb"
        done = have
        try:
            with open(part, mode) as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=f"fetch: {part.stem}", disable=None, leave=False
            ) as bar:
                while True:
                    buf = resp.read(_CHUNK)
                    if not buf:
                        break
                    out.write(buf)
                    done += len(buf)
                    bar.update(len(buf))
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"download of {url} was interrupted after {done} of {total if total is not None else '?'} "
                f"bytes ({exc!r}); {part} is kept and the next run resumes it"
            ) from None
    if total is not None and done != total:
        raise DataError(
            f"download of {url} was interrupted after {done} of {total} bytes; "
            f"{part} is kept and the next run resumes it"
        )
    return True


def _content_range(value: str) -> tuple[int | None, int | None]:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _content_range_total(value: str) -> int | None:
    m = re.match(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)", value)
    return int(m.group(1)) if m else None
