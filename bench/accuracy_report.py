"""Collect the accuracy figures of the run in this workspace into
bench/results/accuracy-rsna100px.json, after the pipeline ran on the shared 100 px RSNA set:

    dvc exp run -S fetch.source=../shared/datasets/rsna-bone-age-100px ...   (see bench/README.md)
    python bench/accuracy_report.py

Adds what the pipeline does not measure itself: the exported model's MAE on the 36
full-resolution films of ../shared/datasets/rsna-bone-age-fullres-sample, read and prepared
by `boneage.reading.predictor` exactly as the model card says, and test-time augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FULLRES = Path(os.environ.get(
    "BONEAGE_FULLRES_SAMPLE", ROOT.parent / "shared" / "datasets" / "rsna-bone-age-fullres-sample"))


def fullres_mae(model_dir: Path) -> tuple[float, int] | tuple[None, int]:
    from boneage.reading.predictor import Ensemble

    labels_path = FULLRES / "boneage-training-dataset.csv"
    if not labels_path.is_file():
        return None, 0
    labels = pd.read_csv(labels_path)
    predictor = Ensemble([model_dir])
    errors = []
    for male in (0, 1):
        subset = labels[labels["male"].astype(str).str.lower().isin(
            ["true", "1"] if male else ["false", "0"])]
        paths = [FULLRES / "boneage-training-dataset" / f"{i}.png" for i in subset["id"]]
        results = predictor.predict_paths(paths, "M" if male else "F")
        errors += [abs(r.months - age) for r, age in zip(results, subset["boneage"])]
    return float(np.mean(errors)), len(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=ROOT,
                        help="the pipeline workspace that ran (default: this repository)")
    parser.add_argument("--model", type=Path, help="default: WORKSPACE/models/boneage")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="accuracy-rsna100px",
                        help="file stem of the JSON and plots written to --out")
    args = parser.parse_args()
    workspace = args.workspace
    model_dir = args.model or workspace / "models" / "boneage"
    from boneage.kernel.artifacts import read_evaluation

    metrics = read_evaluation(workspace / "metrics" / "evaluate.json")  # headline + detail
    training = json.loads((workspace / "models" / "trained" / "training.json").read_text())
    card = json.loads((model_dir / "model_card.json").read_text())
    mae_full, n_full = fullres_mae(model_dir)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True,
                            text=True).stdout.strip()
    import yaml

    out_path = args.out / f"{args.name}.json"
    params = training["params"]
    result = {
        "architecture": params["architecture"],
        "weights": params["weights"],
        "frozen_stages": params.get("frozen_stages", 0),
        "input_size": card["imaging"]["size"],
        # Headline figures are the calibrated model's (what the export predicts).
        "mae_months": metrics["mae_months"],
        "calibrated_mae_months": metrics["mae_months"],
        "uncalibrated_mae_months": metrics.get("mae_months_uncalibrated"),
        "calibration": training.get("calibration"),
        "mae_by_age_band_uncalibrated": metrics.get("mae_by_age_band_uncalibrated"),
        "precision": training.get("precision"),
        "precision_probe": training.get("precision_probe"),
        "rmse_months": metrics["rmse_months"],
        "r2": metrics["r2"],
        "mae_by_sex": metrics["mae_by_sex"],
        "mae_by_age_band": metrics["mae_by_age_band"],
        "within_12_months": metrics["within_12_months"],
        "within_6_months": metrics["within_6_months"],
        "n_test": metrics["n_test"],
        "baseline_median_mae_months": metrics["baseline_median"]["mae_months"],
        "tta_mae_months": (metrics.get("tta") or {}).get("mae_months"),
        "tta_passes": (metrics.get("tta") or {}).get("passes"),
        "ensemble_mae_months": None,  # bench/ensemble_report.py --into fills these in
        "train_seconds": training["train_seconds"],
        "epochs_run": training["epochs_run"],
        "cpu_count": os.cpu_count(),
        "fullres_sample_mae_months": mae_full,
        "fullres_sample_n": n_full,
        "fullres_over_test_mae": (mae_full / metrics["mae_months"]) if mae_full else None,
        "data": card["data"],
        "imaging": card["imaging"],
        "commit": commit,
        "params": yaml.safe_load((workspace / "params.yaml").read_text()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for plot in ("predicted_vs_true.png", "bland_altman.png", "error_by_age.png",
                 "training_curves.png"):
        shutil.copy(workspace / "plots" / plot, args.out / f"{args.name}-{plot}")
    print(json.dumps({k: result[k] for k in ("mae_months", "rmse_months", "r2", "n_test",
                                             "train_seconds", "fullres_sample_mae_months",
                                             "fullres_over_test_mae")}, indent=2))


if __name__ == "__main__":
    main()
