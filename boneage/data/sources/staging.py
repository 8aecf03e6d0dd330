"""The fetch stage's output folder: what goes in it, and how it replaces the old one.

:class:`FetchReport` (saved as ``fetch-report.json``), ``labels.csv`` in natural id order,
the data set's fingerprint, and :func:`_swap_in`, which puts a folder assembled aside in
place of ``out_dir`` with two renames, so no half-written output is ever visible.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from boneage.kernel.artifacts import FETCH_REPORT, LABELS_CSV
from boneage.data.sources.labels import _Label, _natural_key



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
    (staging / LABELS_CSV).write_bytes(data)
    report.fingerprint = _fingerprint(data, members)
    (staging / FETCH_REPORT).write_text(report.to_json(), encoding="utf-8")
    return report
