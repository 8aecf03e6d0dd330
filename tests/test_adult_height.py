"""Adult height by Bayley-Pinneau: the table arithmetic, its interpolation, the choice of table,
the refusals, and the height through the CLI, the web form and the DICOM node's SR."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from boneage.imaging.transforms import ImagingSettings
from boneage.kernel.errors import UsageError
from boneage.reading.adult_height import (ACCELERATED, AVERAGE, RETARDED, SOURCE, TABLES, Height,
                                          height_from_dicom, maturity_group, predict)
from boneage.reading.inputs import parse_height_cm

INCH = 2.54


def months(years: int, rest: int = 0) -> float:
    return 12.0 * years + rest


def given(cm: float) -> Height:
    return Height(cm, "from --height-cm", None, "pass --chronological-age")


# --- the tables -------------------------------------------------------------------------------

@pytest.mark.parametrize("inches, bone_age, age, adult_inches, table, group", [
    # the four worked examples in the paper's text (p. 431), heights in inches
    (60.0, months(13, 3), months(13), 67.4, "IIB", AVERAGE),
    (51.5, months(13, 3), months(13), 57.9, "IIB", AVERAGE),
    (67.5, months(15, 6), months(14), 69.5, "IID", ACCELERATED),
    (55.0, months(10, 3), months(12), 62.2, "IIIE", RETARDED),
])
def test_the_papers_worked_examples(inches, bone_age, age, adult_inches, table, group):
    male = 0 if table.startswith("III") else 1
    result = predict(given(inches * INCH), bone_age, male, age)
    assert result.refused is None
    assert result.adult_cm / INCH == pytest.approx(adult_inches, abs=0.05)
    assert (result.table, result.group) == (table, group)


@pytest.mark.parametrize("age, group, percent", [
    # the paper, p. 438: a girl of skeletal age 10 has reached 86.2 % (average), 82.8 %
    # (accelerated: 8.5 years old) or 87.4 % (retarded: 12 years old) of her adult height
    (months(10), AVERAGE, 86.2), (months(8, 6), ACCELERATED, 82.8), (months(12), RETARDED, 87.4),
])
def test_an_exact_column_is_height_over_its_fraction(age, group, percent):
    result = predict(given(140.0), months(10), 0, age)
    assert (result.group, result.percent) == (group, pytest.approx(percent))
    assert result.adult_cm == pytest.approx(140.0 / (percent / 100))
    row = result.to_dict()
    assert row["adult_height_cm"] == round(140.0 / (percent / 100), 1)
    assert row["percent_of_mature_height"] == percent and row["adult_height_method"] == SOURCE


@pytest.mark.parametrize("male, bone_age, percent, table", [
    (1, months(13) + 1.5, (87.6 + 89.0) / 2, "IIB"),  # halfway between 13-0 and 13-3
    (1, months(12, 9) + 1.5, (86.3 + 87.6) / 2, "IIA-IIB"),  # across the two parts' join
    (0, months(6, 8), 73.8 + (75.1 - 73.8) / 2, "IIIA"),  # 6-6 to 6-10: a 4-month step
    (0, months(8, 9), 81.0 + (82.1 - 81.0) * 3 / 4, "IIIA"),  # 8-6 to 8-10
    (0, months(17, 3), (99.9 + 99.95) / 2, "IIIB"),  # 17-0 to 17-6: a half-year step
])
def test_the_percentage_is_linear_between_the_tables_columns(male, bone_age, percent, table):
    result = predict(given(150.0), bone_age, male, bone_age)  # average: bone age = age
    assert result.percent == pytest.approx(percent) and result.table == table
    assert result.adult_cm == pytest.approx(150.0 / (percent / 100))


@pytest.mark.parametrize("male, group, bone_age, inches, mature_inches", [
    # where the RCPCH hand transcription differs from the scan (module docstring), a cell of
    # the scan's own table body: current height (in) -> predicted mature height (in)
    (1, ACCELERATED, months(11, 6), 48, 61.1),  # IIC: transcription 77.8 %, scan 78.6 %
    (1, ACCELERATED, months(17), 60, 60.6),  # IID 17-0: missing there, scan 99.0 %
    (0, ACCELERATED, months(11, 3), 46, 51.9),  # IIIC: transcription 89.7 %, scan 88.7 %
    (0, ACCELERATED, months(13, 6), 50, 51.9),  # IIID: transcription 96.8 %, scan 96.3 %
    (1, AVERAGE, months(7), 42, 60.4),  # IIA: no percentage row in the transcription
])
def test_where_transcriptions_differ_the_tables_own_body_agrees(male, group, bone_age, inches,
                                                                mature_inches):
    table = TABLES[(male, group)]
    percent, _ = table.percent_at(bone_age)
    assert inches / (percent / 100) == pytest.approx(mature_inches, abs=0.05)


def test_each_table_rises_with_skeletal_age_and_spans_the_papers_range():
    ranges = {(1, AVERAGE): ("7-0", "18-6"), (1, ACCELERATED): ("7-0", "17-0"),
              (1, RETARDED): ("6-0", "13-0"), (0, AVERAGE): ("6-0", "18-0"),
              (0, ACCELERATED): ("7-0", "17-6"), (0, RETARDED): ("6-0", "17-0")}
    for key, (first, last) in ranges.items():
        table = TABLES[key]
        assert (table.first, table.last) == tuple(
            12 * int(label.split("-")[0]) + int(label.split("-")[1]) for label in (first, last))
        assert all(np.diff(table.ages_months) > 0), key
        assert all(np.diff(table.percent) >= 0), key  # a transcription slip would break this
    for male in (0, 1):
        assert TABLES[(male, AVERAGE)].percent[-1] == 100.0


# --- which table ------------------------------------------------------------------------------

@pytest.mark.parametrize("difference, group", [
    (0.0, AVERAGE), (11.9, AVERAGE), (-11.9, AVERAGE),
    (12.0, ACCELERATED), (30.0, ACCELERATED),  # "accelerated a year or more"
    (-12.0, RETARDED), (-30.0, RETARDED),
])
def test_the_group_is_bone_age_minus_chronological_age(difference, group):
    assert maturity_group(months(11) + difference, months(11)) == group
    result = predict(given(140.0), months(11) + difference, 1, months(11))
    assert result.group == group and result.refused is None


def test_without_chronological_age_no_table_is_guessed():
    result = predict(given(140.0), months(11), 1, None)
    assert result.adult_cm is None
    assert "by bone age minus chronological age" in result.refused
    assert result.refused.endswith("pass --chronological-age")
    assert result.text().startswith("  adult height (Bayley-Pinneau): not predicted: ")


# --- the valid range --------------------------------------------------------------------------

@pytest.mark.parametrize("male, bone_age, age, message", [
    (1, months(6, 11), months(7), "below 7 years 0 months, where Bayley-Pinneau's tables for "
                                  "average boys start"),
    (0, months(5, 11), months(6), "below 6 years 0 months, where Bayley-Pinneau's tables for "
                                  "average girls start"),
    (0, months(6, 9), months(5), "tables for accelerated girls start"),  # they start at 7-0
    (1, months(5, 9), months(8), "tables for retarded boys start"),  # they start at 6-0
    (1, months(18, 7), months(18), "past the end of Bayley-Pinneau's tables for boys "
                                   "(18 years 6 months, 100% of mature height)"),
    (0, months(18, 1), months(18), "past the end of Bayley-Pinneau's tables for girls"),
])
def test_outside_the_tables_nothing_is_predicted_and_the_report_says_why(male, bone_age, age,
                                                                         message):
    result = predict(given(130.0), bone_age, male, age)
    assert result.adult_cm is None and message in result.refused
    assert "\n" not in result.text() and "not predicted" in result.text()
    assert "adult_height_cm" not in result.to_dict()


def test_a_retarded_table_that_has_ended_hands_over_to_the_average_one():
    ok = predict(given(130.0), months(6, 3), 1, months(8))  # retarded boys start at 6-0
    assert ok.table == "IIE" and ok.percent == pytest.approx(69.0)
    late = predict(given(160.0), months(14), 1, months(16))  # IIE ends at 13-0
    assert late.group == RETARDED and late.table == "IIB" and late.percent == pytest.approx(92.7)
    assert "retarded boys end at 13 years 0 months (IIE)" in late.note
    assert late.note in late.text() and late.to_dict()["adult_height_note"] == late.note


@pytest.mark.parametrize("text", ["-5", "0", "30", "251", "1e9", "nan", "inf", "abc", ""])
def test_heights_that_are_no_childs_are_refused(text):
    with pytest.raises(UsageError, match="give the current height in centimetres"):
        parse_height_cm(text)


def test_a_height_in_metres_is_caught():
    with pytest.raises(UsageError, match="in metres. 1.42 m is 142 cm"):
        parse_height_cm("1.42")
    assert parse_height_cm("142.5") == 142.5 and parse_height_cm(" 142.5 cm") == 142.5


@pytest.mark.parametrize("text, cm, problem", [
    ("1.42", 142.0, None), (" 1.5 ", 150.0, None), (None, None, None), ("", None, None),
    ("0", None, None),  # many systems write 0 for unknown
    ("abc", None, "PatientSize (0010,1020) 'abc' is not a number of metres"),
    ("142", None, "PatientSize (0010,1020) is 142 m: 14200 cm is not a child's height"),
])
def test_the_dicom_patient_size_is_metres(text, cm, problem):
    height = height_from_dicom(text)
    if cm is None and problem is None:
        assert height is None
        return
    assert height.cm == (pytest.approx(cm) if cm else None)
    assert height.problem == problem or problem in height.problem
    if problem:  # an odd PatientSize does not stop the reading: the report says why
        assert predict(height, months(11), 1, months(11)).refused == height.problem


# --- through the reading path (a stub model over the real Ensemble) ---------------------------

class StubPredictor:
    settings = ImagingSettings(crop="none", size=16)
    card = {"name": "stub", "boneage_version": "0"}

    def __init__(self, months):
        from pathlib import Path

        self.months, self.model_dir = months, Path("stub")

    def predict_prepared(self, films, male):
        return np.full(len(films), self.months)


def stub_ensemble(bone_age_months: float = 100.0, Ensemble=None):
    """The real :class:`Ensemble` (reading, resolution of sex, age and height, wording, the
    report) over a model that answers a fixed bone age."""
    if Ensemble is None:
        from boneage.reading.predictor import Ensemble

    ensemble = Ensemble.of_predictors([StubPredictor(bone_age_months)],
                                      identity={"name": "stub", "version": "0"})
    ensemble._explainers = []  # no Grad-CAM of a stand-in model
    return ensemble


@pytest.fixture(scope="module")
def hand():
    from factories import hand_radiograph

    return hand_radiograph(seed=0)


def hand_dicom(hand, **tags) -> bytes:
    """The phantom hand as a DX DICOM in a study, with the given patient tags."""
    import pydicom
    from pydicom.uid import generate_uid
    from test_dicom import make_dicom

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(hand)))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_no_height_no_adult_height(hand):
    import cv2

    png = cv2.imencode(".png", hand)[1].tobytes()
    reading, _ = stub_ensemble().predict_bytes(png, "film.png", "F", months(12))
    assert reading.adult_height is None
    assert "height_cm" not in reading.to_dict() and "adult height" not in reading.text()


def test_the_height_flag_reaches_the_report(hand):
    import cv2

    from boneage.reading.predictor import CLI

    png = cv2.imencode(".png", hand)[1].tobytes()
    reading, _ = stub_ensemble(100.0).predict_bytes(png, "film.png", "F", months(12), False,
                                                    CLI, height_cm=140.0)
    # bone age 100 months, age 144: retarded girl, IIIE between 8-3 (81.3) and 8-6 (82.3)
    percent = 81.3 + (82.3 - 81.3) / 3
    row = reading.to_dict()
    assert row["adult_height_cm"] == round(140.0 / (percent / 100), 1)
    assert row["maturity"] == RETARDED and row["adult_height_table"] == "IIIE"
    assert row["height_source"] == "from --height-cm"
    assert f"adult height (Bayley-Pinneau): {140.0 / (percent / 100):.1f} cm" in reading.text()


def test_a_dicom_gives_its_patient_size_and_the_sr_holds_the_adult_height(hand):
    pytest.importorskip("highdicom")
    from boneage.reading.dicom_reading import DicomReader

    data = hand_dicom(hand, PatientSex="M", PatientAge="011Y", PatientSize="1.40")
    answer = DicomReader(stub_ensemble(130.0)).answer(data)
    assert answer.status == "read", answer.reason
    adult = answer.reading.adult_height
    assert adult.height.source == "from the DICOM PatientSize tag"
    # bone age 130 months (10-10), age 132: average boy, IIA between 10-9 (80.0) and 11-0 (80.4)
    assert adult.table == "IIA" and adult.percent == pytest.approx(80.0 + 0.4 / 3)
    sr = answer.results[0]
    items = {item.ConceptNameCodeSequence[0].CodeValue: item for item in sr.ContentSequence}
    height = items["8302-2"].MeasuredValueSequence[0]
    assert float(height.NumericValue) == 140.0
    assert height.MeasurementUnitsCodeSequence[0].CodeValue == "cm"
    predicted = items["BA-11"].MeasuredValueSequence[0]
    assert float(predicted.NumericValue) == round(adult.adult_cm, 1)
    assert predicted.MeasurementUnitsCodeSequence[0].CodeValue == "cm"
    assert float(items["BA-12"].MeasuredValueSequence[0].NumericValue) == round(adult.percent, 2)
    assert "table IIA, average boys" in items["BA-13"].TextValue
    assert "J Pediatr 1952;40:423-441" in items["BA-13"].TextValue
    assert f"adult height (Bayley-Pinneau) {adult.adult_cm:.1f} cm, table IIA" \
        in items["121071"].TextValue  # the finding in words, as burned into the capture


def test_a_dicom_without_age_gets_an_sr_saying_why_no_adult_height(hand):
    pytest.importorskip("highdicom")
    from boneage.reading.dicom_reading import DicomReader

    answer = DicomReader(stub_ensemble(130.0)).answer(
        hand_dicom(hand, PatientSex="F", PatientSize="1.40"))
    assert answer.status == "read", answer.reason
    items = {item.ConceptNameCodeSequence[0].CodeValue: item
             for item in answer.results[0].ContentSequence}
    assert "BA-11" not in items
    assert items["BA-14"].TextValue.endswith("the sending system must fill PatientAge "
                                             "(0010,1010)")


# --- the command line and the web form --------------------------------------------------------

CHECK = """
import contextlib, io, json, sys
from boneage.interfaces.cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        runs.append([main(argv), err.getvalue()])
loaded = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(json.dumps({"runs": runs, "loaded": loaded}))
"""


def test_bad_heights_stop_predict_in_one_line_before_tensorflow(tmp_path):
    film = tmp_path / "film.png"
    film.write_bytes(b"\x89PNG\r\n\x1a\n")  # never read: the flag is refused first
    cases = {"-5": "height '-5': -5 cm is not a child's height (50 to 250 cm)",
             "300": "height '300': 300 cm is not a child's height (50 to 250 cm)",
             "abc": "height 'abc' is not a number",
             "1.42": "in metres? 1.42 m is 142 cm"}
    argvs = [["predict", str(film), "--sex", "F", "--height-cm", value] for value in cases]
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(argvs)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for (code, err), message in zip(out["runs"], cases.values()):
        assert code == 2 and err.startswith("error: ") and message in err, (message, err)
        assert "Traceback" not in err and err.count("\n") == 1
    assert out["loaded"] == []


def test_predict_prints_the_adult_height_and_its_source(hand, tmp_path, monkeypatch, capsys):
    import cv2

    from boneage.interfaces import cli
    from boneage.reading import predictor

    film = tmp_path / "film.png"
    cv2.imwrite(str(film), hand)
    real = predictor.Ensemble
    monkeypatch.setattr(cli, "_import_tensorflow", lambda args: None)  # the stub needs none
    monkeypatch.setattr(predictor, "Ensemble",
                        lambda dirs, model_format="keras": stub_ensemble(100.0, real))
    base = ["predict", str(film), "--model", str(tmp_path), "--sex", "F",
            "--chronological-age", "12y", "--height-cm", "140"]
    assert cli.main(base) == 0
    text = capsys.readouterr().out
    assert "adult height (Bayley-Pinneau): 171.5 cm (current height 140.0 cm from --height-cm" \
        in text and "table IIIE, retarded girls" in text
    assert "adult height: Bayley-Pinneau (Bayley N, Pinneau SR." in text  # the footer
    assert "girls: average 6 years 0 months to 18 years 0 months" in text
    assert cli.main(base + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["adult_height_cm"] == 171.5
    assert cli.main(base + ["--csv"]) == 0
    import csv

    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["adult_height_cm"], row["adult_height_table"]) == ("171.5", "IIIE")


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from boneage.interfaces import serve
    from boneage.reading import predictor

    real = predictor.Ensemble
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor, "Ensemble",
                      lambda dirs, model_format="keras": stub_ensemble(100.0, real))
        app = serve.create_app(["stub"], "keras", max_upload_mb=1.0)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_form_field_gives_the_adult_height_and_bad_ones_are_a_422(client, hand):
    import cv2

    png = cv2.imencode(".png", hand)[1].tobytes()

    def post(**fields):
        return client.post("/api/predict", files={"file": ("film.png", png)},
                           data={"explain": "false", "sex": "F", **fields})

    body = post(chronological_age="12y", height_cm="140").json()
    assert body["adult_height_cm"] == round(140.0 / ((81.3 + 1.0 / 3) / 100), 1)
    assert body["height_source"] == "from the form" and "adult height" in body["report"]
    no_age = post(height_cm="140").json()
    assert no_age["adult_height_refused"].endswith("type the chronological age in the form")
    for value, message in (("300", "300 cm is not a child's height"),
                           ("-1", "-1 cm is not a child's height"), ("tall", "not a number")):
        response = post(chronological_age="12y", height_cm=value)
        assert response.status_code == 422 and message in response.json()["detail"]
    page = client.get("/").text
    assert 'name="height_cm"' in page and "adult_height_cm" in page
