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

Sections (see bench/README.md for what each compares):
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
import csv
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHILDREN = Path(__file__).resolve().parent / "perf_children"  # the programs timed
SHARED = ROOT.parent / "shared" / "datasets"
FULLRES = SHARED / "rsna-bone-age-fullres-sample"
SMALL = SHARED / "rsna-bone-age-100px"
DEFAULT_SECTIONS = ("preprocess", "train", "epochs", "input", "dvc", "memory", "scaling")  # run order
ALL_SECTIONS = DEFAULT_SECTIONS + ("precision-accuracy",)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# ----------------------------------------------------------------------------- plumbing


def cores() -> int:
    from boneage.machine import usable_cores

    return usable_cores()


def child_program(name: str) -> str:
    return str(CHILDREN / f"{name}.py")


def run_child(name: str, *args, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run bench/perf_children/``name``.py in a fresh Python; its last stdout line is JSON.
    Adds the peak RSS of the child's whole process tree (sampled every 20 ms) and of its
    largest single process."""
    return run_measured([sys.executable, child_program(name), *map(str, args)], env=env,
                        cwd=cwd, json_out=True)


def run_measured(command: list[str], *, env=None, cwd=None, json_out=False) -> dict:
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, child_program("rusage_wrapper"), *command],
                               cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    peak = 0
    wrapper = psutil.Process(process.pid)
    while process.poll() is None:
        total = 0
        try:
            for proc in wrapper.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    rss_line = [line for line in err.splitlines() if line.startswith("@@rss ")]
    info = json.loads(rss_line[-1][6:]) if rss_line else {"code": process.returncode}
    if info["code"] or process.returncode:
        raise RuntimeError(f"{command[:4]}... failed:\n{out[-3000:]}\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1]) if json_out else {}
    result.update(wall_s=round(seconds, 2), tree_peak_rss_mb=round(peak / 2**20, 1),
                  max_single_rss_mb=round(info["max_single_rss_mb"], 1))
    return result


def machine() -> dict:
    flags, model = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    versions = subprocess.run([sys.executable, child_program("library_versions")], env=ENV,
                              capture_output=True, text=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = None, None
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu_model": model, "cpu_count": os.cpu_count(), "usable_cores": cores(),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags, "avx512f": "avx512f" in flags,
        "memory_gb": round(memory_gb, 1), "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(), **json.loads(versions.stdout.strip() or "{}"),
        "git_commit": commit, "git_dirty": dirty,
    }


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


# ----------------------------------------------------------------------------- 1 preprocess


def replicated_raw(out: Path, count: int) -> Path:
    """films.zip + labels.csv as the fetch stage writes them: the 36 full-res films, repeated."""
    films = sorted((FULLRES / "boneage-training-dataset").glob("*.png"))
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / "films.zip", "w", zipfile.ZIP_STORED) as archive, \
            open(out / "labels.csv", "w", newline="") as labels:
        writer = csv.writer(labels)
        writer.writerow(["id", "boneage", "male"])
        for index in range(count):
            archive.write(films[index % len(films)], f"{index:05d}.png")
            writer.writerow([f"{index:05d}", 100 + index % 100, index % 2])
    return out


def imaging_settings(size: int | None = None) -> dict:
    from boneage.imaging import ImagingSettings

    params = default_params()["preprocess"]
    settings = ImagingSettings.from_params(type("P", (), params)).to_dict()
    if size:
        settings["size"] = size
    return settings


def bench_preprocess(work: Path, films: int, rounds: int = 3) -> dict:
    """Films/s of the preprocess against decode alone. The five measurements alternate for
    ``rounds`` rounds and the medians are kept: a shared VM's speed drifts by 10-20% over
    minutes, and alternating spreads that drift over all of them alike."""
    if not FULLRES.is_dir():
        return {"skipped": f"{FULLRES} not found"}
    settings = json.dumps(imaging_settings())
    quarter, full = replicated_raw(work / "raw-quarter", max(8, films // 4)), \
        replicated_raw(work / "raw", films)
    runs: dict[str, list[dict]] = {"decode": [], "decode_all_cores": [], "pipeline_decode": [],
                                   "one_worker": [], "all_cores": []}
    for _ in range(rounds):
        runs["decode"].append(run_child("decode_only", full / "films.zip"))
        runs["decode_all_cores"].append(run_child("decode_all_cores", full / "films.zip"))
        runs["pipeline_decode"].append(run_child("decode_only", full / "films.zip", "pipeline"))
        runs["one_worker"].append(run_child("build_store", full, work / "store-1", 1, settings, 1))
        runs["all_cores"].append(run_child("build_store", full, work / "store-n", 0, settings, 0))
    rate = {name: statistics.median(run["films_per_s"] for run in values)
            for name, values in runs.items()}
    small = run_child("build_store", quarter, work / "store-q", 0, settings, 0)
    every = runs["all_cores"][-1]
    store_mb = (work / "store-n" / "films.npy").stat().st_size / 2**20
    return {
        "films": films, "rounds": rounds, "workers_all": cores(), "settings": json.loads(settings),
        "decode_only_1core_films_per_s": round(rate["decode"], 1),
        "preprocess_1worker_films_per_s": round(rate["one_worker"], 1),
        "preprocess_all_cores_films_per_s": round(rate["all_cores"], 1),
        "ratio_1worker_vs_decode": round(rate["one_worker"] / rate["decode"], 2),
        "ratio_all_cores_vs_decode_1core": round(rate["all_cores"] / rate["decode"], 2),
        # What the machine allows: cv2 decode alone in one process per core.
        "decode_only_all_cores_films_per_s": round(rate["decode_all_cores"], 1),
        "ratio_decode_all_cores_vs_1core": round(rate["decode_all_cores"] / rate["decode"], 2),
        "ratio_all_cores_vs_decode_all_cores": round(rate["all_cores"] / rate["decode_all_cores"], 2),
        # The pipeline's own decoder (decoding.decode_raw: imagecodecs for grey PNGs).
        "pipeline_decode_1core_films_per_s": round(rate["pipeline_decode"], 1),
        "ratio_pipeline_decode_vs_cv2": round(rate["pipeline_decode"] / rate["decode"], 2),
        "memory": {
            "films": [quarter_count(quarter), films],
            "main_process_peak_rss_mb": [round(small["main_rss_mb"], 1),
                                         round(every["main_rss_mb"], 1)],
            "tree_peak_rss_mb": [small["tree_peak_rss_mb"], every["tree_peak_rss_mb"]],
            "store_mb": round(store_mb, 1),
        },
        "runs": {**{name: [round(run["films_per_s"], 1) for run in values]
                    for name, values in runs.items()}, "quarter": small},
    }


def quarter_count(raw: Path) -> int:
    with zipfile.ZipFile(raw / "films.zip") as archive:
        return len(archive.namelist())


# ----------------------------------------------------------------------------- 2 input


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


# ----------------------------------------------------------------------------- 3 train


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


# ----------------------------------------------------------------------------- 4 dvc


def bench_dvc(repeats: int) -> dict:
    if not SMALL.is_dir():
        return {"skipped": f"{SMALL} not found"}
    sys.path.insert(0, str(ROOT / "bench"))
    from dvc_overhead import measure

    return measure(SMALL, repeats)


# ----------------------------------------------------------------------------- 5 memory


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


# ----------------------------------------------------------------------------- 6 scaling


def bench_scaling(preprocess: dict, sizes: list[int], train_films: int) -> dict:
    """Hours for the full RSNA set from per-film costs measured here."""
    if not FULLRES.is_dir():
        return {"skipped": f"{FULLRES} not found"}
    base = imaging_settings()
    sizes_arg = ",".join(map(str, [base["size"], *sizes]))
    cost = run_child("prepare_cost", FULLRES / "boneage-training-dataset", json.dumps(base),
                     sizes_arg)
    train = default_params()["train"]
    rates = {size: train_rate(size, train["width"], train_films, "mixed_bfloat16", train["head"])
             for size in sizes}
    speedup = None
    if preprocess.get("preprocess_all_cores_films_per_s"):
        speedup = preprocess["preprocess_all_cores_films_per_s"] / \
            preprocess["preprocess_1worker_films_per_s"]
    epochs = train["epochs"]
    rows = []
    for films in (12_611, 14_236):
        for size in sizes:
            one = cost[str(size)] * films
            rows.append({
                "films": films, "size": size,
                "preprocess_1worker_min": round(one / 60, 1),
                "preprocess_all_cores_min": round(one / speedup / 60, 1) if speedup else None,
                "store_gb": round(films * size * size / 2**30, 2),
                "train_epoch_min": round(films / rates[size] / 60, 1),
                f"train_{epochs}_epochs_h": round(films * epochs / rates[size] / 3600, 1),
            })
    return {"prepare_ms_per_film_1core": {k: round(v * 1000, 1) for k, v in cost.items()},
            "train_films_per_s_bf16": {str(k): round(v, 2) for k, v in rates.items()},
            "preprocess_worker_speedup": round(speedup, 2) if speedup else None,
            "note": "train epoch over all films (no split); bf16; default compact model",
            "rows": rows}


# ----------------------------------------------------------------------------- precision


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


# ----------------------------------------------------------------------------- table


def table(results: dict) -> str:
    lines = ["| measurement | ratio | figures |", "| --- | --- | --- |"]

    def add(name, ratio, figures):
        lines.append(f"| {name} | {ratio} | {figures} |")

    s = results["sections"]
    if "preprocess" in s and "skipped" not in s["preprocess"]:
        p = s["preprocess"]
        add(f"preprocess, {p['workers_all']} workers vs cv2 decode-only 1 core (target >= 1.8x)",
            f"{p['ratio_all_cores_vs_decode_1core']}x",
            f"{p['preprocess_all_cores_films_per_s']} vs {p['decode_only_1core_films_per_s']} films/s")
        add("preprocess, 1 worker vs decode-only 1 core", f"{p['ratio_1worker_vs_decode']}x",
            f"{p['preprocess_1worker_films_per_s']} films/s")
        if "decode_only_all_cores_films_per_s" in p:
            add(f"cv2 decode-only, {p['workers_all']} processes vs 1 core (the machine's ceiling)",
                f"{p['ratio_decode_all_cores_vs_1core']}x",
                f"{p['decode_only_all_cores_films_per_s']} films/s")
            add(f"preprocess, {p['workers_all']} workers vs cv2 decode-only on as many processes",
                f"{p['ratio_all_cores_vs_decode_all_cores']}x",
                f"{p['preprocess_all_cores_films_per_s']} vs {p['decode_only_all_cores_films_per_s']} films/s")
            add("pipeline decoder (decoding.decode_raw) vs cv2 decode, 1 core",
                f"{p['ratio_pipeline_decode_vs_cv2']}x",
                f"{p['pipeline_decode_1core_films_per_s']} films/s")
        m = p["memory"]
        add(f"preprocess peak RSS, {m['films'][0]} -> {m['films'][1]} films (main / tree)",
            f"{m['main_process_peak_rss_mb'][1] / m['main_process_peak_rss_mb'][0]:.2f}x",
            f"{m['main_process_peak_rss_mb']} / {m['tree_peak_rss_mb']} MB; store {m['store_mb']} MB")
    if "input" in s:
        i = s["input"]
        if "ratio_input_vs_model" in i:
            add("input pipeline vs model consumption (target >= 20x)",
                f"{i['ratio_input_vs_model']}x",
                f"{i['packed_store_batches_per_s']} vs {i['model_batches_per_s']} batches/s")
        if "ratio_vs_image_dataset_from_directory" in i:
            add("input pipeline vs image_dataset_from_directory (PNG decode every epoch)",
                f"{i['ratio_vs_image_dataset_from_directory']}x",
                f"{i['naive_image_dataset_from_directory_batches_per_s']} batches/s")
            add("input pipeline vs PyDataset reading files", f"{i['ratio_vs_pydataset']}x",
                f"{i['naive_pydataset_batches_per_s']} batches/s")
    if "train" in s:
        t = s["train"]
        add("train step, mixed_bfloat16 vs float32", f"{t['ratio_bf16_vs_float32']}x",
            ", ".join(f"{k}: {v}" for k, v in t["films_per_s"].items()) + " films/s")
    if "epochs" in s:
        e = s["epochs"]
        t = e["median_epoch_s_after_first"]
        add("epoch wall time, model.fit over AUTOTUNE datasets vs the train stage's fit",
            f"{e['ratio_epoch_time_autotune_vs_fit_epochs']}x",
            f"{t['keras-autotune']} vs {t['fit_epochs']} s an epoch ({e['films']} films, "
            f"{e['size']} px)")
    if "dvc" in s and "skipped" not in s["dvc"]:
        d = s["dvc"]
        for label, block in (("", d), ("fresh clone + dvc pull, ", d.get("clone", {}))):
            for key, name in (("status", "dvc status"), ("noop_repro", "no-op dvc repro")):
                if key in block:
                    add(f"{label}{name} vs empty DVC project (target <= 1.5x)",
                        f"{block[key]['ratio']}x",
                        f"{block[key]['project_s']} vs {block[key]['empty_project_s']} s")
        c = d.get("train_param_change")
        if c:
            add("dvc repro after a train.* change: DVC time before the first stage vs no-op repro",
                f"{c['before_first_stage_s'] / c['noop_repro_s']:.2f}x",
                f"ran {c['ran']}, skipped {c['skipped']}; stages {c['stage_s']} s; fit "
                f"{c['train_fit_s']} s; total {c['total_s']} s")
    if "memory" in s and "growth" in s["memory"]:
        m = s["memory"]
        for name, growth in m["growth"].items():
            runs = m["stages"][name]
            add(f"{name} peak RSS growth {m['films'][0]} -> {m['films'][-1]} films vs store growth "
                f"({m['store_growth_mb']} MB)", f"{growth['vs_store_growth']}x",
                f"{runs[0]['max_single_rss_mb']} -> {runs[-1]['max_single_rss_mb']} MB "
                f"(tree {runs[0]['tree_peak_rss_mb']} -> {runs[-1]['tree_peak_rss_mb']} MB)")
    if "scaling" in s and "rows" in s["scaling"]:
        for row in s["scaling"]["rows"]:
            add(f"RSNA {row['films']} films at {row['size']} px (estimate)", "",
                ", ".join(f"{k}: {v}" for k, v in row.items() if k not in ("films", "size")))
    if "precision-accuracy" in s:
        a = s["precision-accuracy"]
        add("test MAE bf16 - float32 (must be <= 0.2 months)", f"{a['mae_difference_bf16_minus_fp32']}",
            f"float32 {a['float32']}, bf16 {a['mixed_bfloat16']}")
    return "\n".join(lines)


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
