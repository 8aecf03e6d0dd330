"""Test-set metrics in months, beside the predict-the-training-median baseline, and plots.

Bone-age readers think in months and in age bands (infancy, childhood, puberty), so
the metrics are broken down by sex and age band, and the share of films within 6 and
12 months is reported: the spread two radiologists show is about that size. The headline
metrics are those of the calibrated predictions (the train stage's fit, which the export
applies too); the raw model's MAE is reported beside them.

Two files, so that ``dvc metrics show`` and ``dvc exp show`` stay readable: the headline
(:data:`HEADLINE`: MAE, RMSE, R², within 12 months, the raw model's MAE, the median baseline's
MAE) in ``metrics/evaluate.json``, everything else (by sex, by age band, bias, counts, the
calibration applied) in ``metrics/evaluate-detail.json``
(:func:`boneage.kernel.artifacts.detail_metrics_path`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from boneage.kernel.artifacts import (  # noqa: E402
    HEADLINE_METRICS,
    PREDICTIONS_CSV,
    detail_metrics_path,
    TRAINED_MODEL,
    SPLIT_FILES,
    TRAINING_SUMMARY,
    read_training_summary,
)
from boneage.learning.tta import tta_films  # noqa: E402
from boneage.kernel.ages import format_months  # noqa: E402

log = logging.getLogger(__name__)

# metrics/evaluate.json: flat, a few numbers, the same keys in every run (and TTA's when on).
HEADLINE = tuple(HEADLINE_METRICS)


def band_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g}"


def regression_metrics(true: np.ndarray, predicted: np.ndarray) -> dict:
    error = predicted - true
    total = float(((true - true.mean()) ** 2).sum())
    return {
        "mae_months": float(np.abs(error).mean()),
        "rmse_months": float(np.sqrt((error ** 2).mean())),
        "r2": float(1 - (error ** 2).sum() / total) if total > 0 else float("nan"),
        "bias_months": float(error.mean()),
        "within_6_months": float((np.abs(error) <= 6).mean()),
        "within_12_months": float((np.abs(error) <= 12).mean()),
    }


def mae_by_age_band(true: np.ndarray, predicted: np.ndarray, age_bands: list[float]) -> dict:
    """``{"low-high": {"mae_months", "n"}}`` for every band of ``age_bands``; a band without
    test films says so (``n`` 0, MAE None) rather than vanishing from the table."""
    errors = np.abs(predicted - true)
    by_band = {}
    for low, high in zip(age_bands, age_bands[1:]):
        # Bands are half-open [low, high), except the last, which also holds its top edge.
        inside = (true >= low) & ((true < high) | ((high == age_bands[-1]) & (true == high)))
        by_band[band_label(low, high)] = {
            "mae_months": float(errors[inside].mean()) if inside.any() else None,
            "n": int(inside.sum())}
    return by_band


def evaluate_predictions(frame: pd.DataFrame, train_median: float, age_bands: list[float]) -> dict:
    """Metrics of ``frame`` (columns boneage, predicted, male) plus the median baseline; with a
    ``predicted_uncalibrated`` column also the raw model's MAE, overall and by age band."""
    true = frame["boneage"].to_numpy(float)
    predicted = frame["predicted"].to_numpy(float)
    metrics = {"n_test": int(len(frame)), **regression_metrics(true, predicted)}
    errors = np.abs(predicted - true)
    metrics["mae_by_sex"] = {
        name: float(errors[frame["male"].to_numpy() == flag].mean())
        for name, flag in (("female", 0), ("male", 1))
        if (frame["male"].to_numpy() == flag).any()
    }
    metrics["mae_by_age_band"] = mae_by_age_band(true, predicted, age_bands)
    if "predicted_uncalibrated" in frame:
        raw = frame["predicted_uncalibrated"].to_numpy(float)
        metrics["mae_months_uncalibrated"] = float(np.abs(raw - true).mean())
        metrics["bias_months_uncalibrated"] = float((raw - true).mean())
        metrics["mae_by_age_band_uncalibrated"] = mae_by_age_band(true, raw, age_bands)
    baseline = regression_metrics(true, np.full_like(true, train_median))
    metrics["baseline_median"] = {"prediction_months": float(train_median),
                                  "mae_months": baseline["mae_months"],
                                  "rmse_months": baseline["rmse_months"]}
    metrics["mae_vs_baseline"] = (metrics["mae_months"] / baseline["mae_months"]
                                  if baseline["mae_months"] > 0 else float("nan"))
    return metrics


def calibrate_frame(frame: pd.DataFrame, calibration: dict | None) -> pd.DataFrame:
    """``frame`` with its predictions (and TTA averages) calibrated by the train stage's fit
    (:func:`boneage.learning.calibration.fit_calibration`); the raw ones move to
    ``predicted_uncalibrated``. Without a calibration (a model trained before there was one)
    the predictions stay as they are."""
    from boneage.learning.calibration import apply_calibration

    out = frame.copy()
    out["predicted_uncalibrated"] = frame["predicted"]
    if calibration is None:
        return out
    male = frame["male"].to_numpy(float)
    for column in ("predicted", "predicted_tta"):
        if column in frame:
            out[column] = apply_calibration(calibration, frame[column].to_numpy(float), male)
    return out


