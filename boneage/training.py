"""Train a bone-age model from the packed store with ``tf.data`` and ``model.fit``.

The input pipeline gathers batches from the store's memory map and augments them
(:class:`boneage.recipe.FilmBatches`) in parallel map calls, prefetching ahead of the model,
so the CPU spends its time in the model rather than decoding files. Seeds and op
determinism make the same params give the same model on CPU.
"""

from __future__ import annotations

import json
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
import tensorflow as tf

from boneage.calibration import fit_calibration
from boneage.config import AugmentParams, TrainParams
from boneage.models import IMAGE_INPUT, MODEL_FILE, SEX_INPUT, SUMMARY_FILE
from boneage.recipe import (
    FilmBatches,
    age_weights,
    build_for,
    make_loss,
    make_optimizer,
    peak_lr,
    target_scaling,
)
from boneage.splits import training_ids
from boneage.store import FilmStore, open_store, usable_cores

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Python, NumPy, TF and Keras seeds plus deterministic TF kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


BF16_MIN_SPEEDUP = 1.10  # auto takes bf16 only this much faster: a tie keeps float32's precision
PROBE_POLICIES = ("float32", "mixed_bfloat16")


def bf16_may_be_faster() -> bool:
    """Whether bf16 can run natively here: AVX512-BF16 or AMX on the CPU, or a GPU. Elsewhere
    TensorFlow emulates bf16, always slower than float32, so there is nothing to measure."""
    native = {"avx512_bf16", "amx_bf16"} & cpu_flags()
    return bool(native or tf.config.list_physical_devices("GPU"))


