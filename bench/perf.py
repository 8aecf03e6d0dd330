"""Pipeline speed and memory, each against what a user would do instead, in one run.

    python bench/perf.py                      # all of: preprocess input train dvc memory scaling
    python bench/perf.py --only preprocess,input
    python bench/perf.py --quick              # tiny sizes: checks the script, figures mean nothing
    python bench/perf.py --only precision-accuracy   # long (two full default pipelines); not in "all"

Prints a table (ratios first) and writes bench/results/perf.json with the machine it ran on.
Each measurement runs in a fresh child process (a program in bench/perf_children/), so
TensorFlow/OpenCV state and peak memory of one do not leak into the next. Sizes are chosen so
that the whole default run takes well under 15 minutes on 2 idle cores; run it on a quiet
machine: figures taken while something else uses the cores are not comparable.

Sections (bench/HISTORY.md, "What each section compares", has the detail):
  preprocess  full-resolution films (the 36 shared ones, replicated): films/s of the preprocess
              stage with 1 worker and with every core, against cv2 decode-only on one core;
              peak memory at a quarter of the films and all of them.
  input       the training input pipeline alone (packed store -> augmented batches) against the
              model's step rate and against decoding the PNGs every epoch
              (keras.utils.image_dataset_from_directory, and a PyDataset reading files).
  train       films/s of a training step of the default model: float32 vs mixed_bfloat16 and
              thread settings, alternating.
  epochs      whole-epoch wall time of model.fit over several epochs (train + validation):
              Keras's default with a finite dataset (a new iterator every epoch) against
              training.fit_epochs (one iterator for the run), alternating.
  dvc         bench/dvc_overhead.py: status / no-op repro vs an empty DVC project, in a fresh
              clone after dvc pull, and repro after a train-only param change.
  memory      peak RSS of the fetch, preprocess, split, train (1 epoch), evaluate stage commands
              on 1,000 vs 11,611 shared 100 px films, against the packed store's size.
  scaling     time estimates for the full RSNA set (12,611 / 14,236 films) at 256 and 512 px
              from per-film costs measured here (prepare at those sizes, train steps at those sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from perf_sections.common import ROOT, default_params, machine
from perf_sections.pipeline import bench_dvc, bench_memory, bench_precision_accuracy
from perf_sections.preprocess import bench_preprocess
from perf_sections.scaling import bench_scaling
from perf_sections.table import table
from perf_sections.training import (
    bench_epochs,
    bench_input,
    bench_train,
    default_policy,
    needs_both_rates,
    train_rate,
)

DEFAULT_SECTIONS = ("preprocess", "train", "epochs", "input", "dvc", "memory", "scaling")  # run order
ALL_SECTIONS = DEFAULT_SECTIONS + ("precision-accuracy",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated sections: {', '.join(ALL_SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "perf.json")
    parser.add_argument("--precision-set", action="append", default=[], metavar="KEY=VALUE",
                        help="param override for precision-accuracy, e.g. train.epochs=10")
    args = parser.parse_args()
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(ALL_SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(ALL_SECTIONS)}")
    quick = args.quick
    results = {"machine": machine(), "quick": quick, "sections": {}, "seconds": {}}
    work = Path(tempfile.mkdtemp(prefix="boneage-perf-"))
    started_all = time.perf_counter()
    try:
        for name in [n for n in ALL_SECTIONS if n in sections]:
            started = time.perf_counter()
            print(f"[perf] {name} ...", file=sys.stderr, flush=True)
            s = results["sections"]
            if name == "preprocess":
                s[name] = bench_preprocess(work, 24 if quick else 500, 1 if quick else 3)
            elif name == "input":
                model = s.get("train", {}).get("model_batches_per_s_default_precision")
                if model is None:
                    train = default_params()["train"]
                    size, films = default_params()["preprocess"]["size"], 64 if quick else 1024
                    policies = (("float32", "mixed_bfloat16") if needs_both_rates()
                                else (default_policy(),))
                    rates = {policy: train_rate(size, train["width"], films, policy,
                                                train["head"]) for policy in policies}
                    model = rates[default_policy(rates)] / 32
                s[name] = bench_input(256 if quick else 4096, default_params()["preprocess"]["size"],
                                      8 if quick else 200, model)
            elif name == "train":
                s[name] = bench_train(64 if quick else 1536, 1 if quick else 2)
            elif name == "epochs":
                s[name] = bench_epochs(128 if quick else 9216, 3, 1)
            elif name == "dvc":
                s[name] = bench_dvc(1 if quick else 3)
            elif name == "memory":
                s[name] = bench_memory(work, [200, 400] if quick else [1000, 11_611],
                                       width=4 if quick else 8, precision="mixed_bfloat16")
            elif name == "scaling":
                if "preprocess" not in s:
                    s["preprocess"] = bench_preprocess(work, 24 if quick else 200, 1)
                s[name] = bench_scaling(s["preprocess"], [256, 512], 32 if quick else 128)
            elif name == "precision-accuracy":
                overrides = args.precision_set or (
                    ["fetch.synthetic.count=200", "train.epochs=1"] if quick else [])
                s[name] = bench_precision_accuracy(work, overrides)
            results["seconds"][name] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"]["total"] = round(time.perf_counter() - started_all, 1)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    print(table(results))
    print(f"total {results['seconds']['total']} s; per section {results['seconds']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
