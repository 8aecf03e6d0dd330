"""Writing ``films.zip``: every film's original bytes, stored, with fixed member metadata.

ZIP_STORED because PNG/JPEG are already compressed; fixed timestamps and attributes so the
same input gives byte-identical output and DVC does not rerun the later stages. Each copy
is bounded by the size its source announced, since sizes in archive headers can lie.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from typing import IO

from boneage.kernel.errors import DataError
from boneage.data.sources import integrity
from boneage.data.sources.integrity import _CHUNK

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: same input, same bytes


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
        limit = integrity.MAX_FILM_BYTES  # read here, so that one setting bounds both
        if size > limit:  # callers refuse these first (_Entry.too_big); a backstop
            raise DataError(f"{name}: {size:,} bytes is over the {limit:,}-byte limit")
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
