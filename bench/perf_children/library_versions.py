"""Versions of the libraries the measurements depend on, for perf.json's machine facts. In a
child so that bench/perf.py itself never loads TensorFlow.

    python bench/perf_children/library_versions.py

Prints one JSON line: tensorflow, keras, opencv, numpy.
"""

from __future__ import annotations

import json

import cv2
import keras
import numpy
import tensorflow as tf


def main() -> None:
    print(json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__,
                      "opencv": cv2.__version__, "numpy": numpy.__version__}))


if __name__ == "__main__":
    main()
