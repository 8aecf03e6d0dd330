"""Ship a trained model: ``.keras``, a TF SavedModel with a serving signature, TFLite,
and a model card that records how films must be prepared for it.

The card's ``imaging`` block is what :mod:`boneage.reading.predictor` feeds to
:func:`boneage.imaging.transforms.prepare`, so a deployed model always sees films prepared as in
training. The train stage's calibration (:mod:`boneage.learning.calibration`) becomes the exported
model's last layer, so every format gives calibrated ages with nothing for a caller to apply.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import shutil
import tempfile
from pathlib import Path

import keras

from boneage import __version__
from boneage.kernel.artifacts import (
    CARD_JSON,
    CARD_MD,
    EXPORT_KERAS,
    EXPORT_SAVEDMODEL,
    EXPORT_TFLITE,
    SIGNATURE,
    TRAINED_MODEL,
    read_evaluation,
    read_json,
    read_training_summary,
    write_json,
)
from boneage.learning.calibration import Calibration, is_identity
from boneage.kernel.config import TrainParams
from boneage.learning.models import (
    backbone_card,
    IMAGE_INPUT,
    OUTPUT,
    SEX_INPUT,
    AgeBinExpectation,
)
from boneage.learning.precision import policy_scope
from boneage.learning.recipe import build_for
from boneage.kernel.ages import format_months

log = logging.getLogger(__name__)


def export_savedmodel(model: keras.Model, path: Path, input_size: int) -> None:
    """SavedModel whose ``serving_default`` takes ``image`` (N,S,S,1 float 0..255), ``sex`` (N,1)."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image, sex):
        return {OUTPUT: model({IMAGE_INPUT: image, SEX_INPUT: sex}, training=False)}

    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, input_size, input_size, 1], tf.float32, name=IMAGE_INPUT),
            tf.TensorSpec([None, 1], tf.float32, name=SEX_INPUT),
        ],
    )
    archive.write_out(str(path), verbose=False)


def export_tflite(savedmodel_dir: Path, path: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir),
                                                         signature_keys=[SIGNATURE])
    path.write_bytes(converter.convert())


