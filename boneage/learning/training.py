"""The train stage: fit a bone-age model on the packed store's films and write the model,
its summary (``training.json``) and calibration, with curves to dvclive.

What the stage puts together lives by concern: :mod:`boneage.learning.precision` (which policy, the
``auto`` probe, the policy scope), :mod:`boneage.learning.replicas` (``tf.distribute`` strategy,
chief election, the replicated loop), :mod:`boneage.learning.datasets` (the ``tf.data`` input) and
:mod:`boneage.learning.recipe` (model, augmentation, loss, optimiser). Here: seeds, the order things
happen in, one replica's ``fit`` and the stage's files. Seeds and op determinism make the
same params give the same model on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from boneage.kernel.artifacts import TRAINED_MODEL, TRAINING_SUMMARY, write_json
from boneage.learning.calibration import fit_calibration
from boneage.kernel.config import TrainParams
from boneage.kernel.errors import ParamsError
from boneage.kernel.provenance import git_commit
from boneage.learning.datasets import make_dataset, shard_by_data
from boneage.learning.distillation import blend_targets
from boneage.learning.models import IMAGE_INPUT, SEX_INPUT
from boneage.learning.precision import (
    BF16_MIN_SPEEDUP,  # noqa: F401  (importable from here too, as bench/perf_children does)
    bf16_may_be_faster,  # noqa: F401
    choose_precision,
    policy_scope,
)
from boneage.learning.recipe import (
    age_weights,
    build_for,
    make_loss,
    make_optimizer,
    peak_lr,
    target_scaling,
)
from boneage.learning.replicas import fit_replicated, is_chief, make_strategy
from boneage.data.splits import training_ids
from boneage.data.store import FilmStore, open_store

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Python, NumPy, TF and Keras seeds plus deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def precision_step(params: TrainParams, input_size: int, train_age: np.ndarray,
                   steps_per_epoch: int, policy: str) -> Callable[[], object]:
    """One training step of the model ``params`` describe, built and compiled as :func:`train`
    does under ``policy``, on one batch of random films of the real shape: what the precision
    probe times. Its own random generator leaves the global seeds alone."""
    with policy_scope(policy):
        model = build_for(params, input_size, train_age)
        model.compile(optimizer=make_optimizer(params, steps_per_epoch, model=model),
                      loss=make_loss(params),
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae")], jit_compile=False)
    rng = np.random.default_rng(params.seed)
    count = params.batch_size
    films = rng.uniform(0, 255, (count, input_size, input_size, 1)).astype(np.float32)
    inputs = {IMAGE_INPUT: films, SEX_INPUT: rng.integers(0, 2, (count, 1)).astype(np.float32)}
    target = rng.choice(np.asarray(train_age, np.float32), count)[:, None]
    return lambda: model.train_on_batch(inputs, target)


@dataclass
class TrainResult:
    model: keras.Model
    history: dict
    best_epoch: int
    train_seconds: float
    n_train: int
    n_val: int
    precision: str = "float32"  # the Keras policy it trained under
    precision_probe: dict = field(default_factory=dict)  # how that policy was chosen


def _labels(store: FilmStore, ids: list[str]):
    """Store rows, ages and sexes of ``ids``; the films stay in the store's memory map."""
    rows = store.select(ids)
    return rows["row"].to_numpy(), rows["boneage"].to_numpy(float), rows["male"].to_numpy(float)


def fit_epochs(model: keras.Model, train_data: tf.data.Dataset, val_data: tf.data.Dataset, *,
               train_batches: int, val_batches: int, epochs: int, callbacks: list,
               verbose: int = 2) -> keras.callbacks.History:
    """``model.fit`` reading one iterator of each dataset for the whole run.

    Given a finite dataset, Keras makes a new training iterator every epoch; destroying one
    waited for tf.data's autotuner thread and stalled every epoch with the CPU idle (an 80 px
    RSNA epoch took ~80 s instead of ~40 s). :func:`make_dataset` now turns the autotuner
    off, and one iterator per run also spares rebuilding the shuffle buffer and map threads
    every epoch. Repeated datasets with the epoch length given keep one iterator: the training
    set is still reshuffled and re-augmented every pass, and each validation pass reads every
    validation film once (Keras still resets the validation iterator for each evaluation).
    """
    return model.fit(train_data.repeat(), steps_per_epoch=train_batches,
                     validation_data=val_data.repeat(), validation_steps=val_batches,
                     epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)


