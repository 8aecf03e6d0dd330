"""Sections that run the DVC pipeline or its stage commands: 4 dvc (overhead, via
bench/dvc_overhead.py), 5 memory (peak RSS per stage against the store's growth) and
precision-accuracy (the default pipeline in float32 and in mixed_bfloat16)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from perf_sections.common import ENV, ROOT, SMALL, default_params, run_measured


def bench_dvc(repeats: int) -> dict:
    if not SMALL.is_dir():
        return {"skipped": f"{SMALL} not found"}
    sys.path.insert(0, str(ROOT / "bench"))
    from dvc_overhead import measure

    return measure(SMALL, repeats)


def subset_source(out: Path, count: int) -> Path:
    """A folder in the shared layout holding the first ``count`` films (links, not copies)."""
    images = out / "boneage-training-dataset"
    images.mkdir(parents=True)
    with open(SMALL / "boneage-training-dataset.csv") as src, \
            open(out / "boneage-training-dataset.csv", "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for row, _ in zip(reader, range(count)):
            writer.writerow(row)
            (images / f"{row[0]}.png").symlink_to(SMALL / "boneage-training-dataset" / f"{row[0]}.png")
    return out


def bench_memory(work: Path, counts: list[int], width: int, precision: str) -> dict:
    if not SMALL.is_dir():
        return {"skipped": f"{SMALL} not found"}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    order = ("fetch", "preprocess", "split", "train", "evaluate")
    out = {"films": counts, "train": {"epochs": 1, "width": width, "precision": precision},
           "stages": {name: [] for name in order}, "store_mb": []}
    for count in counts:
        project = work / f"memory-{count}"
        project.mkdir()
        shutil.copytree(ROOT / "stages", project / "stages")
        params = default_params()
        params["fetch"]["source"] = str(subset_source(work / f"source-{count}", count))
        params["train"].update(epochs=1, width=width, precision=precision)
        params["evaluate"]["tta"] = 0
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for name in order:
            result = run_measured(["bash", "-c", stages[name]["cmd"]], cwd=project)
            out["stages"][name].append({k: result[k] for k in
                                        ("wall_s", "max_single_rss_mb", "tree_peak_rss_mb")})
        out["store_mb"].append(round((project / "data" / "prepared" / "films.npy").stat().st_size
                                     / 2**20, 1))
    if len(counts) >= 2:
        store_growth = out["store_mb"][-1] - out["store_mb"][0]
        out["growth"] = {
            name: {"max_single_rss_mb": round(runs[-1]["max_single_rss_mb"]
                                              - runs[0]["max_single_rss_mb"], 1),
                   "vs_store_growth": round((runs[-1]["max_single_rss_mb"]
                                             - runs[0]["max_single_rss_mb"]) / store_growth, 2)}
            for name, runs in out["stages"].items()}
        out["store_growth_mb"] = round(store_growth, 1)
    return out


def bench_precision_accuracy(work: Path, overrides: list[str]) -> dict:
    """The default pipeline twice, float32 vs mixed_bfloat16: test MAE and train time.

    Runs `dvc repro` in a temp copy with train.precision=float32, then copies that workspace
    (cache included, so fetch/preprocess/split are reused) and reruns with mixed_bfloat16.
    """
    project = work / "precision-float32"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("stages", "boneage"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = default_params()
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    results = {"overrides": overrides}
    for policy in ("float32", "mixed_bfloat16"):
        if policy != "float32":
            copy = work / f"precision-{policy}"
            shutil.copytree(project, copy, symlinks=True)
            project = copy
        params["train"]["precision"] = policy
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        if not (project / ".git").exists():
            # dvclive (the train stage) needs a git repository with a commit.
            for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                             "commit", "-qm", "precision benchmark"]):
                subprocess.run(command, cwd=project, env=ENV, check=True)
        started = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=project, env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
        metrics = json.loads((project / "metrics" / "evaluate.json").read_text())
        summary = json.loads((project / "models" / "trained" / "training.json").read_text())
        results[policy] = {"test_mae_months": round(metrics["mae_months"], 3),
                           "train_seconds": summary["train_seconds"],
                           "epochs_run": summary["epochs_run"],
                           "repro_s": round(time.perf_counter() - started, 1)}
    difference = results["mixed_bfloat16"]["test_mae_months"] - results["float32"]["test_mae_months"]
    results["mae_difference_bf16_minus_fp32"] = round(difference, 3)
    results["bf16_holds_mae_within_0.2"] = difference <= 0.2
    results["train_speedup_bf16"] = round(results["float32"]["train_seconds"]
                                          / results["mixed_bfloat16"]["train_seconds"], 2)
    return results
