"""Training step throughput (films/s) of the compact model, float32 against mixed_bfloat16
(and batch sizes against each other), alternating them in one run so machine noise hits all alike.

    python bench/train_throughput.py [--size 96] [--width 16] [--films 3072] [--rounds 3]
    python bench/train_throughput.py --size 112 --policies mixed_bfloat16 --batch-sizes 32,64

Each measurement runs in a fresh process (the Keras dtype policy is global) on random films
through the real tf.data pipeline with the default augmentation, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import keras, numpy as np
from boneage.kernel.config import AugmentParams
from boneage.learning.models import build_model
from boneage.learning.training import make_dataset
size, width, films, policy = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
batch_size = int(sys.argv[5])
keras.mixed_precision.set_global_policy(policy)
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (films, size, size), dtype=np.uint8)
data = make_dataset(images, rng.uniform(0, 228, films), rng.integers(0, 2, films), batch_size=batch_size,
                    training=True, seed=0, augment=AugmentParams())
model = build_model(architecture="compact", input_size=size, width=width)
model.compile(optimizer="adamw", loss="huber")
model.fit(data.take(4), epochs=1, verbose=0)
started = time.perf_counter()
model.fit(data, epochs=1, verbose=0)
print(json.dumps({"films_per_s": films / (time.perf_counter() - started)}))
"""


def measure(size, width, films, policy, batch_size=32):
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(width), str(films), policy,
                          str(batch_size)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["films_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--films", type=int, default=3072)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    parser.add_argument("--batch-sizes", default="32")
    args = parser.parse_args()
    runs = [(policy, int(batch)) for policy in args.policies.split(",")
            for batch in args.batch_sizes.split(",")]
    rates = {f"{policy}@{batch}": [] for policy, batch in runs}
    for _ in range(args.rounds):
        for policy, batch in runs:
            rates[f"{policy}@{batch}"].append(
                measure(args.size, args.width, args.films, policy, batch))
    result = {key: round(statistics.median(values), 1) for key, values in rates.items()}
    if "float32@32" in result and "mixed_bfloat16@32" in result:
        result["ratio_bf16_over_fp32"] = round(result["mixed_bfloat16@32"] / result["float32@32"], 2)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    for policy in args.policies.split(","):
        for batch in batches[1:]:
            result[f"ratio_{policy}_batch_{batch}_over_{batches[0]}"] = round(
                result[f"{policy}@{batch}"] / result[f"{policy}@{batches[0]}"], 2)
    result.update(size=args.size, width=args.width, films=args.films, rounds=args.rounds,
                  cpu_count=os.cpu_count(), all_runs=rates)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
