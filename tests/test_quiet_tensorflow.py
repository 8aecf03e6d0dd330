"""A clinician's terminal: TensorFlow's Python warnings stay out of it unless asked for.

An ensemble of five members traces five predict functions, which TensorFlow reports as
"excessive retracing"; `boneage predict` printed that warning on every folder it read."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging, sys
from boneage.kernel.runner import import_tensorflow, setup_logging
setup_logging()
import_tensorflow(verbose=sys.argv[1] == "verbose")
import tensorflow as tf
for size in range(1, 8):  # a new input shape each call: seven traces
    tf.function(lambda x: x * 2)(tf.zeros([size]))
logging.getLogger("tensorflow").warning("a TensorFlow warning")
logging.getLogger("boneage").warning("our own warning")
"""


def run(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("BONEAGE_VERBOSE",)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_tensorflow_warnings_are_hidden_unless_verbose():
    quiet = run("quiet")
    assert "a TensorFlow warning" not in quiet, quiet
    assert "our own warning" in quiet, quiet
    assert "a TensorFlow warning" in run("verbose")
