"""Ages as clinicians write them: months <-> 'N years M months'."""

from __future__ import annotations

import pytest

from boneage.kernel.ages import describe, format_months, parse_age, years_months


@pytest.mark.parametrize("months, text", [
    (0, "0 months"),
    (1, "1 month"),
    (11, "11 months"),
    (12, "1 year 0 months"),
    (13, "1 year 1 month"),
    (24, "2 years 0 months"),
    (25, "2 years 1 month"),
    (125.4, "10 years 5 months"),
    (125.6, "10 years 6 months"),
    (11.6, "1 year 0 months"),
    (228, "19 years 0 months"),
    (-13, "-1 year 1 month"),
    (-5, "-5 months"),
    (-25.2, "-2 years 1 month"),
    (-0.3, "0 months"),  # rounds to zero: no minus sign
])
def test_format_months(months, text):
    assert format_months(months) == text


def test_years_months():
    assert years_months(125.4) == (10, 5)
    assert years_months(-13) == (1, 1)
    assert years_months(0.4) == (0, 0)


def test_describe():
    assert describe(125.44) == "125.4 months (10 years 5 months)"
    assert describe(-6) == "-6.0 months (-6 months)"


@pytest.mark.parametrize("text, months", [
    ("122", 122.0),
    ("10y2m", 122.0),
    ("10 years 2 months", 122.0),
    ("1 year 1 month", 13.0),
    ("7.5y", 90.0),
    ("10y", 120.0),
    ("2m", 2.0),
    (" 10 Y 2 M ", 122.0),
    ("10yrs 3mos", 123.0),
    ("10 yr 3 mo", 123.0),
    ("10y 2", 122.0),
    ("0", 0.0),
    ("300", 300.0),
    ("122.5", 122.5),
    (122, 122.0),
    (122.5, 122.5),
])
def test_parse_age(text, months):
    value = parse_age(text)
    assert isinstance(value, float)
    assert value == pytest.approx(months)


@pytest.mark.parametrize("months", [0, 1, 11, 12, 13, 100, 125.4, 228, 299.6])
def test_parse_reads_what_format_writes(months):
    assert parse_age(format_months(months)) == round(months)


@pytest.mark.parametrize("text", ["abc", "", "   ", "ten years", "10y2x", "10 2", "-5", "y", "m2"])
def test_parse_age_unreadable(text):
    with pytest.raises(ValueError, match=r"cannot read age .*write months \(122\) or years and months \(10y2m\)"):
        parse_age(text)


@pytest.mark.parametrize("value", ["400", "26y", 301, -1, -0.5, float("nan")])
def test_parse_age_out_of_range(value):
    with pytest.raises(ValueError, match=r"outside 0\.\.300"):
        parse_age(value)


def test_out_of_range_message_gives_the_months():
    with pytest.raises(ValueError, match=r"'26y' is 312 months"):
        parse_age("26y")


@pytest.mark.parametrize("text", ["10y15m", "1y12m", "0y12m", "10 years 12 months"])
def test_months_past_11_are_refused_when_years_are_given(text):
    with pytest.raises(ValueError, match=rf"cannot read age '{text}': months must be 0-11 when "
                                         "years are given"):
        parse_age(text)


def test_months_alone_may_pass_11():
    assert parse_age("15m") == 15 and parse_age("10y11.5m") == 131.5


@pytest.mark.parametrize("text, months", [("1", 1.0), ("1m", 1.0), ("20y", 240.0),
                                          ("10y2m", 122.0)])
def test_chronological_age_from_1_month_to_20_years(text, months):
    from boneage.reading.inputs import parse_chronological_age

    assert parse_chronological_age(text) == months


@pytest.mark.parametrize("text", ["0", "0.5", "300", "20y1m", "25y"])
def test_chronological_age_outside_the_range_is_refused(text):
    from boneage.reading.inputs import parse_chronological_age

    with pytest.raises(ValueError, match=r"bone age is assessed from 1 month to 20 years "
                                         r"\(1 to 240 months\)"):
        parse_chronological_age(text)
