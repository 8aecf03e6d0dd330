"""Load an exported model and predict bone age for films, prepared exactly as in training.

The imaging settings come from the model card that the export stage wrote, never from
the caller, so a film is always prepared the way the model was trained.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from boneage.kernel.artifacts import CARD_JSON, EXPORT_FILES
from boneage.kernel.errors import DataError, ImageError, UsageError
from boneage.imaging.decoding import Film, read_film
from boneage.imaging.transforms import ImagingSettings, prepare
from boneage.learning.runtimes import AUTO, load_runner, resolve_format
from boneage.reading.inputs import heatmap_folder
from boneage.reading.preparation import (  # noqa: F401  (re-exported: the reading's names)
    FilmPreparation,
    Prefetch,
    Prepared,
    PreparedFilm,
)
from boneage.reading.readings import (  # noqa: F401  (re-exported: the reading's names)
    AGE_FROM_DICOM,
    CALL_WITHHELD,
    CLI,
    FORM,
    SEX_FROM_DICOM,
    SYNTHETIC_WARNING,
    Reading,
    Wording,
    describe_model,
    trained_on_synthetic,
)

log = logging.getLogger(__name__)

class Predictor:
    """An exported model plus the imaging settings its card records.

    ``model_format``: which of the export's files runs (:mod:`boneage.learning.runtimes`);
    ``auto`` is its TFLite file through LiteRT where it has one, else its Keras file."""

    def __init__(self, model_dir: str | Path, model_format: str = AUTO):
        self.model_dir = Path(model_dir)
        card_path = self.model_dir / CARD_JSON
        if not card_path.is_file():
            raise DataError(f"{card_path}: no model card; is {self.model_dir} an export "
                            "directory (models/boneage after `dvc repro`)?")
        self.card = json.loads(card_path.read_text())
        self.settings = ImagingSettings.from_dict(self.card["imaging"])
        model_format = resolve_format([self.model_dir], model_format)
        target = self.model_dir / EXPORT_FILES[model_format]
        if not target.exists():
            raise DataError(f"{target}: this export has no {model_format} model "
                            f"(it has {self.card.get('formats')})")
        self.format = model_format
        self._run = load_runner(target, model_format)
        self.model = getattr(self._run, "model", None)  # the Keras model, in the keras format

    def prepare(self, data: bytes, name: str = "image") -> np.ndarray:
        """Film bytes -> this model's uint8 input, through the one imaging path."""
        return prepare(read_film(data, name), self.settings)

    def predict_prepared(self, films: np.ndarray, male) -> np.ndarray:
        """Months for prepared uint8 films (N, S, S); ``male`` is one value or one per film."""
        films = np.asarray(films)
        image = films.astype(np.float32)[..., None]
        sex = np.broadcast_to(np.asarray(male, dtype=np.float32).reshape(-1, 1),
                              (len(films), 1)).copy()
        return np.asarray(self._run(image, sex), dtype=float).reshape(-1)




def export_identity(predictors: list["Predictor"]) -> dict:
    """Which model(s) ``--model`` named, from their cards."""
    cards = [p.card for p in predictors]
    first = cards[0]
    metrics = first.get("metrics") or {}
    identity = {
        "name": first.get("name", "boneage"),
        "version": first.get("boneage_version"),
        "variant": "export" if len(cards) == 1 else f"ensemble of {len(cards)} exports",
        "members": len(cards),
        "paths": [str(p.model_dir) for p in predictors],
        "data": (first.get("data") or {}).get("source"),
    }
    if len(cards) == 1 and metrics.get("mae_months") is not None:
        identity["test_mae_months"] = round(metrics["mae_months"], 2)
        identity["n_test"] = metrics.get("n_test")
    return identity


