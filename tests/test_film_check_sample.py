"""The film check on a fixed small sample, asserted tightly enough that halving or doubling
one of its thresholds fails the test (issue 22: planted changes to MIN_HAND_AREA, GAP_DEPTH,
MIN_EDGES or MIN_LOCAL_CONTRAST went unnoticed; only bench/film_check.py measured margins).

The sample (tests/film_check_sample.py): 180 phantom films, films made to sit near a
threshold (posterised, clipped, blurred, a gradient with a few marks either side of the
"smooth" line), the drawn non-films of bench/film_check.py, and the first 200 RSNA 100 px
films by id where ../shared/datasets is present (skipped cleanly otherwise). The expected
figures were measured on this sample; a change to the check that moves any of them must
come with new figures here, and with bench/film_check.py rerun (RSNA acceptance >= 99 %).
"""

from collections import Counter

import pytest

import film_check_sample as sample
from boneage.imaging import film_check, hand_search
from boneage.imaging.film_check import check_film

# group -> accepted, flagged inverted, and the count of each refusal code
EXPECTED = {
    "phantoms": {"accepted": 168, "inverted": 0, "no_hand": 12},
    "near thresholds": {"accepted": 3, "inverted": 0, "levels": 3},
    "spotted gradients": {"accepted": 0, "inverted": 0, "no_hand": 2, "smooth": 1},
    "drawn non-films": {"accepted": 1, "inverted": 0, "blank": 17, "no_hand": 87, "noise": 34,
                        "smooth": 24, "text": 14},
}
EXPECTED_RSNA = {"accepted": 193, "inverted": 0, "no_hand": 7}

GROUPS = {"phantoms": sample.phantoms, "near thresholds": sample.near_thresholds,
          "spotted gradients": sample.spotted_gradients, "drawn non-films": sample.drawn}


@pytest.fixture(scope="module")
def films() -> dict:
    return {group: make() for group, make in GROUPS.items()}


def tally(items) -> dict:
    checks = [check_film(image) for _, image in items]
    codes = Counter(code for check in checks for code in check.failed)
    return {"accepted": sum(check.accepted for check in checks),
            "inverted": sum(check.inverted for check in checks), **codes}


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_check_judges_the_fixed_sample_as_measured(films, group):
    assert tally(films[group]) == EXPECTED[group]


def test_the_check_judges_the_first_rsna_films_as_measured():
    films = sample.rsna(200)
    if not films:
        pytest.skip(f"no RSNA films at {sample.SMALL}")
    assert tally(films) == EXPECTED_RSNA


THRESHOLDS = [(hand_search, "MIN_HAND_AREA"), (hand_search, "GAP_DEPTH"),
              (film_check, "MIN_EDGES"), (hand_search, "MIN_LOCAL_CONTRAST"),
              (film_check, "MIN_HAND_LEVELS"), (film_check, "MAX_HAND_ONE_LEVEL")]


@pytest.mark.parametrize("module, name", THRESHOLDS, ids=[n for _, n in THRESHOLDS])
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_halving_or_doubling_a_threshold_moves_the_figures(films, monkeypatch, module, name,
                                                          factor):
    """The sample is tight: with any one threshold halved or doubled, some figure above
    differs (so a planted change to a threshold fails the tests above)."""
    if (name, factor) == ("MIN_LOCAL_CONTRAST", 0.5):
        pytest.xfail("no film of the sample has a hand-like region with local contrast "
                     "between 0.025 and 0.05 that passes every other test")
    monkeypatch.setattr(module, name, getattr(module, name) * factor)
    moved = {group: tally(items) for group, items in films.items()}
    assert moved != EXPECTED
