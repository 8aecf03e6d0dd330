"""Is an archive whole? Reading a tar forward to its end, and what damaged archives raise.

tarfile ends its member loop quietly at a missing or broken header, so a tar cut between
two members reads as a shorter, valid one; :class:`_TarReader` insists on the end-of-archive
marker and the compressed stream's own end. Both the archive readers (``archives``) and the
complete-download check (``downloads``, via :func:`_archive_problem`) rely on it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO

_CHUNK = 1 << 20  # read size for streamed copies (films.zip, downloads, tar ends)
# The bound on one film, checked on the size a source declares before it is read
# (archives) and again on the bytes while they are copied (filmzip). The largest RSNA film
# is ~10 MB and an uncompressed 16-bit DICOM of a 4k x 4k detector ~35 MB, so 256 MB leaves
# room for any radiograph.
MAX_FILM_BYTES = 256 << 20

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
