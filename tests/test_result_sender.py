"""The node's result sender (boneage.interfaces.dicom_node.ResultSender) against a small
pynetdicom Storage SCP: every queued film's results over one association, a refused result
retried and then spooled, the other films' results counted as stored."""

import threading
import time

import pytest
from factories import free_ports

pynetdicom = pytest.importorskip("pynetdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from boneage.interfaces.dicom_node import (  # noqa: E402
    CAPTURE_SOP_CLASS,
    SR_SOP_CLASS,
    Counters,
    Destination,
    NodeSettings,
    ResultSender,
)


def result(sop_class: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.PatientID = "anonymous"
    return dataset


@pytest.fixture()
def store_scp():
    """A Storage SCP that records each association and each stored SOP Instance UID and
    refuses the UIDs in ``refuse``."""
    from pynetdicom import AE, evt

    seen = {"associations": 0, "stored": [], "refuse": set(), "open": 0, "most_open": 0,
            "store_seconds": 0.0}
    lock = threading.Lock()

    def on_open(event):
        with lock:
            seen["associations"] += 1
            seen["open"] += 1
            seen["most_open"] = max(seen["most_open"], seen["open"])

    def on_close(event):
        with lock:
            seen["open"] -= 1

    def on_store(event):
        time.sleep(seen["store_seconds"])  # a PACS writing the object before it answers
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in seen["refuse"]:
            return 0xA700
        with lock:
            seen["stored"].append(uid)
        return 0x0000

    ae = AE(ae_title="PACS")
    for sop_class in (SR_SOP_CLASS, CAPTURE_SOP_CLASS):
        ae.add_supported_context(sop_class, "1.2.840.10008.1.2.1")
    port = free_ports(1)[0]
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store),
                                           (evt.EVT_ESTABLISHED, on_open),
                                           (evt.EVT_RELEASED, on_close),
                                           (evt.EVT_ABORTED, on_close)])
    yield port, seen
    server.shutdown()


def test_queued_results_go_over_one_association_and_a_refused_one_is_spooled(
        store_scp, tmp_path):
    port, seen = store_scp
    films = [(f"SOP film{index}", [result(SR_SOP_CLASS), result(CAPTURE_SOP_CLASS)])
             for index in range(3)]
    refused = films[1][1][1]
    seen["refuse"].add(str(refused.SOPInstanceUID))
    counters = Counters()
    sender = ResultSender(NodeSettings(destination=Destination("PACS", "127.0.0.1", port),
                                       spool=tmp_path / "spool", send_attempts=2,
                                       retry_seconds=0.01), counters)
    try:
        sender._deliver(films)  # what the sender thread does with the films queued at once
    finally:
        sender.stop(timeout=10)
    # One association for the six results, one more for the retry of the refused one.
    assert seen["associations"] == 2
    stored = {str(d.SOPInstanceUID) for _, datasets in films for d in datasets} - \
        {str(refused.SOPInstanceUID)}
    assert set(seen["stored"]) == stored and len(seen["stored"]) == 5
    assert (counters.sent, counters.undelivered) == (5, 1)
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [f"{refused.SOPInstanceUID}.dcm"]


def test_results_put_while_the_sender_is_busy_are_all_stored(store_scp, tmp_path):
    port, seen = store_scp
    counters = Counters()
    sender = ResultSender(NodeSettings(destination=Destination("PACS", "127.0.0.1", port)),
                          counters)
    films = [(f"SOP film{index}", [result(SR_SOP_CLASS)]) for index in range(40)]
    for name, datasets in films:
        sender.put(name, datasets)
    assert sender.join(timeout=60)
    sender.stop()
    assert len(seen["stored"]) == 40 and counters.sent == 40
    assert seen["associations"] < 40  # films queued together shared an association


def test_results_go_over_several_associations_at_once(store_scp):
    """A C-STORE waits for the PACS to store the object: one association at a time kept the
    results 26 s behind the readings in bench/hospital.py."""
    port, seen = store_scp
    seen["store_seconds"] = 0.05
    counters = Counters()
    sender = ResultSender(NodeSettings(destination=Destination("PACS", "127.0.0.1", port),
                                       send_associations=3), counters)
    for index in range(24):
        sender.put(f"SOP film{index}", [result(SR_SOP_CLASS)])
    assert sender.join(timeout=60)
    sender.stop()
    assert len(seen["stored"]) == 24 and counters.sent == 24
    assert seen["most_open"] >= 2
    with pytest.raises(ValueError, match="at least 1"):
        ResultSender(NodeSettings(send_associations=0), Counters())


def test_the_nodes_associations_poll_less_when_idle(store_scp, monkeypatch):
    """pynetdicom's network threads sleep 1 ms between polls when idle: four idle
    associations kept 0.7 of a core busy. The node's own and its sender's sleep
    IDLE_POLL_SECONDS."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from boneage.interfaces import dicom_node
    from boneage.interfaces.dicom_node import IDLE_POLL_SECONDS, DicomNode

    (port,) = free_ports(1)
    node = DicomNode(reader=None, settings=NodeSettings(ae_title="NODE", port=port))
    node.start()
    ae = AE("SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="NODE")
    try:
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        (accepted,) = node.server.active_associations
        assert accepted.dul._run_loop_delay == IDLE_POLL_SECONDS > 0.001
    finally:
        assoc.release()
        node.stop(timeout=5)
    polled = []
    monkeypatch.setattr(dicom_node, "_poll_less",
                        lambda association: polled.append(association.dul._run_loop_delay))
    store_port, _ = store_scp
    sender = ResultSender(NodeSettings(destination=Destination("PACS", "127.0.0.1", store_port)),
                          Counters())
    sender.put("SOP film", [result(SR_SOP_CLASS)])
    assert sender.join(timeout=30)
    sender.stop()
    assert len(polled) == 1  # the sender's association too
