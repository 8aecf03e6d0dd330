"""Linear calibration against regression to the mean: the fit, the Keras layer, the export."""

import keras
import numpy as np
import pytest

from boneage.learning.calibration import (
    MIN_FILMS_PER_LINE,
    MIN_FILMS_PER_SEX,
    Calibration,
    apply_calibration,
    fit_calibration,
    is_identity,
)
from boneage.learning.models import IMAGE_INPUT, OUTPUT, SEX_INPUT, build_model


def shrunk(true: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Predictions a calibration ``slope``/``intercept`` maps back onto ``true`` exactly."""
    return (true - intercept) / slope


def test_linear_fit_recovers_a_known_line_and_lowers_the_mae():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 228, 200)
    male = rng.integers(0, 2, 200)
    predicted = shrunk(true, 1.25, -30.0) + rng.normal(0, 0.5, 200)
    record = fit_calibration(true, predicted, male, "linear")
    assert record["kind"] == "linear" and record["n_val"] == 200
    assert record["female"] == record["male"]
    assert record["female"]["slope"] == pytest.approx(1.25, abs=0.01)
    assert record["female"]["intercept"] == pytest.approx(-30.0, abs=1.0)
    assert record["val_mae_raw"] == pytest.approx(np.abs(predicted - true).mean())
    assert record["val_mae_calibrated"] < 1.0 < record["val_mae_raw"]


def test_by_sex_fits_each_sex_and_differs_from_pooled():
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 228, 300)
    male = (np.arange(300) % 2).astype(float)
    predicted = np.where(male == 1, shrunk(true, 1.4, -40.0), shrunk(true, 0.9, 12.0))
    by_sex = fit_calibration(true, predicted, male, "linear_by_sex")
    pooled = fit_calibration(true, predicted, male, "linear")
    assert by_sex["female"]["slope"] == pytest.approx(0.9, abs=1e-6)
    assert by_sex["female"]["intercept"] == pytest.approx(12.0, abs=1e-4)
    assert by_sex["male"]["slope"] == pytest.approx(1.4, abs=1e-6)
    assert by_sex["male"]["intercept"] == pytest.approx(-40.0, abs=1e-4)
    assert by_sex["pooled_sexes"] == []
    assert by_sex["val_mae_calibrated"] == pytest.approx(0.0, abs=1e-6)
    assert pooled["val_mae_calibrated"] > 1.0  # one line cannot fit two
    assert pooled["female"]["slope"] != pytest.approx(by_sex["female"]["slope"], abs=0.05)


def test_a_sex_with_too_few_films_takes_the_pooled_line(caplog):
    rng = np.random.default_rng(2)
    true = rng.uniform(0, 228, 260)
    male = np.zeros(260)
    male[:MIN_FILMS_PER_SEX - 1] = 1
    predicted = shrunk(true, 1.2, -10.0) + rng.normal(0, 2, 260)
    record = fit_calibration(true, predicted, male, "linear_by_sex")
    pooled = fit_calibration(true, predicted, male, "linear")
    assert record["pooled_sexes"] == ["male"]
    assert record["male"] == pooled["male"]
    assert record["female"] != pooled["female"]  # the female fit is its own
    assert "only 99 male validation films" in caplog.text
    assert record["applied"] is True


def test_none_is_the_identity_and_bad_input_is_refused():
    true, predicted, male = np.array([10.0, 50.0]), np.array([20.0, 40.0]), np.array([0, 1])
    record = fit_calibration(true, predicted, male, "none")
    assert record["female"] == record["male"] == {"slope": 1.0, "intercept": 0.0}
    assert record["val_mae_raw"] == record["val_mae_calibrated"] == 10.0
    assert is_identity(record) and is_identity(None)
    assert not is_identity(fit_calibration(true, predicted, male, "linear", guard=False))
    np.testing.assert_array_equal(apply_calibration(record, predicted, male), predicted)
    with pytest.raises(ValueError, match="train.calibration must be one of"):
        fit_calibration(true, predicted, male, "isotonic")
    with pytest.raises(ValueError, match="one per validation film"):
        fit_calibration(true, predicted[:1], male, "linear")
    with pytest.raises(ValueError, match="female and male slope and intercept"):
        apply_calibration({"kind": "linear"}, predicted, male)


def test_predictions_without_spread_get_a_shift():
    record = fit_calibration(np.array([10.0, 30.0, 50.0]), np.full(3, 20.0), np.zeros(3), "linear",
                             guard=False)
    assert record["female"] == {"slope": 1.0, "intercept": 10.0}


def test_a_fit_on_too_few_films_is_recorded_but_not_applied(caplog):
    """The issue's case: 5 validation films gave slope 13.2, intercept -1576 months."""
    true = np.array([40.0, 90.0, 120.0, 150.0, 200.0])
    predicted = np.array([120.0, 124.0, 126.0, 127.0, 135.0])
    record = fit_calibration(true, predicted, np.zeros(5), "linear")
    assert record["applied"] is False and is_identity(record)
    assert record["female"] == record["male"] == {"slope": 1.0, "intercept": 0.0}
    assert record["fitted"]["female"]["slope"] > 2
    assert any(f"5 validation films, fewer than the {MIN_FILMS_PER_LINE}" in reason
               for reason in record["rejected"])
    assert any("slope" in reason and "outside the plausible 0.5-2" in reason
               for reason in record["rejected"])
    assert record["rejected_because"] == ["few_films", "slope"]  # short, for the metrics
    np.testing.assert_array_equal(apply_calibration(record, predicted, 0), predicted)
    assert "calibration linear not applied" in caplog.text


def test_an_implausible_slope_is_not_applied_even_on_many_films():
    rng = np.random.default_rng(4)
    true = rng.uniform(0, 228, 400)
    predicted = shrunk(true, 3.0, -200.0) + rng.normal(0, 0.5, 400)  # ages squeezed 3-fold
    record = fit_calibration(true, predicted, rng.integers(0, 2, 400), "linear")
    assert record["fitted"]["female"]["slope"] == pytest.approx(3.0, abs=0.05)
    assert record["applied"] is False
    assert record["rejected"] == [f"female slope {record['fitted']['female']['slope']:.3g} "
                                  "outside the plausible 0.5-2",
                                  f"male slope {record['fitted']['male']['slope']:.3g} "
                                  "outside the plausible 0.5-2"]


def test_a_fit_that_makes_the_validation_mae_worse_is_not_applied():
    """Least squares can cost MAE: a few big misses pull the line off the many good films."""
    rng = np.random.default_rng(5)
    true = rng.uniform(20, 200, 300)
    predicted = true + rng.normal(0, 1, 300)
    predicted[:15] = true[:15] + 90  # 5 % far off, all one way at the young end
    true[:15] = rng.uniform(0, 20, 15)
    predicted[:15] = true[:15] + 120
    record = fit_calibration(true, predicted, np.ones(300), "linear")
    fitted = fit_calibration(true, predicted, np.ones(300), "linear", guard=False)
    assert fitted["val_mae_calibrated"] > fitted["val_mae_raw"]
    assert record["applied"] is False and is_identity(record)
    assert record["rejected"] == [f"validation MAE {fitted['val_mae_calibrated']:.2f} months "
                                  f"calibrated, worse than {fitted['val_mae_raw']:.2f} raw"]


RECORD = {"kind": "linear_by_sex", "female": {"slope": 1.3, "intercept": -25.0},
          "male": {"slope": 1.1, "intercept": -8.0}}


def test_layer_matches_numpy_and_survives_save_and_load(tmp_path):
    months = keras.Input((1,), name="months")
    sex = keras.Input((1,), name=SEX_INPUT)
    model = keras.Model([months, sex], Calibration.from_record(RECORD, name=OUTPUT)([months, sex]))
    raw = np.linspace(0, 240, 12, dtype=np.float32)[:, None]
    male = (np.arange(12) % 2).astype(np.float32)[:, None]
    expected = apply_calibration(RECORD, raw, male)
    np.testing.assert_allclose(model.predict_on_batch([raw, male]), expected, rtol=1e-6, atol=1e-4)
    assert expected[0, 0] == pytest.approx(-25.0) and expected[1, 0] == pytest.approx(
        1.1 * raw[1, 0] - 8.0)
    model.save(tmp_path / "calibration.keras")
    loaded = keras.saving.load_model(tmp_path / "calibration.keras")
    layer = loaded.get_layer(OUTPUT)
    assert isinstance(layer, Calibration) and layer.male_intercept == -8.0
    np.testing.assert_allclose(loaded.predict_on_batch([raw, male]), expected, rtol=1e-6,
                               atol=1e-4)


def test_layer_computes_in_float32_under_a_bf16_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = Calibration.from_record(RECORD)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    out = layer([np.array([[200.125]], np.float32), np.array([[1.0]], np.float32)])
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(out[0, 0]) == pytest.approx(1.1 * 200.125 - 8.0, abs=1e-3)


def test_calibrated_export_model_keeps_inputs_and_output_name_and_applies_the_fit(tmp_path):
    from boneage.learning.export import calibrated_model

    model = build_model(architecture="compact", input_size=16, width=4, target_mean=100.0,
                        target_std=50.0)
    assert calibrated_model(model, None) is model
    assert calibrated_model(model, {**RECORD, "kind": "none"}) is model
    wrapped = calibrated_model(model, RECORD)
    assert isinstance(wrapped.get_layer(OUTPUT), Calibration)
    assert sorted(wrapped.input) == [IMAGE_INPUT, SEX_INPUT]
    rng = np.random.default_rng(3)
    inputs = {IMAGE_INPUT: rng.uniform(0, 255, (4, 16, 16, 1)).astype(np.float32),
              SEX_INPUT: np.array([[0], [1], [0], [1]], np.float32)}
    expected = apply_calibration(RECORD, model.predict_on_batch(inputs), inputs[SEX_INPUT])
    np.testing.assert_allclose(wrapped.predict_on_batch(inputs), expected, rtol=1e-5, atol=1e-3)
    wrapped.save(tmp_path / "wrapped.keras")
    loaded = keras.saving.load_model(tmp_path / "wrapped.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(inputs), expected, rtol=1e-5, atol=1e-3)
