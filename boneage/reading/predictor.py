"""Load an exported model and predict bone age for films, prepared exactly as in training.

The imaging settings come from the model card that the export stage wrote, never from
the caller, so a film is always prepared the way the model was trained.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneage.kernel.errors import DataError, ImageError, UsageError
from boneage.kernel.artifacts import CARD_JSON, EXPORT_KERAS, EXPORT_SAVEDMODEL, EXPORT_TFLITE
from boneage.learning.export import SIGNATURE
from boneage.imaging.decoding import Film, read_film
from boneage.imaging.film_check import check_read_film
from boneage.imaging.transforms import ImagingSettings, prepare, prepare_with_geometry
from boneage.reading.inputs import (
    heatmap_folder,
    parse_sex,
    printable,
    read_film_bytes,
    reason,
)
from boneage.learning.models import IMAGE_INPUT, OUTPUT, SEX_INPUT

log = logging.getLogger(__name__)

FORMAT_FILES = {"keras": EXPORT_KERAS, "savedmodel": EXPORT_SAVEDMODEL, "tflite": EXPORT_TFLITE}

SYNTHETIC_WARNING = "trained on synthetic films: not for real radiographs"
CALL_WITHHELD = ("no difference, SD score or call: the model was trained on synthetic films "
                 "(force shows them)")


def trained_on_synthetic(card: dict) -> bool:
    """Whether a model card's data is the built-in synthetic films (``data.source``)."""
    data = card.get("data") or {}
    return bool(data.get("synthetic")) or str(data.get("source") or "").strip().lower() \
        == "synthetic"


class Predictor:
    """An exported model plus the imaging settings its card records."""

    def __init__(self, model_dir: str | Path, model_format: str = "keras"):
        self.model_dir = Path(model_dir)
        card_path = self.model_dir / CARD_JSON
        if not card_path.is_file():
            raise DataError(f"{card_path}: no model card; is {self.model_dir} an export "
                            "directory (models/boneage after `dvc repro`)?")
        self.card = json.loads(card_path.read_text())
        self.settings = ImagingSettings.from_dict(self.card["imaging"])
        if model_format not in FORMAT_FILES:
            raise UsageError(f"model format must be one of {sorted(FORMAT_FILES)}, got "
                             f"{model_format!r}")
        target = self.model_dir / FORMAT_FILES[model_format]
        if not target.exists():
            raise DataError(f"{target}: this export has no {model_format} model "
                            f"(it has {self.card.get('formats')})")
        self.format = model_format
        self._load(target)

    def _load(self, target: Path) -> None:
        if self.format == "keras":
            import keras

            import boneage.learning.calibration  # noqa: F401  (registers the custom layers)
            import boneage.learning.models  # noqa: F401  (registers the custom layers)

            self.model = keras.saving.load_model(target)
            self._run = lambda image, sex: self.model.predict_on_batch(
                {IMAGE_INPUT: image, SEX_INPUT: sex})
        elif self.format == "savedmodel":
            import tensorflow as tf

            loaded = tf.saved_model.load(str(target))
            signature = loaded.signatures[SIGNATURE]
            self._loaded = loaded
            self._run = lambda image, sex: signature(
                **{IMAGE_INPUT: tf.constant(image), SEX_INPUT: tf.constant(sex)})[OUTPUT].numpy()
        else:
            import warnings

            import tensorflow as tf

            with warnings.catch_warnings():  # tf.lite's deprecation notice is not for our users
                warnings.simplefilter("ignore")
                interpreter = tf.lite.Interpreter(model_path=str(target))
            runner = interpreter.get_signature_runner(SIGNATURE)
            self._interpreter = interpreter

            def run(image, sex):
                outputs = [runner(**{IMAGE_INPUT: image[i:i + 1], SEX_INPUT: sex[i:i + 1]})[OUTPUT]
                           for i in range(len(image))]
                return np.concatenate(outputs, axis=0)

            self._run = run

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


SEX_FROM_DICOM = "from the DICOM PatientSex tag"
AGE_FROM_DICOM = "from the DICOM PatientAge tag"


@dataclass(frozen=True)
class Wording:
    """Where a reading says sex and age came from, and how it asks for a missing sex: in
    the command line's flags or in the web form's fields."""

    sex_given: str
    age_given: str
    ask_sex: str
    height_given: str = "given"
    ask_age: str = "give the chronological age"


CLI = Wording("from --sex", "from --chronological-age", "pass --sex M or F",
              "from --height-cm", "pass --chronological-age")
