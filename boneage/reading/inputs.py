"""What a user gives ``boneage predict`` and ``boneage serve``: films, sex, age and height,
checked.

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


def parse_height_cm(text: str | float | int) -> float:
    """The child's current height in centimetres ('142.5'), for the adult height prediction
    (:mod:`boneage.reading.adult_height`); a number that is no child's height is refused."""
    from boneage.reading.adult_height import height_problem

    try:
        cm = float(str(text).strip().lower().removesuffix("cm"))
    except ValueError:
        raise UsageError(f"height {text!r} is not a number; give the current height in "
                         "centimetres (142.5)") from None
    problem = height_problem(cm)
    if problem:
        raise UsageError(f"height {text!r}: {problem}; give the current height in centimetres")
    return cm
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


def chronological_ages(values: list[str] | None, paths: list[Path]) -> float | dict | None:
    """``--chronological-age`` for the films ``paths``: one age (``10y2m``) for a single film,
    or ``FILM=AGE`` per film (FILM: the path as given or expanded, or its file name), as
    ``{str(path): months}``. One plain age with several films is refused: it is one child's
    age, and several films are rarely one child's."""
    if not values:
        return None
    plain = [value for value in values if "=" not in value]
    if plain:
        if len(values) > 1 or len(paths) != 1:
            raise UsageError(
                f"--chronological-age {plain[0]}: one age for {len(paths)} films; an age is one "
                "child's, so give one per film as --chronological-age FILM=AGE (e.g. "
                "--chronological-age hand1.png=10y2m --chronological-age hand2.png=7y)")
        return parse_chronological_age(plain[0])
    ages: dict[str, float] = {}
    for value in values:
        name, _, age = value.rpartition("=")
        matches = [path for path in paths
                   if name in (str(path), path.name) or Path(name) == path]
        if len(matches) != 1:
            found = "matches none" if not matches else f"matches {len(matches)} films"
            raise UsageError(f"--chronological-age {value}: {name!r} {found} of the films "
                             "given; name one film by its path or file name")
        ages[str(matches[0])] = parse_chronological_age(age)
    return ages


def require_sex(paths: list[Path], sex: str | None) -> None:
    """Without ``--sex`` only a DICOM (PatientSex) says a film's sex: a film whose header is
    another format stops the run here, before TensorFlow and the models load."""
    if sex is not None:
        return
    from boneage.imaging.dicom import is_dicom
    from boneage.imaging.headers import sniff

    lacking = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                head = handle.read(132)
        except OSError:
            continue  # reported with the film, as any unreadable file
        if sniff(head) not in (None, "dicom") and not is_dicom(head):
            lacking.append(path)
    if lacking:
        more = f" (and {len(lacking) - 1} more films that are not DICOM)" if len(lacking) > 1 \
            else ""
        raise UsageError(f"{lacking[0]}{more}: sex unknown: pass --sex M or F (only a DICOM "
                         "file records the patient's sex)")


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
