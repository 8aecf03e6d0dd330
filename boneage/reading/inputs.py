"""What a user gives ``boneage predict`` and ``boneage serve``: films, sex and age, checked.

Importable without TensorFlow (numpy at most), so a mistyped flag, a missing file or an
empty folder is reported at once instead of after the models have loaded.
"""

from __future__ import annotations

from pathlib import Path

from boneage.kernel.artifacts import FILM_SUFFIXES, SEX_SPELLINGS
from boneage.kernel.errors import DataError, ImageError, UsageError
from boneage.kernel.ages import describe, read_months


# Bone age is read from about 1 month to 20 years: Greulich & Pyle's atlas runs from birth to
# 19 years (18 for girls) and its standard deviations from 3 months to 17 years (nearest end
# value beyond, boneage/reading/standards.py). Outside this range the delayed/normal/advanced call
# means nothing, and an age like 300 months is a typing slip (years for months?).
CHRONOLOGICAL_MONTHS = (1.0, 240.0)


def parse_sex(value: str | bool | int) -> int:
    """'M'/'F' (also male/female, 1/0, true/false) -> 1 for male, 0 for female."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in SEX_SPELLINGS:
        return SEX_SPELLINGS[text]
    raise UsageError(f"sex must be M or F, got {value!r}")


def parse_chronological_age(text: str | float | int) -> float:
    """The child's age in months ('122', '10y2m'), refused outside :data:`CHRONOLOGICAL_MONTHS`."""
    months = read_months(text)
    low, high = CHRONOLOGICAL_MONTHS
    if months != months or months in (float("inf"), float("-inf")):
        raise UsageError(f"chronological age {text!r} is not a number of months")
    if not low <= months <= high:
        raise UsageError(f"chronological age {text!r} is {describe(months)}; bone age is "
                         f"assessed from 1 month to 20 years ({low:g} to {high:g} months)")
    return months


def printable(text: str) -> str:
    """``text`` on one line as people read it: control characters (a newline or an escape in
    a file name) written as escapes (``\\n``), so one film's name cannot split a report or
    forge a line of it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def reason(path: str, error: str) -> str:
    """An error message without the ``path: `` and ``not read: `` its caller is about to say."""
    for prefix in (f"{path}: ", "not read: "):
        error = error.removeprefix(prefix)
    return error


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively) to the films they hold, sorted.

    A missing path or a folder without films is a :class:`DataError`: a run that reads
    nothing must not look like a run that succeeded.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and (p.suffix.lower() in FILM_SUFFIXES
                                               or (not p.suffix and _has_dicom_magic(p))))
            if not found:
                raise DataError(f"{path}: folder holds no films (no "
                                f"{', '.join(sorted(FILM_SUFFIXES))} files, nor DICOM "
                                "files without a suffix)")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return out


MAX_FILE_BYTES = 1024 ** 3  # an uncompressed 100 M px 16-bit film is 200 MB


def read_film_bytes(path: Path) -> bytes:
    """A film file's bytes; a device or pipe (``/dev/zero`` would never end) or a file over
    :data:`MAX_FILE_BYTES` is an :class:`ImageError`, so it is reported and skipped."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file (a device or a pipe?)")
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is over {MAX_FILE_BYTES:,} bytes; a hand radiograph "
                         "is far smaller")
    return data


def _has_dicom_magic(path: Path) -> bool:
    """DICOM files often have no suffix; their 'DICM' magic tells."""
    from boneage.imaging.dicom import is_dicom

    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(132))
    except OSError:
        return False


def heatmap_folder(path: Path) -> Path:
    """The ``--explain`` folder, created; a clear error when it is a file or cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"--explain {path}: is a file, not a folder; give a folder for the "
                        "heatmap PNGs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--explain {path}: cannot create the folder "
                        f"({exc.strerror or exc})") from exc
    return path