def train(store: FilmStore, train_ids: list[str], val_ids: list[str], params: TrainParams, *,
          out_dir: str | Path, callbacks: list | None = None, verbose: int = 2,
          strategy: tf.distribute.Strategy | None = None,
          teacher: pd.Series | None = None) -> TrainResult:
    """Fit a model on ``train_ids``, keep the weights of the best validation MAE.

    With ``train.distill_weight`` > 0 the training targets blend the labels with ``teacher``
    (the teach stage's readings by film id, :mod:`boneage.learning.distillation`); the
    validation films keep their labels.

    Under a ``tf.distribute`` strategy every replica takes ``batch_size`` films per step,
    so the global batch is ``batch_size x replicas`` (see :func:`peak_lr` for the lr).
    """
    strategy = strategy or make_strategy(params.distribute)  # before any other TF op
    replicas = strategy.num_replicas_in_sync
    global_batch = params.batch_size * replicas
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(params.seed)
    train_rows, train_age, train_male = _labels(store, train_ids)
    val_rows, val_age, val_male = _labels(store, val_ids)
    label_age = train_age  # the radiologists' labels, whatever the training targets become
    if params.distill_weight > 0:
        if teacher is None:
            raise ParamsError(f"train.distill_weight is {params.distill_weight}, but no teacher "
                              "targets were given (stages/train.py --teacher DIR)")
        train_age = blend_targets(train_ids, train_age, teacher, params.distill_weight)
        log.info("distillation: targets %.0f %% teachers' reading, %.0f %% label (they differ "
                 "by %.2f months on average)", 100 * params.distill_weight,
                 100 * (1 - params.distill_weight),
                 np.abs(train_age - label_age).mean() / params.distill_weight)
    elif teacher is not None:
        raise ParamsError("teacher targets were given (--teacher) but train.distill_weight is 0: "
                          "set it in the member's params or drop --teacher")
    mean, std = target_scaling(params, train_age)
    log.info("training on %d films, validating on %d; target mean %.1f sd %.1f months",
             len(train_ids), len(val_ids), mean, std)
    if replicas > 1:
        log.info("%d replicas (%s): global batch %d, peak lr %g", replicas, params.distribute,
                 global_batch, peak_lr(params, replicas))
    steps = math.ceil(len(train_ids) / global_batch)
    precision_probe = choose_precision(
        params.precision, lambda policy: precision_step(params, store.settings.size, train_age,
                                                        steps, policy),
        batch_size=params.batch_size, replicas=replicas)
    precision = precision_probe["chosen"]
    if "timed_steps" in precision_probe:  # the probe's models drew from the seeds:
        seed_everything(params.seed)  # training starts from them as if it had not run
    log.info("precision %s (train.precision: %s)", precision, params.precision)
    # layers take the policy when built; variables are mirrored on every replica
    with policy_scope(precision), strategy.scope():
        model = build_for(params, store.settings.size, train_age)
        model.compile(optimizer=make_optimizer(params, steps, replicas, model),
                      loss=make_loss(params),
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae")], jit_compile=False)
    # how rare each film's age is, by its label (a student's blended target is not its age)
    weights = age_weights(label_age, params.age_weighting)
    if weights is not None:
        log.info("age weighting %s: film weights %.2f..%.2f (mean 1)", params.age_weighting,
                 weights.min(), weights.max())
    train_data = shard_by_data(make_dataset(
        store.images, train_age, train_male, rows=train_rows, batch_size=global_batch,
        training=True, seed=params.seed, augment=params.augment, weights=weights))
    val_data = shard_by_data(make_dataset(
        store.images, val_age, val_male, rows=val_rows, batch_size=global_batch,
        training=False, seed=params.seed))

    best_path = out_dir / "best.weights.h5"
    all_callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor="val_mae", mode="min",
                                                     save_best_only=True, save_weights_only=True)]
    if params.lr_schedule == "plateau":
        all_callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_mae", mode="min", factor=0.5,
            patience=max(1, params.early_stopping_patience // 3),
            min_lr=peak_lr(params, replicas) / 100))
    if params.early_stopping_patience:
        all_callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_mae", mode="min", patience=params.early_stopping_patience))
    all_callbacks.extend(callbacks or [])

    started = time.perf_counter()
    if strategy is tf.distribute.get_strategy():  # the default: one replica, plain fit
        raw_history = fit_epochs(model, train_data, val_data, train_batches=steps,
                                 val_batches=math.ceil(len(val_ids) / global_batch),
                                 epochs=params.epochs, callbacks=all_callbacks,
                                 verbose=verbose).history
    else:
        raw_history = fit_replicated(model, strategy, params, train_data, val_data,
                                     all_callbacks, global_batch)
    seconds = time.perf_counter() - started
    model.load_weights(best_path)
    best_path.unlink()
    history = {k: [float(v) for v in values] for k, values in raw_history.items()}
    best_epoch = int(np.argmin(history["val_mae"])) + 1
    log.info("best validation MAE %.2f months at epoch %d of %d (%.0f s)",
             min(history["val_mae"]), best_epoch, len(history["val_mae"]), seconds)
    return TrainResult(model, history, best_epoch, seconds, len(train_ids), len(val_ids),
                       precision, precision_probe)


