"""Shared entry-point behaviour for stage scripts and the CLI: logging and clean errors.

A user who feeds a bad file must read one line that names it, not a stack trace: every
error a user can fix is a :class:`boneage.kernel.errors.BoneAgeError`, caught here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager

from boneage.kernel.errors import EXIT_USER_ERROR, BoneAgeError


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("BONEAGE_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # TensorFlow's C++ start-up chatter hides what the stage says (BONEAGE_VERBOSE=1 keeps it).
    if not verbose_requested():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


VERBOSE_ENV = "BONEAGE_VERBOSE"  # 1: TensorFlow's start-up lines in stage logs and the CLI


def verbose_requested() -> bool:
    """Whether ``BONEAGE_VERBOSE`` asks for library start-up lines (1, true, yes or on)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def import_tensorflow(verbose: bool = False) -> None:
    """TensorFlow for a stage or a command: quietly (:func:`import_tensorflow_quietly`)
    unless ``verbose`` or ``BONEAGE_VERBOSE=1`` asks for its start-up lines."""
    if verbose or verbose_requested():
        import tensorflow  # noqa: F401

        return
    import_tensorflow_quietly()


def add_verbose_flag(parser) -> None:
    """``-v/--verbose`` on an argparse parser (stages and the CLI say it alike)."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's start-up lines too (or set BONEAGE_VERBOSE=1)")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras and find the devices with this process's stderr (fd 2)
    sent to a temporary file, for a clinician's terminal.

    TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog",
    oneDNN and CUDA probing, ``failed call to cuInit``) are written by native code straight
    to fd 2, past Python's logging and ``TF_CPP_MIN_LOG_LEVEL``. If the import fails, what
    it wrote is shown before the error. TensorFlow's Python warnings (its retracing notes) are
    kept to errors. A no-op once TensorFlow is imported.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later native warnings too
    with native_output_hidden():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe runs here, not at first use
        # Its Python warnings too: an ensemble's members each trace their predict
        # function once, which TensorFlow calls "excessive retracing" after five.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextmanager
def native_output_hidden():
    """fd 2 sent to a temporary file for the block: native libraries (TensorFlow's start-up,
    LiteRT's "Created TensorFlow Lite XNNPACK delegate for CPU") write straight to it, past
    Python, into a clinician's terminal. What they wrote is shown if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def report_user_errors(main: Callable[[], int | None]) -> int:
    """``main()``'s status; a :class:`BoneAgeError` prints ``error: <message>`` and gives
    :data:`EXIT_USER_ERROR`, Ctrl-C gives 130."""
    try:
        return main() or 0
    except BoneAgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run(main: Callable[[], object]) -> None:
    """Run a stage's ``main`` with logging set up and exit with its status."""
    setup_logging()

    def stage() -> int:
        main()
        return 0

    sys.exit(report_user_errors(stage))
