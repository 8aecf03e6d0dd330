"""The hospital path against a real PACS: Orthanc (Debian) sends hand films to ``boneage
dicom-node``, which reads them as ``boneage predict`` does and stores a Comprehensive SR and a
Secondary Capture back in the same study. Skips, saying why, where Orthanc is absent."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
pynetdicom = pytest.importorskip("pynetdicom")
hd = pytest.importorskip("highdicom")

import orthanc_server  # noqa: E402
from factories import dx_film, free_ports, hand_radiograph, make_export, to_bytes  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from boneage.interfaces.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
FULLRES = SHARED / "rsna-bone-age-fullres-sample"
NODE_AE = "BONEAGE"
SCU_AE = "TESTSCU"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("model"), count=40, size=32, formats=("keras",))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc with the node as a DICOM peer, and the node sending its results to Orthanc."""
    why = orthanc_server.missing()
    if why:
        pytest.skip(why)
    (node_port,) = free_ports(1)
    orthanc = orthanc_server.Orthanc(tmp_path_factory.mktemp("orthanc"),
                                     {"boneage": (NODE_AE, "127.0.0.1", node_port)})
    orthanc.start()
    yield orthanc, node_port
    orthanc.stop()


@pytest.fixture(scope="module")
def node(pacs, model_dir, tmp_path_factory):
    from boneage.interfaces.dicom_node import Destination, DicomNode, NodeSettings
    from boneage.reading.dicom_reading import DicomReader
    from boneage.reading.predictor import Ensemble

    orthanc, node_port = pacs
    settings = NodeSettings(ae_title=NODE_AE, port=node_port,
                            allowed_callers=(orthanc_server.AE_TITLE, SCU_AE),
                            destination=Destination(orthanc_server.AE_TITLE, "127.0.0.1",
                                                    orthanc.dicom_port),
                            spool=tmp_path_factory.mktemp("spool"), retry_seconds=0.2)
    dicom_node = DicomNode(DicomReader(Ensemble([model_dir]), explain=True), settings)
    dicom_node.start()
    yield dicom_node
    dicom_node.stop()


def send(port: int, *datasets, calling: str = SCU_AE):
    """C-STORE the datasets to the node; their statuses (or None when rejected)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    if not assoc.is_established:
        return None
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, calling: str = SCU_AE) -> int | None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def results_of(orthanc, study_uid: str, count: int = 3) -> dict:
    """The study's instances by modality, read back with pydicom, once ``count`` are there."""
    found = orthanc.wait_for(study_uid, count)
    by_modality: dict[str, list] = {}
    for instance in found:
        ds = pydicom.dcmread(io.BytesIO(orthanc.file(instance["ID"])))
        by_modality.setdefault(ds.Modality, []).append(ds)
    return by_modality


def sr_values(sr) -> dict:
    """Code meaning -> value of the SR's content items, read with highdicom."""
    document = hd.sr.ComprehensiveSR.from_dataset(sr)
    values = {}
    for item in document.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            values[meaning] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            values[meaning] = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "TEXT":
            values.setdefault(meaning, item.TextValue)
        elif item.ValueType == "IMAGE":
            values[meaning] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return values


