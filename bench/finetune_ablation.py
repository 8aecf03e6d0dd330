"""Short fine-tuning proxies on the CPU: one setting changed at a time, test MAE per age band.

Each setting starts from the ``train`` section of ``params.yaml`` (the one source of defaults)
and overrides a few keys; it trains through the train stage's own code (``run_training``,
so precision probe, calibration and ``training.json`` are the stage's) and is evaluated by
the evaluate stage's (``run_evaluation``: calibrated and raw test MAE, every age band). The
test films are never used for selection; a proxy's figures rank settings, they are not the
accuracy we report (that comes from ``dvc repro``, bench/README.md).

    python bench/finetune_ablation.py --store data/prepared --split data/split --epochs 3 \\
        --setting pretrained: --setting scratch:weights=none \\
        --setting unfrozen:frozen_stages=0 --setting px96:store=../prepared96 \\
        --out bench/results/finetune-ablation.json

``--setting name:key=value,...`` (values read as YAML, ``augment.x=...`` for augmentation,
``store=PATH`` for a store prepared at another size); ``--base key=value,...`` applies to all.
Results merge into ``--out`` by setting name, so settings can be run a few at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accelerator_sweep import merged, parse_overrides  # noqa: E402


def run_setting(name: str, overrides: dict, *, store_dir: Path, split_dir: Path,
                params_path: Path, bands: list[float], work: Path) -> dict:
    from boneage.kernel.config import TrainParams, load_section
    from boneage.learning.evaluation import run_evaluation
    from boneage.learning.training import run_training

    overrides = dict(overrides)
    store_dir = Path(overrides.pop("store", store_dir))
    base = load_section("train", params_path).model_dump(mode="json")
    params = TrainParams.model_validate(merged(base, overrides))
    out = work / name
    started = time.perf_counter()
    result = run_training(store_dir, split_dir, params, out / "trained")
    # the whole metrics dict (metrics.json holds the headline, metrics-detail.json the rest)
    metrics = run_evaluation(out / "trained", store_dir, split_dir, bands, out / "metrics.json",
                             out / "plots")
    summary = json.loads((out / "trained" / "training.json").read_text())
    return {
        "overrides": {**overrides, "store": str(store_dir)},
        "input_size": summary["imaging"]["size"],
        "test_mae_months": metrics["mae_months"],
        "test_mae_months_uncalibrated": metrics.get("mae_months_uncalibrated"),
        "mae_by_age_band": {k: v["mae_months"] for k, v in metrics["mae_by_age_band"].items()},
        "mae_by_age_band_uncalibrated": {
            k: v["mae_months"] for k, v in metrics.get("mae_by_age_band_uncalibrated", {}).items()},
        "best_val_mae_months": summary["best_val_mae_months"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "train_seconds": result.train_seconds,
        "films_per_second": round(result.n_train * summary["epochs_run"] / result.train_seconds, 1),
        "precision_probe": summary.get("precision_probe"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "params": summary["params"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every proxy")
    parser.add_argument("--base", default="", help="key=value,... for every setting")
    parser.add_argument("--setting", action="append", required=True,
                        help="name:key=value,... (repeatable)")
    parser.add_argument("--bands", default="0,24,60,120,156,192,240")
    parser.add_argument("--out", type=Path, default=Path("bench/results/finetune-ablation.json"))
    parser.add_argument("--keep", type=Path, help="keep each run's model and plots here")
    args = parser.parse_args(argv)

    from boneage.kernel.runner import setup_logging

    setup_logging()
    base = merged(parse_overrides(args.base), {"epochs": args.epochs})
    bands = [float(b) for b in args.bands.split(",")]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    work = args.keep or Path(tempfile.mkdtemp(prefix="boneage-ablation-"))
    try:
        for setting in args.setting:
            name, _, text = setting.partition(":")
            record = run_setting(name, merged(base, parse_overrides(text)),
                                 store_dir=args.store, split_dir=args.split,
                                 params_path=args.params, bands=bands, work=work)
            results[name] = record
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{name}: test MAE {record['test_mae_months']:.2f} "
                  f"(raw {record['test_mae_months_uncalibrated']:.2f}), best val "
                  f"{record['best_val_mae_months']:.2f}, {record['films_per_second']} films/s",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
