"""A file's sha256, read in blocks: what the release records for every file it ships and what
boneage checks before it loads one."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: str | Path) -> str:
    """The hex sha256 of the file at ``path`` (read 1 MB at a time, never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
