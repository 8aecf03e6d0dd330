"""Linear recalibration of predicted bone age, fitted on the validation films.

A regressor trained with a Huber or squared loss shrinks toward the mean of its training ages:
infants come out too old and near-adults too young. ``months = slope * predicted + intercept``,
fitted by least squares of the reference ages on the predicted ones of the validation films
(per sex with ``linear_by_sex``), undoes the linear part of that shrinkage. The train stage fits
it and writes it to ``training.json``; evaluate applies it to the test predictions, and export
appends it to the model as its last layer (:class:`Calibration`), so every exported format
(and ``boneage predict``/``serve``) gives calibrated ages.

A line fitted on a handful of films, or with a far-fetched slope, moves every age at random,
so a fit is kept only when it can be trusted (:func:`rejections`):

- at least ``MIN_FILMS_PER_PARAMETER`` (50) validation films per fitted coefficient: 100 for
  ``linear`` (slope and intercept); ``linear_by_sex`` fits a sex on its own only with 100 films
  of that sex, else that sex takes the pooled line;
- every slope within ``SLOPE_RANGE`` (0.5-2): a trained regressor shrinks its ages toward the
  mean by a fraction, it does not need them stretched 13-fold;
- a validation MAE no worse than the raw model's (least squares minimises squared error, which
  can cost MAE).

Otherwise the record keeps the fit for reading (``fitted``) but applies the identity
(``applied: false``, ``rejected``: the reasons), and evaluate and export use the raw model.

NumPy for the fit, ``keras.ops`` for the layer (any backend, float32).
"""

from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

log = logging.getLogger(__name__)

KINDS = ("none", "linear", "linear_by_sex")
SEXES = ("female", "male")
MIN_FILMS_PER_PARAMETER = 50  # validation films per fitted coefficient (2 per line)
MIN_FILMS_PER_LINE = 2 * MIN_FILMS_PER_PARAMETER
MIN_FILMS_PER_SEX = MIN_FILMS_PER_LINE  # fewer films of a sex: that sex takes the pooled fit
SLOPE_RANGE = (0.5, 2.0)  # a plausible slope; outside it the fit is not applied
IDENTITY = {"slope": 1.0, "intercept": 0.0}


def fit_line(true: np.ndarray, predicted: np.ndarray) -> dict:
    """Least-squares ``true ~ slope * predicted + intercept``.

    Predictions without spread (a model that says one age for every film) have no slope to
    fit; they keep slope 1 and are shifted by the mean error, the best a shift can do.
    """
    true, predicted = np.asarray(true, float), np.asarray(predicted, float)
    if len(true) == 0:
        raise ValueError("a calibration needs at least one validation film")
    centred = predicted - predicted.mean()
    spread = float((centred ** 2).sum())
    if spread <= 1e-12 * max(1.0, float((predicted ** 2).sum())):
        log.warning("calibration: the %d predictions have no spread; fitting a shift only",
                    len(predicted))
        return {"slope": 1.0, "intercept": float((true - predicted).mean())}
    slope = float((centred * (true - true.mean())).sum() / spread)
    return {"slope": slope, "intercept": float(true.mean() - slope * predicted.mean())}


def apply_calibration(calibration: dict, predicted, male) -> np.ndarray:
    """``slope * predicted + intercept`` with each film's sex's coefficients (``male``: 1 = male,
    0 = female; one value or one per film). ``calibration`` holds ``female`` and ``male``
    coefficients as :func:`fit_calibration` returns them.

    The coefficients are mixed by ``male`` (``female + male * (male - female)``) exactly as
    :class:`Calibration` does, so the two agree for any input.
    """
    predicted = np.asarray(predicted, float)
    male = np.broadcast_to(np.asarray(male, float), predicted.shape)
    female_coefficients, male_coefficients = _coefficients(calibration)
    slope = female_coefficients["slope"] + male * (male_coefficients["slope"]
                                                   - female_coefficients["slope"])
    intercept = female_coefficients["intercept"] + male * (male_coefficients["intercept"]
                                                           - female_coefficients["intercept"])
    return slope * predicted + intercept


