"""``boneage dicomweb``: a worker that finds new hand films in a PACS over DICOMweb, reads
them, and stores the SR and capture back (docs/hospital.md).

Each pass (``dicomweb-client``):

1. **QIDO-RS** finds studies whose ModalitiesInStudy is one of ``modalities`` (CR and DX by
   default), with any extra query filters (``--query StudyDate=20240101-``), then the
   instances of each study whose Modality is one of them;
2. **WADO-RS** retrieves each instance not yet answered, which is read by a
   :class:`boneage.reading.dicom_reading.DicomReader` (the same path as ``boneage predict``);
3. **STOW-RS** stores its SR (and capture), in the film's study, new series.

A small SQLite state file records each answered SOP Instance UID, written only after STOW-RS
has accepted the results. A worker killed mid-batch and restarted reads again only the
films whose results were not stored; and since the results' UIDs are derived from the
film's (:func:`boneage.reading.dicom_report.result_uid`), a film read twice is stored once.
So every film gets exactly one result: a restart neither skips nor doubles one.

Privacy: the log names films by SOP Instance UID only.
"""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODALITIES = ("CR", "DX")
PAGE = 500  # QIDO-RS matches asked for at a time


class State:
    """The SOP Instance UIDs already answered (SQLite: one row per film, committed at once)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS answered (sop_instance_uid TEXT PRIMARY KEY,"
                        " study_instance_uid TEXT, status TEXT, at REAL)")
        self.db.commit()

    def done(self, sop_uid: str) -> bool:
        return self.db.execute("SELECT 1 FROM answered WHERE sop_instance_uid = ?",
                               (sop_uid,)).fetchone() is not None

    def mark(self, sop_uid: str, study_uid: str, status: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO answered VALUES (?, ?, ?, ?)",
                        (sop_uid, study_uid, status, time.time()))
        self.db.commit()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answered").fetchone()[0]

    def close(self) -> None:
        self.db.close()


@dataclass
class Pass:
    """What one pass did."""

    studies: int = 0
    found: int = 0
    read: int = 0
    refused: int = 0
    unreadable: int = 0
    skipped: int = 0  # answered before
    failed: int = 0  # retrieve or store failed: tried again next pass

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _value(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


class DicomwebWorker:
    def __init__(self, reader, url: str, state_path: Path,
                 modalities: tuple[str, ...] = DEFAULT_MODALITIES,
                 query: dict | None = None, client=None):
        from dicomweb_client.api import DICOMwebClient

        self.reader = reader
        self.client = client or DICOMwebClient(url=url.rstrip("/"))
        self.state = State(Path(state_path))
        self.modalities = tuple(m.upper() for m in modalities)
        self.query = dict(query or {})

    def _pages(self, search, key: str, **arguments) -> list[dict]:
        """Every match of a QIDO-RS search, page by page (limit and offset).

        Paging stops at a short page, and also at a page that brings nothing new: some
        servers (Orthanc's DICOMweb plugin 1.7) ignore the offset and would answer the
        same page for ever (dicomweb-client's ``get_remaining`` loops there).
        """
        found: dict[str, dict] = {}
        offset = 0
        while True:
            page = search(limit=PAGE, offset=offset, **arguments)
            new = {_value(item, key): item for item in page if _value(item, key) not in found}
            found.update(new)
            if len(page) < PAGE or not new:
                return [item for uid, item in found.items() if uid]
            offset += len(page)

    def studies(self) -> list[str]:
        """Study Instance UIDs of the studies QIDO-RS finds (one query per modality)."""
        found: dict[str, None] = {}
        for modality in self.modalities:
            filters = {**self.query, "ModalitiesInStudy": modality}
            for study in self._pages(self.client.search_for_studies, "0020000D",
                                     search_filters=filters):
                found[_value(study, "0020000D")] = None
        return list(found)

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        """(series UID, SOP Instance UID) of the study's films of the wanted modalities."""
        films = []
        for item in self._pages(self.client.search_for_instances, "00080018",
                                study_instance_uid=study_uid,
                                fields=["00080060", "0020000E", "00080018"]):
            modality = _value(item, "00080060").upper()
            if modality and modality not in self.modalities:
                continue  # the study's other series: our own SR and capture among them
            films.append((_value(item, "0020000E"), _value(item, "00080018")))
        return films

    def run_once(self) -> Pass:
        """One pass over the PACS: every film found and not yet answered is answered."""
        result = Pass()
        for study_uid in self.studies():
            result.studies += 1
            for series_uid, sop_uid in self.instances(study_uid):
                result.found += 1
                if self.state.done(sop_uid):
                    result.skipped += 1
                    continue
                status = self._answer(study_uid, series_uid, sop_uid)
                if status is None:
                    result.failed += 1
                else:
                    setattr(result, status, getattr(result, status) + 1)
        return result

    def _answer(self, study_uid: str, series_uid: str, sop_uid: str) -> str | None:
        name = f"SOP {sop_uid}"
        try:
            dataset = self.client.retrieve_instance(study_uid, series_uid, sop_uid)
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001 - network, PACS, odd data: next pass
            log.warning("%s: WADO-RS retrieve failed (%s); tried again next pass", name,
                        type(exc).__name__)
            return None
        answer = self.reader.answer(buffer.getvalue(), name)
        if answer.status == "read":
            log.info("%s: bone age %.1f months", name, answer.reading.months)
        else:
            log.warning("%s: %s: %s", name, answer.status, answer.reason)
        if answer.results:
            try:
                self.client.store_instances(answer.results, study_instance_uid=study_uid)
            except Exception as exc:  # noqa: BLE001 - not marked: stored next pass
                log.warning("%s: STOW-RS failed (%s); tried again next pass", name, exc)
                return None
        self.state.mark(sop_uid, study_uid, answer.status)
        return answer.status

    def run(self, interval: float, stop) -> None:
        """Pass after pass, ``interval`` seconds apart, until ``stop`` (an Event) is set."""
        while not stop.is_set():
            try:
                done = self.run_once()
                if done.read or done.refused or done.unreadable or done.failed:
                    log.info("pass: %s", done.to_dict())
            except Exception as exc:  # noqa: BLE001 - the PACS down: try again later
                log.warning("pass failed (%s: %s); next in %g s", type(exc).__name__, exc,
                            interval)
            stop.wait(interval)
