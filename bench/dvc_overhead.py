"""DVC overhead on the 11,611-film shared RSNA set: `dvc status` and a no-op `dvc repro` of an
up-to-date pipeline, against the same commands in an empty DVC project, in the same run.

    python bench/dvc_overhead.py [--data ../shared/datasets/rsna-bone-age-100px] [--repeats 5]

Copies the project to a temp dir, points fetch.source at the data, trains 1 tiny epoch (the
cost here is DVC's, not the model's), then times each command `--repeats` times and prints
the median and the ratio to the empty project. Writes bench/results/dvc-overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path,
                        default=ROOT.parent / "shared" / "datasets" / "rsna-bone-age-100px")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found")
    work = Path(tempfile.mkdtemp(prefix="boneage-dvc-bench-"))
    project, empty = work / "project", work / "empty"
    project.mkdir()
    empty.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("stages", "boneage"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"]["source"] = str(args.data.resolve())
    params["preprocess"]["size"] = 64
    params["train"].update(epochs=1, width=4)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (empty / "dvc.yaml").write_text("stages: {}\n")  # so `dvc repro` has a (empty) pipeline
    init_repo(project)
    init_repo(empty)
    started = time.perf_counter()
    sh(["dvc", "repro"], project)
    first = time.perf_counter() - started
    results = {"data": str(args.data), "films": sum(1 for _ in (args.data).rglob("*.png")),
               "first_repro_s": round(first, 1), "cpu_count": os.cpu_count()}
    for name, command in (("status", ["dvc", "status"]), ("noop_repro", ["dvc", "repro"])):
        ours, base = timed(command, project, args.repeats), timed(command, empty, args.repeats)
        results[name] = {"project_s": round(ours, 2), "empty_project_s": round(base, 2),
                         "ratio": round(ours / base, 2)}
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / "dvc-overhead.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