class Ensemble(FilmPreparation):
    """One or more exported models read as one: the mean, and the SD between them.

    Each film is decoded once; each distinct set of imaging settings in the models' cards
    gets its own prepared input through the one imaging path (:func:`boneage.imaging.transforms.prepare`).
    """

    def __init__(self, model_dirs: list[str | Path], model_format: str = AUTO, *,
                 weights: list[float] | None = None, intervals=None, tta: int = 1,
                 identity: dict | None = None):
        """``weights``, ``intervals`` (:class:`boneage.learning.conformal.ConformalIntervals`),
        ``tta`` and ``identity`` come with the release (:meth:`from_release`); plain
        ``--model`` exports are averaged with equal weight and carry no interval."""
        if not model_dirs:
            raise UsageError("give at least one --model directory")
        # one format for every model: TFLite only where all of them have it
        model_format = resolve_format([Path(d) for d in model_dirs], model_format)
        self._setup([Predictor(d, model_format) for d in model_dirs], weights, intervals, tta,
                    identity)

    def _setup(self, predictors: list, weights, intervals, tta: int, identity: dict | None):
        self.predictors = predictors
        # Models of synthetic films: every reading says so, and gives no clinical call
        # unless forced.
        self.synthetic = [p.model_dir for p in predictors if trained_on_synthetic(p.card)]
        self.settings = list(dict.fromkeys(p.settings for p in predictors))
        self.weights = weights
        self.intervals = intervals
        self.tta = tta
        self.identity = identity or export_identity(predictors)
        self._explainers = None
        # TFLite interpreters and Keras models are not safe to call from several threads at
        # once (the web app's thread pool); decoding and preparing still run in parallel.
        self._lock = threading.RLock()

    @classmethod
    def of_predictors(cls, predictors: list, *, weights=None, intervals=None, tta: int = 1,
                      identity: dict | None = None) -> "Ensemble":
        """An ensemble over predictors already loaded (or stand-ins with ``settings``, ``card``,
        ``model_dir`` and ``predict_prepared``: how tests read films through the real
        reading path without a trained model)."""
        ensemble = cls.__new__(cls)
        ensemble._setup(list(predictors), weights, intervals, tta, identity)
        return ensemble

    @classmethod
    def from_release(cls, variant: str = "ensemble", model_format: str = AUTO,
                     folder: Path | None = None) -> "Ensemble":
        """The model that ships with boneage, checked file by file (boneage.reading.release)."""
        from boneage.reading.release import load_release

        return cls.from_choice(load_release(variant, folder), model_format)

    @classmethod
    def from_choice(cls, choice, model_format: str = AUTO) -> "Ensemble":
        """The release as :func:`boneage.reading.release.load_release` verified it."""
        return cls(choice.model_dirs, model_format, weights=choice.weights,
                   intervals=choice.intervals, tta=choice.tta, identity=choice.identity)

    def predict_prepared(self, prepared: list[dict], males: np.ndarray) -> np.ndarray:
        """Months, shape (films, models), for films already prepared by :meth:`prepare`
        (averaged over the release's test-time augmentation passes where it has them)."""
        out = np.zeros((len(prepared), len(self.predictors)))
        males = np.broadcast_to(np.asarray(males, dtype=np.float32).reshape(-1),
                                (len(prepared),))
        for column, predictor in enumerate(self.predictors):
            films = np.stack([p[predictor.settings] for p in prepared])
            passes = [films]
            if self.tta > 1:
                from boneage.learning.tta import tta_films

                passes += [tta_films(films, index) for index in range(1, self.tta)]
            # every pass in one model call (one call per pass cost a call's overhead each)
            with self._lock:
                months = predictor.predict_prepared(np.concatenate(passes),
                                                    np.tile(males, len(passes)))
            out[:, column] = months.reshape(len(passes), len(prepared)).mean(axis=0)
        return out

    def finish(self, reading: Reading, months: np.ndarray, force: bool = False) -> None:
        """The mean (and spread) of the models' ``months``, and the clinical call where a
        chronological age is known: withheld for a model of synthetic films unless ``force``."""
        from boneage.reading.standards import assess

        reading.per_model = [float(m) for m in months]
        reading.model = self.identity
        if self.weights is None:
            reading.months = float(np.mean(months))
            reading.spread = float(np.std(months, ddof=1)) if len(months) > 1 else None
        else:
            from boneage.learning.conformal import combine

            mean, spread = combine(np.asarray(months)[None, :], self.weights)
            reading.months = float(mean[0])
            reading.spread = float(spread[0]) if len(months) > 1 else None
        if self.intervals is not None:
            low, high = self.intervals.bounds([reading.months], [reading.spread or 0.0])
            reading.interval = (float(low[0]), float(high[0]))
            reading.coverage = self.intervals.coverage
            reading.refer_width = self.intervals.refer_width_months
            reading.refer = bool(high[0] - low[0] > self.intervals.refer_width_months)
        if self.synthetic:
            reading.warning = SYNTHETIC_WARNING
            if not force:
                return
        if reading.chronological_months is not None:
            reading.assessment = assess(reading.months, reading.chronological_months,
                                        reading.male)
        if reading.height is not None:
            from boneage.reading.adult_height import predict

            reading.adult_height = predict(reading.height, reading.months, reading.male,
                                           reading.chronological_months)

    def explainers(self):
        with self._lock:
            if self._explainers is None:
                from boneage.reading.explain import GradCam

                self._explainers = [GradCam.from_export(p.model_dir) for p in self.predictors]
            return self._explainers

    def heatmap(self, film: Film, prepared: "Prepared", male: int, name: str = "image"):
        """(Grad-CAM over the original film, over model 0's input), averaged over the models;
        the first at the heatmap picture's size (:func:`boneage.reading.explain.output_shape`),
        never the film's full size."""
        from boneage.reading.explain import output_shape, to_original

        shape = output_shape(*film.pixels.shape[:2])
        maps, first_input = [], None
        for predictor, explainer in zip(self.predictors, self.explainers()):
            with self._lock:
                cam, _ = explainer.heatmap(prepared[predictor.settings], male)
            first_input = cam if first_input is None else first_input
            maps.append(to_original(cam, prepared.geometries[predictor.settings],
                                    predictor.settings, shape))
        return np.mean(maps, axis=0), first_input

    def predict_bytes(self, data: bytes, name: str, sex: str | None = None,
                      chronological: float | None = None, explain: bool = False,
                      wording: Wording = FORM, force: bool = False,
                      height_cm: float | None = None):
        """One uploaded film -> (Reading, heatmap PNG bytes or None)."""
        from boneage.reading.explain import explain_png

        reading = Reading(name)
        film = self.read(data, name, force)
        self.resolve(name, film, sex, chronological, reading, wording, height_cm)
        film = self.check(film, name, reading, force)
        prepared = self.prepare(film)
        self.finish(reading, self.predict_prepared([prepared], np.array([reading.male]))[0],
                    force)
        png = None
        if explain:
            cam, _ = self.heatmap(film, prepared, reading.male, name)
            png = explain_png(film.pixels, cam)
        return reading, png

    def predict_paths(self, paths: list[Path], sex: str | None = None,
                      chronological: float | dict | None = None, batch_size: int = 32,
                      progress: bool = False, explain_dir: Path | None = None,
                      force: bool = False, height_cm: float | None = None,
                      films: Iterable[PreparedFilm] | None = None) -> list[Reading]:
        """Predict many films in batches; an unreadable file, or one that does not look like a
        hand radiograph (unless ``force``), is reported and skipped. ``chronological``: one
        age for every film, or ``{str(path): months}`` per film. ``films``: the same paths
        already on their way through :meth:`prepare_paths` (a :class:`Prefetch` started
        before the models loaded); by default they are prepared here, in a background thread
        while the models read the batch before (one by one when heatmaps are drawn)."""
        if explain_dir is not None:
            explain_dir = heatmap_folder(explain_dir)
        own = None
        if films is None:
            films = self.prepare_paths(paths, sex, chronological, force, height_cm,
                                       keep_films=explain_dir is not None)
            if explain_dir is None and len(paths) > 1:
                # the next films are prepared while the models read a batch
                films = own = Prefetch(films)
        try:
            return self._read_prepared(films, len(paths), batch_size, progress, explain_dir,
                                       force)
        finally:
            if own is not None:
                own.close()

    def _read_prepared(self, films: Iterable[PreparedFilm], count: int, batch_size: int,
                       progress: bool, explain_dir: Path | None, force: bool) -> list[Reading]:
        from tqdm import tqdm

        readings: list[Reading] = []
        batch: list[tuple[Reading, dict]] = []

        def flush():
            if batch:
                males = np.array([r.male for r, _ in batch])
                months = self.predict_prepared([p for _, p in batch], males)
                for (reading, _), row in zip(batch, months):
                    self.finish(reading, row, force)
                batch.clear()

        for item in tqdm(films, total=count, desc="predict", unit="film",
                         disable=not progress):
            reading = item.reading
            readings.append(reading)
            if reading.error is None and explain_dir is not None:
                try:
                    reading.heatmap = str(self._write_heatmaps(
                        item.film, item.prepared, reading, item.path, item.index, explain_dir))
                except (ImageError, OSError) as exc:
                    reading.error = str(exc)
            if reading.error is not None:
                log.warning("skipping %s", reading.error)
                continue
            batch.append((reading, item.prepared))
            if len(batch) >= batch_size:
                flush()
        flush()
        if len(readings) != count:
            raise RuntimeError(f"{count} films given, {len(readings)} read")
        return readings

    def _write_heatmaps(self, film: Film, prepared: Prepared, reading: Reading, path: Path,
                        index: int, out: Path) -> Path:
        from boneage.reading.explain import explain_png

        cam, input_cam = self.heatmap(film, prepared, reading.male, str(path))
        stem = f"{index:05d}-{Path(path).stem}"
        target = out / f"{stem}.gradcam.png"
        target.write_bytes(explain_png(film.pixels, cam))
        first = prepared[self.predictors[0].settings]
        (out / f"{stem}.gradcam-input.png").write_bytes(explain_png(first, input_cam))
        return target
