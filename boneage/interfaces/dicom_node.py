"""``boneage dicom-node``: a DICOM Storage SCP that reads each hand film it receives and sends
the reading back to the PACS (docs/hospital.md).

A modality or PACS sends films by C-STORE to this node's AE title. Each film is read by a
:class:`boneage.reading.dicom_reading.DicomReader` (the same path as ``boneage predict``);
the C-STORE is answered with:

- ``0x0000`` (success) when the film was read, and also when it was refused as not a hand
  film (its header, the film check, no PatientSex): the node understood it, and its SR
  says why it was not read;
- ``0xA700`` (out of resources) when the data set is over the node's byte limit, and
  ``0xC000`` (cannot understand) when it cannot be read at all (no pixels, a malformed
  number, a film over the size limits, an undecodable frame), with the reason in the
  response's Error Comment and in the log. The node stays up.

The results (a Comprehensive SR, and a Secondary Capture for a read film) go by C-STORE to
the destination AE, in the film's study and a new series, from a few sender threads (each
its own association, ``--send-associations``) with retries; what cannot be delivered is
written to the spool folder (when one is set) and logged, never dropped silently.

Settings: AE title, host (127.0.0.1 by default: open it to the network on purpose), port,
the calling AE titles allowed to associate (others are rejected at association), C-ECHO
(Verification) always answered. Each association runs in its own thread (pynetdicom); the
films are read in the node's process or, with ``--workers N``, in N reader processes
(:mod:`boneage.reading.reader_pool`).

Privacy: at INFO the log names a film by its SOP Instance UID and the caller by its AE
title; never the patient's name or ID. pynetdicom's own log is kept at WARNING.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage
CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SEND_BATCH = 8  # results queued by at most this many films go over one association
SEND_ASSOCIATIONS = 4  # sender threads, each with its own association to the destination
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
# How long an association's network thread sleeps when it has nothing to do (pynetdicom's
# DUL ``_run_loop_delay``, 1 ms by default: pydicom/pynetdicom#650). It sleeps only while
# idle: a film's PDUs are read back to back. At 1 ms, four idle associations kept 0.7 of a
# core busy polling, in the process every film's bytes go through.
IDLE_POLL_SECONDS = 0.005


def _poll_less(assoc) -> None:
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = IDLE_POLL_SECONDS


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM AE (title, host, port)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``AET@host:port`` (``ORTHANC@127.0.0.1:4242``)."""
        from boneage.kernel.errors import UsageError

        try:
            ae_title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            destination = cls(ae_title.strip(), host.strip(), int(port))
        except ValueError:
            raise UsageError(f"--destination {text!r}: write AE_TITLE@HOST:PORT, e.g. "
                             "ORTHANC@127.0.0.1:4242") from None
        check_ae_title(destination.ae_title, "--destination")
        if not 0 < destination.port < 65536:
            raise UsageError(f"--destination {text!r}: port {destination.port} is not 1-65535")
        return destination

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(title: str, flag: str) -> str:
    """An AE title: 1-16 characters of printable ASCII, no backslash (PS3.5 6.2, AE)."""
    from boneage.kernel.errors import UsageError

    if not 0 < len(title.strip()) <= 16 or "\\" in title or not title.isascii() \
            or not title.isprintable():
        raise UsageError(f"{flag} {title!r}: an AE title is 1 to 16 ASCII characters, "
                         "no backslash")
    return title.strip()


@dataclass
class NodeSettings:
    ae_title: str = "BONEAGE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: tuple[str, ...] = ()  # calling AE titles allowed; empty: any
    destination: Destination | None = None
    spool: Path | None = None  # undeliverable results written here
    send_attempts: int = 5
    retry_seconds: float = 2.0
    send_associations: int = SEND_ASSOCIATIONS


@dataclass
class Counters:
    """What the node has done since it started (bench/hospital.py reads them)."""

    received: int = 0
    read: int = 0
    refused: int = 0
    unreadable: int = 0
    sent: int = 0
    undelivered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in
                ("received", "read", "refused", "unreadable", "sent", "undelivered")}


