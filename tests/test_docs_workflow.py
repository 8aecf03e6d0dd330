"""The commands of docs/experiments.md, run as written on a tiny copy of the pipeline: a saved
baseline, an in-place experiment, the comparison commands at 100 columns, back to the baseline
with nothing to rerun, the k-fold preparation that trains nothing and leaves no file untracked,
and `dvc plots show` drawing each chart once into a git-ignored folder.

Each command below is looked up verbatim in the page, so the page and this test cannot drift.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from dvc_project import ROOT, TINY, commit_all, git_identity, merge, output, ran, run, set_param

PAGE = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
WIDTH = 100


def documented(command: str) -> list[str]:
    """``command`` as the page writes it, for ``bash -c`` (quotes and all)."""
    assert command in PAGE, f"docs/experiments.md no longer says: {command}"
    return ["bash", "-c", command]


def widest(text: str) -> int:
    return max((len(line.rstrip()) for line in text.splitlines()), default=0)


def tiny_clone(work):
    """A clone of HEAD (its .gitignore and .dvcignore too) at ``work`` with tiny params
    committed."""
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git repository")
    run(["git", "clone", "-q", str(ROOT), str(work)], ROOT)
    git_identity(work)
    params = merge(yaml.safe_load((work / "params.yaml").read_text()), TINY)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(work, "tiny params")
    return work


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One tiny clone that the experiment and plots tests share, in that order."""
    return tiny_clone(tmp_path_factory.mktemp("docs") / "boneage")


@pytest.mark.slow
def test_the_experiment_commands_of_the_docs_run_as_written(project):
    work = project
    assert ran(output(run(documented("dvc repro"), work))) == {
        "fetch", "preprocess", "split", "train", "evaluate", "export"}
    run(documented("dvc exp save -n baseline dvc.yaml"), work)
    experiment = output(run(documented("dvc exp run --temp -n lr-low -S train.lr=0.001"),
                            work))
    assert ran(experiment) == {"train", "evaluate", "export"}, experiment
    # --temp: the workspace is still the baseline, so the next repro has nothing to do
    assert yaml.safe_load((work / "params.yaml").read_text())["train"]["lr"] == 0.002
    assert ran(output(run(["dvc", "repro"], work))) == set()

    show_line = next(line for line in PAGE.splitlines()
                     if line.startswith("dvc exp show --only-changed --drop"))
    shown = run(documented(show_line), work, COLUMNS=str(WIDTH)).stdout
    header = next(line for line in shown.splitlines() if "Experiment" in line)
    assert widest(shown) <= WIDTH and "…" not in shown, shown  # nothing squeezed out
    for column in ("mae_months", "rmse_months", "r2", "mae_raw", "train.lr"):
        assert column in header, shown
    for noise in ("Created", "n_test", "mae_by", "eval.mae", "bias", "best_val_mae"):
        assert noise not in header, shown
    assert "baseline" in shown and "lr-low" in shown

    diff = run(documented("dvc metrics diff baseline lr-low --targets metrics/evaluate.json"),
               work).stdout
    assert widest(diff) <= WIDTH and "mae_months" in diff and "mae_by" not in diff, diff
    params = run(documented("dvc params diff baseline lr-low"), work).stdout
    assert "train.lr" in params and "0.002" in params and "0.001" in params, params
    headline = run(["dvc", "metrics", "show", "metrics/evaluate.json"], work).stdout
    assert "metrics show metrics/evaluate.json" in PAGE and widest(headline) <= WIDTH, headline

    # Taking the experiment: its params and outputs, and nothing for dvc repro to do.
    run(documented("git stash -u && dvc exp branch lr-low lr-low && git checkout lr-low && "
                   "dvc checkout dvc.yaml"), work)
    assert yaml.safe_load((work / "params.yaml").read_text())["train"]["lr"] == 0.001
    again = output(run(["dvc", "repro"], work))
    assert ran(again) == set(), again


@pytest.mark.slow
def test_k_fold_preparation_trains_nothing_and_tracks_the_folds(tmp_path):
    # A clone of its own: after the experiment test the shared one sits on an experiment's
    # branch, and under CI's load `dvc repro split` there once saw no change to run.
    work = tiny_clone(tmp_path / "boneage")
    baseline = output(run(["dvc", "repro", "split"], work))
    assert ran(baseline) == {"fetch", "preprocess", "split"}, baseline
    commit_all(work, "baseline split")
    set_param(work, "split.folds", 2)  # "set split.folds: 5 in params.yaml" (2 films a fold here)
    assert "# set split.folds: 5 in params.yaml, then" in PAGE
    prepared = output(run(documented("dvc repro split"), work))
    seen = prepared
    if not ran(prepared):  # say what DVC saw
        seen += "\n".join([
            run(["dvc", "status", "split"], work).stdout,
            run(["dvc", "params", "diff"], work).stdout,
            run(["git", "status", "--porcelain"], work).stdout,
            (work / "params.yaml").read_text().split("split:", 1)[-1][:300],
            (work / "dvc.lock").read_text().split("  split:", 1)[-1][:1500],
            output(run(["dvc", "repro", "split", "--dry", "-v"], work, check=False))[-6000:]])
    assert ran(prepared) == {"split"}, seen  # no retraining just to write the folds
    run(documented('git add params.yaml dvc.lock data/split && git commit -m "5 folds"'), work)
    assert (work / "data" / "split" / "folds.csv").is_file()
    assert run(["git", "ls-files", "data/split/folds.csv"], work).stdout.strip()
    assert run(["git", "status", "--porcelain", "data/split", "params.yaml"], work).stdout == ""


@pytest.mark.slow
def test_plots_show_draws_each_chart_once_into_an_ignored_folder(project):
    work = project
    if not (work / "plots" / "predictions.csv").is_file():
        run(["dvc", "repro"], work)
    drawn = json.loads(run(["dvc", "plots", "show", "--json"], work).stdout)
    charts = drawn.get("data", drawn)
    assert sorted(charts) == ["bland_altman", "error_by_age", "predicted_vs_true",
                              "training_curves"], sorted(charts)
    run(["dvc", "plots", "show"], work)
    assert (work / "dvc_plots" / "index.html").is_file()
    untracked = run(["git", "status", "--porcelain", "--untracked-files=all"], work).stdout
    assert "dvc_plots" not in untracked, untracked
    assert "draws four charts" in PAGE and "git-ignored" in PAGE


def test_the_page_names_no_command_this_test_does_not_know():
    """Every `dvc exp show` line of the page's Compare settings block is the one run above."""
    block = PAGE.split("## Compare settings", 1)[1].split("### Hyperparameter search", 1)[0]
    shows = [line for line in block.splitlines() if line.startswith("dvc exp show")]
    assert len(shows) == 1 and shows[0].startswith("dvc exp show --only-changed --drop")
    assert subprocess.run([sys.executable, "-c", "import shlex, sys; shlex.split(sys.argv[1])",
                           shows[0]], check=False).returncode == 0  # quotes balance


def test_merging_params_leaves_the_shared_tiny_params_alone():
    """The k-fold test's old CI failure: another test's merge wrote into TINY."""
    before = yaml.safe_dump(TINY)
    merged = merge(TINY, {"split": {"folds": 2}, "train": {"epochs": 3}})
    assert merged["split"]["folds"] == 2 and merged["train"]["epochs"] == 3
    assert merged["train"]["width"] == TINY["train"]["width"]
    assert yaml.safe_dump(TINY) == before
