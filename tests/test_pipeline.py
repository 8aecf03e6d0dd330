"""End to end: copy the project, run `dvc repro` on tiny synthetic data, check what it writes,
that a second repro does nothing, and that a param change reruns only the stages that read it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "fetch": {"synthetic": {"count": 60, "height": 80}},
    "preprocess": {"size": 32, "workers": 2},
    "train": {"width": 4, "epochs": 2, "batch_size": 16, "warmup_epochs": 0},
}


def _merge(base: dict, change: dict) -> dict:
    for key, value in change.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _env():
    """This interpreter's bin first, so `python` in dvc.yaml is the one with boneage installed."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1"}


def _set_param(work: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _run(args, cwd):
    result = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def _ran(output: str) -> set[str]:
    return {stage for stage in ("fetch", "preprocess", "split", "train", "evaluate", "export")
            if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    work = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, work / name)
    for name in ("stages", "boneage"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = _merge(yaml.safe_load((work / "params.yaml").read_text()), TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], work)
    _run(["dvc", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], work)
    output = _run(["dvc", "repro"], work)
    return work, output


def test_repro_runs_every_stage_and_writes_metrics_plots_and_exports(project):
    work, output = project
    assert _ran(output) == {"fetch", "preprocess", "split", "train", "evaluate", "export"}
    metrics = json.loads((work / "metrics" / "evaluate.json").read_text())
    detail = json.loads((work / "metrics" / "evaluate-detail.json").read_text())
    assert detail["n_test"] >= 5 and metrics["mae_months"] > 0
    assert "baseline_median" in detail and metrics["baseline_mae"] > 0
    for plot in ("predicted_vs_true.png", "bland_altman.png", "error_by_age.png",
                 "training_curves.png", "predictions.csv"):
        assert (work / "plots" / plot).stat().st_size > 0
    for exported in ("model.keras", "saved_model", "model.tflite", "model_card.json",
                     "MODEL_CARD.md"):
        assert (work / "models" / "boneage" / exported).exists()
    assert (work / "metrics" / "train" / "metrics.json").is_file()
    shown = _run(["dvc", "metrics", "show", "--json"], work)
    assert "metrics/evaluate.json" in shown and "mae_months" in shown


def test_second_repro_is_a_no_op(project):
    work, _ = project
    output = _run(["dvc", "repro"], work)
    assert _ran(output) == set()
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], work)


def test_train_param_reruns_train_onward_only(project):
    work, _ = project
    _set_param(work, "train", "lr", 0.001)
    assert _ran(_run(["dvc", "repro"], work)) == {"train", "evaluate", "export"}


def test_split_seed_reruns_split_onward_only(project):
    work, _ = project
    _set_param(work, "split", "seed", 7)
    assert _ran(_run(["dvc", "repro"], work)) == {"split", "train", "evaluate", "export"}


def test_editing_the_trainer_reruns_train_onward_only(project):
    work, _ = project
    with open(work / "boneage" / "learning" / "training.py", "a") as handle:
        handle.write("\n# an edit\n")
    assert _ran(_run(["dvc", "repro"], work)) == {"train", "evaluate", "export"}


def test_bad_param_fails_the_stage_with_the_key_named(project):
    work, _ = project
    _set_param(work, "train", "lrr", 0.1)
    result = subprocess.run(["dvc", "repro"], cwd=work, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0
    assert "train.lrr: unknown key" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