def float32_model(model: keras.Model, training: dict) -> keras.Model:
    """The same model computing in float32.

    A model trained with ``mixed_bfloat16`` computes in bfloat16, which TFLite's builtin
    ops lack and many serving CPUs run slowly; its variables are float32 already, so a
    float32 rebuild of the same architecture takes the very same weights.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    # The recorded params, without their weights (the trained ones are copied in below).
    params = TrainParams.model_validate({**training["params"], "weights": "none"})
    output = model.get_layer(OUTPUT)
    if isinstance(output, AgeBinExpectation):
        head = {"age_bins": output.centres, "variance_weight": output.variance_weight}
    else:
        head = {"target_mean": output.mean, "target_std": output.std}
    with policy_scope("float32"):
        copy = build_for(params, int(training["imaging"]["size"]), head=head)
    copy.set_weights(model.get_weights())
    log.info("exporting a float32 copy of the mixed-precision model")
    return copy


def calibrated_model(model: keras.Model, calibration: dict | None) -> keras.Model:
    """``model`` followed by the train stage's calibration (a :class:`Calibration` layer named
    like the model's output, so the SavedModel and TFLite signatures keep their output name);
    ``model`` itself where the calibration changes nothing (``none``, or none recorded)."""
    if is_identity(calibration):
        return model
    image = keras.Input(tuple(model.input[IMAGE_INPUT].shape[1:]), name=IMAGE_INPUT)
    sex = keras.Input(tuple(model.input[SEX_INPUT].shape[1:]), name=SEX_INPUT)
    months = model({IMAGE_INPUT: image, SEX_INPUT: sex})
    calibrated = Calibration.from_record(calibration, name=OUTPUT)([months, sex])
    log.info("exporting with the %s calibration of the train stage", calibration["kind"])
    return keras.Model({IMAGE_INPUT: image, SEX_INPUT: sex}, calibrated,
                       name=f"{model.name}_calibrated")


SYNTHETIC_LIMITATION = ("trained on synthetic films (boneage.data.phantom): not for real "
                        "radiographs; predict and serve say so on every reading and give no "
                        "clinical call unless forced")


def model_card(*, training: dict, store_info: dict, metrics: dict, formats: list[str]) -> dict:
    """Everything a user needs to trust and reproduce the model, as one JSON document.

    ``data.source`` is what the fetch stage read (``synthetic`` for the built-in phantom
    films) and ``data.synthetic`` says so as a flag: :mod:`boneage.reading.predictor` marks
    every reading of a synthetic-trained model and withholds its clinical call."""
    synthetic = str(store_info.get("source") or "").strip().lower() == "synthetic"
    return {
        "name": "boneage",
        "boneage_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "task": "bone age (months) from a left-hand radiograph and sex",
        "inputs": {
            IMAGE_INPUT: "grey film prepared by boneage.imaging.transforms.prepare with the 'imaging' "
                         "settings below: float32 0..255, shape (N, size, size, 1)",
            SEX_INPUT: "float32 (N, 1): 1 = male, 0 = female",
        },
        "output": {OUTPUT: "bone age in months, shape (N, 1)"},
        "imaging": store_info["imaging"],
        "backbone": backbone_card(training.get("params") or {}),
        "data": {
            "source": store_info.get("source"),
            "synthetic": synthetic,
            "fingerprint": store_info.get("source_fingerprint"),
            "n_films": store_info.get("n_films"),
            "n_train": training.get("n_train"),
            "n_val": training.get("n_val"),
        },
        "training": {
            "params": training.get("params"),
            "best_epoch": training.get("best_epoch"),
            "epochs_run": training.get("epochs_run"),
            "train_seconds": training.get("train_seconds"),
            "cpu_count": training.get("cpu_count"),
            "keras_version": keras.__version__,
            "python": platform.python_version(),
        },
        # Applied by the exported model itself: months = slope * raw + intercept, by sex.
        "calibration": training.get("calibration") or {"kind": "none"},
        "metrics": metrics,
        "formats": formats,
        "intended_use": "research and decision support; a radiologist reviews every reading",
        "limitations": [
            *([SYNTHETIC_LIMITATION] if synthetic else []),
            "trained on the data set named above; films from other hospitals, scanners or "
            "preprocessing may give larger errors",
            "not validated for clinical use",
        ],
    }


def card_markdown(card: dict) -> str:
    metrics = card["metrics"]
    imaging = card["imaging"]
    lines = [
        "# Model card: boneage",
        "",
        f"Created {card['created_utc']} with boneage {card['boneage_version']} "
        f"(Keras {card['training']['keras_version']}).",
        "",
        "## What it does",
        f"{card['task']}. Intended use: {card['intended_use']}.",
        "",
        "## Test metrics",
        f"- MAE: {metrics['mae_months']:.2f} months ({format_months(metrics['mae_months'])}); "
        f"median baseline {metrics['baseline_median']['mae_months']:.2f} months",
        f"- RMSE: {metrics['rmse_months']:.2f} months; R²: {metrics['r2']:.3f}",
        f"- within 12 months: {100 * metrics['within_12_months']:.1f}% of {metrics['n_test']} films",
        "- MAE by sex: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics["mae_by_sex"].items()),
        "- MAE by age band (months): " + ", ".join(
            f"{k}: {_months_or_dash(v['mae_months'])} (n={v['n']})"
            for k, v in metrics["mae_by_age_band"].items()),
        "",
        *_calibration_lines(card.get("calibration") or {"kind": "none"}, metrics),
        "## Preprocessing the model expects",
        "Every film must go through `boneage.imaging.transforms.prepare` with these settings "
        "(`boneage predict` does this from this card):",
        "",
        *[f"- `{k}`: {v}" for k, v in imaging.items()],
        "",
        "## Backbone",
        *[f"- {k}: {v}" for k, v in card["backbone"].items()],
        "",
        "## Data",
        *[f"- {k}: {v}" for k, v in card["data"].items()],
        "",
        "## Training",
        f"- best epoch {card['training']['best_epoch']} of {card['training']['epochs_run']}, "
        f"{card['training']['train_seconds']} s on {card['training']['cpu_count']} CPU cores",
        "- params: `" + json.dumps(card["training"]["params"], sort_keys=True) + "`",
        "",
        "## Files",
        *[f"- {name}" for name in card["formats"]],
        "",
        "## Limitations",
        *[f"- {item}" for item in card["limitations"]],
        "",
    ]
    return "\n".join(lines)


def _months_or_dash(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _calibration_lines(calibration: dict, metrics: dict) -> list[str]:
    """The card's calibration section: what the model applies, and what it did to the MAE."""
    if is_identity(calibration):
        lines = ["## Calibration", "None: the model's raw prediction is its output."]
        if calibration.get("rejected"):
            lines.append(f"A {calibration['kind']} calibration was fitted on "
                         f"{calibration.get('n_val')} validation films and not applied: "
                         + "; ".join(calibration["rejected"]) + ".")
        return [*lines, ""]
    lines = ["## Calibration",
             f"The model's last layer applies `months = slope x raw + intercept` "
             f"({calibration['kind']}, fitted on {calibration.get('n_val')} validation films):",
             *[f"- {sex}: slope {calibration[sex]['slope']:.4f}, intercept "
               f"{calibration[sex]['intercept']:+.2f} months" for sex in ("female", "male")]]
    if calibration.get("val_mae_raw") is not None:
        lines.append(f"- validation MAE {calibration['val_mae_raw']:.2f} months raw, "
                     f"{calibration['val_mae_calibrated']:.2f} calibrated")
    if "mae_months_uncalibrated" in metrics:
        lines.append(f"- test MAE {metrics['mae_months_uncalibrated']:.2f} months raw, "
                     f"{metrics['mae_months']:.2f} calibrated")
    return [*lines, ""]


