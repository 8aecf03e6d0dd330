"""Batches/s of the training input pipeline alone (``make_dataset``: packed films ->
augmented batches of 32, no model), to compare with the model's step rate and the naive
input pipelines.

    python bench/perf_children/input_pipeline.py FILMS SIZE EPOCHS

Random FILMS films of SIZE px, EPOCHS passes after 8 warm-up batches. Prints one JSON
line: batches_per_s.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from boneage.kernel.config import AugmentParams
from boneage.learning.training import make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films", type=int)
    parser.add_argument("size", type=int)
    parser.add_argument("epochs", type=int)
    args = parser.parse_args()
    films, size = args.films, args.size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (films, size, size), dtype=np.uint8)
    data = make_dataset(images, rng.uniform(0, 228, films), rng.integers(0, 2, films),
                        batch_size=32, training=True, seed=0, augment=AugmentParams())
    for _ in data.take(8):
        pass
    batches, started = 0, time.perf_counter()
    for _ in range(args.epochs):
        for _ in data:
            batches += 1
    print(json.dumps({"batches_per_s": batches / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
