"""Split-conformal intervals (boneage.learning.conformal): the arithmetic a reading's interval
rests on, checked on draws whose coverage is known."""

import math

import numpy as np
import pytest

from boneage.learning.conformal import (
    ConformalIntervals,
    combine,
    conformal_quantile,
    coverage_report,
    fit_conformal,
)

BANDS = [0, 24, 60, 120, 156, 192, 240]


def _films(count: int, seed: int):
    """True ages and readings whose error grows smoothly towards the extremes, as a real
    model's does."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(30, 220, count)
    noise = 6.0 + 10.0 * np.abs(true - 126.0) / 100.0
    return true, true + rng.normal(0, noise)


def test_quantile_is_the_ceil_n_plus_one_rank():
    scores = np.arange(1, 20, dtype=float)  # n = 19: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == 18
    assert conformal_quantile(scores[::-1], 0.9) == 18  # order does not matter
    assert conformal_quantile(np.array([3.0, 1.0]), 0.9) == 3  # too few: the largest
    # n = 10: rank ceil(11 x 0.9) = 10, where the plain ceil(n x 0.9) would take the 9th
    assert conformal_quantile(np.arange(1, 11, dtype=float), 0.9) == 10


def test_intervals_cover_new_films_at_the_nominal_rate():
    true, predicted = _films(1500, seed=0)
    intervals = fit_conformal(true, predicted, coverage=0.9, band_edges=BANDS)
    new_true, new_predicted = _films(20000, seed=1)
    report = coverage_report(new_true, new_predicted, None, intervals, BANDS)
    assert 0.88 <= report["coverage"] <= 0.93
    # one quantile per band: the noisier near-adult band gets the wider interval and still covers
    assert intervals.quantiles[-1] > 1.3 * intervals.quantiles[3]
    # Mondrian: the guarantee holds within each band of *predicted* age
    low, high = intervals.bounds(new_predicted)
    inside = (new_true >= low) & (new_true <= high)
    bands = intervals.band(new_predicted)
    for band in np.unique(bands):
        if (bands == band).sum() >= 1000:  # bands with their own calibration films
            assert 0.87 <= inside[bands == band].mean() <= 0.93, intervals.band_edges[band]
    # by *true* age (what the release reports) it is close, not guaranteed
    for band in ("60-120", "120-156", "156-192"):
        assert 0.85 <= report["by_age_band"][band]["coverage"] <= 0.97, band
    assert report["by_age_band"]["0-24"] == {"n": 0, "coverage": None,
                                             "median_width_months": None}


def test_bounds_are_prediction_minus_and_plus_the_band_quantile():
    intervals = ConformalIntervals(0.9, "age_band", (0, 60, 240), (10.0, 20.0), (100, 100))
    low, high = intervals.bounds([30.0, 100.0, 5.0])
    np.testing.assert_allclose(low, [20.0, 80.0, 0.0])  # never below 0 months
    np.testing.assert_allclose(high, [40.0, 120.0, 15.0])
    low, high = intervals.bounds([300.0])  # past the last edge: the last band
    assert (low[0], high[0]) == (280.0, 320.0)


def test_a_thin_band_borrows_its_neighbours_films():
    true, predicted = _films(400, seed=2)  # no film predicted under 24 months
    intervals = fit_conformal(true, predicted, band_edges=BANDS, min_band_films=100)
    assert all(count >= 100 for count in intervals.n_calibration)
    assert math.isfinite(intervals.quantiles[0])


def test_spread_scaling_widens_the_films_members_disagree_on():
    rng = np.random.default_rng(3)
    true = rng.uniform(30, 220, 2000)
    spread = rng.uniform(1, 10, 2000)
    predicted = true + rng.normal(0, spread)
    intervals = fit_conformal(true, predicted, spread, method="spread_age_band",
                              band_edges=BANDS)
    low, high = intervals.bounds([100.0, 100.0], [1.0, 10.0])
    assert high[1] - low[1] > 2 * (high[0] - low[0])
    with pytest.raises(ValueError, match="spread"):
        intervals.bounds([100.0])


def test_wide_intervals_are_flagged_from_the_median_width():
    true, predicted = _films(1500, seed=4)
    intervals = fit_conformal(true, predicted, band_edges=BANDS, refer_factor=1.5)
    low, high = intervals.bounds(predicted)
    assert intervals.refer_width_months == pytest.approx(1.5 * np.median(high - low))


def test_round_trip_through_json_keeps_every_field():
    true, predicted = _films(500, seed=5)
    intervals = fit_conformal(true, predicted, band_edges=BANDS)
    assert ConformalIntervals.from_dict(intervals.to_dict()) == intervals


def test_combine_is_the_weighted_mean_and_weighted_spread():
    readings = np.array([[100.0, 110.0, 130.0]])
    mean, spread = combine(readings, [0.5, 0.25, 0.25])
    assert mean[0] == pytest.approx(110.0)
    assert spread[0] == pytest.approx(math.sqrt(0.5 * 100 + 0.25 * 0 + 0.25 * 400))
    mean, spread = combine(readings)
    assert mean[0] == pytest.approx(340 / 3)
    with pytest.raises(ValueError, match="summing to 1"):
        combine(readings, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        combine(readings, [1.5, -0.25, -0.25])


def test_bad_arguments_are_refused_with_the_reason():
    true, predicted = _films(200, seed=6)
    with pytest.raises(ValueError, match="coverage"):
        fit_conformal(true, predicted, coverage=1.2)
    with pytest.raises(ValueError, match="method"):
        fit_conformal(true, predicted, method="quantile_regression")
    with pytest.raises(ValueError, match="at least 100"):
        fit_conformal(true[:50], predicted[:50])
