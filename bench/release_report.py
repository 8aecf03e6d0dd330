"""The released model read as a user reads it: every test film from its PNG through
``boneage.reading.predictor.Ensemble.from_release`` (the ensemble and the fast member), the
full-resolution sample, latency per film, and ``boneage predict`` on a folder against the
same films read through ``Ensemble`` directly.

    python bench/release_report.py            # after `dvc repro release/dvc.yaml`

Writes bench/results/release-rsna100px.json: mae_months, single_mae_months,
mae_by_age_band, coverage_90, members, train_seconds, and the speed figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import boneage  # noqa: F401  (OpenCV's size limits before cv2 loads)
from boneage.kernel.runner import import_tensorflow_quietly

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def read_all(ensemble, labels: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """One reading per film (from its file), with its interval."""
    rows = []
    for male, group in labels.groupby("male"):
        paths = [folder / f"{film_id}.png" for film_id in group["id"]]
        readings = ensemble.predict_paths(paths, sex="M" if male else "F", force=True)
        for film_id, truth, reading in zip(group["id"], group["boneage"], readings):
            rows.append({"id": film_id, "boneage": float(truth), "male": int(male),
                         "predicted": reading.months, "low": reading.interval[0],
                         "high": reading.interval[1], "refer": reading.refer})
    return pd.DataFrame(rows)


def figures(frame: pd.DataFrame, bands: list[float]) -> dict:
    error = (frame["predicted"] - frame["boneage"]).abs()
    inside = (frame["boneage"] >= frame["low"]) & (frame["boneage"] <= frame["high"])
    width = frame["high"] - frame["low"]
    by_band, coverage_by_band = {}, {}
    for low, high in zip(bands, bands[1:]):
        chosen = (frame["boneage"] >= low) & ((frame["boneage"] < high) | (high == bands[-1]))
        label = f"{low:g}-{high:g}"
        by_band[label] = {"n": int(chosen.sum()),
                          "mae_months": float(error[chosen].mean()) if chosen.any() else None}
        coverage_by_band[label] = {
            "n": int(chosen.sum()),
            "coverage": float(inside[chosen].mean()) if chosen.any() else None,
            "median_width_months": float(width[chosen].median()) if chosen.any() else None}
    return {"n": len(frame), "mae_months": float(error.mean()),
            "mae_by_age_band": by_band,
            "coverage_90": {"overall": float(inside.mean()), "by_age_band": coverage_by_band,
                            "median_width_months": float(width.median()),
                            "referred_share": float(frame["refer"].mean())}}


def latency_ms(ensemble, path: Path, repeats: int) -> float:
    ensemble.predict_paths([path], sex="F", force=True)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ensemble.predict_paths([path], sex="F", force=True)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def cli_seconds(target: Path, variant: str, model_format: str) -> float:
    """Wall seconds of `boneage predict TARGET` (a film or a folder), start-up included."""
    command = [sys.executable, "-m", "boneage.interfaces.cli", "predict", str(target),
               "--sex", "F", "--json", "--force", "--format", model_format,
               *(["--fast"] if variant == "fast" else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def folder_throughput(paths: list[Path], ensemble, variant: str) -> dict:
    """films/s of `boneage predict FOLDER` against Ensemble.predict_paths on the same films
    (both in the format the release reads by default), and the same command with
    ``--format keras`` (TensorFlow's start-up) as the baseline of the same run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "films"
        folder.mkdir()
        for path in paths:
            shutil.copy(path, folder / path.name)
        start = time.perf_counter()
        ensemble.predict_paths(sorted(folder.iterdir()), sex="F", force=True)
        direct = time.perf_counter() - start
        cli = cli_seconds(folder, variant, "auto")
        cli_keras = cli_seconds(folder, variant, "keras")
        one = cli_seconds(paths[0], variant, "auto")
        one_keras = cli_seconds(paths[0], variant, "keras")
    return {"films": len(paths), "format": ensemble.predictors[0].format,
            "direct_films_per_s": len(paths) / direct,
            "cli_films_per_s": len(paths) / cli, "cli_vs_direct": direct / cli,
            "cli_keras_films_per_s": len(paths) / cli_keras,
            "cli_vs_cli_keras": cli_keras / cli,
            "cli_one_film_seconds": one, "cli_one_film_seconds_keras": one_keras}


def targets(result: dict) -> dict:
    """Issue 23's targets, each with the measured figure and whether it is met."""
    ensemble, fast = result["ensemble"], result["fast"]
    coverage = ensemble["test"]["coverage_90"]
    bands = {label: band["coverage"] for label, band in coverage["by_age_band"].items()
             if band["n"] >= 100}

    def check(figure, low=None, high=None):
        met = (low is None or figure >= low) and (high is None or figure <= high)
        return {"figure": figure, "low": low, "high": high, "met": bool(met)}

    return {
        "ensemble_mae_months": check(ensemble["test"]["mae_months"], high=8.5),
        "single_mae_months": check(fast["test"]["mae_months"], high=9.0),
        "fullres_ratio": check(ensemble["fullres_sample"]["ratio_to_test"], high=1.5),
        "coverage_overall": check(coverage["overall"], 0.88, 0.92),
        **{f"coverage_{label}": check(value, 0.85, 0.95) for label, value in bands.items()},
        "ensemble_p50_ms": check(ensemble["latency_ms_p50_fullres"], high=300),
        "single_p50_ms": check(fast["latency_ms_p50_fullres"], high=60),
        "folder_cli_vs_direct": check(ensemble["folder"]["cli_vs_direct"], low=0.8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", type=Path, default=ROOT / "release/data/split/test.txt")
    parser.add_argument("--films", type=Path, default=SHARED / "rsna-bone-age-100px")
    parser.add_argument("--fullres", type=Path, default=SHARED / "rsna-bone-age-fullres-sample")
    parser.add_argument("--folder-films", type=int, default=1000)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench/results/release-rsna100px.json")
    args = parser.parse_args()

    import_tensorflow_quietly()
    from boneage.reading.predictor import Ensemble
    from boneage.reading.release import release_dir, verify_release

    record = verify_release(release_dir())
    bands = [0, 24, 60, 120, 156, 192, 240]
    labels = pd.read_csv(args.films / "boneage-training-dataset.csv", dtype={"id": str})
    labels["male"] = labels["male"].astype(str) == "True"
    test_ids = args.split.read_text().split()
    test = labels.set_index("id").loc[test_ids].reset_index()
    folder = args.films / "boneage-training-dataset"
    fullres = pd.read_csv(args.fullres / "boneage-training-dataset.csv", dtype={"id": str})
    fullres["male"] = fullres["male"].astype(str) == "True"

    result = {"release": {"name": record["name"], "version": record["version"],
                          "data_fingerprint": record["data"]["fingerprint"]},
              "members": [{key: member.get(key) for key in (
                  "name", "weight", "trained_at_commit", "train_seconds", "epochs_run",
                  "val_mae_months", "test_mae_months")} for member in record["members"]],
              "train_seconds": sum(m.get("train_seconds") or 0 for m in record["members"]),
              "tta_passes": record["tta"]["passes"]}
    for variant in ("ensemble", "fast"):
        ensemble = Ensemble.from_release(variant)  # the format predict reads by default
        keras_ensemble = Ensemble.from_release(variant, "keras")
        read_frame = read_all(ensemble, test, folder)
        read = figures(read_frame, bands)
        keras_frame = read_all(keras_ensemble, test, folder)
        difference = (read_frame["predicted"] - keras_frame["predicted"]).abs()
        fullres_film = args.fullres / "boneage-training-dataset" / f"{fullres['id'][0]}.png"
        full = figures(read_all(ensemble, fullres, args.fullres / "boneage-training-dataset"),
                       bands)
        result[variant] = {
            "test": read, "fullres_sample": {"n": full["n"], "mae_months": full["mae_months"],
                                             "ratio_to_test": full["mae_months"] / read["mae_months"]},
            "format": ensemble.predictors[0].format,
            "keras_agreement": {"test_mae_months_keras": figures(keras_frame, bands)["mae_months"],
                                "max_abs_diff_months": float(difference.max())},
            "latency_ms_p50_fullres": latency_ms(ensemble, fullres_film, 20),
            "latency_ms_p50_fullres_keras": latency_ms(keras_ensemble, fullres_film, 20),
            "folder": folder_throughput([folder / f"{i}.png" for i in
                                         labels["id"][:args.folder_films]], ensemble, variant),
        }
    ensemble_test, fast_test = result["ensemble"]["test"], result["fast"]["test"]
    result.update({"mae_months": ensemble_test["mae_months"],
                   "single_mae_months": fast_test["mae_months"],
                   "mae_by_age_band": ensemble_test["mae_by_age_band"],
                   "coverage_90": ensemble_test["coverage_90"]})
    result["targets"] = targets(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("mae_months", "single_mae_months")}
                     | {"coverage": ensemble_test["coverage_90"]["overall"],
                        "not_met": [name for name, t in result["targets"].items()
                                    if not t["met"]]}, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
