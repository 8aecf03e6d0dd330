"""One DICOM film received from a PACS, read and answered: what the DICOM node and the
DICOMweb worker both do with each film.

The film goes through the same path as ``boneage predict``
(:class:`boneage.reading.predictor.Ensemble`): read (the header speaks first, then the
size checks, then decoding), sex and age from PatientSex and PatientAge, the film check,
the imaging path, the models. The answer is a Comprehensive SR and a Secondary Capture
(:mod:`boneage.reading.dicom_report`), with the adult height predicted by Bayley-Pinneau when
the header gives PatientSize and PatientAge (:mod:`boneage.reading.adult_height`); a film that
is refused (its header, the film check, no sex) gets an SR that says so and why, and one that
cannot be read at all (no pixels, a malformed number, over the size limits) too, whenever its
header names a study to put it in.

Privacy: what is logged names the film by its SOP Instance UID, never the patient's name or
ID; error messages are built with that name too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from boneage.kernel.errors import ImageError, NotAFilmError

log = logging.getLogger(__name__)

# How the DICOM node words a missing sex: the film's header must say it.
NODE_WORDING_ASK_SEX = "the sending system must fill PatientSex (0010,0040) with M or F"
NODE_WORDING_ASK_AGE = "the sending system must fill PatientAge (0010,1010)"

MAX_DATASET_BYTES = 256 * 1024 * 1024  # a 16-bit 10,000 x 10,000 px film is 200 MB


@dataclass
class Answer:
    """What one received film comes to.

    ``status``: ``read``, ``refused`` (a well-formed DICOM that is not a film to read: its
    header, the film check, no sex) or ``unreadable`` (the data set itself is bad: no
    pixels, a malformed number, too large, undecodable). ``results``: the SR and, for a read
    film, the capture, ready to send; empty when the data set names no study to put them in.
    """

    name: str
    status: str
    reason: str | None = None
    reading: object | None = None
    results: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "unreadable"


def film_name(dataset) -> str:
    """How logs and messages name a film: its SOP Instance UID (no patient data)."""
    uid = str(getattr(dataset, "SOPInstanceUID", "") or "").strip()
    return f"SOP {uid}" if uid else "a DICOM without SOP Instance UID"


class MicroBatcher:
    """The models read films that arrive together from several threads (the node's
    associations) in one call: each member's call costs about as much for 1 film as for 8 at
    96 px, and the node called them once per film (22 ms of its 136 ms a film, profiled).

    The first caller waits ``wait_seconds`` for others to join, then reads every film
    queued (up to ``max_batch`` a call) until none is left; the others wait for their row.
    One caller alone pays only the wait.
    """

    def __init__(self, ensemble, max_batch: int = 8, wait_seconds: float = 0.004):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.ensemble, self.max_batch, self.wait_seconds = ensemble, max_batch, wait_seconds
        self._lock = threading.Lock()
        self._pending: list[_Request] = []
        self._leading = False
        self.calls = 0  # model calls made (the tests and the bench read it)

    def predict(self, prepared, male: int) -> np.ndarray:
        """One film's months by model, shape (models,)."""
        request = _Request(prepared, male)
        with self._lock:
            self._pending.append(request)
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            if self.wait_seconds > 0:
                time.sleep(self.wait_seconds)
            self._drain()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.months

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
                if not batch:
                    self._leading = False
                    return
            try:
                months = self.ensemble.predict_prepared([r.prepared for r in batch],
                                                        np.array([r.male for r in batch]))
                self.calls += 1
                for request, row in zip(batch, months):
                    request.months = row
            except BaseException as exc:  # noqa: BLE001 - each waiting film gets the error
                for request in batch:
                    request.error = exc
            finally:
                for request in batch:
                    request.done.set()


