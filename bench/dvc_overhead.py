"""DVC overhead on the 11,611-film shared RSNA set: `dvc status` and a no-op `dvc repro` of an
up-to-date pipeline, against the same commands in an empty DVC project, in the same run.

    python bench/dvc_overhead.py [--data ../shared/datasets/rsna-bone-age-100px] [--repeats 5]

Copies the project to a temp dir, points fetch.source at the data, trains 1 tiny epoch (the
cost here is DVC's, not the model's), then times each command `--repeats` times and prints
the median and the ratio to the empty project. Then the same two commands in a fresh
`git clone` after `dvc pull` from a local-folder remote (DVC's state database is empty there),
and a `dvc repro` after changing only a `train.*` param: which stages ran, how long DVC took
before the first one started (hashing; compare with the no-op repro) and each stage's time.
Writes bench/results/dvc-overhead.json; bench/perf.py calls :func:`measure` too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{args} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def timed(args, cwd, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sh(args, cwd)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def init_repo(path: Path):
    sh(["git", "init", "-q"], path)
    sh(["dvc", "init", "-q"], path)
    sh(["git", "add", "-A"], path)
    sh(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"], path)


def timed_repro(cwd: Path) -> dict:
    """`dvc repro` with each output line time-stamped: the stages it ran and when each began."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    process = subprocess.Popen(["dvc", "repro"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks, skipped = [], []
    for line in process.stdout:
        found = re.search(r"Running stage '([^']+)'", line)
        if found:
            marks.append((found.group(1), time.perf_counter() - started))
        found = re.search(r"Stage '([^']+)' didn't change", line)
        if found:
            skipped.append(found.group(1))
    if process.wait():
        raise SystemExit(f"dvc repro failed in {cwd}")
    total = time.perf_counter() - started
    ends = [at for _, at in marks[1:]] + [total]
    return {"total_s": round(total, 2), "skipped": skipped, "ran": [name for name, _ in marks],
            "before_first_stage_s": round(marks[0][1], 2) if marks else round(total, 2),
            "stage_s": {name: round(end - at, 2) for (name, at), end in zip(marks, ends)}}


def measure(data: Path, repeats: int = 3, size: int = 64, width: int = 4) -> dict:
    """Every DVC figure of bench/README.md in one go, in a temp copy of the project."""
    work = Path(tempfile.mkdtemp(prefix="boneage-dvc-bench-"))
    project, empty = work / "project", work / "empty"
    project.mkdir()
    empty.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("stages", "boneage"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"]["source"] = str(data.resolve())
    params["preprocess"]["size"] = size
    params["train"].update(epochs=1, width=width)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (empty / "dvc.yaml").write_text("stages: {}\n")  # so `dvc repro` has a (empty) pipeline
    init_repo(project)
    init_repo(empty)
    try:
        started = time.perf_counter()
        sh(["dvc", "repro"], project)
        first = time.perf_counter() - started
        results = {"data": str(data), "films": sum(1 for _ in data.rglob("*.png")),
                   "first_repro_s": round(first, 1), "preprocess_size": size, "train_width": width,
                   "repeats": repeats}

        def compare(where: Path) -> dict:
            out = {}
            for name, command in (("status", ["dvc", "status"]), ("noop_repro", ["dvc", "repro"])):
                ours, base = timed(command, where, repeats), timed(command, empty, repeats)
                out[name] = {"project_s": round(ours, 2), "empty_project_s": round(base, 2),
                             "ratio": round(ours / base, 2)}
            return out

        results.update(compare(project))

        # A fresh clone: outputs come from the remote, DVC's state database starts empty.
        remote = work / "remote"
        sh(["dvc", "remote", "add", "-q", "-d", "local", str(remote)], project)
        sh(["git", "add", "-A"], project)
        sh(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "run"], project)
        sh(["dvc", "push", "-q"], project)
        clone = work / "clone"
        sh(["git", "clone", "-q", str(project), str(clone)], work)
        started = time.perf_counter()
        sh(["dvc", "pull", "-q"], clone)
        results["clone"] = {"dvc_pull_s": round(time.perf_counter() - started, 2), **compare(clone)}

        # Only a train param changes: fetch, preprocess and split must be skipped unhashed.
        params["train"]["seed"] = int(params["train"]["seed"]) + 1
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        change = timed_repro(project)
        summary = json.loads((project / "models" / "trained" / "training.json").read_text())
        change["train_fit_s"] = summary["train_seconds"]
        change["noop_repro_s"] = results["noop_repro"]["project_s"]
        results["train_param_change"] = change
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path,
                        default=ROOT.parent / "shared" / "datasets" / "rsna-bone-age-100px")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found")
    results = measure(args.data, args.repeats)
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / "dvc-overhead.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
