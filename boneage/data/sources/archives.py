"""Sources as trees of label CSVs and images: a folder, a zip or a tar, read in place.

Archives are never extracted (the full-resolution Kaggle zip is ~9 GB). Every member is
checked before anything is used: no absolute paths, no ``..``, no links or device files
pointing outside the archive, and each film's declared size and compression ratio bounded
(:data:`~boneage.data.sources.integrity.MAX_FILM_BYTES`, :data:`MAX_RATIO`) before a byte of it is read, because a 1 MB zip
can hold a 1 GiB "film" of zeros.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from boneage.kernel.artifacts import FILM_SUFFIXES
from boneage.kernel.errors import DataError
from boneage.data.sources import integrity
from boneage.data.sources.integrity import _ARCHIVE_ERRORS, _CutShort, _TarReader

if TYPE_CHECKING:
    from boneage.data.sources.filmzip import _FilmsWriter

log = logging.getLogger("boneage.data.sources")  # one logger for the package, as before the split

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_FOLDER_DEPTH = 3  # label CSV at most 1 below the root, images at most 2 below the CSV
# Bounds on one archive member besides integrity.MAX_FILM_BYTES (shared with filmzip).
MAX_RATIO = 100  # expanded:packed; PNG/JPEG barely compress, DICOM ~2-4:1, zeros ~1000:1
RATIO_FROM_BYTES = 4 << 20  # members smaller than this are not ratio-checked
MAX_CSV_BYTES = 64 << 20  # a label CSV; the RSNA training one is 200 kB

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
        limit = integrity.MAX_FILM_BYTES  # read here, so that one setting bounds both
        if self.size > limit:
            return f"is {self.size:,} bytes, over the {limit:,}-byte limit for one film"
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
    return not name.startswith(".") and name.lower().endswith((".csv", *FILM_SUFFIXES))


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
    """A folder source. Symbolic links inside it are followed only where they stay inside it
    (as ``rsync --safe-links`` does): a link to a file or folder elsewhere (``/etc``, another
    study's films, a loop back up) is left out and said so in the log, never read."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.label = str(root)
        self._inside = Path(root).resolve()
        self.links_out: list[tuple[str, str]] = []
        self._walk(root, ())
        if self.links_out:
            link, target = self.links_out[0]
            log.warning("fetch: %d symbolic link(s) in %s lead outside it and were not "
                        "followed (e.g. %s -> %s); copy those files into the folder to use them",
                        len(self.links_out), root, link, target)

    def _leaves(self, entry: os.DirEntry) -> bool:
        """Whether ``entry`` is a symbolic link whose target lies outside the source folder."""
        if not entry.is_symlink():
            return False
        target = Path(entry.path).resolve()
        if target == self._inside or self._inside not in target.parents:
            self.links_out.append((entry.path, str(target)))
            return True
        return False

    def _walk(self, path: Path, d: Dir) -> None:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{path}: cannot list the folder: {exc}") from None
        for e in entries:
            if self._leaves(e):
                continue
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
