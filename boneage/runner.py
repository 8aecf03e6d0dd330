"""Shared entry-point behaviour for stage scripts and the CLI: logging and clean errors.

A user who feeds a bad file must read one line that names it, not a stack trace.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from boneage.config import ParamsError
from boneage.errors import DataError, ImageError

EXPECTED_ERRORS = (DataError, ImageError, ParamsError, FileNotFoundError)


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("BONEAGE_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # TensorFlow's C++ start-up chatter hides what the stage says.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main: Callable[[], object]) -> None:
    """Run ``main``; expected errors print one clear line and exit with status 1."""
    setup_logging()
    try:
        main()
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
