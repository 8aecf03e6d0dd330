"""Batches/s of the naive input pipeline a Keras user would write first:
``keras.utils.image_dataset_from_directory`` (PNG decode and resize every epoch) plus the Keras
augmentation layers, mapped with AUTOTUNE and prefetched.

    python bench/perf_children/naive_directory.py FOLDER SIZE BATCHES

FOLDER holds the PNGs; BATCHES of 32 at SIZE px after 8 warm-up batches. Prints one JSON
line: batches_per_s.
"""

from __future__ import annotations

import json
import time

import keras
import tensorflow as tf
from keras_augment import augmenter, pipeline_arguments

from boneage.kernel.config import AugmentParams


def main() -> None:
    args = pipeline_arguments(__doc__)
    size, batches = args.size, args.batches
    data = keras.utils.image_dataset_from_directory(args.folder, labels=None,
                                                     color_mode="grayscale",
                                                     image_size=(size, size), batch_size=32,
                                                     shuffle=True, seed=0, verbose=False)
    layer = augmenter(AugmentParams(), 0)
    data = data.map(lambda image: layer(image, training=True),
                    num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    for _ in data.take(8):
        pass
    started = time.perf_counter()
    for _ in data.take(batches):
        pass
    print(json.dumps({"batches_per_s": batches / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