def predict_films(model: keras.Model, images: np.ndarray, rows: np.ndarray, male: np.ndarray,
                  batch_size: int = 64) -> np.ndarray:
    """Months for the films at ``rows`` of ``images`` (the store's memory map), as they are (no
    augmentation), batch by batch: the whole set as float32 input would be 4x the films.

    The model is called directly rather than through ``predict``: under a multi-worker
    strategy only the chief gets here, and ``predict`` would wait for the other workers.
    """
    predicted = []
    for start in range(0, len(rows), batch_size):
        films = np.asarray(images[rows[start:start + batch_size]], np.float32)[..., None]
        sexes = np.asarray(male[start:start + batch_size], np.float32)[:, None]
        months = model({IMAGE_INPUT: keras.ops.convert_to_tensor(films),
                        SEX_INPUT: keras.ops.convert_to_tensor(sexes)}, training=False)
        predicted.append(keras.ops.convert_to_numpy(keras.ops.cast(months, "float32")).reshape(-1))
    return np.concatenate(predicted).astype(float) if predicted else np.zeros(0)


def run_training(store_dir: str | Path, split_dir: str | Path, params: TrainParams,
                 out_dir: str | Path, live_dir: str | Path | None = None, *,
                 strategy: tf.distribute.Strategy | None = None,
                 teacher: pd.Series | None = None) -> TrainResult:
    """The train stage: data from the store and split, curves to dvclive, model to ``out_dir``.

    With ``train.distribute: multi_worker`` every worker runs this; only the chief writes
    ``out_dir`` and ``live_dir``, the others write to a temporary folder they delete.
    """
    strategy = strategy or make_strategy(params.distribute)
    commit = git_commit()  # at the start: the code may move on during an hour of training
    store = open_store(store_dir)
    train_ids, val_ids = training_ids(split_dir, params.fold)
    if not is_chief(strategy):
        scratch = Path(tempfile.mkdtemp(prefix="boneage-worker-"))
        try:
            return train(store, train_ids, val_ids, params, out_dir=scratch, strategy=strategy,
                         teacher=teacher)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    callbacks = []
    live = None
    if live_dir is not None:
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
        callbacks.append(DVCLiveCallback(live=live))
    result = train(store, train_ids, val_ids, params, out_dir=out_dir, callbacks=callbacks,
                   strategy=strategy, teacher=teacher)
    out_dir = Path(out_dir)
    result.model.save(out_dir / TRAINED_MODEL)
    # Fitted on the validation films with the best epoch's model: evaluate and export apply it.
    val_rows, val_age, val_male = _labels(store, val_ids)
    calibration = fit_calibration(val_age, predict_films(result.model, store.images, val_rows,
                                                         val_male, params.batch_size),
                                  val_male, params.calibration)
    log.info("calibration %s%s: validation MAE %.2f raw, %.2f calibrated (female %s, male %s)",
             calibration["kind"], "" if calibration["applied"] else " NOT APPLIED",
             calibration["val_mae_raw"], calibration["val_mae_calibrated"],
             calibration.get("fitted", calibration)["female"],
             calibration.get("fitted", calibration)["male"])
    summary = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history["loss"]),
        "best_val_mae_months": min(result.history["val_mae"]),
        "train_seconds": round(result.train_seconds, 1),
        "n_train": result.n_train,
        "n_val": result.n_val,
        "cpu_count": os.cpu_count(),
        "replicas": strategy.num_replicas_in_sync,
        "precision": result.precision,
        "precision_probe": result.precision_probe,
        "calibration": calibration,
        "history": result.history,
        "imaging": store.settings.to_dict(),
        "params": params.model_dump(mode="json"),
        "git_commit": commit,  # the code it was trained at, for the model card
    }
    write_json(out_dir / TRAINING_SUMMARY, summary)
    if live is not None:
        live.summary["best_val_mae"] = summary["best_val_mae_months"]
        live.summary["best_epoch"] = result.best_epoch
        live.end()
    return result
