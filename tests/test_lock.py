"""The lock is honest: a clean clone of HEAD is up to date, before and after the package is
imported, and a pushed run pulled into a fresh clone has nothing to rerun.

`dvc.lock` must be regenerated (`dvc repro`) in the commit that changes any stage's code or
params (docs/contributing.md). On a clean clone the only differences DVC may report are
outputs that are not in the local cache and, following from them, downstream deps that are
another stage's missing output; a modified code dep or a changed param means the lock was
written for other code.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_project import ROOT, TINY, commit_all, git_identity, merge, output, ran, run

# What a clean clone may lack: the outputs themselves (no cache yet).
MISSING = {"not in cache", "deleted"}


def _pipelines(repo: Path) -> dict[str, dict]:
    """Every dvc.yaml under ``repo`` (not .dvc/, .venv/ or .git/): its folder, its stages and
    the stage names its dvc.lock records (None where it has no lock)."""
    pipelines = {}
    for path in sorted(repo.rglob("dvc.yaml")):
        relative = path.relative_to(repo)
        if relative.parts[0] in (".dvc", ".venv", ".git"):
            continue
        lock = path.with_name("dvc.lock")
        locked = (set((yaml.safe_load(lock.read_text()) or {}).get("stages") or {})
                  if lock.is_file() else None)
        pipelines[relative.as_posix()] = {
            "folder": relative.parent.as_posix(),
            "stages": (yaml.safe_load(path.read_text()) or {}).get("stages") or {},
            "locked": locked}
    return pipelines


def _outputs(pipelines: dict[str, dict]) -> set[str]:
    """Every stage output of every pipeline, as a path from the repository root."""
    paths = set()
    for pipeline in pipelines.values():
        for stage in pipeline["stages"].values():
            for kind in ("outs", "metrics", "plots"):
                for entry in stage.get(kind) or []:
                    name = next(iter(entry)) if isinstance(entry, dict) else entry
                    paths.add(posixpath.normpath(posixpath.join(pipeline["folder"], name)))
    return paths


def _address(pipeline_file: str, stage: str) -> str:
    return stage if pipeline_file == "dvc.yaml" else f"{pipeline_file}:{stage}"


def dishonest(status: dict, pipelines: dict[str, dict]) -> list[str]:
    """What ``dvc status --json`` says beyond missing outputs, one line per problem.

    A dep may be missing only where it is (inside) another stage's output. A stage the
    top-level lock lacks was never run for this code; a stage of another pipeline that its lock
    lacks (a release member not trained yet) has nothing to be honest about and is skipped.
    """
    outputs = _outputs(pipelines)
    never_run, problems = set(), []
    for file, pipeline in pipelines.items():
        for stage in pipeline["stages"]:
            if pipeline["locked"] is None or stage not in pipeline["locked"]:
                if file == "dvc.yaml":
                    problems.append(f"{stage}: not in dvc.lock (run `dvc repro` and commit it)")
                never_run.add(_address(file, stage))
    for stage, entries in status.items():
        if stage in never_run:
            continue
        for entry in entries:
            if isinstance(entry, str):  # "always changed", "changed checksum", ...
                problems.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                if kind == "changed outs":
                    problems += [f"{stage}: out {path} {how}" for path, how in changes.items()
                                 if how not in MISSING]
                elif kind == "changed deps":
                    problems += [f"{stage}: dep {path} {how}" for path, how in changes.items()
                                 if not (how == "deleted" and _inside(path, outputs))]
                else:  # changed params, changed command, ...
                    problems.append(f"{stage}: {kind} {changes}")
    return problems


def _inside(path: str, outputs: set[str]) -> bool:
    path = posixpath.normpath(path)
    return any(path == out or path.startswith(out + "/") for out in outputs)


def _status(repo: Path) -> dict:
    # No target: every pipeline in the repository (dvc.yaml and release/dvc.yaml).
    result = run(["dvc", "status", "--json"], repo, timeout=300)
    return json.loads(result.stdout or "{}")


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git repository")
    clone = tmp_path_factory.mktemp("clean") / "boneage"
    run(["git", "clone", "-q", str(ROOT), str(clone)], ROOT)
    return clone


def test_a_clean_clone_of_head_reports_only_missing_outputs(clean_clone):
    pipelines = _pipelines(clean_clone)
    assert "dvc.yaml" in pipelines
    problems = dishonest(_status(clean_clone), pipelines)
    assert problems == [], ("dvc.lock does not describe HEAD's code and params; run `dvc repro` "
                            "and commit dvc.lock (docs/contributing.md):\n" + "\n".join(problems))


def test_importing_the_package_leaves_the_clone_up_to_date(clean_clone):
    # What importing, running the tests or an editor leaves beside the code.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "boneage", "stages"],
                   cwd=clean_clone, check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "import boneage.data.sources, boneage.data.phantom"],
                   cwd=clean_clone, check=True, capture_output=True,
                   env={"PYTHONPATH": str(clean_clone), "PATH": "/usr/bin:/bin"})
    assert list((clean_clone / "boneage" / "data" / "sources").glob("__pycache__/*.pyc"))
    (clean_clone / "boneage" / "data" / "phantom" / "notes.py~").write_text("editor backup")
    problems = dishonest(_status(clean_clone), _pipelines(clean_clone))
    assert problems == [], "\n".join(problems)


def test_a_frozen_stage_does_not_break_the_check(clean_clone, tmp_path):
    """Release members are frozen once trained (`dvc freeze`): DVC stops checking their deps,
    and their outputs, absent from a clone, count as missing only."""
    copy = tmp_path / "frozen"
    shutil.copytree(clean_clone, copy, symlinks=True)
    pipelines = _pipelines(copy)
    stage = next(iter(pipelines["dvc.yaml"]["stages"]))
    before = dishonest(_status(copy), pipelines)  # [] on an honest HEAD
    run(["dvc", "freeze", stage], copy)
    assert yaml.safe_load((copy / "dvc.yaml").read_text())["stages"][stage]["frozen"] is True
    after = dishonest(_status(copy), _pipelines(copy))
    assert not [line for line in after if line.startswith(f"{stage}:")], after
    assert set(after) <= set(before), sorted(set(after) - set(before))


def test_the_check_catches_a_stale_lock(clean_clone, tmp_path):
    """The check itself can fail: an edited stage dep and an edited param are reported."""
    copy = tmp_path / "stale"
    shutil.copytree(clean_clone, copy, symlinks=True)
    with (copy / "stages" / "split.py").open("a") as script:
        script.write("# edited\n")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["evaluate"]["tta"] = 3
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = dishonest(_status(copy), _pipelines(copy))
    assert any(line.startswith("split: dep stages/split.py modified") for line in problems), \
        problems
    assert "evaluate: dep params.yaml {'evaluate': 'modified'}" in problems, problems


@pytest.mark.slow
def test_push_fresh_clone_pull_and_repro_runs_nothing(clean_clone, tmp_path):
    """One person runs a tiny copy of the pipeline and pushes to a folder remote; a fresh clone
    pulls it and `dvc repro` has nothing to run."""
    alice = tmp_path / "alice"
    run(["git", "clone", "-q", str(clean_clone), str(alice)], tmp_path)
    git_identity(alice)
    params = merge(yaml.safe_load((alice / "params.yaml").read_text()), TINY)
    (alice / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "remote", "add", "-d", "shelf", str(tmp_path / "remote")], alice)
    # dvc.yaml only: the release pipeline fetches the user's own RSNA copy.
    assert ran(output(run(["dvc", "repro", "dvc.yaml"], alice))) == {
        "fetch", "preprocess", "split", "train", "evaluate", "export"}
    commit_all(alice, "tiny run")
    run(["dvc", "push"], alice)

    bob = tmp_path / "bob"
    run(["git", "clone", "-q", str(alice), str(bob)], tmp_path)
    assert not (bob / "models" / "boneage").exists()
    # An import in bob's clone first: __pycache__ must not count as a change either.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "boneage"], cwd=bob, check=True,
                   capture_output=True)
    # dvc.yaml only: a plain `dvc pull` also wants the release pipeline's outputs, which a
    # tiny run never made (and a release member's are on its trainer's remote).
    run(["dvc", "pull", "dvc.yaml"], bob)
    assert (bob / "models" / "boneage" / "model.keras").read_bytes() == \
        (alice / "models" / "boneage" / "model.keras").read_bytes()
    status = _status(bob)
    top_level = {stage: entries for stage, entries in status.items() if ":" not in stage}
    assert top_level == {}, status
    repro = output(run(["dvc", "repro", "dvc.yaml"], bob))
    assert ran(repro) == set(), repro
    assert "didn't change, skipping" in repro or "up to date" in repro, repro
