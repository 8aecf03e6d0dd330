"""Where a result came from: the git commit of the code that made it.

A trained model records the commit it was trained at, so a model card can name the code
(``-dirty`` when tracked files differed from it) long after the code has moved on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


LOCK_FILES = "**/dvc.lock"  # written by DVC as a pipeline runs: results, not code


def git_commit(folder: str | Path | None = None, ignore: list[str | Path] = ()) -> str | None:
    """HEAD of the git checkout holding ``folder`` (the working directory by default), with
    ``-dirty`` when tracked files other than the ``dvc.lock`` files differ from it; None
    outside a checkout or without git. ``ignore``: more paths whose changes do not count (the
    release stage's own output, which DVC removes before the stage runs)."""
    excluded = [f":(top,exclude,glob){LOCK_FILES}",
                *[f":(exclude){Path(item).resolve()}" for item in ignore]]
    try:
        run = dict(cwd=folder, capture_output=True, text=True, check=True, timeout=30)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                "--", ":/", *excluded], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")
