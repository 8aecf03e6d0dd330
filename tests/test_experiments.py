"""Queued experiments and k-fold cross-validation: `dvc exp run --queue` + `dvc queue start -j 2`
on the real pipeline, then `boneage crossval` over the fold runs."""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dvc_project import TINY, commit_all, copy_project, env, merge, output, ran, run

from boneage.learning.crossval import summarize
from boneage.kernel.errors import DataError
from boneage.data.sources import local_source


def _exp(name: str, fold: int, mae: float, lr: float = 0.002, state: str = "success") -> dict:
    """One experiment as `dvc exp show --json` lists it."""
    return {"revs": [{"rev": f"{fold:040d}", "name": name, "data": {
        "params": {"params.yaml": {"data": {"split": {"folds": 3},
                                            "train": {"fold": fold, "lr": lr}}}},
        "metrics": {"metrics/evaluate.json": {"data": {"mae_months": mae, "n_test": 9}},
                    "metrics/train/metrics.json": {"data": {"best_val_mae": mae + 1}}}}}],
        "executor": {"state": state}}


def _shown(*experiments) -> list:
    return [{"rev": "workspace", "data": {}}, {"rev": "a" * 40, "experiments": list(experiments)}]


def test_summary_has_mean_sd_and_per_fold_values():
    summary = summarize(_shown(_exp("f0", 0, 10.0), _exp("f1", 1, 14.0),
                               _exp("q", 2, 99.0, state="queued")))
    mae = summary["metrics"]["evaluate.mae_months"]
    assert mae["per_fold"] == {"0": 10.0, "1": 14.0}
    assert mae["mean"] == pytest.approx(12.0) and mae["sd"] == pytest.approx(statistics.stdev([10, 14]))
    assert summary["metrics"]["train.best_val_mae"]["mean"] == pytest.approx(13.0)
    assert summary["missing_folds"] == [2] and summary["runs"] == {"0": "f0", "1": "f1"}


def test_summary_refuses_mixed_settings_and_repeated_folds():
    with pytest.raises(DataError, match=r"train.lr \(0.001, 0.002\)"):
        summarize(_shown(_exp("f0", 0, 10.0), _exp("f1", 1, 14.0, lr=0.001)))
    with pytest.raises(DataError, match="fold 0 was run twice"):
        summarize(_shown(_exp("a", 0, 10.0), _exp("b", 0, 11.0)))
    assert summarize(_shown(_exp("a", 0, 10.0), _exp("b", 0, 11.0), _exp("c", 1, 12.0)),
                     ["b", "c"])["runs"] == {"0": "b", "1": "c"}
    with pytest.raises(DataError, match="queue one experiment per fold"):
        summarize(_shown(_exp("f0", 0, 10.0)))


def test_relative_source_in_a_queued_workspace_resolves_against_the_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "datasets" / "rsna").mkdir(parents=True)
    workspace = repo / ".dvc" / "tmp" / "exps" / "tmpab12"
    workspace.mkdir(parents=True)
    assert local_source("datasets/rsna", cwd=workspace) == repo / "datasets" / "rsna"
    with pytest.raises(DataError, match="absolute path") as missing:
        local_source("datasets/missing", cwd=workspace)
    assert str(repo / "datasets" / "missing") in str(missing.value)  # the path tried
    # Outside a queued workspace a missing relative path is left for fetch to report.
    assert local_source("nowhere", cwd=repo) == Path("nowhere")
    assert local_source("/abs/path", cwd=workspace).as_posix() == "/abs/path"


def test_relative_source_in_a_temp_workspace_and_a_sub_pipeline(tmp_path):
    """`dvc exp run --temp` copies to .dvc/tmp/exps/standalone/<tmp>/; a pipeline in a
    sub-folder (release/dvc.yaml) runs its stages from that folder of the copy."""
    repo = tmp_path / "proj"
    (tmp_path / "shared" / "rsna").mkdir(parents=True)
    copy = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpx1y2"
    (copy / ".dvc").mkdir(parents=True)
    (copy / "release").mkdir()
    assert local_source("../shared/rsna", cwd=copy) == tmp_path / "shared" / "rsna"
    assert local_source("../../shared/rsna", cwd=copy / "release") == \
        tmp_path / "shared" / "rsna"


