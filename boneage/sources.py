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
an afternoon. Archive members are bounded before they are read (:data:`MAX_FILM_BYTES`,
:data:`MAX_RATIO`): a 1 MB zip can hold a 1 GiB "film" of zeros.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import hashlib
import http.client
import io
import json
import logging
import lzma
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
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

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
_FOLDER_DEPTH = 3  # label CSV at most 1 below the root, images at most 2 below the CSV
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: same input, same bytes
_USER_AGENT = "boneage-fetch/1 (python urllib)"
_CHUNK = 1 << 20
# Bounds on one archive member, checked on the declared sizes before it is read and again
# on the bytes while it is copied. The largest RSNA film is ~10 MB and an uncompressed
# 16-bit DICOM of a 4k x 4k detector ~35 MB, so 256 MB leaves room for any radiograph.
MAX_FILM_BYTES = 256 << 20
MAX_RATIO = 100  # expanded:packed; PNG/JPEG barely compress, DICOM ~2-4:1, zeros ~1000:1
RATIO_FROM_BYTES = 4 << 20  # members smaller than this are not ratio-checked
MAX_CSV_BYTES = 64 << 20  # a label CSV; the RSNA training one is 200 kB


@dataclass
class FetchReport:
    """What ``fetch`` found and wrote; saved as ``fetch-report.json`` beside the data.

    Invariants: ``n_labels == n_written + len(labels_without_images) + len(skipped_films)``
    (valid label rows only; bad rows are in ``skipped_rows``) and ``n_images == n_written +
    len(images_without_labels) + len(skipped_films)`` (an image whose row was skipped counts
    as without label; ``skipped_films`` are labelled images refused for their size).
    """

    source: str
    layout: str
    n_labels: int
    n_images: int
    n_written: int
    labels_without_images: list[str] = field(default_factory=list)
    images_without_labels: list[str] = field(default_factory=list)
    skipped_rows: list[dict] = field(default_factory=list)
    skipped_films: list[dict] = field(default_factory=list)
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it 0700; a plain mkdir would not
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


def local_source(source: str, cwd: str | Path | None = None) -> Path:
    """A local ``fetch.source`` as a path, relative ones taken from the repository root.

    ``dvc exp run --queue`` / ``dvc queue start`` run each experiment in a temporary copy of
    the repository (``<repo>/.dvc/tmp/exps/<tmp>/``) that holds only tracked files, so a
    relative path such as ``../datasets/rsna`` would point into ``.dvc/tmp``; there it is
    resolved against the original repository instead.
    """
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists():
        return path
    here = Path(cwd or os.getcwd()).resolve()
    for workspace in (here, *here.parents):
        exps = workspace.parent
        if exps.name == "exps" and exps.parent.name == "tmp" and exps.parent.parent.name == ".dvc":
            original = exps.parent.parent.parent / here.relative_to(workspace) / path
            if not original.exists():
                raise DataError(
                    f"fetch.source {source!r}: not found next to the repository "
                    f"({original}); queued experiments run in a temporary copy, so give "
                    "fetch.source as an absolute path")
            log.info("fetch: queued experiment; %s resolved against the repository: %s",
                     source, original)
            return original
    return path