def fit_calibration(true, predicted, male, kind: str, guard: bool = True) -> dict:
    """The calibration of ``kind`` fitted on validation films, with its effect on their MAE.

    Returns ``{"kind", "female": {"slope", "intercept"}, "male": {...}, "n_val",
    "val_mae_raw", "val_mae_calibrated", "applied"}``; ``linear`` gives both sexes the pooled
    line, ``none`` the identity. ``linear_by_sex`` fits each sex alone, except a sex with fewer
    than ``MIN_FILMS_PER_SEX`` validation films, which takes the pooled line (listed in
    ``pooled_sexes``): a line through a handful of films would move that sex's ages at random.

    With ``guard`` (always, in the pipeline) a fit that fails :func:`rejections` is not
    applied: ``female``/``male`` become the identity, the fit moves to ``fitted`` and the
    reasons to ``rejected``; ``val_mae_calibrated`` is then the fit's, for the record.
    """
    if kind not in KINDS:
        raise ValueError(f"train.calibration must be one of {', '.join(KINDS)}, got {kind!r}")
    true, predicted = np.asarray(true, float).reshape(-1), np.asarray(predicted, float).reshape(-1)
    male = np.asarray(male, float).reshape(-1)
    if not len(true) == len(predicted) == len(male):
        raise ValueError(f"calibration: {len(true)} reference ages, {len(predicted)} predictions "
                         f"and {len(male)} sexes; they must be one per validation film")
    record: dict = {"kind": kind}
    if kind == "none":
        record.update(female=dict(IDENTITY), male=dict(IDENTITY))
    elif kind == "linear":
        pooled = fit_line(true, predicted)
        record.update(female=dict(pooled), male=dict(pooled))
    else:
        pooled, record["pooled_sexes"] = None, []
        for name, flag in zip(SEXES, (0.0, 1.0)):
            inside = male == flag
            if inside.sum() >= MIN_FILMS_PER_SEX:
                record[name] = fit_line(true[inside], predicted[inside])
                continue
            log.warning("calibration: only %d %s validation films (< %d); that sex takes the "
                        "pooled line", int(inside.sum()), name, MIN_FILMS_PER_SEX)
            pooled = pooled or fit_line(true, predicted)
            record[name] = dict(pooled)
            record["pooled_sexes"].append(name)
    record["n_val"] = int(len(true))
    if len(true):
        record["val_mae_raw"] = float(np.abs(predicted - true).mean())
        record["val_mae_calibrated"] = float(
            np.abs(apply_calibration(record, predicted, male) - true).mean())
    else:
        record["val_mae_raw"] = record["val_mae_calibrated"] = None
    record["applied"] = kind != "none"
    found = _rejections(record) if guard and kind != "none" else []
    if found:
        reasons = [text for _, text in found]
        record["fitted"] = {name: record[name] for name in SEXES}
        record.update(female=dict(IDENTITY), male=dict(IDENTITY), applied=False,
                      rejected=reasons,
                      rejected_because=list(dict.fromkeys(code for code, _ in found)))
        log.warning("calibration %s not applied: %s", kind, "; ".join(reasons))
    return record


def rejections(record: dict) -> list[str]:
    """Why a fitted calibration record must not be applied, in words (empty: keep it)."""
    return [text for _, text in _rejections(record)]


def _rejections(record: dict) -> list[tuple[str, str]]:
    """(short code for the metrics, words for people) of each reason to reject."""
    reasons = []
    n_val = record.get("n_val") or 0
    if n_val < MIN_FILMS_PER_LINE:
        reasons.append(("few_films", f"{n_val} validation films, fewer than the "
                                     f"{MIN_FILMS_PER_LINE} a line needs "
                                     f"({MIN_FILMS_PER_PARAMETER} per fitted coefficient)"))
    low, high = SLOPE_RANGE
    for name in SEXES:
        slope = record[name]["slope"]
        if not low <= slope <= high:
            reasons.append(("slope", f"{name} slope {slope:.3g} outside the plausible "
                                     f"{low:g}-{high:g}"))
    raw, calibrated = record.get("val_mae_raw"), record.get("val_mae_calibrated")
    if raw is not None and calibrated is not None and calibrated > raw:
        reasons.append(("worse_mae", f"validation MAE {calibrated:.2f} months calibrated, "
                                     f"worse than {raw:.2f} raw"))
    return reasons


def is_identity(calibration: dict | None) -> bool:
    """True for no calibration, ``none``, one not applied (``applied: false``), or
    coefficients that change nothing."""
    if not calibration or calibration.get("kind") == "none" or \
            calibration.get("applied") is False:
        return True
    return all(calibration[name] == IDENTITY for name in SEXES)


def _coefficients(calibration: dict) -> tuple[dict, dict]:
    try:
        return tuple({key: float(calibration[name][key]) for key in ("slope", "intercept")}
                     for name in SEXES)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a calibration needs female and male slope and intercept, got "
                         f"{calibration!r}") from exc


@keras.saving.register_keras_serializable(package="boneage")
class Calibration(keras.layers.Layer):
    """``(months, sex) -> slope * months + intercept`` with the sex's coefficients.

    The export stage's last layer: the model it follows is untouched, and the coefficients are
    plain config, so the ``.keras`` file, the SavedModel and TFLite all carry them. Always
    float32, also after a bf16 model.
    """

    def __init__(self, female_slope: float = 1.0, female_intercept: float = 0.0,
                 male_slope: float = 1.0, male_intercept: float = 0.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.female_slope, self.female_intercept = float(female_slope), float(female_intercept)
        self.male_slope, self.male_intercept = float(male_slope), float(male_intercept)

    @classmethod
    def from_record(cls, calibration: dict, **kwargs) -> "Calibration":
        """The layer for a calibration as :func:`fit_calibration` returns it."""
        female, male = _coefficients(calibration)
        return cls(female["slope"], female["intercept"], male["slope"], male["intercept"],
                   **kwargs)

    def call(self, inputs):
        months, sex = inputs
        months, sex = ops.cast(months, "float32"), ops.cast(sex, "float32")
        slope = self.female_slope + sex * (self.male_slope - self.female_slope)
        intercept = self.female_intercept + sex * (self.male_intercept - self.female_intercept)
        return slope * months + intercept

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "female_slope": self.female_slope,
                "female_intercept": self.female_intercept, "male_slope": self.male_slope,
                "male_intercept": self.male_intercept}
