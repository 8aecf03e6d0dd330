"""Running an exported model file: the Keras file, the SavedModel, or the TFLite file.

A TFLite file runs on LiteRT (``ai-edge-litert``), Google's TFLite runtime without
TensorFlow: it imports in a tenth of a second where TensorFlow and Keras take five, so
``boneage predict`` with the release answers one film in about two seconds instead of ten
(bench/README.md, "The release"). Where LiteRT is not installed, TensorFlow's own
interpreter reads the same file. This module imports neither TensorFlow nor Keras itself:
each loader imports what its format needs, when it is asked for it.

Every runner takes the same inputs (``image`` (N, S, S, 1) float32 0..255, ``sex`` (N, 1)
float32) and gives months (N,), so the imaging path in front of it is one and the same.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from boneage.kernel.artifacts import EXPORT_FILES, IMAGE_INPUT, OUTPUT, SEX_INPUT, SIGNATURE
from boneage.kernel.errors import DataError, UsageError
from boneage.kernel.runner import native_output_hidden

log = logging.getLogger(__name__)

FORMATS = tuple(EXPORT_FILES)  # keras, savedmodel, tflite
AUTO = "auto"  # tflite through LiteRT where every model has the file, else keras
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def litert_available() -> bool:
    """Whether LiteRT (the ``ai-edge-litert`` package) can be imported here."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_format(model_dirs: list[Path], requested: str = AUTO) -> str:
    """The format to read ``model_dirs`` with: ``requested``, or for ``auto`` TFLite where
    every model folder has its file and LiteRT is installed (no TensorFlow start-up), else
    the Keras file every export has."""
    if requested != AUTO:
        if requested not in EXPORT_FILES:
            raise UsageError(f"model format must be one of {[AUTO, *FORMATS]}, got "
                             f"{requested!r}")
        return requested
    if model_dirs and all((Path(d) / EXPORT_FILES["tflite"]).is_file() for d in model_dirs):
        if litert_available():
            return "tflite"
        log.info("the models have TFLite files but LiteRT (ai-edge-litert) is not installed: "
                 "reading them with Keras")
    return "keras"


def needs_tensorflow(model_format: str) -> bool:
    """Whether reading ``model_format`` imports TensorFlow (TFLite does not where LiteRT is
    installed)."""
    return model_format != "tflite" or not litert_available()


def load_runner(path: Path, model_format: str) -> Runner:
    """A function (image, sex) -> months for the exported file at ``path``."""
    path = Path(path)
    if model_format not in EXPORT_FILES:
        raise UsageError(f"model format must be one of {list(FORMATS)}, got {model_format!r}")
    if not path.exists():
        raise DataError(f"{path}: no {model_format} model here")
    if model_format == "keras":
        return _keras_runner(path)
    if model_format == "savedmodel":
        return _savedmodel_runner(path)
    return _tflite_runner(path)


def _keras_runner(path: Path) -> Runner:
    import keras

    import boneage.learning.calibration  # noqa: F401  (registers the custom layers)
    import boneage.learning.models  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(path)

    def run(image, sex):
        return np.asarray(model.predict_on_batch({IMAGE_INPUT: image, SEX_INPUT: sex}))

    run.model = model
    return run


def _savedmodel_runner(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[SIGNATURE]

    def run(image, sex):
        return signature(**{IMAGE_INPUT: tf.constant(image),
                            SEX_INPUT: tf.constant(sex)})[OUTPUT].numpy()

    run.loaded = loaded  # the signature's variables live as long as the runner
    return run


def _tflite_interpreter(path: Path):
    if litert_available():
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(path))
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite's deprecation notice is not for our users
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path))


def _tflite_runner(path: Path) -> Runner:
    """The TFLite file's serving signature; a batch of any size in one call (the signature
    runner resizes its inputs to the batch)."""
    with native_output_hidden():
        interpreter = _tflite_interpreter(path)
        runner = interpreter.get_signature_runner(SIGNATURE)
        inputs = runner.get_input_details()
        size = int(inputs[IMAGE_INPUT]["shape_signature"][1])
        # the first call applies the CPU delegate, which announces itself on fd 2
        runner(**{IMAGE_INPUT: np.zeros((1, size, size, 1), np.float32),
                  SEX_INPUT: np.zeros((1, 1), np.float32)})

    def run(image, sex):
        return runner(**{IMAGE_INPUT: np.ascontiguousarray(image, dtype=np.float32),
                         SEX_INPUT: np.ascontiguousarray(sex, dtype=np.float32)})[OUTPUT]

    run.interpreter = interpreter
    run.runtime = tflite_runtime()
    return run


@functools.cache
def tflite_runtime() -> str:
    """What reads TFLite files here: LiteRT and its version, or TensorFlow's tf.lite."""
    if litert_available():
        from importlib.metadata import version

        return f"LiteRT {version('ai-edge-litert')}"
    return "tf.lite (TensorFlow)"


class RunnerModel:
    """A runner behind Keras's ``predict_on_batch({image, sex})``: code written for a model
    (:func:`boneage.learning.evaluation.predict_store`) reads with an exported file."""

    def __init__(self, run: Runner):
        self.run = run

    def predict_on_batch(self, inputs: dict) -> np.ndarray:
        return self.run(inputs[IMAGE_INPUT], inputs[SEX_INPUT])
