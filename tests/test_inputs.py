"""What a user types: sex in every documented spelling and a table of refusals; the
chronological age's range; how names and errors are shown; CSV cells."""

import pytest

from boneage.kernel.artifacts import SEX_SPELLINGS
from boneage.kernel.errors import UsageError
from boneage.reading.inputs import parse_chronological_age, parse_sex, printable, reason

MALE = ["M", "m", "male", "Male", "MALE", " M ", "1", "true", "True", "boy", "Boy", True, 1]
FEMALE = ["F", "f", "female", "Female", "FEMALE", "\tf\n", "0", "false", "False", "girl",
          "GIRL", False, 0]


@pytest.mark.parametrize("value", MALE)
def test_every_documented_male_spelling(value):
    assert parse_sex(value) == 1


@pytest.mark.parametrize("value", FEMALE)
def test_every_documented_female_spelling(value):
    assert parse_sex(value) == 0


def test_the_documented_spellings_are_all_tested():
    tested = {str(v).strip().lower() for v in MALE + FEMALE if not isinstance(v, bool)}
    assert set(SEX_SPELLINGS) <= tested


@pytest.mark.parametrize("value", [
    "mango", "fish", "mf", "fm", "ma", "fe", "femal", "males", "men", "women", "x", "X", "O",
    "U", "other", "", " ", "2", "-1", "01", "yes", "no", "t", "none", None, 2, 0.5, "m f",
])
def test_refused_sex_spellings_say_what_is_accepted(value):
    with pytest.raises(UsageError, match=r"sex must be M or F, got"):
        parse_sex(value)


@pytest.mark.parametrize("text, months", [("300y", "3600.0"), ("0", "0.0"), ("241", "241.0"),
                                          ("20y1m", "241.0"), (-3, "-3.0")])
def test_a_chronological_age_out_of_range_names_the_range_that_applies(text, months):
    with pytest.raises(UsageError) as error:
        parse_chronological_age(text)
    message = str(error.value)
    assert f"is {months} months" in message and "1 to 240 months" in message
    assert "0..300" not in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_chronological_age_that_is_no_number_is_refused(value):
    with pytest.raises(UsageError, match="not a number of months"):
        parse_chronological_age(value)


def test_control_characters_in_a_name_are_escaped_on_one_line():
    assert printable("films/a.png") == "films/a.png"
    assert printable("films/ünïcode.png") == "films/ünïcode.png"
    shown = printable("films/a\nfake: bone age 200 months\r\x1b[31m.png")
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert shown == "films/a\\nfake: bone age 200 months\\r\\x1b[31m.png"


def test_reason_drops_the_prefix_its_caller_says():
    assert reason("x.png", "x.png: not read: looks like noise") == "looks like noise"
    assert reason("x.png", "x.png: empty file") == "empty file"
    assert reason("x.png", "y.png: empty file") == "y.png: empty file"


def test_a_failed_reading_says_its_name_and_not_read_once_on_one_line():
    from boneage.reading.predictor import Reading

    name = "films/x\ny.png"
    line = Reading(name, error=f"{name}: not read: looks like noise; read it anyway").text()
    assert line == "films/x\\ny.png: not read: looks like noise; read it anyway"
    other = Reading("a.png", error="a.png: DICOM tag RescaleSlope is not a number").text()
    assert other == "a.png: not read: DICOM tag RescaleSlope is not a number"


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(capsys):
    import csv
    import io

    from boneage.interfaces.cli import _write_csv, csv_cell

    assert csv_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    for start in "=+-@\t\r":
        assert csv_cell(start + "x").startswith("'")
    assert csv_cell(-3.5) == -3.5 and csv_cell("films/a.png") == "films/a.png"
    _write_csv([{"path": "=cmd|' /C calc'!A0.png", "error": "+bad", "difference_months": -3.5},
                {"path": "@sum.png", "boneage_months": 120.0}])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["path"] == "'=cmd|' /C calc'!A0.png" and rows[0]["error"] == "'+bad"
    assert rows[0]["difference_months"] == "-3.5"  # a number stays a number
    assert rows[1]["path"] == "'@sum.png"