FORM = Wording("from the form", "from the form", "choose the sex (M or F) in the form",
               "from the form", "type the chronological age in the form")


@dataclass
class Reading:
    """One film's result as people and programs read it."""

    path: str
    months: float | None = None  # the ensemble mean
    per_model: list[float] | None = None
    spread: float | None = None  # SD between models (a rough uncertainty); None for one model
    male: int | None = None
    sex_source: str | None = None
    chronological_months: float | None = None
    age_source: str | None = None
    assessment: object | None = None  # boneage.reading.standards.Assessment
    heatmap: str | None = None  # path of the Grad-CAM PNG
    error: str | None = None
    checks: dict | None = None  # the film check's verdict (boneage.imaging.film_check)
    interval: tuple[float, float] | None = None  # calibrated prediction interval, months
    coverage: float | None = None  # its nominal coverage (0.9)
    refer: bool = False  # the interval is unusually wide: a radiologist should read the film
    refer_width: float | None = None  # the width above which a reading is referred
    model: dict | None = None  # which model read the film: name, version, data, MAE
    height: object | None = None  # boneage.reading.adult_height.Height: the current height
    adult_height: object | None = None  # boneage.reading.adult_height.AdultHeight
    warning: str | None = None  # SYNTHETIC_WARNING for a model of synthetic films

    def to_dict(self) -> dict:
        from boneage.kernel.ages import format_months

        row: dict = {"path": self.path}
        if self.checks is not None:
            row["checks"] = self.checks
        if self.error:
            row["error"] = self.error
            return row
        if self.warning:
            row["warning"] = self.warning
        row.update({
            "sex": "M" if self.male else "F",
            "sex_source": self.sex_source,
            "boneage_months": round(self.months, 1),
            "boneage_text": format_months(self.months),
        })
        if self.per_model is not None and len(self.per_model) > 1:
            row["models"] = [round(m, 1) for m in self.per_model]
            row["spread_months"] = round(self.spread, 1)
        if self.interval is not None:
            row["interval_months"] = [round(self.interval[0], 1), round(self.interval[1], 1)]
            row["interval_text"] = (f"{format_months(self.interval[0])} to "
                                    f"{format_months(self.interval[1])}")
            row["interval_coverage"] = self.coverage
            row["refer_to_radiologist"] = self.refer
        if self.model is not None:
            row["model"] = self.model
            row["model_text"] = describe_model(self.model)
        if self.chronological_months is not None:
            row["chronological_months"] = round(self.chronological_months, 1)
            row["chronological_text"] = format_months(self.chronological_months)
            row["age_source"] = self.age_source
            if self.assessment is not None:
                row.update(self.assessment.to_dict())
        if self.adult_height is not None:
            row.update(self.adult_height.to_dict())
        if self.heatmap:
            row["heatmap"] = self.heatmap
        return row

    def text(self) -> str:
        """The lines a radiologist reads for this film."""
        from boneage.kernel.ages import describe, format_months

        path = printable(self.path)
        if self.error:
            return f"{path}: not read: {printable(reason(self.path, self.error))}"
        sex = "male" if self.male else "female"
        lines = [f"{path}: bone age {describe(self.months)}"]
        if self.per_model is not None and len(self.per_model) > 1:
            lines[0] += (f" +- {self.spread:.1f} months (SD between {len(self.per_model)} models: "
                         + ", ".join(f"{m:.1f}" for m in self.per_model) + ")")
        if self.interval is not None:
            low, high = self.interval
            lines.append(f"  {self.coverage:.0%} interval: {low:.1f} to {high:.1f} months "
                         f"({format_months(low)} to {format_months(high)})")
            if self.refer:
                lines.append(f"  the interval is unusually wide (over {self.refer_width:.0f} "
                             "months): a radiologist should read this film")
        lines.append(f"  sex: {sex} ({self.sex_source})")
        if self.warning:
            lines.insert(1, f"  WARNING: {self.warning}")
        checks = self.checks or {}
        if checks.get("forced"):
            doubts = list(checks.get("reasons", []))
            if checks.get("inverted"):
                doubts.append("it looks inverted")
            lines.append("  WARNING: read on request (force) although the film check refused "
                         "it: " + "; ".join(doubts))
        a = self.assessment
        if self.chronological_months is not None:
            lines.append(f"  chronological age: {describe(self.chronological_months)} "
                         f"({self.age_source})")
            if a is None:
                lines.append(f"  {CALL_WITHHELD}")
            else:
                sign = "+" if a.difference_months >= 0 else "-"
                lines.append(f"  difference: {sign}{abs(a.difference_months):.1f} months "
                             f"({sign}{format_months(abs(a.difference_months))}), "
                             f"{a.z:+.1f} SD (G&P SD {a.sd_months:.1f} months at this age): "
                             f"{a.call.upper()}")
        if self.adult_height is not None:
            lines.append(self.adult_height.text())
        if self.heatmap:
            lines.append(f"  heatmap: {printable(self.heatmap)}")
        if self.model is not None:
            lines.append(f"  model: {describe_model(self.model)}")
        return "\n".join(lines)


