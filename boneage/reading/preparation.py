"""Films read up to the model's input: decode (the header speaks first), sex and age, the film
check, the one imaging path (:func:`boneage.imaging.transforms.prepare`). No model here and no
TensorFlow (an import-linter contract keeps it so): ``boneage predict`` prepares a folder's
films in a background thread while TensorFlow imports and the models load, the seconds that
made the command slower than the library (bench/release_report.py).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from boneage.imaging.decoding import Film, read_film
from boneage.imaging.film_check import check_read_film
from boneage.imaging.transforms import ImagingSettings, prepare_with_geometry
from boneage.kernel.artifacts import CARD_JSON
from boneage.kernel.errors import ImageError
from boneage.reading.inputs import parse_sex, read_film_bytes
from boneage.reading.readings import (
    AGE_FROM_DICOM,
    CLI,
    SEX_FROM_DICOM,
    Reading,
    Wording,
)

log = logging.getLogger(__name__)

PREFETCH_FILMS = 4096  # prepared films held ahead of the models: 96 px inputs, ~40 MB at most


class Prepared(dict):
    """One film's model inputs: imaging settings -> uint8 ``(size, size)`` array, and in
    ``geometries`` where each came from in the film (:class:`boneage.imaging.transforms.Geometry`), so
    Grad-CAM maps its heatmap back through the crop that was taken, without preparing again."""

    def __init__(self, prepared: dict):
        super().__init__({settings: array for settings, (array, _) in prepared.items()})
        self.geometries = {settings: geometry for settings, (_, geometry) in prepared.items()}


def card_settings(model_dirs: Iterable[str | Path]) -> list[ImagingSettings]:
    """The imaging settings each export's card records, read without loading its model."""
    return [ImagingSettings.from_dict(json.loads((Path(d) / CARD_JSON).read_text())["imaging"])
            for d in model_dirs]


@dataclass
class PreparedFilm:
    """One film of a folder on its way to the models: its reading (with ``error`` set when it
    could not be read), its prepared inputs, and the film itself only when kept for a
    heatmap."""

    index: int
    path: Path
    reading: Reading
    prepared: Prepared | None = None
    film: Film | None = None


class FilmPreparation:
    """Everything of reading a film that comes before the models, for the imaging settings of
    the models' cards (:class:`boneage.reading.predictor.Ensemble` is one, with its models)."""

    def __init__(self, settings: Iterable[ImagingSettings]):
        self.settings = list(dict.fromkeys(settings))

    def read(self, data: bytes, name: str = "image", force: bool = False) -> Film:
        """Decode a film; a DICOM's header is judged first (refused unless ``force``)."""
        return read_film(data, name, force=force)

    def resolve(self, path: str, film: Film, sex: str | None, chronological: float | None,
                reading: Reading, wording: Wording = CLI, height_cm: float | None = None) -> None:
        """Fill in sex, chronological age and height from the flags (or form), else the DICOM
        tags (PatientSex, PatientAge, PatientSize)."""
        from boneage.reading.adult_height import Height, height_from_dicom
        from boneage.reading.standards import assess  # noqa: F401  (fail early if missing)

        if sex is not None:
            reading.male, reading.sex_source = parse_sex(sex), wording.sex_given
        elif film.meta.get("sex"):
            reading.male, reading.sex_source = parse_sex(film.meta["sex"]), SEX_FROM_DICOM
        elif film.meta.get("sex_tag"):
            raise ImageError(f"{path}: sex unknown: PatientSex is {film.meta['sex_tag']!r} "
                             f"(not M or F); {wording.ask_sex}")
        elif film.meta.get("format") == "dicom":
            raise ImageError(f"{path}: sex unknown: the DICOM file has no PatientSex tag; "
                             f"{wording.ask_sex}")
        else:
            raise ImageError(f"{path}: sex unknown: {wording.ask_sex} (only a DICOM file "
                             "records the patient's sex)")
        if chronological is not None:
            reading.chronological_months = float(chronological)
            reading.age_source = wording.age_given
        elif film.meta.get("age_months") is not None:
            reading.chronological_months = float(film.meta["age_months"])
            reading.age_source = AGE_FROM_DICOM
        reading.height = (Height(float(height_cm), wording.height_given, None, wording.ask_age)
                          if height_cm is not None
                          else height_from_dicom(film.meta.get("patient_size"), wording.ask_age))

    def check(self, film: Film, name: str, reading: "Reading", force: bool = False) -> Film:
        """The film check (:func:`boneage.imaging.film_check.check_read_film`), its verdict kept on
        ``reading``; after sex and age are resolved, so a missing sex is asked for first."""
        try:
            film = check_read_film(film, name, force=force)
        except ImageError as exc:
            reading.checks = getattr(exc, "checks", None)
            raise
        reading.checks = film.meta.get("checks")
        return film

    def prepare(self, film: Film) -> Prepared:
        """The film prepared for each distinct imaging setting of the models, with where
        each input came from in the film (for the heatmap)."""
        return Prepared({s: prepare_with_geometry(film, s) for s in self.settings})

    def prepare_paths(self, paths: list[Path], sex: str | None = None,
                      chronological: float | dict | None = None, force: bool = False,
                      height_cm: float | None = None,
                      keep_films: bool = False) -> Iterator[PreparedFilm]:
        """Each path read up to the model's input, in order; a file that cannot be read, or
        does not look like a hand radiograph (unless ``force``), comes with its reading's
        ``error`` set and nothing prepared. ``chronological``: one age for every film, or
        ``{str(path): months}`` per film. Nothing is logged here: the consumer reports."""
        for index, path in enumerate(paths):
            reading = Reading(str(path))
            try:
                film = self.read(read_film_bytes(path), str(path), force)
                age = (chronological.get(str(path)) if isinstance(chronological, dict)
                       else chronological)
                self.resolve(str(path), film, sex, age, reading, CLI, height_cm)
                film = self.check(film, str(path), reading, force)
                prepared = self.prepare(film)
            except (ImageError, OSError) as exc:
                reading.error = str(exc)
                yield PreparedFilm(index, Path(path), reading)
                continue
            yield PreparedFilm(index, Path(path), reading, prepared,
                               film if keep_films else None)


class Prefetch:
    """Iterates ``items`` in a background thread, at most ``limit`` ahead of the consumer, so
    that preparing films overlaps with whatever the consumer does meanwhile (importing
    TensorFlow, running the models). An error in the producer is raised in the consumer;
    ``close()`` (or leaving a ``with`` block) stops the producer early."""

    _DONE = object()

    def __init__(self, items: Iterable, limit: int = PREFETCH_FILMS):
        if limit < 1:
            raise ValueError(f"Prefetch limit must be at least 1, got {limit}")
        self._queue: queue.Queue = queue.Queue(maxsize=limit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(items),),
                                        name="boneage-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failure(exc))
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class _Failure:
    error: BaseException
