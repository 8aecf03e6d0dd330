"""A throwaway copy of the project as a git + DVC repository, for tests that drive the dvc CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("fetch", "preprocess", "split", "train", "evaluate", "export")
# Seconds-long stages: a few small synthetic films, a 4-filter CNN, one epoch.
TINY = {
    "fetch": {"synthetic": {"count": 40, "height": 80}},
    "preprocess": {"size": 32, "workers": 1},
    "train": {"width": 4, "epochs": 1, "batch_size": 16, "warmup_epochs": 0},
    "export": {"formats": ["keras"]},
}


def merge(base: dict, change: dict) -> dict:
    """``base`` with ``change`` laid over it, as a new dict: neither argument is changed.

    It once updated ``base`` in place, and `merge(TINY, {"split": {"folds": 2}})` in
    test_experiments gave every later test of the same xdist worker 2 folds (the k-fold docs
    test then saw nothing to rerun)."""
    merged = dict(base)
    for key, value in change.items():
        merged[key] = merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _empty_file() -> str:
    path = Path(tempfile.gettempdir()) / "boneage-tests-empty-aws-config"
    path.touch()
    return str(path)


def env(**extra: str) -> dict:
    """This interpreter's bin first (so `python` in dvc.yaml has boneage), no analytics, no
    AWS settings from the user's home."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    empty = _empty_file()
    return {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "AWS_CONFIG_FILE": empty,
            "AWS_SHARED_CREDENTIALS_FILE": empty, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900,
        **env_extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(**env_extra), capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, \
            f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def ran(text: str) -> set[str]:
    """Stages a `dvc repro` / `dvc exp run` log says it ran."""
    return {stage for stage in STAGES if f"Running stage '{stage}'" in text}


def git_identity(repo: Path) -> None:
    run(["git", "config", "user.name", "boneage test"], repo)
    run(["git", "config", "user.email", "test@boneage.invalid"], repo)


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def copy_project(work: Path, params: dict | None = None) -> Path:
    """dvc.yaml, params.yaml (with ``params`` merged in), stages/ and boneage/ in a new git +
    DVC repository at ``work``, committed."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, work / name)
    for name in ("stages", "boneage"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    values = merge(yaml.safe_load((work / "params.yaml").read_text()), params or TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], work)
    git_identity(work)
    run(["dvc", "init", "-q"], work)
    commit_all(work, "project")
    return work


def set_param(work: Path, dotted: str, value) -> None:
    values = yaml.safe_load((work / "params.yaml").read_text())
    *path, last = dotted.split(".")
    node = values
    for key in path:
        node = node[key]
    node[last] = value
    (work / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