@dataclass
class _Request:
    prepared: object
    male: int
    months: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class DicomReader:
    """Reads received DICOM films with an :class:`~boneage.reading.predictor.Ensemble` and
    words each answer as DICOM objects."""

    def __init__(self, ensemble, *, force: bool = False, explain: bool = False,
                 max_dataset_bytes: int = MAX_DATASET_BYTES, batch_wait_seconds: float = 0.004):
        from boneage.reading.dicom_report import ModelIdentity
        from boneage.reading.predictor import Wording

        self.ensemble = ensemble
        self.batcher = MicroBatcher(ensemble, wait_seconds=batch_wait_seconds)
        self.force = force
        self.explain = explain
        self.max_dataset_bytes = max_dataset_bytes
        self.model = ModelIdentity.of(ensemble)
        self.wording = Wording("given to the node", "given to the node", NODE_WORDING_ASK_SEX,
                               ask_age=NODE_WORDING_ASK_AGE)

    def answer(self, data: bytes | Path, name: str | None = None) -> Answer:
        """A DICOM Part 10 file (its bytes, or its path: the node receives films into
        temporary files) -> its :class:`Answer`. Never raises for a bad film."""
        from boneage.imaging.dicom import read_header
        from boneage.imaging.headers import MAX_PIXELS, MAX_SIDE
        from boneage.reading.predictor import Reading

        try:
            size = data.stat().st_size if isinstance(data, Path) else len(data)
            if size > self.max_dataset_bytes:
                return Answer(name or "a DICOM", "unreadable",
                              f"{name or 'the data set'}: {size:,} bytes, over the node's "
                              f"limit of {self.max_dataset_bytes:,} bytes; not decoded")
            if isinstance(data, Path):  # read only once its size is known to be allowed
                data = data.read_bytes()
        except OSError as exc:
            return Answer(name or "a DICOM", "unreadable",
                          f"{name or 'the data set'}: the received file could not be read "
                          f"({exc.strerror or exc})")
        try:
            header = read_header(data, name or "a DICOM", MAX_PIXELS, MAX_SIDE)
        except ImageError as exc:
            return Answer(name or "a DICOM", "unreadable", str(exc))
        name = name or film_name(header)
        reading = Reading(name)
        film = status = None
        heatmap = None
        try:
            film = self.ensemble.read(data, name, self.force)
        except NotAFilmError as exc:  # the header said no
            status, reading.error, reading.checks = "refused", str(exc), exc.checks
        except ImageError as exc:  # no pixels, malformed numbers, too large, no codec
            status, reading.error = "unreadable", str(exc)
        if status is None:
            try:
                self.ensemble.resolve(name, film, None, None, reading, self.wording)
                film = self.ensemble.check(film, name, reading, self.force)
                prepared = self.ensemble.prepare(film)
                self.ensemble.finish(reading, self.batcher.predict(prepared, reading.male))
                if self.explain:
                    heatmap, _ = self.ensemble.heatmap(film, prepared, reading.male, name)
                status = "read"
            except ImageError as exc:  # the film check, no sex, an odd film
                status, reading.error = "refused", str(exc)
        answer = Answer(name, status, reading.error, reading)
        answer.results = self._results(header, reading, film if status == "read" else None,
                                       heatmap, name)
        return answer

    def _results(self, header, reading, film, heatmap, name: str) -> list:
        from boneage.reading.dicom_report import build_capture, build_sr, source_header

        missing = [k for k in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID")
                   if not str(header.get(k, "") or "").strip()]
        if missing:
            log.warning("%s: no SR sent: the data set has no %s to file it under", name,
                        " or ".join(missing))
            return []
        is_image = "PixelData" in header
        try:
            header = source_header(header)
            results = [build_sr(header, reading, self.model, source_is_image=is_image)]
            if film is not None:
                results.append(build_capture(header, reading, film.image, self.model,
                                             heatmap))
        except Exception:  # noqa: BLE001 - an odd header highdicom will not copy: logged
            log.exception("%s: could not build the SR or capture", name)
            return []
        return results