class ResultSender:
    """Threads that C-STORE result objects to the destination, retrying.

    Several at once (``settings.send_associations``): a C-STORE waits for the PACS to store
    the object, and one thread sending 400 results one after the other kept them 26 s
    behind the readings (bench/hospital.py). Each thread takes what is queued (up to
    ``SEND_BATCH`` films) over one association.
    """

    def __init__(self, settings: NodeSettings, counters: Counters):
        if settings.send_associations < 1:
            raise ValueError(f"send_associations must be at least 1, got "
                             f"{settings.send_associations}")
        self.settings, self.counters = settings, counters
        self.queue: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._run, name=f"boneage-sender-{index}",
                                         daemon=True)
                        for index in range(settings.send_associations)]
        for thread in self.threads:
            thread.start()

    def put(self, name: str, datasets: list) -> None:
        if datasets:
            self.queue.put((name, datasets))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued result is sent or spooled; True when the queue is empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self.join(timeout)
        for _ in self.threads:  # each thread ends at the first None it takes
            self.queue.put(None)
        for thread in self.threads:
            thread.join(5.0)

    def _run(self) -> None:
        while True:
            # What is already queued goes over one association: a new association per
            # film kept results 17 s behind the readings under load (bench/hospital.py).
            items = [self.queue.get()]
            while len(items) < SEND_BATCH and items[-1] is not None:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                work = [item for item in items if item is not None]
                if work:
                    self._deliver(work)
            except Exception:  # noqa: BLE001 - the sender must outlive one bad result
                log.exception("sender: unexpected error")
            finally:
                for _ in items:
                    self.queue.task_done()
            if items[-1] is None:
                return

    def _deliver(self, work: list[tuple[str, list]]) -> None:
        """Send each film's results (``(name, datasets)`` pairs), retrying what was not
        stored; what is still not stored after the last attempt is spooled."""
        # By position in ``work``: the same film sent twice is two entries with one name.
        pending = {index: list(datasets) for index, (_, datasets) in enumerate(work)}
        error = "no destination set (--destination)"
        if self.settings.destination is not None:
            for attempt in range(self.settings.send_attempts):
                left, error = self._send([d for datasets in pending.values() for d in datasets])
                failed = {id(dataset) for dataset in left}
                for index in list(pending):
                    pending[index] = [d for d in pending[index] if id(d) in failed]
                    if not pending[index]:
                        del pending[index]
                        name, datasets = work[index]
                        self.counters.add(sent=len(datasets))
                        log.info("%s: %d result(s) stored at %s", name, len(datasets),
                                 self.settings.destination)
                if not pending:
                    return
                if attempt + 1 < self.settings.send_attempts:
                    time.sleep(self.settings.retry_seconds * (attempt + 1))
        for index, left in pending.items():
            name, datasets = work[index]
            self.counters.add(sent=len(datasets) - len(left), undelivered=len(left))
            spooled = self._spool(left)
            log.error("%s: %d result(s) not delivered (%s)%s", name, len(left), error,
                      f"; written to {spooled}" if spooled else "")

    def _send(self, datasets: list) -> tuple[list, str | None]:
        """C-STORE each; returns (those not stored, why)."""
        from pynetdicom import AE

        destination = self.settings.destination
        ae = AE(ae_title=self.settings.ae_title)
        for sop_class in dict.fromkeys(str(d.SOPClassUID) for d in datasets):
            ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        _poll_less(assoc)
        if not assoc.is_established:
            return datasets, f"association with {destination} not established"
        left, error = [], None
        try:
            for dataset in datasets:
                status = assoc.send_c_store(dataset)
                code = getattr(status, "Status", None)
                if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    left.append(dataset)
                    error = (f"{destination} answered status "
                             f"{'none' if code is None else hex(code)}")
        finally:
            assoc.release()
        return left, error

    def _spool(self, datasets: list) -> Path | None:
        if self.settings.spool is None or not datasets:
            return None
        self.settings.spool.mkdir(parents=True, exist_ok=True)
        for dataset in datasets:
            dataset.save_as(self.settings.spool / f"{dataset.SOPInstanceUID}.dcm",
                            enforce_file_format=True)
        return self.settings.spool