def _wait_for_queue(work, timeout: float = 900, poll: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = output(run(["dvc", "queue", "status"], work))
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(poll)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


@pytest.mark.slow
def test_queued_fold_runs_execute_in_parallel_and_crossval_summarises_them(tmp_path):
    work = copy_project(tmp_path / "project", merge(TINY, {"split": {"folds": 2}}))
    assert ran(output(run(["dvc", "repro"], work)))  # the baseline, so queued runs reuse data
    commit_all(work, "baseline with 2 folds")

    run(["dvc", "exp", "run", "--queue", "-S", "train.fold=0,1"], work)
    queued = output(run(["dvc", "queue", "status"], work))
    assert queued.count("Queued") == 2, queued
    run(["dvc", "queue", "start", "-j", "2"], work)
    status = _wait_for_queue(work)
    assert status.count("Success") == 2, status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], work).stdout)
    exps = [rev for baseline in shown for group in baseline.get("experiments") or []
            for rev in group["revs"]]
    folds = {rev["data"]["params"]["params.yaml"]["data"]["train"]["fold"]: rev for rev in exps}
    assert sorted(folds) == [0, 1]
    for fold, rev in folds.items():
        mae = rev["data"]["metrics"]["metrics/evaluate.json"]["data"]["mae_months"]
        assert mae > 0
        # The queued run trained on the other fold only: fetch/preprocess/split came from
        # the cache, not rerun (DVC ignores untracked files in the temporary workspace).
        logs = output(run(["dvc", "queue", "logs", rev["name"]], work))
        assert ran(logs) == {"train", "evaluate", "export"}, logs

    cli = subprocess.run([sys.executable, "-m", "boneage.interfaces.cli", "crossval"], cwd=work,
                         capture_output=True, text=True, env=env(),
                         timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "test MAE" in cli.stdout and "held-out fold MAE" in cli.stdout, cli.stdout
    summary = json.loads((work / "metrics" / "crossval.json").read_text())
    mae = summary["metrics"]["evaluate.mae_months"]
    per_fold = [folds[k]["data"]["metrics"]["metrics/evaluate.json"]["data"]["mae_months"]
                for k in (0, 1)]
    assert mae["per_fold"] == {"0": per_fold[0], "1": per_fold[1]}
    assert mae["mean"] == pytest.approx(statistics.mean(per_fold))
    assert mae["sd"] == pytest.approx(statistics.stdev(per_fold))
    assert summary["missing_folds"] == []
    # The two folds validate on different films, so their validation MAEs differ.
    val = summary["metrics"]["train.best_val_mae"]["per_fold"]
    assert val["0"] != val["1"]


def _kaggle_folder(root: Path, count: int = 6) -> Path:
    """A tiny Kaggle-layout source: boneage-training-dataset.csv and a folder of PNGs."""
    import cv2
    import numpy as np
    from factories import blob_film

    rng = np.random.default_rng(3)
    films = root / "boneage-training-dataset"
    films.mkdir(parents=True)
    rows = ["id,boneage,male"]
    for number in range(1, count + 1):
        age, male = int(rng.integers(6, 220)), number % 2
        (films / f"{1000 + number}.png").write_bytes(
            cv2.imencode(".png", blob_film(age, male, rng, height=40))[1].tobytes())
        rows.append(f"{1000 + number},{age},{'True' if male else 'False'}")
    (root / "boneage-training-dataset.csv").write_text("\n".join(rows) + "\n")
    return root


def _raw_hash(shown: list, name: str) -> str:
    """The data/raw hash the experiment ``name`` recorded (its fetch output)."""
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            for rev in group["revs"]:
                if rev.get("name") == name:
                    assert rev["data"].get("status", "Success") == "Success", rev
                    return rev["data"]["outs"]["data/raw"]["hash"]
    raise AssertionError(f"no experiment {name} in dvc exp show: {shown}")


@pytest.mark.slow
def test_a_relative_source_works_in_place_with_temp_and_queued(tmp_path):
    """`dvc exp run` in place, `--temp` and `--queue` + `dvc queue start` each fetch a relative
    fetch.source that lies beside the repository (never copied with it); a missing one names
    the path tried. Only the fetch stage runs: the resolution is all in fetch."""
    _kaggle_folder(tmp_path / "films")
    work = copy_project(tmp_path / "project")
    relative = ["-S", "fetch.source=../films"]

    temp = run(["dvc", "exp", "run", "--temp", "-n", "temp", "fetch", *relative], work)
    assert "resolved against the repository" in output(temp), output(temp)
    # -f: rerun the stage rather than restore the first run's outputs from the run cache
    run(["dvc", "exp", "run", "--queue", "-f", "-n", "queued", "fetch", *relative], work)
    run(["dvc", "queue", "start", "-j", "1"], work)
    status = _wait_for_queue(work, timeout=300, poll=2)
    assert "Success" in status, status
    logs = output(run(["dvc", "queue", "logs", "queued"], work))
    assert "resolved against the repository" in logs, logs
    in_place = run(["dvc", "exp", "run", "-f", "-n", "here", "fetch", *relative], work)
    assert ran(output(in_place)) == {"fetch"}, output(in_place)

    labels = (work / "data" / "raw" / "labels.csv").read_text().splitlines()
    assert labels[0] == "id,boneage,male" and len(labels) == 7
    shown = json.loads(run(["dvc", "exp", "show", "--json"], work).stdout)
    # The same six films, byte for byte, whichever way the stage ran.
    assert _raw_hash(shown, "temp") == _raw_hash(shown, "queued") == _raw_hash(shown, "here")

    missing = run(["dvc", "exp", "run", "--temp", "fetch", "-S", "fetch.source=../nowhere"],
                  work, check=False)
    said = output(missing)
    assert missing.returncode != 0
    assert f"tried {tmp_path / 'nowhere'}" in said and "Traceback" not in said, said
    missing_here = run(["dvc", "exp", "run", "fetch", "-S", "fetch.source=../nowhere"], work,
                       check=False)
    assert f"tried {tmp_path / 'nowhere'}" in output(missing_here), output(missing_here)


def _fold(name: str, fold: int, val: float, mae: float, r2: float, within: float) -> dict:
    exp = _exp(name, fold, mae)
    data = exp["revs"][0]["data"]["metrics"]
    data["metrics/evaluate.json"]["data"] = {"mae_months": mae, "rmse_months": mae * 1.3,
                                             "r2": r2, "within_12": within,
                                             "baseline_mae": 55.7}
    data["metrics/evaluate-detail.json"] = {"data": {"n_test": 240, "mae_vs_baseline": 0.2,
                                                     "baseline_median": {"mae_months": 55.7}}}
    data["metrics/train/metrics.json"]["data"]["best_val_mae"] = val
    return exp


def test_crossval_prints_a_short_table_in_the_right_units(tmp_path):
    shown = _shown(_fold("fold-a", 0, 10.0, 11.0, 0.9, 0.70),
                   _fold("fold-b", 1, 12.0, 13.0, 0.8, 0.60),
                   _fold("fold-c", 2, 14.0, 12.0, 0.85, 0.65))
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    cli = subprocess.run([sys.executable, "-m", "boneage.interfaces.cli", "crossval",
                          "--from-json", str(saved), "--out", str(tmp_path / "cv.json")],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert len(lines) <= 10 and max(map(len, lines[1:])) <= 100, cli.stdout  # [0]: the path
    head, *folds = lines[1:6]
    assert head.split()[:4] == ["fold", "experiment", "val", "MAE"]
    assert folds[0].split() == ["0", "fold-a", "10.00", "11.00", "14.30", "0.900", "70.0%"]
    mean = folds[3]
    assert mean.startswith("mean ± SD") and "12.00 ± 2.00" in mean  # val MAE, sample SD
    assert "0.850 ± 0.050" in mean and "65.0 ± 5.0%" in mean  # R² a ratio, within-12 in %
    assert "held-out fold MAE: 12.00 ± 2.00 months (1 year 0 months ± 2 months)" in cli.stdout
    for noise in ("baseline", "n_test", "mae_vs_baseline", "± 0.000"):
        assert noise not in cli.stdout, cli.stdout
    summary = json.loads((tmp_path / "cv.json").read_text())  # the JSON keeps every metric
    assert summary["metrics"]["evaluate-detail.n_test"]["mean"] == 240