def _fetch_real(
    params: FetchParams, source: str, out_dir: Path, staging: Path, download_dir: Path | None
) -> FetchReport:
    note = ""
    if re.match(r"^https?://", source, re.IGNORECASE):
        ddir = Path(download_dir) if download_dir is not None else Path("data/downloads")
        _refuse_inside(ddir, out_dir, "download_dir")
        path = download(source, ddir)
        note = f"; it was downloaded from {source}: delete {path} to download it again"
    else:
        path = local_source(source)
        if not path.exists():
            raise DataError(
                f"fetch.source {source!r}: no such folder or archive "
                "(expected 'synthetic', a folder, a .zip/.tar.gz/.tgz/.tar archive "
                "or an http(s) URL)"
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
# sources as trees of CSVs and images, readable without extracting

Dir = tuple[str, ...]  # folder inside the source, () is its top


@dataclass
class _Entry:
    dir: Dir
    name: str
    size: int
    ref: object  # Path (folder), ZipInfo (zip) or member offset (tar)
    packed: int | None = None  # bytes in the archive, where compressed

    def too_big(self) -> str | None:
        """Why this member may not be copied (None if it may), judged on the sizes that the
        source declares, before a byte of it is read."""
        if self.size > MAX_FILM_BYTES:
            return f"is {self.size:,} bytes, over the {MAX_FILM_BYTES:,}-byte limit for one film"
        if self.packed is not None and self.size > RATIO_FROM_BYTES:
            ratio = self.size / max(self.packed, 1)
            if ratio > MAX_RATIO:
                return (f"expands {ratio:,.0f}:1 ({self.packed:,} -> {self.size:,} bytes), "
                        f"over the {MAX_RATIO}:1 limit (a decompression bomb, not a radiograph)")
        return None

    @property
    def rel(self) -> str:
        return "/".join((*self.dir, self.name))


def _wanted_name(name: str) -> bool:
    """Label CSVs and images only; hidden files and macOS resource forks (``._x.png``) are not."""
    return not name.startswith(".") and name.lower().endswith((".csv", *IMAGE_EXTENSIONS))


def _wanted_dir(part: str) -> bool:
    return not part.startswith(".") and part != "__MACOSX"


class _Tree:
    """The files of one source that matter (CSVs and images), grouped by folder."""

    label: str

    def __init__(self) -> None:
        self.dirs: dict[Dir, dict[str, _Entry]] = {}

    def _add(self, entry: _Entry) -> bool:
        """Keep ``entry`` if it matters; a CSV too big to be labels is passed over."""
        if not (all(_wanted_dir(p) for p in entry.dir) and _wanted_name(entry.name)):
            return False
        if entry.name.lower().endswith(".csv") and entry.size > MAX_CSV_BYTES:
            log.warning("fetch: ignoring %s: %d bytes is too big for a label CSV (limit %d)",
                        self.where(entry), entry.size, MAX_CSV_BYTES)
            return False
        self.dirs.setdefault(entry.dir, {})[entry.name] = entry
        return True

    def where(self, item: Dir | _Entry) -> str:
        """How to name a file or folder of this source in a message."""
        raise NotImplementedError

    def open_bytes(self, entry: _Entry) -> IO[bytes]:
        raise NotImplementedError

    def open_text(self, entry: _Entry) -> IO[str]:
        return io.TextIOWrapper(self.open_bytes(entry), encoding="utf-8-sig", newline="")

    def copy(self, items: list[tuple[str, _Entry]], writer: _FilmsWriter) -> None:
        """Stream each entry into ``writer`` under its new name."""
        for name, entry in tqdm(
            items, desc="fetch: films.zip", unit="film", disable=None, leave=False
        ):
            with self.open_bytes(entry) as src:
                writer.add_stream(name, src, entry.size)

    def reading(self) -> contextlib.AbstractContextManager:
        """Turns errors from reading a damaged source into a DataError naming it."""
        return contextlib.nullcontext()

    def __enter__(self) -> _Tree:
        return self

    def __exit__(self, *exc) -> None:
        pass


class _FolderTree(_Tree):
    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.label = str(root)
        self._walk(root, ())

    def _walk(self, path: Path, d: Dir) -> None:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{path}: cannot list the folder: {exc}") from None
        for e in entries:
            if e.is_dir():
                if len(d) < _FOLDER_DEPTH and _wanted_dir(e.name):
                    self._walk(Path(e.path), (*d, e.name))
            elif _wanted_name(e.name) and e.is_file():
                self._add(_Entry(d, e.name, e.stat().st_size, Path(e.path)))

    def where(self, item: Dir | _Entry) -> str:
        rel = item.rel if isinstance(item, _Entry) else "/".join(item)
        return str(self.root / rel) if rel else str(self.root)

    def open_bytes(self, entry: _Entry) -> IO[bytes]:
        return open(entry.ref, "rb")  # type: ignore[arg-type]

    def copy(self, items: list[tuple[str, _Entry]], writer: _FilmsWriter) -> None:
        for name, entry in tqdm(
            items, desc="fetch: films.zip", unit="film", disable=None, leave=False
        ):
            writer.add_file(name, entry.ref)  # type: ignore[arg-type]


class _ArchiveTree(_Tree):
    def __init__(self, path: Path, note: str = ""):
        super().__init__()
        self.path = path
        self.label = path.name
        self.note = note  # appended to "cannot read": what to do about a cached download

    def where(self, item: Dir | _Entry) -> str:
        rel = item.rel if isinstance(item, _Entry) else "/".join(item)
        return f"{rel} (in {self.path.name})" if rel else self.path.name

    def _member(self, name: str) -> PurePosixPath:
        """The member's path inside the target, or DataError if it could land outside it."""
        n = name.replace("\\", "/")
        if "\x00" in n:
            raise self._refuse(name, "has a NUL byte in its name")
        if n.startswith("/") or _DRIVE.match(n):
            raise self._refuse(name, "has an absolute path")
        parts = [p for p in n.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._refuse(name, "climbs out of the archive's folder ('..')")
        return PurePosixPath(*parts)

    def _refuse(self, name: str, why: str) -> DataError:
        return DataError(
            f"{self.path.name}: member {name!r} {why}; refusing to extract this archive"
        )

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        try:
            yield
        except _ARCHIVE_ERRORS as exc:
            raise DataError(
                f"{self.path}: cannot read the archive ({type(exc).__name__}: {exc}){self.note}"
            ) from None
        except OSError as exc:
            if exc.errno is not None:  # a real I/O error (disk full, ...), not bad data
                raise
            raise DataError(
                f"{self.path}: cannot read the archive ({type(exc).__name__}: {exc}){self.note}"
            ) from None
        except _CutShort as exc:
            raise DataError(f"{self.path}: {exc}{self.note}") from None


_DRIVE = re.compile(r"^[A-Za-z]:")
# what damaged archives raise (plus OSError without errno, e.g. gzip.BadGzipFile)
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    RuntimeError,  # an encrypted zip member
    NotImplementedError,  # an unsupported zip compression
)


def _link_inside(member: PurePosixPath, target: str, relative_to_member: bool) -> bool:
    t = target.replace("\\", "/")
    if t.startswith("/") or _DRIVE.match(t):
        return False
    depth = list(member.parent.parts) if relative_to_member else []
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


class _ZipTree(_ArchiveTree):
    """A zip read by random access; every member is checked before anything is used."""

    def __init__(self, path: Path, note: str = ""):
        super().__init__(path, note)
        try:
            with self.reading():
                self.zf = zipfile.ZipFile(path)
                self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        for info in self.zf.infolist():
            rel = self._member(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                link = self.zf.read(info).decode("utf-8", "replace")
                if not _link_inside(rel, link, relative_to_member=True):
                    raise self._refuse(
                        info.filename, f"is a symlink to {link!r}, outside the archive"
                    )
                log.debug("fetch: ignoring symlink member %s -> %s", info.filename, link)
                continue
            if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                raise self._refuse(info.filename, "is a device or special file")
            if info.is_dir() or not rel.parts:
                continue
            # zipfile yields at most file_size bytes from at most compress_size, so the
            # declared sizes checked by too_big() also bound what a copy can produce
            packed = info.compress_size if info.compress_type != zipfile.ZIP_STORED else None
            self._add(_Entry(rel.parent.parts, rel.name, info.file_size, info, packed))

    def open_bytes(self, entry: _Entry) -> IO[bytes]:
        return self.zf.open(entry.ref)  # type: ignore[arg-type]

    def close(self) -> None:
        zf = getattr(self, "zf", None)
        if zf is not None:
            zf.close()

    def __exit__(self, *exc) -> None:
        self.close()


class _TarTree(_ArchiveTree):
    """A tar (maybe compressed) read forward, twice: once to check every member, that the
    archive is whole, and keep the small CSVs; once to copy the chosen images. Random access
    into a .tar.gz restarts decompression at every backward seek, so it is never used."""

    def __init__(self, path: Path, note: str = ""):
        super().__init__(path, note)
        self.csv_data: dict[int, bytes] = {}
        with self.reading(), _TarReader(path) as reader:
            last: tuple[_Entry, int] | None = None
            for m in reader.tf:
                if last is not None and reader.packed is not None:
                    last[0].packed = reader.packed - last[1]  # compressed bytes up to here
                    last = None
                rel = self._check(m)
                if not (m.isfile() and rel.parts):
                    continue
                entry = _Entry(rel.parent.parts, rel.name, m.size, m.offset)
                if self._add(entry):
                    last = (entry, reader.packed or 0)
                    if rel.suffix.lower() == ".csv" and len(rel.parts) <= 2:
                        data = reader.tf.extractfile(m).read()  # type: ignore[union-attr]
                        self.csv_data[m.offset] = data
            if last is not None and reader.packed is not None:
                last[0].packed = reader.packed - last[1]
            reader.check_end()

    def _check(self, m: tarfile.TarInfo) -> PurePosixPath:
        """Refuse anything that could land outside the target; return the member's path."""
        rel = self._member(m.name)
        if m.issym() or m.islnk():
            if not _link_inside(rel, m.linkname, relative_to_member=m.issym()):
                kind = "symlink" if m.issym() else "hard link"
                raise self._refuse(m.name, f"is a {kind} to {m.linkname!r}, outside the archive")
            log.debug("fetch: ignoring link member %s -> %s", m.name, m.linkname)
        elif m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            raise self._refuse(m.name, "is a device or special file")
        elif not (m.isfile() or m.isdir()):
            raise self._refuse(m.name, "has an unsupported member type")
        if hasattr(tarfile, "data_filter"):  # the stdlib's own rules, as a second opinion
            try:
                tarfile.data_filter(m, str(self.path.parent / f".{self.path.name}-members"))
            except tarfile.FilterError as exc:
                raise self._refuse(m.name, f"is unsafe ({exc})") from None
        return rel

    def open_bytes(self, entry: _Entry) -> IO[bytes]:
        return io.BytesIO(self.csv_data[entry.ref])  # type: ignore[index]

    def copy(self, items, writer) -> None:
        todo = {entry.ref: (name, entry) for name, entry in items}
        bar = tqdm(total=len(todo), desc="fetch: films.zip", unit="film", disable=None, leave=False)
        with bar, tarfile.open(self.path, "r|*") as tf:
            for m in tf:
                if m.offset in todo:
                    name, entry = todo.pop(m.offset)
                    writer.add_stream(name, tf.extractfile(m), entry.size)  # type: ignore[arg-type]
                    bar.update()
                    if not todo:
                        break
        if todo:
            raise DataError(
                f"{self.path}: changed while being read ({len(todo)} members not found again)"
            )


class _CutShort(Exception):
    """An archive that reads cleanly but stops before its end: a copy or download cut short."""


class _Counting:
    """A read-only file that counts the bytes read from it (the compressed side of a tar)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.count = f, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.count += len(data)
        return data

    def close(self) -> None:
        self.f.close()


class _LastRead:
    """Keeps the last block read, which after tarfile's member loop is the one it stopped at."""

    def __init__(self, f: IO[bytes]):
        self.f, self.last = f, b""

    def read(self, size: int = -1) -> bytes:
        self.last = self.f.read(size)
        return self.last

    def seek(self, *args: int) -> int:
        return self.f.seek(*args)

    def tell(self) -> int:
        return self.f.tell()


_COMPRESSED = (
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", lambda f: bz2.BZ2File(f, "rb")),
    (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb")),
)


class _TarReader:
    """A tar (plain, gzip, bzip2 or xz) read forward once, header by header, in ``tf``.

    tarfile ends its member loop quietly at a missing or broken header, so a tar cut between
    two members reads as a shorter, valid one; :meth:`check_end` insists on the end-of-archive
    marker (two zero blocks) and on the compressed stream's own end (gzip keeps a CRC and
    length there). A plain tar's member data is seeked over, not read. ``packed`` counts the
    compressed bytes read so far (None for a plain tar), to within the decompressor's read
    size (128 kB for gzip).
    """

    def __init__(self, path: Path):
        self.raw = open(path, "rb")
        try:
            magic = self.raw.read(6)
            self.raw.seek(0)
            self.counted: _Counting | None = None
            stream: IO[bytes] = self.raw
            for prefix, opener in _COMPRESSED:
                if magic.startswith(prefix):
                    self.counted = _Counting(self.raw)
                    stream = opener(self.counted)
                    break
            self.stream = _LastRead(stream)
            self.tf = tarfile.open(fileobj=self.stream, mode="r:")  # type: ignore[arg-type]
        except BaseException:
            self.raw.close()
            raise

    @property
    def packed(self) -> int | None:
        return self.counted.count if self.counted is not None else None

    def check_end(self) -> None:
        """Call after the member loop: raise :class:`_CutShort` unless the archive is whole."""
        end = self.tf.offset  # where the loop stopped, past the last member's data
        zeros = tarfile.NUL * tarfile.BLOCKSIZE
        if self.stream.last != zeros or self.stream.read(tarfile.BLOCKSIZE) != zeros:
            raise _CutShort(
                f"the tar stops at byte {end:,} (uncompressed) without its end-of-archive "
                "marker, so it was cut short (a download or copy that stopped between members?)"
            )
        while self.stream.read(_CHUNK):  # a compressed stream checks its own end here
            pass

    def __enter__(self) -> _TarReader:
        return self

    def __exit__(self, *exc) -> None:
        self.raw.close()


def _archive_kind(path: Path, note: str = "") -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    try:  # a download without a telling name: sniff
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise DataError(f"{path}: not a folder or a .zip/.tar.gz/.tgz/.tar archive{note}")


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
_EXPECTED = (
    "'id,boneage,male' | 'Image ID,male,Bone Age (months)' | "
    "'Case ID,Sex,Ground truth bone age (months)'"
)

_SEX = {
    "true": 1, "1": 1, "m": 1, "male": 1,
    "false": 0, "0": 0, "f": 0, "female": 0,
}  # fmt: skip


def _norm(header: str) -> str:
    return " ".join(header.strip().lower().split())


@dataclass
class _Csv:
    entry: _Entry
    header: list[str]
    spelling: _Spelling | None = None
    index: dict[str, int] = field(default_factory=dict)  # spelling column -> position
    missing: list[str] = field(default_factory=list)
    empty: bool = False

    @property
    def complete(self) -> bool:
        return self.spelling is not None and not self.missing


def _inspect_csv(tree: _Tree, entry: _Entry) -> _Csv:
    """Read the header and decide which spelling (if any) the file uses."""
    try:
        with tree.open_text(entry) as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{tree.where(entry)}: not UTF-8 text ({exc})") from None
    if not header or not any(h.strip() for h in header):
        return _Csv(entry, [], empty=True)
    names = [_norm(h) for h in header]
    best, best_n = None, 0
    for sp in _SPELLINGS:
        n = sum(c in names for c in sp.columns)
        if n > best_n:
            best, best_n = sp, n
    info = _Csv(entry, header)
    if best is None or not (best_n >= 2 or best.id in names):
        return info  # some other CSV: not labels
    info.spelling = best
    info.index = {c: names.index(c) for c in best.columns if c in names}
    info.missing = [c for c in best.columns if c not in names]
    return info


def _read_ids(tree: _Tree, info: _Csv) -> set[str]:
    col = info.index[info.spelling.id]  # type: ignore[union-attr]
    try:
        with tree.open_text(info.entry) as f:
            rows = csv.reader(f)
            next(rows, None)
            return {r[col].strip() for r in rows if len(r) > col and r[col].strip()}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{tree.where(info.entry)}: cannot read the CSV ({exc})") from None


@dataclass
class _Label:
    id: str
    boneage: float
    male: int


def _read_labels(tree: _Tree, info: _Csv, on_error: str) -> tuple[list[_Label], list[dict]]:
    """Validate every row; return the good labels and the bad rows (raise on 'fail')."""
    sp = info.spelling
    assert sp is not None and not info.missing
    name = tree.where(info.entry)
    cols = {k: info.index[getattr(sp, k)] for k in ("id", "boneage", "sex")}
    shown = {k: info.header[v].strip() for k, v in cols.items()}  # the file's own spelling
    labels: list[_Label] = []
    bad: list[dict] = []
    first_line: dict[str, int] = {}
    n_rows = 0
    with tree.open_text(info.entry) as f:
        reader = csv.reader(f)
        next(reader, None)
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line, or Excel's trailing ',,'
                n_rows += 1
                line = reader.line_num
                problems = _row_problems(row, cols, shown, line, first_line)
                if problems:
                    bad.append(
                        {
                            "file": name,
                            "line": line,
                            "row": n_rows,
                            "id": _cell(row, cols["id"]),
                            "field": ", ".join(p[0] for p in problems),
                            "value": problems[0][1],
                            "reason": "; ".join(f"{p[0]} {p[1]!r} {p[2]}" for p in problems),
                        }
                    )
                else:
                    age = float(_cell(row, cols["boneage"]))
                    labels.append(
                        _Label(_cell(row, cols["id"]), age, _SEX[_cell(row, cols["sex"]).lower()])
                    )
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{name} line {reader.line_num}: cannot read the CSV ({exc})") from None
    if n_rows == 0:
        raise DataError(f"{name}: empty CSV, no data rows below the header")
    if bad:
        lines = [
            f"  {name} line {b['line']} (data row {b['row']}), field {b['field']!r}: {b['reason']}"
            for b in bad
        ]
        head = f"{name}: {len(bad)} bad label row(s) of {n_rows}"
        more = [f"  ... and {len(bad) - MAX_SHOWN} more"] if len(bad) > MAX_SHOWN else []
        if on_error == "fail":
            raise DataError(
                "\n".join(
                    [head + " (set fetch.on_error: skip to drop them):", *lines[:MAX_SHOWN], *more]
                )
            )
        log.warning(
            "\n".join([head + "; skipped (fetch.on_error=skip):", *lines[:MAX_SHOWN], *more])
        )
    return labels, bad


def _cell(row: list[str], i: int) -> str:
    return row[i].strip() if len(row) > i else ""


def _row_problems(row, cols, shown, line, first_line) -> list[tuple[str, str, str]]:
    """(field, value, reason) for each thing wrong with one data row."""
    problems = []
    rid, age_s, sex_s = (_cell(row, cols[k]) for k in ("id", "boneage", "sex"))
    if not rid:
        problems.append((shown["id"], rid, "is empty"))
    elif rid in first_line:
        problems.append((shown["id"], rid, f"is a duplicate id (first on line {first_line[rid]})"))
    else:
        first_line[rid] = line
    try:
        age = float(age_s)
    except ValueError:
        problems.append((shown["boneage"], age_s, "is not a number"))
    else:
        if not math.isfinite(age) or not 0 <= age <= MAX_AGE_MONTHS:
            problems.append((shown["boneage"], age_s, f"is outside 0..{MAX_AGE_MONTHS:g} months"))
    if sex_s.lower() not in _SEX:
        problems.append(
            (
                shown["sex"],
                sex_s,
                "is not a sex value (expected True/False, 1/0, M/F or male/female)",
            )
        )
    return problems


# --------------------------------------------------------------------------------------
# layouts: which CSV, which image folder


def _images_in(tree: _Tree, d: Dir) -> dict[str, _Entry]:
    """``id -> entry`` for the images directly in folder ``d``; two files for one id is an error."""
    out: dict[str, _Entry] = {}
    for name in sorted(tree.dirs.get(d, {})):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or stem.startswith("._"):
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
                info.entry.name.lower() != LABELS_NAME,
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

    def add_stream(self, name: str, src: IO[bytes], size: int) -> None:
        """Copy ``size`` bytes (as announced by the source) without holding them in memory.

        The bytes are counted as they come: a source that yields more than it announced
        (sizes in archive headers can lie) is stopped one chunk past it, not copied whole.
        """
        if size > MAX_FILM_BYTES:  # callers refuse these first (_Entry.too_big); a backstop
            raise DataError(f"{name}: {size:,} bytes is over the {MAX_FILM_BYTES:,}-byte limit")
        info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        info.file_size = size  # lets zipfile choose ZIP64 for huge members up front
        with self.zf.open(info, "w") as dst:
            left = size
            while buf := src.read(min(_CHUNK, left + 1)):  # one byte more shows a longer source
                left -= len(buf)
                if left < 0:
                    raise DataError(
                        f"{name}: the source holds more than the {size:,} bytes it announced; "
                        "it changed while being read or is damaged"
                    )
                dst.write(buf)
        if info.file_size != size:
            raise DataError(
                f"{name}: read {info.file_size} bytes, expected {size}; "
                "the source changed or is damaged"
            )
        self.members.append((name, info.file_size, info.CRC))

    def add_file(self, name: str, src: Path) -> None:
        with open(src, "rb") as f:
            self.add_stream(name, f, os.fstat(f.fileno()).st_size)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_stream(name, io.BytesIO(data), len(data))

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
    """Content identity of the data set, independent of member order and zip metadata."""
    h = hashlib.sha256(labels_csv)
    for name, size, crc in sorted(members):
        h.update(f"{name}\t{size}\t{crc:08x}\n".encode())
    return h.hexdigest()


def _finish(staging: Path, report: FetchReport, labels: list[_Label], members) -> FetchReport:
    data = _labels_bytes(labels)
    (staging / LABELS_NAME).write_bytes(data)
    report.fingerprint = _fingerprint(data, members)
    (staging / REPORT_NAME).write_text(report.to_json(), encoding="utf-8")
    return report


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
    writer = _FilmsWriter(staging / FILMS_NAME)
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


# --------------------------------------------------------------------------------------
# synthetic


def _encode_png(image, film_id: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"synthetic film {film_id!r}: PNG encoding failed")
    return buf.tobytes()


def _synth_chunk(args: tuple[int, int, SyntheticParams]) -> list[tuple[str, bytes, float, bool]]:
    """Worker: films ``start..stop-1``."""
    start, stop, sp = args
    from boneage import phantom

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
    from boneage import phantom

    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    workers = min(cores, 8)
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
    writer = _FilmsWriter(staging / FILMS_NAME)
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


# --------------------------------------------------------------------------------------
# download


def _download_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def download(url: str, download_dir: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``download_dir/<hash of url>/<name>``, resuming a ``.part``.

    The data streams to ``<name>.part`` and is renamed to ``<name>`` only once it is whole:
    as many bytes as the server announced, and a complete archive (a zip whose central
    directory reads; a tar that reaches its end-of-archive marker, its compression's own end
    intact), because a body that stops early with no length announced ends like a finished
    one. A cut-off download is resumed by the next run with an HTTP Range request that
    carries, as ``If-Range``, the ETag (or Last-Modified) the download started with, kept in
    ``<name>.part.json``: a file changed on the server comes back whole (HTTP 200) and
    replaces the part instead of being spliced onto it. The URL hash in the path stops two
    URLs that end in the same file name from sharing a cache entry. A finished file is
    reused as is: delete it to download again.
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
            _sidecar(part).unlink(missing_ok=True)
            log.info("fetch: downloaded %s to %s (%d bytes)", url, final, final.stat().st_size)
            return final
    raise DataError(f"download of {url} could not be resumed or restarted")


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _started(part: Path, url: str) -> dict | None:
    """What was recorded when the download in ``part`` started, None if unusable."""
    try:
        meta = json.loads(_sidecar(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("url") == url else None


def _record_start(part: Path, url: str, headers, length: int | None) -> None:
    etag = headers.get("ETag")
    if etag and etag.startswith("W/"):
        etag = None  # If-Range takes only a strong validator
    meta = {"url": url, "etag": etag, "last_modified": headers.get("Last-Modified"),
            "length": length}
    _sidecar(part).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _download_once(url: str, part: Path, timeout: float) -> bool:
    """One request; True when ``part`` now holds the whole file, False to start over."""
    have = part.stat().st_size if part.exists() else 0
    meta = _started(part, url) if have else None
    if have and meta is None:
        log.warning("fetch: %s has no record of the download it belongs to (%s); starting over",
                    part, _sidecar(part).name)
        _discard(part)
        have = 0
    validator = meta and (meta.get("etag") or meta.get("last_modified"))
    if have and not validator and meta and meta.get("length") is None:
        log.warning("fetch: the server gave %s neither a validator nor a length, so a resume "
                    "could splice two versions; starting over", url)
        _discard(part)
        have = 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: whole, or stale and longer
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total == have and meta.get("length") in (None, total):  # type: ignore[union-attr]
                return _whole(url, part, total, have)
            log.warning(
                "fetch: partial download %s does not fit the server's file; starting over", part
            )
            _discard(part)
            return False
        exc.close()
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
            if total is None and length is not None:
                total = have + length
            expected = meta.get("length")  # type: ignore[union-attr]
            if start != have or (None not in (expected, total) and expected != total):
                log.warning(
                    "fetch: server resumed %s at byte %s of %s, not %d of %s; starting over",
                    url, start, total, have, expected,
                )
                _discard(part)
                return False
            mode = "ab"
            log.info("fetch: resuming %s at byte %d", url, have)
        else:
            if have:
                log.info(
                    "fetch: server sent the whole file (HTTP %d): it changed since the download "
                    "started, or does not resume; downloading %s again",
                    resp.status,
                    url,
                )
            have, total, mode = 0, length, "wb"
            _record_start(part, url, resp.headers, length)
        done = have
        try:
            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=f"fetch: {part.stem}",
                    disable=None,
                    leave=False,
                ) as bar,
            ):
                while True:
                    buf = resp.read(_CHUNK)
                    if not buf:
                        break
                    out.write(buf)
                    done += len(buf)
                    bar.update(len(buf))
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"download of {url} was interrupted after {done} of "
                f"{total if total is not None else '?'} bytes ({exc!r}); "
                f"{part} is kept and the next run resumes it"
            ) from None
    if total is not None and done != total:
        raise DataError(
            f"download of {url} was interrupted after {done} of {total} bytes; "
            f"{part} is kept and the next run resumes it"
        )
    return _whole(url, part, total, done)


def _whole(url: str, part: Path, total: int | None, done: int) -> bool:
    """True if ``part`` is a complete archive; else raise, keeping it only when the server
    never said how long the file is (then the transfer was likely cut, and can resume)."""
    log.info("fetch: checking that %s is a whole archive", part)
    problem = _archive_problem(part)
    if problem is None:
        return True
    if total is None:
        raise DataError(
            f"download of {url} stopped after {done} bytes, the server gave no length, and "
            f"they are not a whole archive ({problem}); {part} is kept and the next run "
            "resumes it"
        )
    _discard(part)
    raise DataError(
        f"download of {url}: all {done} bytes the server announced arrived, but they are not "
        f"a whole zip or tar archive ({problem}); {part} was deleted: check the URL"
    )


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole zip or tar archive, or None when it is.

    A zip keeps its central directory at the very end, so reading it proves the file was not
    cut; a tar is read to its end-of-archive marker (member data is seeked over when the tar
    is plain, decompressed when it is not).
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic in (b"PK\x03\x04", b"PK\x05\x06") or zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
            return None
        with _TarReader(path) as reader:
            for _ in reader.tf:
                pass
            reader.check_end()
        return None
    except _CutShort as exc:
        return str(exc)
    except _ARCHIVE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        if exc.errno is not None:
            raise
        return f"{type(exc).__name__}: {exc}"


def _content_range(value: str) -> tuple[int | None, int | None]:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _content_range_total(value: str) -> int | None:
    m = re.match(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)", value)
    return int(m.group(1)) if m else None