def write_plot_data(frame: pd.DataFrame, plots_dir: Path) -> None:
    """Per-film predictions for ``dvc plots``: scatter, Bland-Altman and error by age (with
    the raw model's prediction last, where the frame has it)."""
    data = pd.DataFrame({
        "id": frame["id"],
        "sex": np.where(frame["male"].to_numpy() == 1, "M", "F"),
        "boneage": frame["boneage"].round(2),
        "predicted": frame["predicted"].round(2),
        "mean_of_both": ((frame["boneage"] + frame["predicted"]) / 2).round(2),
        "difference": (frame["predicted"] - frame["boneage"]).round(2),
        "abs_error": (frame["predicted"] - frame["boneage"]).abs().round(2),
    })
    if "predicted_uncalibrated" in frame:
        data["predicted_uncalibrated"] = frame["predicted_uncalibrated"].round(2)
    data.to_csv(plots_dir / PREDICTIONS_CSV, index=False)


def plot_all(frame: pd.DataFrame, metrics: dict, history: dict | None, plots_dir: Path) -> list[Path]:
    """PNG plots a person looks at: predicted vs true, Bland-Altman, error by age, curves."""
    true = frame["boneage"].to_numpy(float)
    predicted = frame["predicted"].to_numpy(float)
    male = frame["male"].to_numpy() == 1
    written = []
    caption = (f"MAE {metrics['mae_months']:.1f} mo ({format_months(metrics['mae_months'])}), "
               f"median baseline {metrics['baseline_median']['mae_months']:.1f} mo, "
               f"n={metrics['n_test']}")
    if "mae_months_uncalibrated" in metrics:
        caption += f"; uncalibrated MAE {metrics['mae_months_uncalibrated']:.1f} mo"

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(true[~male], predicted[~male], s=8, alpha=0.6, label="female", color="tab:red")
    ax.scatter(true[male], predicted[male], s=8, alpha=0.6, label="male", color="tab:blue")
    top = max(true.max(), predicted.max(), 1) * 1.05
    ax.plot([0, top], [0, top], color="black", lw=1, label="identity")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="reference bone age (months)",
           ylabel="predicted bone age (months)", title="Predicted vs reference")
    ax.legend(loc="upper left")
    fig.text(0.5, 0.01, caption, ha="center", fontsize=8)
    written.append(_save(fig, plots_dir / "predicted_vs_true.png"))

    mean_both, diff = (true + predicted) / 2, predicted - true
    bias, spread = diff.mean(), 1.96 * diff.std()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(mean_both, diff, s=8, alpha=0.6, color="tab:purple")
    for value, style, text in ((bias, "-", "bias"), (bias + spread, "--", "+1.96 SD"),
                               (bias - spread, "--", "-1.96 SD")):
        ax.axhline(value, color="black", ls=style, lw=1)
        ax.text(0.99, value, f"{text} {value:+.1f}", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8)
    ax.set(xlabel="mean of reference and prediction (months)",
           ylabel="prediction - reference (months)", title="Bland-Altman")
    written.append(_save(fig, plots_dir / "bland_altman.png"))

    bands = metrics["mae_by_age_band"]
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    names = list(bands)
    heights = [bands[n]["mae_months"] or 0.0 for n in names]  # an empty band: no bar, n=0
    ax.bar(names, heights, color="tab:green")
    ax.axhline(metrics["mae_months"], color="black", lw=1, label="overall MAE")
    ax.set(xlabel="reference bone age band (months)", ylabel="MAE (months)", title="Error by age")
    for i, n in enumerate(names):
        ax.text(i, heights[i], f"n={bands[n]['n']}", ha="center", va="bottom", fontsize=7)
    ax.legend()
    written.append(_save(fig, plots_dir / "error_by_age.png"))

    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = np.arange(1, len(history["loss"]) + 1)
        axes[0].plot(epochs, history["loss"], label="train")
        axes[0].plot(epochs, history["val_loss"], label="validation")
        axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
        axes[1].plot(epochs, history["mae"], label="train")
        axes[1].plot(epochs, history["val_mae"], label="validation")
        axes[1].axhline(metrics["baseline_median"]["mae_months"], color="grey", ls="--",
                        label="median baseline (test)")
        axes[1].set(xlabel="epoch", ylabel="MAE (months)", title="MAE")
        for ax in axes:
            ax.legend()
        written.append(_save(fig, plots_dir / "training_curves.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_metrics(metrics: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """(headline, detail) of :func:`evaluate_predictions`' metrics: the numbers of
    :data:`boneage.kernel.artifacts.HEADLINE_METRICS` under their short names, and everything
    else (each value in one file only; ``artifacts.read_evaluation`` puts them together)."""
    import copy

    detail, headline = copy.deepcopy(metrics), {}
    for short, dotted in HEADLINE_METRICS.items():
        *parents, leaf = dotted.split(".")
        node = detail
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            headline[short] = node.pop(leaf)
    return headline, detail


def warn_if_worse_than_baseline(metrics: dict) -> bool:
    """A loud warning (in the stage log) when the model reads the test films worse than
    predicting the training median for every film; True when it does."""
    mae, baseline = metrics["mae_months"], metrics["baseline_median"]["mae_months"]
    if not mae > baseline:
        return False
    rule = "!" * 78
    log.warning("\n%s\n!! test MAE %.2f months is WORSE than the median baseline (%.2f months: "
                "the training\n!! median for every film). This model has learnt nothing usable: "
                "check the data,\n!! the split and the training log before using or exporting "
                "it.\n%s", rule, mae, baseline, rule)
    return True


def predict_store(model, store, ids: list[str], batch_size: int = 64,
                  tta: int = 0) -> pd.DataFrame:
    """Predictions for films already in the packed store (no re-decoding).

    ``predicted`` is the plain single pass; with ``tta > 1`` the column ``predicted_tta``
    averages that many fixed shifts/zooms (the first being the film as it is).
    """
    from boneage.learning.models import IMAGE_INPUT, SEX_INPUT

    rows = store.select(ids)
    films = np.asarray(store.images[rows["row"].to_numpy()])
    sex = rows["male"].to_numpy(np.float32)[:, None]
    passes = []
    for index in range(max(1, tta)):
        predicted = []
        # Batch by batch: the whole test set as float32 model input would be 4x the films.
        for start in range(0, len(films), batch_size):
            images = tta_films(films[start:start + batch_size], index).astype(np.float32)[..., None]
            out = model.predict_on_batch({IMAGE_INPUT: images,
                                          SEX_INPUT: sex[start:start + batch_size]})
            predicted.append(np.asarray(out, dtype=float).reshape(-1))
        passes.append(np.concatenate(predicted) if predicted else np.zeros(0))
    out = rows[["id", "boneage", "male"]].copy()
    out["predicted"] = passes[0]
    if tta > 1:
        out["predicted_tta"] = np.mean(passes, axis=0)
    return out


def _calibration_applied(calibration: dict | None) -> str:
    """The calibration the headline predictions carry: its kind, or 'none' (none asked for,
    none recorded, or a fit rejected by :func:`boneage.learning.calibration.rejections`)."""
    if not calibration or calibration.get("applied") is False:
        return "none"
    return calibration["kind"]


def run_evaluation(model_dir: str | Path, store_dir: str | Path, split_dir: str | Path,
                   age_bands: list[float], metrics_path: str | Path,
                   plots_dir: str | Path, tta: int = 0) -> dict:
    """The evaluate stage: test-split predictions, metrics JSON, plot data and PNGs."""
    import keras

    from boneage.data.splits import read_ids
    from boneage.data.store import open_store

    model_dir, plots_dir = Path(model_dir), Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(store_dir)
    model = keras.saving.load_model(model_dir / TRAINED_MODEL)
    test_ids = read_ids(Path(split_dir) / SPLIT_FILES["test"])
    train_ids = read_ids(Path(split_dir) / SPLIT_FILES["train"])
    train_median = float(store.select(train_ids)["boneage"].median())
    summary = read_training_summary(model_dir)
    history, calibration = summary.get("history"), summary.get("calibration")
    if calibration is None:
        log.warning("%s holds no calibration (trained before train.calibration existed): "
                    "test metrics are the raw model's", model_dir / TRAINING_SUMMARY)
    frame = calibrate_frame(predict_store(model, store, test_ids, tta=tta), calibration)
    metrics = evaluate_predictions(frame, train_median, age_bands)
    metrics["calibration"] = _calibration_applied(calibration)
    if calibration and calibration.get("rejected"):
        # short codes (few_films, slope, worse_mae): metrics are compared in tables;
        # the reasons in words are in training.json, the train log and the model card
        metrics["calibration_rejected"] = ",".join(calibration.get("rejected_because") or
                                                   ["yes"])
    if "predicted_tta" in frame:
        tta_metrics = regression_metrics(frame["boneage"].to_numpy(float),
                                         frame["predicted_tta"].to_numpy(float))
        metrics["tta"] = {"passes": tta, **tta_metrics}
    metrics["worse_than_baseline"] = bool(
        metrics["mae_months"] > metrics["baseline_median"]["mae_months"])
    headline, detail = split_metrics(metrics)
    write_metrics(headline, Path(metrics_path))
    write_metrics(detail, detail_metrics_path(metrics_path))
    write_plot_data(frame, plots_dir)
    plot_all(frame, metrics, history, plots_dir)
    log.info("test MAE %.2f months (%s) on %d films, %.2f uncalibrated; median baseline "
             "%.2f months", metrics["mae_months"], format_months(metrics["mae_months"]),
             metrics["n_test"], metrics["mae_months_uncalibrated"],
             metrics["baseline_median"]["mae_months"])
    warn_if_worse_than_baseline(metrics)
    return metrics
