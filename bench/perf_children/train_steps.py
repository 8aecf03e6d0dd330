"""Films/s of one epoch of ``model.fit`` on the compact model over random films, for a
precision policy and TensorFlow thread settings (after a 3-batch warm-up fit that traces).

    python bench/perf_children/train_steps.py SIZE WIDTH FILMS POLICY HEAD INTRA INTER

POLICY a Keras mixed-precision policy (float32, mixed_bfloat16); HEAD the model's head;
INTRA / INTER TensorFlow's op parallelism threads, 0 for its default (set before anything
else touches TensorFlow). Prints one JSON line: films_per_s.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("films", type=int)
    parser.add_argument("policy")
    parser.add_argument("head")
    parser.add_argument("intra", type=int)
    parser.add_argument("inter", type=int)
    args = parser.parse_args()
    size, films = args.size, args.films
    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    from boneage.kernel.config import AugmentParams
    from boneage.learning.models import build_model
    from boneage.learning.training import make_dataset

    keras.mixed_precision.set_global_policy(args.policy)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (films, size, size), dtype=np.uint8)
    data = make_dataset(images, rng.uniform(0, 228, films), rng.integers(0, 2, films),
                        batch_size=32, training=True, seed=0, augment=AugmentParams())
    model = build_model(architecture="compact", input_size=size, width=args.width,
                        head=args.head)
    model.compile(optimizer="adamw", loss="huber", jit_compile=False)
    model.fit(data.take(3), epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    print(json.dumps({"films_per_s": films / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
