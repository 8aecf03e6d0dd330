"""Whole-epoch wall times (train + validation) of a multi-epoch fit, bf16, on random films:
Keras's ``model.fit`` over finite datasets (new iterators every epoch) against the train
stage's ``training.fit_epochs`` (one iterator for the run).

    python bench/perf_children/epochs.py SIZE WIDTH FILMS EPOCHS MODE

MODE ``keras-autotune``: ``model.fit`` over datasets with tf.data's AUTOTUNE everywhere (the
tf.data guide's way); ``fit_epochs``: the train stage's fit, autotuning off. An eighth of
FILMS validates.
Prints one JSON line: fit_s, epoch_s (a list, one an epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import keras
import numpy as np

from boneage.kernel.config import AugmentParams
from boneage.learning.models import build_model
from boneage.learning.training import fit_epochs, make_dataset


class Clock(keras.callbacks.Callback):
    """Appends each epoch's wall time to ``times``."""

    def __init__(self, times: list[float]):
        super().__init__()
        self.times = times

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("films", type=int)
    parser.add_argument("epochs", type=int)
    parser.add_argument("mode")
    args = parser.parse_args()
    size, films, epochs, mode = args.size, args.films, args.epochs, args.mode
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (films, size, size), dtype=np.uint8)
    ages, male = rng.uniform(0, 228, films), rng.integers(0, 2, films)
    n_val = films // 8
    autotune = mode == "keras-autotune"  # the tf.data guide's AUTOTUNE everywhere
    train = make_dataset(images, ages[n_val:], male[n_val:], rows=np.arange(n_val, films),
                         batch_size=32, training=True, seed=0, augment=AugmentParams(),
                         autotune=autotune)
    val = make_dataset(images, ages[:n_val], male[:n_val], rows=np.arange(n_val), batch_size=32,
                       training=False, seed=0, autotune=autotune)
    model = build_model(architecture="compact", input_size=size, width=args.width)
    model.compile(optimizer="adamw", loss="huber", metrics=["mae"], jit_compile=False)
    times: list[float] = []
    started = time.perf_counter()
    if mode.startswith("keras"):  # model.fit with a finite dataset: new iterators every epoch
        model.fit(train, validation_data=val, epochs=epochs, callbacks=[Clock(times)], verbose=0)
    else:
        fit_epochs(model, train, val, train_batches=math.ceil((films - n_val) / 32),
                   val_batches=math.ceil(n_val / 32), epochs=epochs, callbacks=[Clock(times)],
                   verbose=0)
    print(json.dumps({"fit_s": time.perf_counter() - started, "epoch_s": times}))


if __name__ == "__main__":
    main()
