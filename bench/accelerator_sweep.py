"""Rank training settings quickly on an accelerator, to choose what the 2-core CPU runs.

A full RSNA run on this project's 2-core machine takes an hour, so an ablation there costs a
session. On a GPU the same model, augmentation, loss and schedule (``boneage.learning.models`` and
``boneage.learning.recipe``, Keras 3 under ``KERAS_BACKEND=jax``, no TensorFlow) train in a minute or
two, several settings side by side. The figures are validation MAEs on the pipeline's own
split, for ranking settings only: the accuracy we report comes from ``dvc repro`` on the CPU
(bench/README.md, "Accuracy").

Two steps:

    # here: pack a prepared store's train and validation films (lossless WebP, to travel)
    python bench/accelerator_sweep.py pack --store data/prepared --split data/split --out .sweep
    # there (KERAS_BACKEND=jax): train each setting, write one JSON line per finished run
    python bench/accelerator_sweep.py run --data .sweep --out results.jsonl \\
        --base epochs=40,seed=7 --setting base: --setting mae:loss=mae --parallel 4

Each ``--setting name:key=value,...`` overrides ``train`` params (``augment.x=...`` for the
augmentation) on the ``train`` section of the ``params.yaml`` that ``pack`` read (stored in
the pack, so the base travels with the films); values are read as YAML. Test films are never
packed. ``precision: auto``
means mixed_bfloat16 here: the tool is meant for accelerators, where bf16 is native.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PACK_FILE = "films.npz"


def pack(store_dir: Path, split_dir: Path, out_dir: Path,
         params_path: Path = Path("params.yaml")) -> Path:
    """Train and validation films of a prepared store as lossless WebP, with their labels
    and the ``train`` params every setting starts from."""
    import cv2

    from boneage.kernel.config import load_section
    from boneage.data.splits import training_ids
    from boneage.data.store import open_store

    store = open_store(store_dir)
    train_ids, val_ids = training_ids(split_dir, -1)
    blobs, ages, males, subsets = [], [], [], []
    for subset, ids in ((0, train_ids), (1, val_ids)):
        rows = store.select(ids)
        for row, age, male in zip(rows["row"], rows["boneage"], rows["male"]):
            ok, data = cv2.imencode(".webp", np.asarray(store.images[row]),
                                    [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101 = lossless
            if not ok:
                raise ValueError(f"could not encode film at store row {row} as WebP")
            blobs.append(data.ravel())
            ages.append(age)
            males.append(male)
            subsets.append(subset)
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PACK_FILE
    np.savez(path, blob=np.concatenate(blobs), offsets=offsets, boneage=np.asarray(ages, float),
             male=np.asarray(males, float), subset=np.asarray(subsets, np.int8),
             imaging=json.dumps(store.settings.to_dict()),
             train_params=json.dumps(load_section("train", params_path).model_dump(mode="json")))
    print(f"packed {len(train_ids)} train + {len(val_ids)} validation films "
          f"({path.stat().st_size / 1e6:.1f} MB) to {path}")
    return path


def load_pack(data_dir: Path):
    import cv2

    pack_data = np.load(data_dir / PACK_FILE)
    blob, offsets = pack_data["blob"], pack_data["offsets"]
    films = np.stack([cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
                      for i in range(len(offsets) - 1)])
    if "train_params" not in pack_data:
        raise SystemExit(f"{data_dir / PACK_FILE} has no train params (packed by an older "
                         "version): pack it again")
    return (films, pack_data["boneage"], pack_data["male"], pack_data["subset"],
            json.loads(str(pack_data["imaging"])), json.loads(str(pack_data["train_params"])))


def parse_overrides(text: str) -> dict:
    """``a=1,augment.b=x`` -> {"a": 1, "augment": {"b": "x"}} (values read as YAML)."""
    import yaml

    result: dict = {}
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"setting {item!r}: expected key=value")
        target = result
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    return result


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def train_one(data_dir: Path, name: str, overrides: dict, workers: int) -> dict:
    """Train one setting like the train stage does (same model, batches, loss, schedule)."""
    import keras

    from boneage.kernel.config import TrainParams
    from boneage.learning.models import IMAGE_INPUT, SEX_INPUT
    from boneage.learning.precision import policy_scope
    from boneage.learning.recipe import FilmBatches, build_for, make_loss, make_optimizer

    films, ages, males, subsets, imaging, base = load_pack(data_dir)
    params = TrainParams.model_validate(merged(base, overrides))
    train_rows, val_rows = np.flatnonzero(subsets == 0), np.flatnonzero(subsets == 1)
    keras.utils.set_random_seed(params.seed)

    class Batches(keras.utils.PyDataset):
        def __init__(self, rows, augment, shuffle):
            super().__init__(workers=workers, use_multiprocessing=False)
            self.maker = FilmBatches(films, ages[rows], males[rows], rows=rows, augment=augment)
            self.shuffle, self.epoch = shuffle, 0
            self.order = np.arange(len(rows))
            self.on_epoch_end()

        def __len__(self):
            return math.ceil(len(self.maker) / params.batch_size)

        def __getitem__(self, index):
            positions = self.order[index * params.batch_size:(index + 1) * params.batch_size]
            image, sex, age = self.maker.batch(positions, seed=params.seed * 100003
                                               + self.epoch * 10007 + index)
            return {IMAGE_INPUT: image[..., None], SEX_INPUT: sex}, age

        def on_epoch_end(self):
            if self.shuffle:
                self.order = np.random.default_rng(params.seed + self.epoch).permutation(
                    len(self.order))
            self.epoch += 1

    precision = "float32" if params.precision == "float32" else "mixed_bfloat16"
    with policy_scope(precision):  # layers take it when built
        model = build_for(params, imaging["size"], ages[train_rows])
    train_data = Batches(train_rows, params.augment, shuffle=True)
    val_data = Batches(val_rows, None, shuffle=False)
    model.compile(optimizer=make_optimizer(params, len(train_data), model=model),
                  loss=make_loss(params), metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    started = time.perf_counter()
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
        f"{name} epoch {epoch + 1}/{params.epochs}: val MAE {logs['val_mae']:.2f} "
        f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True))
    history = model.fit(train_data, validation_data=val_data, epochs=params.epochs,
                        callbacks=[progress], verbose=0).history
    seconds = time.perf_counter() - started
    val_mae = [float(v) for v in history["val_mae"]]
    return {"name": name, "best_val_mae": min(val_mae),
            "best_epoch": int(np.argmin(val_mae)) + 1, "last_val_mae": val_mae[-1],
            "last_train_mae": float(history["mae"][-1]), "seconds": round(seconds, 1),
            "backend": keras.backend.backend(), "precision": precision,
            "n_train": len(train_rows), "n_val": len(val_rows), "imaging": imaging,
            "overrides": overrides, "params": params.model_dump(mode="json"),
            "val_mae": [round(v, 3) for v in val_mae]}


def run(data_dir: Path, out: Path, base: str, settings: list[str], parallel: int,
        workers: int) -> None:
    """Train every setting, ``parallel`` at a time in child processes; JSON lines to ``out``."""
    base_overrides = parse_overrides(base)
    jobs = []
    for setting in settings:
        name, _, text = setting.partition(":")
        jobs.append((name, merged(base_overrides, parse_overrides(text))))
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            name, overrides = pending.pop(0)
            command = [sys.executable, __file__, "one", "--data", str(data_dir), "--name", name,
                       "--overrides", json.dumps(overrides), "--workers", str(workers)]
            running.append((name, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
            print(f"started {name}: {overrides}", flush=True)
        time.sleep(2)
        for name, process in list(running):
            if process.poll() is None:
                continue
            running.remove((name, process))
            lines = [line for line in process.stdout.read().splitlines() if line.startswith("{")]
            if process.returncode or not lines:
                print(f"{name}: failed (exit {process.returncode})", flush=True)
                continue
            with out.open("a") as handle:
                handle.write(lines[-1] + "\n")
            result = json.loads(lines[-1])
            print(f"{name}: best val MAE {result['best_val_mae']:.2f} at epoch "
                  f"{result['best_epoch']}, last {result['last_val_mae']:.2f} "
                  f"(train {result['last_train_mae']:.2f}), {result['seconds']:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack")
    p_pack.add_argument("--store", type=Path, required=True)
    p_pack.add_argument("--split", type=Path, required=True)
    p_pack.add_argument("--out", type=Path, required=True)
    p_pack.add_argument("--params", type=Path, default=Path("params.yaml"))
    p_run = sub.add_parser("run")
    p_run.add_argument("--data", type=Path, required=True)
    p_run.add_argument("--out", type=Path, required=True)
    p_run.add_argument("--base", default="")
    p_run.add_argument("--setting", action="append", required=True)
    p_run.add_argument("--parallel", type=int, default=4)
    p_run.add_argument("--workers", type=int, default=3)
    p_one = sub.add_parser("one")
    p_one.add_argument("--data", type=Path, required=True)
    p_one.add_argument("--name", required=True)
    p_one.add_argument("--overrides", required=True)
    p_one.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.store, args.split, args.out, args.params)
    elif args.command == "run":
        run(args.data, args.out, args.base, args.setting, args.parallel, args.workers)
    else:
        os.environ.setdefault("KERAS_BACKEND", "jax")
        result = train_one(args.data, args.name, json.loads(args.overrides), args.workers)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
