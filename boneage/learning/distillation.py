"""Distillation: a student trained on its teachers' readings as well as the labels (what the
train stage needs; the teach stage that writes the readings is :mod:`boneage.learning.teachers`).

The RSNA labels are single readings by radiologists who disagree with each other by 7-8 months
RMS; an ensemble's reading of a training film is a smoother target. The teach stage reads
every *training* film with the trained members (each as it ships: float32, calibrated), in one
plain pass, and writes their mean; the student's train stage then fits

    target = (1 - distill_weight) * label + distill_weight * teachers' mean

on the training films only. Validation keeps the true labels, so the student's best epoch, its
calibration and every figure after it are measured against the radiologists as for any member,
and the validation and test films are never read by the teachers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from boneage.kernel.errors import DataError

TEACHER_TARGETS = "targets.csv"  # id, boneage (the label), teacher (the members' mean), spread


def read_teacher_targets(path: str | Path) -> pd.Series:
    """The teachers' mean reading by film id, from the teach stage's ``targets.csv`` (or its
    folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / TEACHER_TARGETS
    if not path.is_file():
        raise DataError(f"{path}: no teacher targets; run the teach stage first "
                        "(release/dvc.yaml: teach)")
    frame = pd.read_csv(path, dtype={"id": str})
    missing = {"id", "teacher"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: column(s) {sorted(missing)} missing; expected id, teacher")
    values = pd.to_numeric(frame["teacher"], errors="coerce")
    bad = (values.isna() | ~np.isfinite(values.to_numpy(float))).to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{path}: row {first + 2} (id {frame['id'].iloc[first]}): the teacher "
                        f"column is {frame['teacher'].iloc[first]!r}, not a number of months")
    frame["teacher"] = values
    return frame.set_index("id")["teacher"].astype(float)


def blend_targets(ids: list[str], labels: np.ndarray, teacher: pd.Series,
                  weight: float) -> np.ndarray:
    """``(1 - weight) * labels + weight * teacher`` for the films ``ids`` (in that order).

    Every id must have a teacher reading: a student silently trained on labels for some
    films would be a different recipe from the one its card states.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"train.distill_weight must lie in [0, 1], got {weight}")
    missing = [film for film in ids if film not in teacher.index]
    if missing:
        raise DataError(f"the teacher targets have no reading of {len(missing)} training "
                        f"film(s), e.g. {missing[:3]}; rerun the teach stage on this split")
    readings = teacher.loc[list(ids)].to_numpy(float)
    return (1.0 - weight) * np.asarray(labels, float) + weight * readings
