"""Sections 2-3, input, train and epochs: the training input pipeline against the model's
step rate and naive readers, train-step films/s by precision, and whole-epoch wall time."""

from __future__ import annotations

import functools
import statistics

from perf_sections.common import SMALL, cores, default_params, run_child


def bench_input(films: int, size: int, naive_batches: int, model_batches_per_s: float | None) -> dict:
    ours = run_child("input_pipeline", films, size, 2)
    out = {"films": films, "size": size, "batch_size": 32,
           "packed_store_batches_per_s": round(ours["batches_per_s"], 1)}
    folder = SMALL / "boneage-training-dataset"
    if folder.is_dir():
        directory = run_child("naive_directory", folder, size, naive_batches)
        pydataset = run_child("naive_pydataset", folder, size, naive_batches)
        out.update(
            naive_image_dataset_from_directory_batches_per_s=round(directory["batches_per_s"], 1),
            naive_pydataset_batches_per_s=round(pydataset["batches_per_s"], 1),
            ratio_vs_image_dataset_from_directory=round(
                ours["batches_per_s"] / directory["batches_per_s"], 2),
            ratio_vs_pydataset=round(ours["batches_per_s"] / pydataset["batches_per_s"], 2))
    if model_batches_per_s:
        out["model_batches_per_s"] = round(model_batches_per_s, 2)
        out["ratio_input_vs_model"] = round(ours["batches_per_s"] / model_batches_per_s, 1)
    return out


def train_rate(size, width, films, policy, head, intra=0, inter=0, onednn=None) -> float:
    env = {} if onednn is None else {"TF_ENABLE_ONEDNN_OPTS": onednn}
    return run_child("train_steps", size, width, films, policy, head, intra, inter,
                     env=env)["films_per_s"]


@functools.lru_cache(maxsize=None)
def auto_precision_rule() -> dict:
    """Whether the train stage's ``precision: auto`` may take bf16 on this machine, and the
    speed-up over float32 it asks of it (in a child: the bench process does not load
    TensorFlow; asked once a run)."""
    return run_child("precision_rule")


def default_policy(rates: dict | None = None) -> str:
    """params.yaml's train.precision as a Keras policy, ``auto`` resolved as the train stage
    does: float32 unless bf16 runs natively here and ``rates`` (films/s by policy, measured by
    the caller as the stage's probe measures them) show it at least the asked speed-up faster."""
    precision = default_params()["train"]["precision"]
    if precision != "auto":
        return precision
    rule = auto_precision_rule()
    if not rule["native"]:
        return "float32"
    if rates is None:
        raise ValueError("precision auto with native bf16: pass the measured films/s of "
                         "float32 and mixed_bfloat16")
    faster = rates["mixed_bfloat16"] >= rule["min_speedup"] * rates["float32"]
    return "mixed_bfloat16" if faster else "float32"


def needs_both_rates() -> bool:
    """Whether resolving the default precision takes measuring both policies."""
    return default_params()["train"]["precision"] == "auto" and auto_precision_rule()["native"]


def bench_train(films: int, rounds: int) -> dict:
    train = default_params()["train"]
    size, width, head = default_params()["preprocess"]["size"], train["width"], train["head"]
    configs = {
        "float32": dict(policy="float32"),
        "mixed_bfloat16": dict(policy="mixed_bfloat16"),
        "mixed_bfloat16, intra=2 inter=1": dict(policy="mixed_bfloat16", intra=cores(), inter=1),
        "float32, oneDNN off": dict(policy="float32", onednn="0"),
    }
    rates = {name: [] for name in configs}
    for _ in range(rounds):  # alternating, so machine noise hits every setting alike
        for name, config in configs.items():
            rates[name].append(train_rate(size, width, films, head=head, **config))
    medians = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    return {"size": size, "width": width, "head": head, "films": films, "rounds": rounds,
            "films_per_s": medians, "all_runs": rates,
            "ratio_bf16_vs_float32": round(medians["mixed_bfloat16"] / medians["float32"], 2),
            "fastest": max(medians, key=medians.get),
            "model_batches_per_s_default_precision": round(
                medians[default_policy(medians)] / 32, 2)
            if default_policy(medians) in medians else None}


def bench_epochs(films: int, epochs: int, rounds: int) -> dict:
    """Whole-epoch wall time of ``model.fit`` (train + validation), alternating:
    ``keras-autotune``: plain fit over datasets with tf.data's AUTOTUNE (the guide's way, and
    this pipeline before the fix) against ``fit_epochs``: the train stage's fit (one iterator
    a run, autotuning off). The stall grows with an iterator's lifetime (the autotuner's
    period doubles up to a minute), so epochs must be RSNA-sized (~9,000 films) to show it."""
    train = default_params()["train"]
    size, width = default_params()["preprocess"]["size"], train["width"]
    runs = {"keras-autotune": [], "fit_epochs": []}
    for _ in range(rounds):
        for mode in runs:
            runs[mode].append(run_child("epochs", size, width, films, epochs, mode))
    # Epoch 1 holds the graph tracing; later epochs are what a long run is made of.
    later = {mode: statistics.median(t for r in rs for t in r["epoch_s"][1:])
             for mode, rs in runs.items()}
    return {"size": size, "width": width, "films": films, "epochs": epochs, "rounds": rounds,
            "precision": "mixed_bfloat16",
            "median_epoch_s_after_first": {m: round(v, 2) for m, v in later.items()},
            "fit_s": {m: [round(r["fit_s"], 1) for r in rs] for m, rs in runs.items()},
            "epoch_s": {m: [[round(t, 2) for t in r["epoch_s"]] for r in rs]
                        for m, rs in runs.items()},
            "ratio_epoch_time_autotune_vs_fit_epochs": round(
                later["keras-autotune"] / later["fit_epochs"], 2)}
