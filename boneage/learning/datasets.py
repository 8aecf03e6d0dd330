"""The train stage's ``tf.data`` input: batches gathered from the packed store and augmented
(:class:`boneage.learning.recipe.FilmBatches`) in parallel map calls, prefetched ahead of the model,
so the CPU spends its time in the model rather than decoding files.

Apart from :mod:`boneage.learning.training` so benchmarks (``bench/``) time the very pipeline the
stage trains on without the rest of the stage.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from boneage.kernel.config import AugmentParams
from boneage.learning.models import IMAGE_INPUT, SEX_INPUT
from boneage.learning.recipe import FilmBatches
from boneage.kernel.machine import usable_cores


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


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker reads the whole (in-memory) dataset and keeps its share of every batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
