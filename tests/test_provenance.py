"""The commit a result records (boneage.kernel.provenance): -dirty for changed code, not for
the dvc.lock files DVC writes while a pipeline runs, nor for paths the caller names."""

import subprocess

from boneage.kernel.provenance import git_commit


def git(folder, *args):
    return subprocess.run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci",
                           *args], cwd=folder, check=True, capture_output=True, text=True)


def test_dirty_means_changed_code_not_locks_or_named_outputs(tmp_path):
    git(tmp_path, "init", "-q")
    for name, text in {"dvc.lock": "a", "release/dvc.lock": "b", "release/out/model": "c",
                       "code.py": "d"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "start")
    head = git(tmp_path, "rev-parse", "HEAD").stdout.strip()
    release = tmp_path / "release"
    assert git_commit(release) == head
    (tmp_path / "dvc.lock").write_text("changed")
    (release / "dvc.lock").write_text("changed")
    assert git_commit(release) == head  # DVC wrote its locks
    (release / "out" / "model").unlink()  # the stage's own output, removed before it runs
    assert git_commit(release) == f"{head}-dirty"
    assert git_commit(release, ignore=[release / "out"]) == head
    (tmp_path / "code.py").write_text("edited")
    assert git_commit(release, ignore=[release / "out"]) == f"{head}-dirty"