def describe_model(model: dict) -> str:
    """One line naming the model that read a film: name, version, data and test MAE."""
    kind = model.get("variant", "")
    if model.get("members", 1) > 1:
        kind = f"ensemble of {model['members']}"
    text = f"{model.get('name')} {model.get('version')}" + (f" ({kind})" if kind else "")
    if model.get("data"):
        text += f", trained on {model['data']}"
    if model.get("test_mae_months") is not None:
        text += (f"; test MAE {model['test_mae_months']:.1f} months"
                 + (f" on {model['n_test']} films" if model.get("n_test") else ""))
    return text


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


class Prepared(dict):
    """One film's model inputs: imaging settings -> uint8 ``(size, size)`` array, and in
    ``geometries`` where each came from in the film (:class:`boneage.imaging.transforms.Geometry`), so
    Grad-CAM maps its heatmap back through the crop that was taken, without preparing again."""

    def __init__(self, prepared: dict):
        super().__init__({settings: array for settings, (array, _) in prepared.items()})
        self.geometries = {settings: geometry for settings, (_, geometry) in prepared.items()}


class Ensemble:
    """One or more exported models read as one: the mean, and the SD between them.

    Each film is decoded once; each distinct set of imaging settings in the models' cards
    gets its own prepared input through the one imaging path (:func:`boneage.imaging.transforms.prepare`).
    """

    def __init__(self, model_dirs: list[str | Path], model_format: str = "keras", *,
                 weights: list[float] | None = None, intervals=None, tta: int = 1,
                 identity: dict | None = None):
        """``weights``, ``intervals`` (:class:`boneage.learning.conformal.ConformalIntervals`),
        ``tta`` and ``identity`` come with the release (:meth:`from_release`); plain
        ``--model`` exports are averaged with equal weight and carry no interval."""
        if not model_dirs:
            raise UsageError("give at least one --model directory")
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
    def from_release(cls, variant: str = "ensemble", model_format: str = "keras",
                     folder: Path | None = None) -> "Ensemble":
        """The model that ships with boneage, checked file by file (boneage.reading.release)."""
        from boneage.reading.release import load_release

        choice = load_release(variant, folder)
        return cls(choice.model_dirs, model_format, weights=choice.weights,
                   intervals=choice.intervals, tta=choice.tta, identity=choice.identity)

    def read(self, data: bytes, name: str = "image", force: bool = False) -> Film:
        """Decode a film; a DICOM's header is judged first (refused unless ``force``)."""
        return read_film(data, name, force=force)

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

    def prepare(self, film: Film) -> "Prepared":
        """The film prepared for each distinct imaging setting of the models, with where
        each input came from in the film (for the heatmap)."""
        return Prepared({s: prepare_with_geometry(film, s) for s in self.settings})

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
                      force: bool = False, height_cm: float | None = None) -> list[Reading]:
        """Predict many films in batches; an unreadable file, or one that does not look like a
        hand radiograph (unless ``force``), is reported and skipped. ``chronological``: one
        age for every film, or ``{str(path): months}`` per film."""
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

        if explain_dir is not None:
            explain_dir = heatmap_folder(explain_dir)
        for index, path in enumerate(tqdm(paths, desc="predict", unit="film",
                                          disable=not progress)):
            reading = Reading(str(path))
            readings.append(reading)
            try:
                data = read_film_bytes(path)
                film = self.read(data, str(path), force)
                age = (chronological.get(str(path)) if isinstance(chronological, dict)
                       else chronological)
                self.resolve(str(path), film, sex, age, reading, CLI, height_cm)
                film = self.check(film, str(path), reading, force)
                prepared = self.prepare(film)
                if explain_dir is not None:
                    reading.heatmap = str(self._write_heatmaps(film, prepared, reading, path,
                                                               index, explain_dir))
            except (ImageError, OSError) as exc:
                reading.error = str(exc)
                log.warning("skipping %s", exc)
                continue
            batch.append((reading, prepared))
            if len(batch) >= batch_size:
                flush()
        flush()
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
