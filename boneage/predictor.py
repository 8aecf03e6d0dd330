"""Load an exported model and predict bone age for films, prepared exactly as in training.

The imaging settings come from the model card that the export stage wrote, never from
the caller, so a film is always prepared the way the model was trained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneage.errors import DataError, ImageError
from boneage.export import CARD_JSON, KERAS_FILE, SAVEDMODEL_DIR, SIGNATURE, TFLITE_FILE
from boneage.imaging import ImagingSettings, prepare
from boneage.models import IMAGE_INPUT, OUTPUT, SEX_INPUT

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
FORMAT_FILES = {"keras": KERAS_FILE, "savedmodel": SAVEDMODEL_DIR, "tflite": TFLITE_FILE}


def parse_sex(value: str | bool | int) -> int:
    """'M'/'F' (also male/female, 1/0, true/false) -> 1 for male, 0 for female."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in ("m", "male", "1", "true", "boy"):
        return 1
    if text in ("f", "female", "0", "false", "girl"):
        return 0
    raise ValueError(f"sex must be M or F, got {value!r}")


@dataclass
class Prediction:
    path: str
    months: float | None
    error: str | None = None


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
            raise ValueError(f"model format must be one of {sorted(FORMAT_FILES)}")
        target = self.model_dir / FORMAT_FILES[model_format]
        if not target.exists():
            raise DataError(f"{target}: this export has no {model_format} model "
                            f"(it has {self.card.get('formats')})")
        self.format = model_format
        self._load(target)

    def _load(self, target: Path) -> None:
        if self.format == "keras":
            import keras

            import boneage.models  # noqa: F401  (registers the custom layers)

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
        return prepare(data, self.settings, name)

    def predict_prepared(self, films: np.ndarray, male) -> np.ndarray:
        """Months for prepared uint8 films (N, S, S); ``male`` is one value or one per film."""
        films = np.asarray(films)
        image = films.astype(np.float32)[..., None]
        sex = np.broadcast_to(np.asarray(male, dtype=np.float32).reshape(-1, 1),
                              (len(films), 1)).copy()
        return np.asarray(self._run(image, sex), dtype=float).reshape(-1)

    def predict_bytes(self, data: bytes, male: int, name: str = "image") -> float:
        return float(self.predict_prepared(self.prepare(data, name)[None], male)[0])

    def predict_paths(self, paths: list[Path], male: int, batch_size: int = 32,
                      progress: bool = False) -> list[Prediction]:
        """Predict many films in batches; an unreadable file is reported and skipped."""
        from tqdm import tqdm

        results: list[Prediction] = []
        batch: list[tuple[int, np.ndarray]] = []

        def flush():
            if batch:
                months = self.predict_prepared(np.stack([f for _, f in batch]), male)
                for (slot, _), value in zip(batch, months):
                    results[slot].months = float(value)
                batch.clear()

        for path in tqdm(paths, desc="predict", unit="film", disable=not progress):
            results.append(Prediction(str(path), None))
            try:
                film = self.prepare(Path(path).read_bytes(), str(path))
            except (ImageError, OSError) as exc:
                results[-1].error = str(exc)
                log.warning("skipping %s", exc)
                continue
            batch.append((len(results) - 1, film))
            if len(batch) >= batch_size:
                flush()
        flush()
        return results


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively) to the images they hold, sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("%s: folder holds no PNG or JPEG films", path)
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return out
