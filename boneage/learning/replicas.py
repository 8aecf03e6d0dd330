"""Training on several replicas with ``tf.distribute``: the strategy ``train.distribute``
names, which process is chief (the one that writes outputs), and :func:`fit_replicated`, the
synchronous loop replicated training runs instead of ``model.fit``.

Apart from :mod:`boneage.learning.training` (which takes one replica through plain ``fit``) because
it is only TensorFlow's distribution machinery, and ``boneage.learning.distributed``'s cluster check
needs the strategy before anything else runs.
"""

from __future__ import annotations

import logging
import os

import keras
import tensorflow as tf

from boneage.kernel.config import TrainParams
from boneage.kernel.errors import DataError, SetupError
from boneage.learning.recipe import make_loss

log = logging.getLogger(__name__)


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
            raise SetupError(
                "train.distribute=multi_worker needs TF_CONFIG in the environment of every "
                "worker, e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", "
                "\"host2:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
                "(see docs/distributed.md)")
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


def _batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer, nested backbones included."""
    found, todo = [], list(model.layers)
    while todo:
        layer = todo.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        todo.extend(getattr(layer, "layers", []))
    return found


def fit_replicated(model: keras.Model, strategy: tf.distribute.Strategy, params: TrainParams,
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
    # One iterator of each (repeated) dataset for the whole run, as in training.fit_epochs.
    train_batches = int(train_data.cardinality())
    val_batches = int(val_data.cardinality())
    if train_batches < 1 or val_batches < 1:
        raise DataError(f"training needs a finite, non-empty train and validation set; got "
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
