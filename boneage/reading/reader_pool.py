"""Received DICOM films read in several processes (``boneage dicom-node --workers N``).

What the node does with a film is pure Python (pydicom decodes and copies, highdicom builds
the SR and the capture, pynetdicom moves the bytes), and one Python process uses one core
whatever its threads: profiled, the node's 4 association threads kept one of two cores busy.
A pool of worker processes reads the films instead; the node's process only receives them
and sends the results.

Each worker builds its own :class:`~boneage.reading.dicom_reading.DicomReader` once (the
models load once a process: ~300 MB each through LiteRT, ~900 MB through Keras) and answers
one film at a time; an association thread hands the pool a film (the temporary file the node
received it into, which the worker reads itself) and waits for its
:class:`~boneage.reading.dicom_reading.Answer`, SR and capture included.

A worker that dies (a decoder crashing on a hostile film, the kernel's OOM killer) costs the
films it was reading, not the node: the pool is started again and each of those films is
tried once more; a film that takes a second pool down with it is answered ``unreadable``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from boneage.reading.dicom_reading import MAX_DATASET_BYTES, Answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaderSpec:
    """What a worker process needs to build the node's reader: the models (``--model``
    exports, or a release already verified by the parent), the format, the reader's flags."""

    model_dirs: tuple[Path, ...] = ()
    choice: object | None = None  # boneage.reading.release.ReleaseChoice
    model_format: str = "auto"
    force: bool = False
    explain: bool = False
    max_dataset_bytes: int = MAX_DATASET_BYTES
    verbose: bool = False
    log_level: str = "INFO"

    def __post_init__(self):
        if bool(self.model_dirs) == (self.choice is not None):
            raise ValueError("a ReaderSpec takes either model_dirs or a release choice")

    def build(self, **reader_options):
        """The reader (TensorFlow imported only where the format or Grad-CAM needs it);
        ``reader_options`` go to DicomReader as they are."""
        from boneage.kernel.runner import import_tensorflow
        from boneage.learning.runtimes import needs_tensorflow
        from boneage.reading.dicom_reading import DicomReader

        if needs_tensorflow(self.model_format) or self.explain:  # Grad-CAM needs Keras
            import_tensorflow(self.verbose)
        from boneage.reading.predictor import Ensemble

        ensemble = (Ensemble(list(self.model_dirs), model_format=self.model_format)
                    if self.model_dirs else Ensemble.from_choice(self.choice, self.model_format))
        return DicomReader(ensemble, force=self.force, explain=self.explain,
                           max_dataset_bytes=self.max_dataset_bytes, **reader_options)


# The worker process's reader, or why it could not be built (raised again for each film,
# so the parent gets the one-line error instead of a broken pool).
_reader = None
_failure: BaseException | None = None


def _start_worker(spec: ReaderSpec) -> None:
    global _reader, _failure
    from boneage.kernel.runner import setup_logging

    # Ctrl-C in a terminal reaches the whole process group: the node stops its pool itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(spec.log_level)
    try:
        # One film at a time in a worker: micro-batching would only wait for nobody.
        _reader = spec.build(batch_wait_seconds=0.0)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent by _ready/_answer
        _failure = exc


def _ready(pause: float = 0.0) -> int:
    if _failure is not None:
        raise _failure
    time.sleep(pause)  # so that one worker, ready first, does not take every call
    return os.getpid()


def _answer(data: bytes | Path, name: str | None) -> Answer:
    if _failure is not None:
        raise _failure
    return _reader.answer(data, name)


class ReaderPool:
    """``answer(data, name)`` as :class:`~boneage.reading.dicom_reading.DicomReader` has it,
    in ``workers`` processes. ``start()`` loads the models in every worker and raises what
    failed (a missing model, a damaged file) before the node listens; ``close()`` stops them.
    """

    def __init__(self, spec: ReaderSpec, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.spec, self.workers = spec, workers
        self.restarts = 0  # pools started again after a worker died (the tests read it)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the node's process runs threads (pynetdicom, the sender)
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.spec,))

    def start(self) -> list[int]:
        """Start every worker and wait until each has its models; returns their pids."""
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
            pool = self._pool
        # The pool starts a process for each call no idle worker can take, and a worker
        # takes calls only once its models are loaded: ask until every worker has answered.
        ready: set[int] = set()
        while len(ready) < self.workers:
            calls = [pool.submit(_ready, 0.05) for _ in range(self.workers)]
            ready.update(call.result() for call in calls)
        return sorted(ready)

    def answer(self, data: bytes | Path, name: str | None = None) -> Answer:
        """One film's Answer, read by a worker; never raises for a bad film."""
        for attempt in (1, 2):
            with self._lock:
                if self._pool is None:
                    self._pool = self._new_pool()
                pool = self._pool
            try:
                return pool.submit(_answer, data, name).result()
            except BrokenProcessPool:
                self._replace(pool, name)
        return Answer(name or "a DICOM", "unreadable",
                      f"{name or 'the data set'}: the process reading it stopped twice (a "
                      "crash in a decoder?); not read")

    def _replace(self, broken: ProcessPoolExecutor, name: str | None) -> None:
        with self._lock:
            if self._pool is broken:  # the first thread to see it starts the new pool
                self.restarts += 1
                log.warning("%s: a reader process stopped; starting the pool again (%d "
                            "restart(s) so far)", name or "a DICOM", self.restarts)
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