class DicomNode:
    """The Storage SCP. ``start()`` listens in the background; ``stop()`` closes and drains."""

    def __init__(self, reader, settings: NodeSettings):
        self.reader, self.settings = reader, settings
        self.counters = Counters()
        self.sender = ResultSender(settings, self.counters)
        self.server = None

    def _application_entity(self):
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.settings.ae_title)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.require_called_aet = True
        if self.settings.allowed_callers:
            ae.require_calling_aet = list(self.settings.allowed_callers)
        ae.maximum_associations = 16
        return ae

    def start(self, block: bool = False):
        from pynetdicom import _config, evt

        # Received data sets go to a temporary file as they arrive, not into memory: a film
        # over --max-dataset-mb is refused from its file's size and never held in RAM, and
        # reader processes read the file themselves (pynetdicom deletes it once answered).
        _config.STORE_RECV_CHUNKED_DATASET = True

        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_ESTABLISHED, lambda event: _poll_less(event.assoc))]
        ae = self._application_entity()
        if block:
            return ae.start_server((self.settings.host, self.settings.port), block=True,
                                   evt_handlers=handlers)
        self.server = ae.start_server((self.settings.host, self.settings.port), block=False,
                                      evt_handlers=handlers)
        return self.server

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.settings.port

    def stop(self, timeout: float = 30.0) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.sender.stop(timeout)

    def _on_echo(self, event) -> int:
        log.info("C-ECHO from %s", event.assoc.requestor.ae_title)
        return SUCCESS

    def _on_rejected(self, event) -> None:
        log.warning("association from %s (%s) rejected: calling AE title not allowed or called "
                    "AE title not %s", event.assoc.requestor.ae_title,
                    event.assoc.requestor.address, self.settings.ae_title)

    def _on_store(self, event):
        from pydicom.dataset import Dataset

        self.counters.add(received=1)
        caller = event.assoc.requestor.ae_title
        name = f"SOP {event.request.AffectedSOPInstanceUID}"
        try:
            answer = self.reader.answer(_received(event), name)
        except Exception:  # noqa: BLE001 - a bug must not take the node down
            log.exception("%s from %s: unexpected error", name, caller)
            self.counters.add(unreadable=1)
            return _failure(CANNOT_UNDERSTAND, "internal error; see the node's log")
        self.counters.add(**{answer.status: 1})
        if answer.status == "read":
            reading = answer.reading
            log.info("%s from %s: bone age %.1f months", name, caller, reading.months)
        else:
            log.warning("%s from %s: %s: %s", name, caller, answer.status, answer.reason)
        self.sender.put(name, answer.results)
        if answer.status != "unreadable":
            return SUCCESS
        code = OUT_OF_RESOURCES if "over the node's limit" in (answer.reason or "") \
            else CANNOT_UNDERSTAND
        status = Dataset()
        status.Status = code
        status.ErrorComment = _comment(answer.reason)
        return status


def _received(event):
    """The received data set: the temporary file pynetdicom wrote it to (``start()`` turns
    chunked receiving on), else its bytes as a Part 10 file, as pynetdicom encodes them."""
    path = event.dataset_path
    return Path(path) if path is not None else event.encoded_dataset(include_meta=True)


def _failure(code: int, comment: str):
    from pydicom.dataset import Dataset

    status = Dataset()
    status.Status = code
    status.ErrorComment = _comment(comment)
    return status


def _comment(text: str | None) -> str:
    """An Error Comment (LO: 64 characters, no backslash) from a reason."""
    text = (text or "").replace("\\", "/").encode("ascii", "replace").decode()
    if text.startswith("SOP ") and ": " in text:  # the name is the request's own UID
        text = text.split(": ", 1)[1]
    return text[:64]
