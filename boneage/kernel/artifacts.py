"""What the stages hand each other: file names, and readers that say which stage to run.

One place for every name a stage writes and another reads, so a rename cannot leave a
reader behind (dvc.yaml's ``outs`` spell the folders; these are the files inside them).

    data/raw/        FILMS_ZIP, LABELS_CSV, FETCH_REPORT             (fetch)
    data/prepared/   STORE_IMAGES, STORE_INDEX, STORE_INFO           (preprocess)
    data/split/      SPLIT_FILES["train"|"val"|"test"], FOLDS_CSV    (split)
    models/trained/  TRAINED_MODEL, TRAINING_SUMMARY                 (train)
    plots/           PREDICTIONS_CSV                                 (evaluate)
    metrics/         evaluate.json (the headline metrics) and beside it
                     detail_metrics_path(): evaluate-detail.json    (evaluate)
    models/boneage/  EXPORT_KERAS, EXPORT_SAVEDMODEL, EXPORT_TFLITE,
                     CARD_JSON, CARD_MD                              (export)
    boneage/release/ RELEASE_JSON, CARD_MD, RELEASE_SUMS, RELEASE_MEMBERS/  (release)
"""

from __future__ import annotations

import json
from pathlib import Path

from boneage.kernel.errors import DataError

# A film file, wherever it comes from (a data set's folder or archive, films.zip, the predict
# command line): every format boneage.imaging.decoding reads (PNG, JPEG, TIFF, BMP, WebP, PNM, DICOM).
FILM_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm",
                 ".pnm", ".pbm", ".dcm", ".dicom")

# How a sex is written in a data set's label CSV or typed for predict/serve -> 1 male, 0 female
# (labels.csv itself holds 1/0).
SEX_SPELLINGS = {"m": 1, "male": 1, "1": 1, "true": 1, "boy": 1,
                 "f": 0, "female": 0, "0": 0, "false": 0, "girl": 0}

FILMS_ZIP = "films.zip"  # every film as fetched, stored (not deflated): id.<ext> members
LABELS_CSV = "labels.csv"  # id, boneage (months), male (1/0)
FETCH_REPORT = "fetch-report.json"  # source, fingerprint, skipped rows

STORE_IMAGES = "films.npy"  # uint8 (N, size, size), memory-mapped by the trainer
STORE_INDEX = "index.csv"  # id, boneage, male, row
STORE_INFO = "store.json"  # imaging settings, provenance, skipped films, film check

SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}  # one id a line
FOLDS_CSV = "folds.csv"  # id, fold (k-fold cross-validation)

TRAINED_MODEL = "model.keras"  # the best epoch's model, before export
TRAINING_SUMMARY = "training.json"  # history, timing, params, precision probe, calibration

PREDICTIONS_CSV = "predictions.csv"  # the test films' reference and predicted months

EXPORT_KERAS = "model.keras"
EXPORT_SAVEDMODEL = "saved_model"
EXPORT_TFLITE = "model.tflite"
CARD_JSON = "model_card.json"  # imaging settings, metrics, backbone: what predict reads
CARD_MD = "MODEL_CARD.md"
EXPORT_FILES = {"keras": EXPORT_KERAS, "savedmodel": EXPORT_SAVEDMODEL, "tflite": EXPORT_TFLITE}

# The exported model's inputs and output, by name, in every format (the Keras model's, the
# SavedModel's and the TFLite file's serving signature): image (N, S, S, 1) float 0..255,
# sex (N, 1) 1 = male; months (N, 1).
IMAGE_INPUT = "image"
SEX_INPUT = "sex"
OUTPUT = "boneage_months"
SIGNATURE = "serving_default"

# The released model (release stage -> boneage/release/): release.json (members, weights,
# intervals, metrics, data), MODEL_CARD.md, SHA256SUMS and one export folder per member.
RELEASE_JSON = "release.json"
RELEASE_SUMS = "SHA256SUMS"
RELEASE_MEMBERS = "members"


def write_json(path: str | Path, data: dict) -> Path:
    """A stage's JSON artifact, indented, ending in a newline (reviewable in git diffs)."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def read_training_summary(model_dir: str | Path) -> dict:
    """``training.json`` of a train stage output: ``params``, ``imaging``, ``history``,
    ``calibration``, ``precision_probe``, timings."""
    return read_json(Path(model_dir) / TRAINING_SUMMARY, "train")


# metrics/evaluate.json, the headline: its short key -> the dotted key in the whole metrics
# (evaluation.evaluate_predictions). Short, so `dvc metrics show metrics/evaluate.json` and
# `dvc exp show` fit 100 columns; months unless said (r2: a ratio; within_12: a share).
HEADLINE_METRICS = {
    "mae_months": "mae_months",
    "rmse_months": "rmse_months",
    "r2": "r2",
    "within_12": "within_12_months",
    "mae_raw": "mae_months_uncalibrated",  # the model before the calibration
    "baseline_mae": "baseline_median.mae_months",  # predict the training median for every film
    "tta_mae": "tta.mae_months",  # only when evaluate.tta > 1
}


def detail_metrics_path(headline: str | Path) -> Path:
    """Where the evaluate stage writes the rest of its metrics (by sex, by age band, counts,
    the baseline's details) beside the headline file: ``evaluate.json`` ->
    ``evaluate-detail.json``."""
    headline = Path(headline)
    return headline.with_name(f"{headline.stem}-detail{headline.suffix}")


def read_evaluation(headline: str | Path) -> dict:
    """The evaluate stage's metrics as one dict, under their full names: the detail file
    beside ``headline`` (if any) with the headline's values put back in their places."""
    detail = detail_metrics_path(headline)
    merged = read_json(detail, "evaluate") if detail.is_file() else {}
    for key, value in read_json(headline, "evaluate").items():
        *parents, leaf = HEADLINE_METRICS.get(key, key).split(".")
        node = merged
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return merged


def read_json(path: str | Path, stage: str) -> dict:
    """A JSON artifact of ``stage``; a missing or unreadable one says which stage to run."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the {stage} stage first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); run the {stage} stage again") from None
