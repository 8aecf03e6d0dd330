"""Split-conformal prediction intervals for bone age, fitted on held-out validation films.

A reading of "125 months" says nothing of how sure the model is; a 90 % interval does, and
split-conformal prediction gives one whose coverage is guaranteed on films like the
calibration films, whatever the model (Vovk et al. 2005; Angelopoulos & Bates 2021). Errors
of a bone-age model depend on age (infants and near-adults are read worst), so the
calibration is Mondrian: one quantile per band of *predicted* age (the true age is unknown
when a film is read). With an ensemble, scores can also be divided by the members' spread,
so a film the members disagree on gets a wider interval.

A band with too few calibration films borrows its neighbours' films until it has enough,
rather than falling back to the pooled quantile, which would under-cover the extremes.

NumPy only: the reading side applies the same arithmetic from the release's JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("age_band", "spread_age_band")


@dataclass(frozen=True)
class ConformalIntervals:
    """What an interval needs at reading time: ``prediction -+ quantile[band] x scale``."""

    coverage: float  # nominal, e.g. 0.9
    method: str  # "age_band": scale 1; "spread_age_band": scale = spread + spread_floor
    band_edges: tuple[float, ...]  # bands of predicted age, months (first and last open)
    quantiles: tuple[float, ...]  # one per band, in score units (months for age_band)
    n_calibration: tuple[int, ...]  # calibration films behind each band's quantile
    spread_floor: float = 0.0  # months added to the spread (spread_age_band)
    refer_width_months: float = math.inf  # an interval wider than this asks for a radiologist

    def band(self, predicted: np.ndarray) -> np.ndarray:
        """The band index of each predicted age (below the first edge: band 0; above the last:
        the last band)."""
        inner = np.asarray(self.band_edges[1:-1], dtype=float)
        return np.searchsorted(inner, np.asarray(predicted, dtype=float), side="right")

    def scale(self, spread: np.ndarray | None, count: int) -> np.ndarray:
        if self.method == "age_band":
            return np.ones(count)
        if spread is None:
            raise ValueError("these intervals are scaled by the ensemble's spread; give the "
                             "spread of each prediction")
        return np.asarray(spread, dtype=float) + self.spread_floor

    def bounds(self, predicted, spread=None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (months, the lower one never below 0) for each prediction."""
        predicted = np.atleast_1d(np.asarray(predicted, dtype=float))
        spread = None if spread is None else np.atleast_1d(np.asarray(spread, dtype=float))
        half = np.asarray(self.quantiles)[self.band(predicted)] * self.scale(spread, len(predicted))
        return np.maximum(predicted - half, 0.0), predicted + half

    def to_dict(self) -> dict:
        record = asdict(self)
        record["refer_width_months"] = (None if math.isinf(self.refer_width_months)
                                        else self.refer_width_months)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "ConformalIntervals":
        record = dict(record)
        if record.get("refer_width_months") is None:
            record["refer_width_months"] = math.inf
        for key in ("band_edges", "quantiles", "n_calibration"):
            record[key] = tuple(record[key])
        return cls(**record)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) coverage)``-th smallest score: the split-conformal quantile with
    finite-sample coverage of at least ``coverage`` (the largest score when n is too small
    to guarantee it)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    if len(scores) == 0:
        raise ValueError("no calibration scores to take a conformal quantile of")
    rank = math.ceil((len(scores) + 1) * coverage)
    return float(scores[min(rank, len(scores)) - 1])


def fit_conformal(true, predicted, spread=None, *, coverage: float = 0.9,
                  band_edges=(0, 24, 60, 120, 156, 192, 240), method: str = "age_band",
                  min_band_films: int = 100, refer_factor: float = 1.5) -> ConformalIntervals:
    """Fit intervals on calibration films (validation films the model never trained on).

    ``refer_factor``: an interval wider than this many times the median calibration width is
    flagged for a radiologist's reading.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    if method not in METHODS:
        raise ValueError(f"conformal method must be one of {METHODS}, got {method!r}")
    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError("true and predicted ages must be 1-D arrays of the same length")
    if len(true) < min_band_films:
        raise ValueError(f"{len(true)} calibration films; at least {min_band_films} are needed")
    floor = 0.0
    if method == "spread_age_band":
        if spread is None:
            raise ValueError("method spread_age_band needs the ensemble's spread per film")
        spread = np.asarray(spread, dtype=float)
        floor = float(np.median(spread))  # keeps films the members agree on from zero width
    provisional = ConformalIntervals(coverage, method, tuple(float(e) for e in band_edges),
                                     (), (), floor)
    scale = provisional.scale(spread, len(true))
    scores = np.abs(true - predicted) / scale
    bands = provisional.band(predicted)
    quantiles, counts = [], []
    for index in range(len(band_edges) - 1):
        low = high = index
        chosen = bands == index
        while chosen.sum() < min_band_films:  # borrow the neighbours' films
            low, high = max(low - 1, 0), min(high + 1, len(band_edges) - 2)
            chosen = (bands >= low) & (bands <= high)
        quantiles.append(conformal_quantile(scores[chosen], coverage))
        counts.append(int(chosen.sum()))
    fitted = ConformalIntervals(coverage, method, provisional.band_edges, tuple(quantiles),
                                tuple(counts), floor)
    low, high = fitted.bounds(predicted, spread)
    refer = refer_factor * float(np.median(high - low))
    return ConformalIntervals(coverage, method, fitted.band_edges, fitted.quantiles,
                              fitted.n_calibration, floor, refer)


def coverage_report(true, predicted, spread, intervals: ConformalIntervals,
                    age_bands) -> dict:
    """Measured coverage and widths: overall and per band of *true* age (every band listed,
    with its film count), and the share of readings flagged for a radiologist."""
    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    low, high = intervals.bounds(predicted, spread)
    inside = (true >= low) & (true <= high)
    width = high - low
    by_band = {}
    for band_low, band_high in zip(age_bands, age_bands[1:]):
        chosen = (true >= band_low) & ((true < band_high) | ((band_high == age_bands[-1])
                                                             & (true == band_high)))
        by_band[f"{band_low:g}-{band_high:g}"] = {
            "n": int(chosen.sum()),
            "coverage": float(inside[chosen].mean()) if chosen.any() else None,
            "median_width_months": float(np.median(width[chosen])) if chosen.any() else None,
        }
    return {
        "nominal": intervals.coverage,
        "coverage": float(inside.mean()),
        "median_width_months": float(np.median(width)),
        "referred_share": float((width > intervals.refer_width_months).mean()),
        "by_age_band": by_band,
    }


def combine(predictions, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's reading and spread from ``predictions`` (films, members): the weighted
    mean, and the weighted SD of the members around it (0 for one member). The release
    assembly and ``boneage predict`` both use this, so intervals are fitted on the very
    readings they are applied to."""
    predictions = np.atleast_2d(np.asarray(predictions, dtype=float))
    members = predictions.shape[1]
    weights = (np.full(members, 1.0 / members) if weights is None
               else np.asarray(weights, dtype=float))
    if weights.shape != (members,) or (weights < 0).any() or not np.isclose(weights.sum(), 1):
        raise ValueError(f"member weights must be {members} non-negative numbers summing to 1, "
                         f"got {weights.tolist()}")
    mean = predictions @ weights
    spread = np.sqrt(((predictions - mean[:, None]) ** 2) @ weights)
    return mean, spread
