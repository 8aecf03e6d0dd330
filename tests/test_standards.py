"""Greulich & Pyle standard deviations and the 2 SD call."""

import pytest

from boneage.reading.standards import RULE, assess, standard_deviation


def test_table_values_and_interpolation():
    assert standard_deviation(120, male=1) == pytest.approx(9.79)  # boys, 10 years
    assert standard_deviation(120, male=0) == pytest.approx(11.73)  # girls, 10 years
    # halfway between 5 years (8.79) and 6 years (9.17) for boys
    assert standard_deviation(66, male=1) == pytest.approx((8.79 + 9.17) / 2)
    # outside the table: the nearest end value
    assert standard_deviation(1, male=1) == pytest.approx(0.69)
    assert standard_deviation(230, male=0) == pytest.approx(7.31)
    assert standard_deviation(230, male=1) == pytest.approx(13.05)


def test_the_call_uses_two_sd_for_the_age_and_sex():
    # boy of 10 years: SD 9.79 months, so 2 SD = 19.6 months
    assert assess(120 + 19, 120, 1).call == "normal"
    assert assess(120 + 20, 120, 1).call == "advanced"
    assert assess(120 - 20, 120, 1).call == "delayed"
    # the same 10-month difference is normal at 10 years and delayed at 2 years
    assert assess(110, 120, 0).call == "normal"
    assert assess(14, 24, 0).call == "delayed"
    result = assess(140, 120, 1).to_dict()
    assert result["difference_months"] == 20.0 and result["z_score"] == pytest.approx(2.04, abs=0.01)
    assert "2 SD" in result["rule"] and "Greulich & Pyle" in RULE
