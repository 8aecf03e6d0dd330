"""Label CSVs: the column spellings in the wild, and the checks on every row.

The RSNA data comes with ``id,boneage,male`` (Kaggle, home-made), the validation set's
``Image ID,male,Bone Age (months)`` and the test set's ``Case ID,Sex,Ground truth bone age
(months)``. Each bad row is reported by file, line and field; ids sort in natural order.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field

from boneage.kernel.artifacts import SEX_SPELLINGS
from boneage.kernel.errors import DataError
from boneage.data.sources.archives import _Entry, _Tree

log = logging.getLogger("boneage.data.sources")  # one logger for the package, as before the split

MAX_AGE_MONTHS = 240.0
MAX_SHOWN = 10  # problems listed in one error message


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

_SEX = SEX_SPELLINGS  # as predict reads a typed sex


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


def _natural_key(s: str) -> tuple:
    """'2' < '10', deterministic for any string (raw string breaks ties like '01' vs '1')."""
    parts = re.split(r"(\d+)", s)
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), s)
