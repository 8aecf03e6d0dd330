"""The train stage's rule for ``precision: auto`` on this machine: whether bf16 may run
natively here and the speed-up over float32 it must show. In a child so that bench/perf.py
itself never loads TensorFlow.

    python bench/perf_children/precision_rule.py

Prints one JSON line: native, min_speedup.
"""

from __future__ import annotations

import json

from boneage.learning.training import BF16_MIN_SPEEDUP, bf16_may_be_faster


def main() -> None:
    print(json.dumps({"native": bf16_may_be_faster(), "min_speedup": BF16_MIN_SPEEDUP}))


if __name__ == "__main__":
    main()