def predict_months(path: Path, model_dir: Path, capsys) -> float:
    """What ``boneage predict --json`` says of the same file."""
    capsys.readouterr()
    assert cli_main(["predict", str(path), "--model", str(model_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)[0]["boneage_months"]


def forward_through_orthanc(orthanc, ds) -> str:
    """Store the film in Orthanc, then have Orthanc C-STORE it to the node (REST
    /modalities/boneage/store), as a PACS routing rule would. Returns the study UID."""
    stored = orthanc.upload(to_bytes(ds))
    orthanc.post("/modalities/boneage/store", {"Resources": [stored["ID"]], "Synchronous": True})
    return ds.StudyInstanceUID


def test_a_phantom_film_routed_by_orthanc_comes_back_as_sr_and_capture(
        pacs, node, model_dir, tmp_path, capsys, caplog):
    orthanc, _ = pacs
    ds = dx_film(hand_radiograph(120, 1, seed=3), sex="M", age="010Y")
    path = tmp_path / "phantom.dcm"
    path.write_bytes(to_bytes(ds))
    with caplog.at_level(logging.INFO):
        study = forward_through_orthanc(orthanc, ds)
        found = results_of(orthanc, study)
    assert sorted(found) == ["DX", "OT", "SR"]
    sr, capture = found["SR"][0], found["OT"][0]
    for result in (sr, capture):
        assert result.StudyInstanceUID == study
        assert result.SeriesInstanceUID != ds.SeriesInstanceUID  # a new series
        assert result.PatientID == ds.PatientID
    assert sr.SeriesInstanceUID != capture.SeriesInstanceUID  # one modality per series
    values = sr_values(sr)
    assert values["Reading status"] == "Read"
    assert values["Source of Measurement"] == ds.SOPInstanceUID
    assert values["Algorithm Name"] == "boneage"
    assert values["Subject Age"] == 120.0
    assert values["Bone age minus chronological age"] == pytest.approx(
        values["Bone age (Greulich and Pyle), estimated"] - 120.0, abs=0.11)
    assert values["Bone age call"] in ("Delayed", "Normal", "Advanced")
    assert "Z-score" in values and "Standard deviation of population" in values
    assert abs(values["Bone age (Greulich and Pyle), estimated"]
               - predict_months(path, model_dir, capsys)) <= 0.1
    assert capture.BurnedInAnnotation == "YES" and capture.SamplesPerPixel == 3  # Grad-CAM
    assert capture.pixel_array.shape[0] > ds.Rows  # the film and a band of text under it
    # Privacy: the log names the film by its SOP Instance UID, never the patient.
    assert ds.SOPInstanceUID in caplog.text
    assert "PID-SECRET-4711" not in caplog.text and "Doe^Jane" not in caplog.text


def test_the_same_film_twice_gives_one_sr_not_two(pacs, node):
    orthanc, _ = pacs
    ds = dx_film(hand_radiograph(60, 0, seed=5), sex="F", age="005Y")
    study = forward_through_orthanc(orthanc, ds)
    results_of(orthanc, study)
    sent = node.counters.sent
    forward_through_orthanc(orthanc, ds)
    deadline = time.monotonic() + 30
    while node.counters.sent < sent + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.counters.sent == sent + 2  # sent again ...
    assert len(orthanc.study_instances(study)) == 3  # ... and the PACS holds one of each


def test_fullres_sample_films_wrapped_as_dx_match_predict(pacs, node, model_dir, tmp_path,
                                                          capsys):
    """A few of the 36 full-resolution RSNA sample films, wrapped as DX by this test."""
    import cv2
    import pandas as pd

    if not (FULLRES / "boneage-training-dataset.csv").is_file():
        pytest.skip(f"{FULLRES} not present")
    orthanc, _ = pacs
    labels = pd.read_csv(FULLRES / "boneage-training-dataset.csv").head(3)
    statuses = []
    for row in labels.itertuples():
        pixels = cv2.imread(str(FULLRES / "boneage-training-dataset" / f"{row.id}.png"),
                            cv2.IMREAD_GRAYSCALE)
        male = str(row.male).lower() == "true"
        ds = dx_film(pixels, sex="M" if male else "F", age=f"{int(row.boneage) // 12:03d}Y")
        path = tmp_path / f"{row.id}.dcm"
        path.write_bytes(to_bytes(ds))
        found = results_of(orthanc, forward_through_orthanc(orthanc, ds))
        values = sr_values(found["SR"][0])
        statuses.append(values["Reading status"])
        if values["Reading status"] == "Read":
            assert abs(values["Bone age (Greulich and Pyle), estimated"]
                       - predict_months(path, model_dir, capsys)) <= 0.1
        else:  # the film check refused it: predict must refuse it too
            capsys.readouterr()
            assert cli_main(["predict", str(path), "--model", str(model_dir), "--json"]) == 1
    assert statuses.count("Read") >= 2, statuses  # the film check accepts real hand films


def test_a_ct_gets_an_sr_saying_why_it_was_not_read(pacs, node):
    orthanc, _ = pacs
    ds = dx_film(hand_radiograph(120, 1), Modality="CT")
    statuses = send(node.port, ds)
    assert statuses[0].Status == 0x0000  # understood; the SR says why it was not read
    found = results_of(orthanc, ds.StudyInstanceUID, count=1)
    assert list(found) == ["SR"]
    values = sr_values(found["SR"][0])
    assert values["Reading status"] == "Not read"
    assert "Modality (0008,0060) is CT" in values["Reason not read"]


def test_a_caller_not_on_the_allow_list_is_rejected(node):
    assert send(node.port, dx_film(hand_radiograph()), calling="INTRUDER") is None
    assert echo(node.port, calling="INTRUDER") is None
    assert echo(node.port) == 0x0000


def test_a_dataset_without_pixels_gets_a_failure_and_the_node_stays_up(pacs, node, caplog):
    orthanc, _ = pacs
    ds = dx_film(None)
    with caplog.at_level(logging.WARNING):
        (status,) = send(node.port, ds)
    assert status.Status == 0xC000
    assert "no pixel data" in status.ErrorComment
    assert "holds no image" in caplog.text
    values = sr_values(results_of(orthanc, ds.StudyInstanceUID, count=1)["SR"][0])
    assert values["Reading status"] == "Not read"
    assert echo(node.port) == 0x0000  # still up


def test_a_malformed_number_gets_a_failure_naming_the_tag(node, caplog):
    ds = dx_film(hand_radiograph(), RescaleSlope="1", RescaleIntercept="0")
    raw = to_bytes(ds).replace(b"DS\x02\x001 ", b"DS\x02\x00x ", 1)  # RescaleSlope '1 ' -> 'x '
    malformed = pydicom.dcmread(io.BytesIO(raw))
    with caplog.at_level(logging.WARNING):
        (status,) = send(node.port, malformed)
    assert status.Status == 0xC000
    assert "RescaleSlope" in status.ErrorComment and "RescaleSlope" in caplog.text
    assert echo(node.port) == 0x0000


def test_an_over_size_dataset_is_refused_before_it_is_decoded(node, monkeypatch):
    ds = dx_film(hand_radiograph(), Rows=30000, Columns=30000)  # 40 KB of pixels claiming more
    decoded = []
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array",
                        property(lambda self: decoded.append(1)))
    (status,) = send(node.port, ds)
    assert status.Status == 0xC000 and "30000x30000 px" in status.ErrorComment
    monkeypatch.setattr(node.reader, "max_dataset_bytes", 10_000)
    given, reads = [], []
    answer, read_bytes = node.reader.answer, Path.read_bytes
    monkeypatch.setattr(node.reader, "answer",
                        lambda data, name=None: given.append(data) or answer(data, name))
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    (status,) = send(node.port, dx_film(hand_radiograph()))
    assert status.Status == 0xA700 and "over the node's limit" in status.ErrorComment
    assert not decoded
    # received into a temporary file, refused from its size: never read into memory
    assert len(given) == 1 and isinstance(given[0], Path) and given[0] not in reads
    assert not given[0].exists()  # pynetdicom deleted it once the node had answered


# ------------------------------------------------------------------- the DICOMweb worker

def test_dicomweb_worker_answers_each_film_once_across_restarts(pacs, model_dir, tmp_path,
                                                                capsys, monkeypatch):
    """QIDO-RS finds the hand studies, WADO-RS fetches the films, STOW-RS stores the SR and
    capture; a STOW failure mid-batch leaves that film for the next pass, a restarted
    worker reads nothing twice, and the PACS holds one result per film."""
    from boneage.interfaces.dicomweb_worker import DicomwebWorker
    from boneage.reading.dicom_reading import DicomReader
    from boneage.reading.predictor import Ensemble

    orthanc, _ = pacs
    query = {"AccessionNumber": "WEB1"}  # only this test's studies (the module shares Orthanc)
    films = [dx_film(hand_radiograph(age, male, seed=seed), sex="MF"[1 - male],
                     age=f"{age // 12:03d}Y", AccessionNumber="WEB1")
             for age, male, seed in ((96, 1, 11), (150, 0, 12))]
    ct = dx_film(hand_radiograph(), Modality="CT", AccessionNumber="WEB1")
    for ds in (*films, ct):
        orthanc.upload(to_bytes(ds))
    reader = DicomReader(Ensemble([model_dir]))
    state = tmp_path / "state.sqlite"
    worker = DicomwebWorker(reader, orthanc.dicomweb, state, query=query)
    store = worker.client.store_instances
    calls = []

    def store_failing_once(datasets, **kwargs):  # the worker "dies" storing the 2nd film
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("PACS went away")
        return store(datasets, **kwargs)

    monkeypatch.setattr(worker.client, "store_instances", store_failing_once)
    first = worker.run_once()
    assert (first.studies, first.found, first.read, first.failed) == (2, 2, 1, 1)
    worker.state.close()

    restarted = DicomwebWorker(reader, orthanc.dicomweb, state, query=query)
    second = restarted.run_once()
    assert (second.read, second.skipped, second.failed) == (1, 1, 0)
    third = restarted.run_once()
    assert (third.read, third.skipped) == (0, 2)
    assert restarted.state.count() == 2
    for ds in films:
        found = results_of(orthanc, ds.StudyInstanceUID)
        assert sorted((m, len(v)) for m, v in found.items()) == [("DX", 1), ("OT", 1),
                                                                ("SR", 1)]
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        assert abs(sr_values(found["SR"][0])["Bone age (Greulich and Pyle), estimated"]
                   - predict_months(path, model_dir, capsys)) <= 0.1
    assert list(results_of(orthanc, ct.StudyInstanceUID, count=1)) == ["CT"]  # not a hand study


def test_dicomweb_command_one_pass(pacs, model_dir, tmp_path, capsys):
    orthanc, _ = pacs
    ds = dx_film(hand_radiograph(100, 1, seed=21), AccessionNumber="WEB2")
    orthanc.upload(to_bytes(ds))
    arguments = ["dicomweb", "--url", orthanc.dicomweb, "--model", str(model_dir), "--once",
                 "--state", str(tmp_path / "s.sqlite"), "--query", "AccessionNumber=WEB2"]
    assert cli_main(arguments) == 0
    assert "'read': 1" in capsys.readouterr().out
    assert cli_main(arguments) == 0
    assert "'read': 0" in capsys.readouterr().out
    assert sorted(results_of(orthanc, ds.StudyInstanceUID)) == ["DX", "OT", "SR"]


def test_hospital_commands_check_their_flags(capsys):
    assert cli_main(["dicom-node", "--destination", "nonsense"]) == 2
    assert "write AE_TITLE@HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["dicom-node", "--ae-title", "A_TITLE_MUCH_TOO_LONG"])
    assert "1 to 16 ASCII characters" in capsys.readouterr().err
    assert cli_main(["dicomweb", "--url", "ftp://x", "--once"]) == 2
    assert "http(s)" in capsys.readouterr().err
    for flag, value in (("--workers", "0"), ("--send-associations", "many")):
        with pytest.raises(SystemExit):
            cli_main(["dicom-node", flag, value])
        assert "1 to 64" in capsys.readouterr().err


def test_workers_auto_is_one_reader_process_per_core_at_most_four(monkeypatch):
    from boneage.interfaces import hospital_cli

    for cores, expected in ((1, 1), (2, 2), (16, 4), (None, 1)):
        monkeypatch.setattr(hospital_cli.os, "cpu_count", lambda cores=cores: cores)
        assert hospital_cli._workers("auto") == expected
    assert hospital_cli._workers("3") == 3


def test_a_node_with_two_reader_processes_answers_as_one_reading_in_process(pacs, model_dir,
                                                                            tmp_path):
    """``--workers 2``: the films are read in two processes; the SR in the PACS holds the
    reading the node's own process gives, and the capture comes with it."""
    from boneage.interfaces.dicom_node import Destination, DicomNode, NodeSettings
    from boneage.reading.dicom_reading import DicomReader
    from boneage.reading.predictor import Ensemble
    from boneage.reading.reader_pool import ReaderPool, ReaderSpec

    orthanc, _ = pacs
    (port,) = free_ports(1)
    pool = ReaderPool(ReaderSpec(model_dirs=(model_dir,), model_format="keras"), workers=2)
    assert len(set(pool.start())) == 2  # two processes, each with its models
    settings = NodeSettings(ae_title=NODE_AE, port=port, allowed_callers=(SCU_AE,),
                            destination=Destination(orthanc_server.AE_TITLE, "127.0.0.1",
                                                    orthanc.dicom_port),
                            spool=tmp_path / "spool", retry_seconds=0.2)
    second = DicomNode(pool, settings)
    second.start()
    try:
        films = [dx_film(hand_radiograph(age, male, seed=30 + age // 12), sex="MF"[1 - male])
                 for age, male in ((48, 0), (110, 1), (150, 1))]
        statuses = send(port, *films)
        assert [s.Status for s in statuses] == [0x0000] * 3
        in_process = DicomReader(Ensemble([model_dir]))
        for ds in films:
            found = results_of(orthanc, ds.StudyInstanceUID, count=2)
            assert sorted(found) == ["OT", "SR"]
            values = sr_values(found["SR"][0])
            expected = in_process.answer(to_bytes(ds)).reading.months
            assert values["Bone age (Greulich and Pyle), estimated"] == pytest.approx(
                expected, abs=0.051)  # the SR holds months to 0.1
    finally:
        second.stop()
        pool.close()
    assert second.counters.read == 3 and pool.restarts == 0
