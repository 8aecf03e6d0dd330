"""The teach stage: the trained members' mean reading of every training film, written where a
distilled student's train stage reads it (:mod:`boneage.learning.distillation`).

Only the training films are read: the validation films keep choosing the student's epoch and
calibration against the labels, and the test films stay unseen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.data.splits import read_ids
from boneage.data.store import open_store
from boneage.kernel.artifacts import SPLIT_FILES
from boneage.learning.conformal import combine
from boneage.learning.distillation import TEACHER_TARGETS
from boneage.learning.evaluation import predict_store
from boneage.learning.export import exportable_model

log = logging.getLogger(__name__)


def teacher_targets(member_dirs: dict[str, Path], store_dir: str | Path,
                    split_dir: str | Path) -> pd.DataFrame:
    """The members' mean reading of every training film of the split (one plain pass each)."""
    if not member_dirs:
        raise ValueError("distillation needs at least one teacher (--member NAME=DIR)")
    store = open_store(store_dir)
    train_ids = read_ids(Path(split_dir) / SPLIT_FILES["train"])
    readings = []
    frame = None
    for name, member_dir in member_dirs.items():
        model, _ = exportable_model(member_dir)
        log.info("teacher %s: reading %d training films", name, len(train_ids))
        predicted = predict_store(model, store, train_ids)
        frame = predicted if frame is None else frame
        readings.append(predicted["predicted"].to_numpy(float))
        log.info("teacher %s: training MAE %.2f months", name,
                 np.abs(readings[-1] - predicted["boneage"].to_numpy(float)).mean())
    out = frame[["id", "boneage"]].copy()
    out["teacher"], out["spread"] = combine(np.column_stack(readings))  # as the release does
    log.info("teachers %s: mean training MAE %.2f months against the labels, spread %.2f",
             ", ".join(member_dirs), np.abs(out["teacher"] - out["boneage"]).mean(),
             out["spread"].mean())
    return out


def write_teacher_targets(targets: pd.DataFrame, out_dir: str | Path) -> Path:
    """``targets`` as ``out_dir/targets.csv`` (id, boneage, teacher, spread)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TEACHER_TARGETS
    targets.to_csv(path, index=False, float_format="%.4f")
    log.info("wrote %s (%d films)", path, len(targets))
    return path