def exportable_model(model_dir: str | Path) -> tuple[keras.Model, dict]:
    """The train stage's model as it ships: float32, with its calibration as the last layer;
    and its training summary (without the per-epoch history)."""
    training = read_training_summary(model_dir)
    model = float32_model(keras.saving.load_model(Path(model_dir) / TRAINED_MODEL), training)
    training.pop("history", None)
    return calibrated_model(model, training.get("calibration")), training


def write_export(model: keras.Model, training: dict, store_info: dict, metrics: dict,
                 out_dir: str | Path, formats: list[str]) -> dict:
    """Every requested format of ``model`` plus its model card in a new ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    size = int(store_info["imaging"]["size"])
    written = []
    # The keras file always ships: it is what predict loads by default and Grad-CAM needs.
    model.save(out_dir / EXPORT_KERAS)
    written.append(EXPORT_KERAS)
    if "savedmodel" in formats:
        export_savedmodel(model, out_dir / EXPORT_SAVEDMODEL, size)
        written.append(EXPORT_SAVEDMODEL)
    if "tflite" in formats:
        if "savedmodel" in formats:
            export_tflite(out_dir / EXPORT_SAVEDMODEL, out_dir / EXPORT_TFLITE)
        else:  # converted from a SavedModel that does not ship (the release's members)
            with tempfile.TemporaryDirectory() as tmp:
                export_savedmodel(model, Path(tmp) / EXPORT_SAVEDMODEL, size)
                export_tflite(Path(tmp) / EXPORT_SAVEDMODEL, out_dir / EXPORT_TFLITE)
        written.append(EXPORT_TFLITE)
    card = model_card(training=training, store_info=store_info, metrics=metrics, formats=written)
    write_json(out_dir / CARD_JSON, card)
    (out_dir / CARD_MD).write_text(card_markdown(card))
    log.info("exported %s to %s", ", ".join(written), out_dir)
    return card


def run_export(model_dir: str | Path, store_info_path: str | Path, metrics_path: str | Path,
               out_dir: str | Path, formats: list[str]) -> dict:
    """The export stage: every requested format plus the model card in ``out_dir``."""
    model, training = exportable_model(model_dir)
    return write_export(model, training, read_json(store_info_path, "preprocess"),
                        read_evaluation(metrics_path), out_dir, formats)