def probe_precision(make_step: Callable[[str], Callable[[], object]], batch_size: int, *,
                    warmup: int = 3, steps: int = 5, budget_seconds: float = 20.0,
                    clock: Callable[[], float] = time.perf_counter) -> dict:
    """Films per second of a training step under float32 and under mixed_bfloat16, and the
    policy ``auto`` takes: bf16 only when at least ``BF16_MIN_SPEEDUP`` times as fast.

    Native bf16 is not always faster: a small model, or one whose time goes to ops without a
    bf16 kernel, can run slower in bf16 than in float32, so the flags alone cannot decide.
    ``make_step(policy)`` returns a function running one training step of the model built
    under ``policy``. The policies alternate step by step, in turn first, so noise (another
    process, the CPU's clock) hits both alike. The first ``warmup`` steps of each (tracing and
    first-touch allocations) are not timed, and the timed steps are cut so the whole probe
    stays near ``budget_seconds``; ``clock`` is injectable for tests.
    """
    if batch_size < 1 or warmup < 1 or steps < 1:
        raise ValueError(f"the precision probe needs batch_size, warmup and steps >= 1, got "
                         f"{batch_size}, {warmup} and {steps}")
    started = clock()
    run = {policy: make_step(policy) for policy in PROBE_POLICIES}
    last = {}
    for index in range(warmup):
        for policy in PROBE_POLICIES:
            before = clock()
            run[policy]()
            last[policy] = clock() - before
        if index and clock() - started > budget_seconds / 2:
            break  # a slow model: its warm-up has had half the budget
    per_round = max(sum(last.values()), 1e-9)
    rounds = int(max(1, min(steps, (budget_seconds - (clock() - started)) // per_round)))
    elapsed = dict.fromkeys(PROBE_POLICIES, 0.0)
    for index in range(rounds):
        for policy in PROBE_POLICIES if index % 2 == 0 else PROBE_POLICIES[::-1]:
            before = clock()
            run[policy]()
            elapsed[policy] += clock() - before
    rates = {policy: batch_size * rounds / max(seconds, 1e-9)
             for policy, seconds in elapsed.items()}
    chosen = ("mixed_bfloat16"
              if rates["mixed_bfloat16"] >= BF16_MIN_SPEEDUP * rates["float32"] else "float32")
    log.info("precision probe (%d timed steps each): float32 %.1f films/s, mixed_bfloat16 "
             "%.1f films/s -> %s", rounds, rates["float32"], rates["mixed_bfloat16"], chosen)
    return {"float32_films_per_s": round(rates["float32"], 1),
            "mixed_bfloat16_films_per_s": round(rates["mixed_bfloat16"], 1),
            "chosen": chosen, "timed_steps": rounds,
            "probe_seconds": round(clock() - started, 1)}


def choose_precision(precision: str,
                     make_step: Callable[[str], Callable[[], object]] | None = None, *,
                     batch_size: int = 1, replicas: int = 1, **probe_options) -> dict:
    """``train.precision`` as a Keras policy, with how it was chosen: ``{"chosen": policy,
    "reason": ...}``, or the probe's films/s of each policy (:func:`probe_precision`).

    ``auto`` takes float32 without measuring where bf16 would be emulated, and where several
    replicas train (each worker would measure its own machine, and replicas must agree) takes
    bf16 where it is native; otherwise it times ``make_step`` under each policy.
    """
    if precision not in ("auto", *PROBE_POLICIES):
        raise ValueError(f"train.precision must be auto, float32 or mixed_bfloat16, got "
                         f"{precision!r}")
    if precision != "auto":
        return {"chosen": precision, "reason": "set in train.precision"}
    if not bf16_may_be_faster():
        return {"chosen": "float32", "reason": "no native bf16 here (no AVX512-BF16 or AMX, "
                "no GPU): TensorFlow would emulate it, slower than float32"}
    if replicas > 1:
        return {"chosen": "mixed_bfloat16", "reason": f"{replicas} replicas must agree, so no "
                "per-machine probe: bf16 as it runs natively"}
    if make_step is None:
        raise ValueError("train.precision auto on a machine with native bf16 needs a probe: "
                         "pass make_step, one training step of the model under a policy")
    return probe_precision(make_step, batch_size, **probe_options)


def precision_step(params: TrainParams, input_size: int, train_age: np.ndarray,
                   steps_per_epoch: int, policy: str) -> Callable[[], object]:
    """One training step of the model ``params`` describe, built and compiled as :func:`train`
    does under ``policy``, on one batch of random films of the real shape: what the precision
    probe times. Its own random generator leaves the global seeds alone."""
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_for(params, input_size, train_age)
        model.compile(optimizer=make_optimizer(params, steps_per_epoch, model=model),
                      loss=make_loss(params),
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae")], jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    rng = np.random.default_rng(params.seed)
    count = params.batch_size
    films = rng.uniform(0, 255, (count, input_size, input_size, 1)).astype(np.float32)
    inputs = {IMAGE_INPUT: films, SEX_INPUT: rng.integers(0, 2, (count, 1)).astype(np.float32)}
    target = rng.choice(np.asarray(train_age, np.float32), count)[:, None]
    return lambda: model.train_on_batch(inputs, target)


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by ``train.distribute``.

    ``multi_worker`` reads the cluster and this process's place in it from ``TF_CONFIG``
    and must be created before TensorFlow runs any op, so call this first.
    """
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "train.distribute=multi_worker needs TF_CONFIG in the environment of every "
                "worker, e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", "
                "\"host2:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
                "(see README, Train on several machines)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.distribute must be none, mirrored or multi_worker, got {kind!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process that writes outputs: the chief, else worker 0, else alone."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and int(resolver.task_id) == 0


def make_dataset(images: np.ndarray, boneage: np.ndarray, male: np.ndarray, *, batch_size: int,
                 training: bool, seed: int, augment: AugmentParams | None = None,
                 rows: np.ndarray | None = None, autotune: bool = False,
                 weights: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of ({image, sex}, months): shuffled and augmented when ``training``; with
    ``weights`` (per film, following ``rows``) ({image, sex}, months, weight), which Keras
    takes as per-film loss weights.

    Augmentation works on whole batches gathered from the packed films (uint8, in memory),
    in parallel map calls (OpenCV releases the GIL), prefetched ahead of the model. Batches
    are gathered in numpy from ``images`` itself, which may be the store's memory map with
    ``rows`` naming the films of this set (``boneage`` and ``male`` follow ``rows``): no copy
    of the films is held, so memory stays at most the packed store's size.

    tf.data's autotuning is off (``autotune=True`` only for benchmarks comparing against it):
    its optimisation thread sleeps for a period that doubles up to a minute, and destroying an
    iterator waits for that thread, so every epoch (Keras makes new iterators) stalled for up to
    a minute with the CPU idle. The map runs one call per core, with two batches prefetched.
    """
    batch_maker = FilmBatches(images, boneage, male, rows=rows,
                              augment=augment if training else None, weights=weights)
    size = images.shape[1:]
    dataset = tf.data.Dataset.range(len(batch_maker))
    if training:
        dataset = dataset.shuffle(len(batch_maker), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    # One fresh random number per batch (new each epoch) seeds that batch's augmentation.
    randoms = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip((dataset, randoms))

    def load_batch(batch, random):
        if weights is None:
            return batch_maker.batch(batch, int(random) % 2**63)
        return batch_maker.weighted_batch(batch, int(random) % 2**63)

    def gather(batch, random):
        parts = tf.numpy_function(load_batch, [batch, random],
                                  (tf.float32,) * (3 if weights is None else 4), stateful=False)
        image = tf.ensure_shape(parts[0], [None, *size])
        inputs = {IMAGE_INPUT: image[..., None], SEX_INPUT: tf.ensure_shape(parts[1], [None, 1])}
        return (inputs, *(tf.ensure_shape(part, [None, 1]) for part in parts[2:]))

    parallel = tf.data.AUTOTUNE if autotune else usable_cores()
    dataset = dataset.map(gather, num_parallel_calls=parallel, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return dataset.prefetch(tf.data.AUTOTUNE if autotune else 2).with_options(options)


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


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker reads the whole (in-memory) dataset and keeps its share of every batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer, nested backbones included."""
    found, todo = [], list(model.layers)
    while todo:
        layer = todo.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        todo.extend(getattr(layer, "layers", []))
    return found


def _fit_replicated(model: keras.Model, strategy: tf.distribute.Strategy, params: TrainParams,
                    train_data: tf.data.Dataset, val_data: tf.data.Dataset,
                    callbacks: list, global_batch: int) -> dict:
    """``model.fit`` for several replicas: a plain synchronous loop with the same callbacks.

    Keras 3 ``fit`` fails under MultiWorkerMirroredStrategy (its log reduction takes the
    mean over axis 0 of scalars; tensorflow/tensorflow#72388), so replicated training runs
    this loop instead: each replica computes its share of the global batch's loss, the
    optimizer all-reduces the gradients, and the callbacks (best-epoch checkpoint, early
    stopping, lr plateau, dvclive) see the same ``loss``/``mae``/``val_*`` logs as with fit.
    """
    loss_fn = make_loss(params)
    loss_fn.reduction = None  # per film; summed and divided by the global batch below
    # One iterator of each (repeated) dataset for the whole run, as in fit_epochs.
    train_batches = int(train_data.cardinality())
    val_batches = int(val_data.cardinality())
    if train_batches < 1 or val_batches < 1:
        raise ValueError(f"training needs a finite, non-empty train and validation set; got "
                         f"{train_batches} and {val_batches} batches")
    train_dist = iter(strategy.experimental_distribute_dataset(train_data.repeat()))
    val_dist = iter(strategy.experimental_distribute_dataset(val_data.repeat()))

    def sums(inputs, target, prediction, weight=None):
        target = tf.cast(target, tf.float32)
        prediction = tf.cast(prediction, tf.float32)
        per_film = tf.reshape(tf.cast(loss_fn(target, prediction), tf.float32), [-1])
        if weight is not None:  # train.age_weighting: as Keras weighs a loss by sample
            per_film = per_film * tf.reshape(tf.cast(weight, tf.float32), [-1])
        return (tf.reduce_sum(per_film), tf.reduce_sum(tf.abs(target - prediction)),
                tf.cast(tf.shape(target)[0], tf.float32))

    def train_replica(inputs, target, weight=None):
        with tf.GradientTape() as tape:
            prediction = model(inputs, training=True)
            loss_sum, abs_sum, count = sums(inputs, target, prediction, weight)
            loss = loss_sum / global_batch
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss_sum, abs_sum, count

    def eval_replica(inputs, target):
        return sums(inputs, target, model(inputs, training=False))

    def total(per_replica):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

    @tf.function
    def train_step(batch):
        return total(strategy.run(train_replica, args=batch))

    @tf.function
    def eval_step(batch):
        return total(strategy.run(eval_replica, args=batch))

    # Batch statistics over the global batch, so every replica keeps the same moving mean and
    # variance (and the model matches one trained on the global batch). Switched off again
    # afterwards: the saved model stays plain Keras that any backend can load.
    batch_norms = _batch_norm_layers(model)
    for layer in batch_norms:
        layer.synchronized = True
    try:
        return _replicated_epochs(model, params, callbacks, train_step, eval_step,
                                  (train_dist, train_batches), (val_dist, val_batches))
    finally:
        for layer in batch_norms:
            layer.synchronized = False


def _replicated_epochs(model, params, callbacks, train_step, eval_step, train_dist,
                       val_dist) -> dict:
    """``train_dist``/``val_dist``: (iterator over the repeated data, batches an epoch)."""
    def run_epoch(step, source, prefix: str) -> dict:
        iterator, batches = source
        loss = abs_error = count = 0.0
        for _ in range(batches):
            batch_loss, batch_abs, batch_count = step(next(iterator))
            loss, abs_error = loss + float(batch_loss), abs_error + float(batch_abs)
            count += float(batch_count)
        count = max(count, 1.0)
        return {f"{prefix}loss": loss / count, f"{prefix}mae": abs_error / count}

    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList([*callbacks, history], model=model,
                                                 epochs=params.epochs)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(params.epochs):
        callback_list.on_epoch_begin(epoch)
        logs = {**run_epoch(train_step, train_dist, ""), **run_epoch(eval_step, val_dist, "val_")}
        log.info("epoch %d/%d: loss %.4f mae %.2f val_loss %.4f val_mae %.2f", epoch + 1,
                 params.epochs, logs["loss"], logs["mae"], logs["val_loss"], logs["val_mae"])
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history.history


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
          strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """Fit a model on ``train_ids``, keep the weights of the best validation MAE.

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
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)  # layers take it when built
    try:
        with strategy.scope():  # variables are mirrored on every replica
            model = build_for(params, store.settings.size, train_age)
            model.compile(optimizer=make_optimizer(params, steps, replicas, model),
                          loss=make_loss(params),
                          metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
                          jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    weights = age_weights(train_age, params.age_weighting)
    if weights is not None:
        log.info("age weighting %s: film weights %.2f..%.2f (mean 1)", params.age_weighting,
                 weights.min(), weights.max())
    train_data = _shard_by_data(make_dataset(
        store.images, train_age, train_male, rows=train_rows, batch_size=global_batch,
        training=True, seed=params.seed, augment=params.augment, weights=weights))
    val_data = _shard_by_data(make_dataset(
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
        raw_history = _fit_replicated(model, strategy, params, train_data, val_data,
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
                 strategy: tf.distribute.Strategy | None = None) -> TrainResult:
    """The train stage: data from the store and split, curves to dvclive, model to ``out_dir``.

    With ``train.distribute: multi_worker`` every worker runs this; only the chief writes
    ``out_dir`` and ``live_dir``, the others write to a temporary folder they delete.
    """
    strategy = strategy or make_strategy(params.distribute)
    store = open_store(store_dir)
    train_ids, val_ids = training_ids(split_dir, params.fold)
    if not is_chief(strategy):
        scratch = Path(tempfile.mkdtemp(prefix="boneage-worker-"))
        try:
            return train(store, train_ids, val_ids, params, out_dir=scratch, strategy=strategy)
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
                   strategy=strategy)
    out_dir = Path(out_dir)
    result.model.save(out_dir / MODEL_FILE)
    # Fitted on the validation films with the best epoch's model: evaluate and export apply it.
    val_rows, val_age, val_male = _labels(store, val_ids)
    calibration = fit_calibration(val_age, predict_films(result.model, store.images, val_rows,
                                                         val_male, params.batch_size),
                                  val_male, params.calibration)
    log.info("calibration %s: validation MAE %.2f -> %.2f months (female %s, male %s)",
             calibration["kind"], calibration["val_mae_raw"], calibration["val_mae_calibrated"],
             calibration["female"], calibration["male"])
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
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if live is not None:
        live.summary["best_val_mae"] = summary["best_val_mae_months"]
        live.summary["best_epoch"] = result.best_epoch
        live.end()
    return result
