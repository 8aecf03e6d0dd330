"""Test-set metrics, the median baseline, plot data and plots, on hand-made frames (no model)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

from boneage.learning.evaluation import (
    band_label,
    calibrate_frame,
    evaluate_predictions,
    plot_all,
    regression_metrics,
    write_metrics,
    write_plot_data,
)

BANDS = [0, 24, 60, 120, 156, 192, 240]


@pytest.fixture
def frame() -> pd.DataFrame:
    # errors (predicted - true): +2, +10, -10, 0, -20, +6
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f"],
        "boneage": [10.0, 30.0, 70.0, 130.0, 200.0, 24.0],
        "predicted": [12.0, 40.0, 60.0, 130.0, 180.0, 30.0],
        "male": [0, 1, 0, 1, 1, 0],
    })


def test_metrics_match_hand_computation(frame):
    m = evaluate_predictions(frame, train_median=50.0, age_bands=BANDS)
    assert m["n_test"] == 6
    assert m["mae_months"] == pytest.approx(48 / 6)
    assert m["rmse_months"] == pytest.approx(math.sqrt(640 / 6))
    assert m["bias_months"] == pytest.approx(-12 / 6)
    # sum of squares about the mean: sum(t^2) - (sum t)^2 / n = 63376 - 464^2 / 6
    assert m["r2"] == pytest.approx(1 - 640 / (63376 - 464 ** 2 / 6))
    assert m["within_6_months"] == pytest.approx(3 / 6)  # |e| = 2, 0 and exactly 6
    assert m["within_12_months"] == pytest.approx(5 / 6)


def test_mae_by_sex(frame):
    m = evaluate_predictions(frame, 50.0, BANDS)
    assert m["mae_by_sex"] == pytest.approx({"female": (2 + 10 + 6) / 3, "male": (10 + 0 + 20) / 3})


def test_mae_by_sex_with_one_sex_only(frame):
    m = evaluate_predictions(frame[frame["male"] == 1], 50.0, BANDS)
    assert set(m["mae_by_sex"]) == {"male"}


def test_mae_by_age_band_edges_and_counts(frame):
    m = evaluate_predictions(frame, 50.0, BANDS)
    bands = m["mae_by_age_band"]
    # 24.0 sits on an edge: it belongs to the band it opens (24-60), not the one it closes
    assert bands == {
        "0-24": {"mae_months": pytest.approx(2.0), "n": 1},
        "24-60": {"mae_months": pytest.approx((6 + 10) / 2), "n": 2},
        "60-120": {"mae_months": pytest.approx(10.0), "n": 1},
        "120-156": {"mae_months": pytest.approx(0.0), "n": 1},
        "156-192": {"mae_months": None, "n": 0},  # an empty band is there, and says so
        "192-240": {"mae_months": pytest.approx(20.0), "n": 1},
    }
    assert list(bands) == ["0-24", "24-60", "60-120", "120-156", "156-192", "192-240"]


def test_band_label_formats_edges():
    assert band_label(0, 24) == "0-24"
    assert band_label(12.5, 30.0) == "12.5-30"


def test_film_on_the_last_edge_is_counted(frame):
    frame = frame.copy()
    frame.loc[4, "boneage"] = 240.0
    m = evaluate_predictions(frame, 50.0, BANDS)
    assert sum(b["n"] for b in m["mae_by_age_band"].values()) == m["n_test"]


def test_baseline_median(frame):
    m = evaluate_predictions(frame, train_median=50.0, age_bands=BANDS)
    baseline = m["baseline_median"]
    # |t - 50| = 40, 20, 20, 80, 150, 26
    assert baseline["prediction_months"] == 50.0
    assert baseline["mae_months"] == pytest.approx(336 / 6)
    assert baseline["rmse_months"] == pytest.approx(math.sqrt(31976 / 6))
    assert m["mae_vs_baseline"] == pytest.approx((48 / 6) / (336 / 6))


def test_perfect_predictor(frame):
    perfect = frame.assign(predicted=frame["boneage"])
    m = evaluate_predictions(perfect, train_median=float(frame["boneage"].median()),
                             age_bands=BANDS)
    assert m["mae_months"] == 0.0 and m["rmse_months"] == 0.0 and m["bias_months"] == 0.0
    assert m["r2"] == 1.0
    assert m["within_6_months"] == 1.0 and m["within_12_months"] == 1.0
    assert m["mae_vs_baseline"] == 0.0
    assert all(b["mae_months"] == 0.0 for b in m["mae_by_age_band"].values() if b["n"])


def test_predicting_the_mean_has_r2_zero(frame):
    mean = frame["boneage"].mean()
    m = evaluate_predictions(frame.assign(predicted=mean), 50.0, BANDS)
    assert m["r2"] == pytest.approx(0.0, abs=1e-12)
    assert m["bias_months"] == pytest.approx(0.0, abs=1e-12)


def test_degenerate_cases_give_nan_not_errors():
    flat = regression_metrics(np.full(4, 100.0), np.array([90.0, 100, 110, 100]))
    assert math.isnan(flat["r2"])
    assert flat["mae_months"] == pytest.approx(5.0)
    same = pd.DataFrame({"id": ["a", "b"], "boneage": [50.0, 50.0], "predicted": [50.0, 50.0],
                         "male": [0, 1]})
    m = evaluate_predictions(same, train_median=50.0, age_bands=BANDS)
    assert math.isnan(m["mae_vs_baseline"])


def test_metrics_serialise(frame, tmp_path):
    m = evaluate_predictions(frame, 50.0, BANDS)
    path = tmp_path / "metrics" / "deep" / "metrics.json"
    write_metrics(m, path)
    assert json.loads(path.read_text()) == m


def test_calibrated_predictions_are_the_headline_and_the_raw_ones_are_reported(frame):
    """A calibration that undoes the frame's errors exactly (female 2x - 10, male x - 5 by
    construction below): the headline MAE is 0, the raw model's is reported beside it."""
    calibration = {"kind": "linear_by_sex", "female": {"slope": 2.0, "intercept": -10.0},
                   "male": {"slope": 1.0, "intercept": -5.0}}
    raw = frame.assign(predicted=np.where(frame["male"] == 1, frame["boneage"] + 5,
                                          (frame["boneage"] + 10) / 2))
    calibrated = calibrate_frame(raw, calibration)
    np.testing.assert_allclose(calibrated["predicted"], frame["boneage"])
    np.testing.assert_array_equal(calibrated["predicted_uncalibrated"], raw["predicted"])
    m = evaluate_predictions(calibrated, 50.0, BANDS)
    assert m["mae_months"] == pytest.approx(0.0, abs=1e-9)
    raw_errors = np.abs(raw["predicted"] - frame["boneage"])
    assert m["mae_months_uncalibrated"] == pytest.approx(raw_errors.mean())
    assert list(m["mae_by_age_band_uncalibrated"]) == list(m["mae_by_age_band"])
    assert m["mae_by_age_band_uncalibrated"]["192-240"] == {
        "mae_months": pytest.approx(5.0), "n": 1}
    assert m["mae_by_age_band_uncalibrated"]["156-192"] == {"mae_months": None, "n": 0}
    # no calibration recorded (a model trained before there was one): raw predictions stay
    unchanged = calibrate_frame(raw, None)
    np.testing.assert_array_equal(unchanged["predicted"], raw["predicted"])
    assert "mae_months_uncalibrated" not in evaluate_predictions(frame, 50.0, BANDS)


# ----------------------------------------------------------------------------- plot data


def test_write_plot_data(frame, tmp_path):
    write_plot_data(frame, tmp_path)
    data = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    assert list(data.columns) == ["id", "sex", "boneage", "predicted", "mean_of_both",
                                  "difference", "abs_error"]
    assert data["id"].tolist() == frame["id"].tolist()
    assert data["sex"].tolist() == ["F", "M", "F", "M", "M", "F"]
    np.testing.assert_allclose(data["difference"], [2, 10, -10, 0, -20, 6])
    np.testing.assert_allclose(data["abs_error"], [2, 10, 10, 0, 20, 6])
    np.testing.assert_allclose(data["mean_of_both"], [11, 35, 65, 130, 190, 27])
    # with the raw model's predictions, they come last and the rest is as it was
    write_plot_data(frame.assign(predicted_uncalibrated=frame["predicted"] + 1), tmp_path)
    extended = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    assert list(extended.columns) == [*data.columns, "predicted_uncalibrated"]
    pd.testing.assert_frame_equal(extended[data.columns], data)
    np.testing.assert_allclose(extended["predicted_uncalibrated"], frame["predicted"] + 1)


def test_plot_data_is_rounded(tmp_path):
    frame = pd.DataFrame({"id": ["x"], "boneage": [10.123456], "predicted": [20.987654],
                          "male": [1]})
    write_plot_data(frame, tmp_path)
    row = pd.read_csv(tmp_path / "predictions.csv").iloc[0]
    assert row["boneage"] == 10.12 and row["predicted"] == 20.99 and row["difference"] == 10.86


# ----------------------------------------------------------------------------- plots


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 5  # something was drawn


def test_plot_all_without_history(frame, tmp_path):
    m = evaluate_predictions(frame, 50.0, BANDS)
    written = plot_all(frame, m, None, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["bland_altman.png", "error_by_age.png", "predicted_vs_true.png"]
    for path in written:
        assert path.parent == tmp_path
        assert_png(path)
    assert not (tmp_path / "training_curves.png").exists()


def test_plot_all_with_history(frame, tmp_path):
    m = evaluate_predictions(frame, 50.0, BANDS)
    history = {"loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.5, 2.0],
               "mae": [30.0, 20.0, 15.0], "val_mae": [32.0, 24.0, 20.0]}
    written = plot_all(frame, m, history, tmp_path)
    assert len(written) == 4
    assert (tmp_path / "training_curves.png") in written
    for path in written:
        assert_png(path)


def test_plot_all_one_sex_and_one_band(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "boneage": [100.0, 101.0, 110.0],
                          "predicted": [98.0, 107.0, 111.0], "male": [1, 1, 1]})
    m = evaluate_predictions(frame, 100.0, BANDS)
    written = plot_all(frame, m, None, tmp_path)
    assert len(written) == 3
    for path in written:
        assert_png(path)


def test_headline_and_detail_split(frame):
    from boneage.learning.evaluation import HEADLINE, split_metrics

    metrics = evaluate_predictions(calibrate_frame(frame, None), 50.0, BANDS)
    metrics["tta"] = {"passes": 4, "mae_months": 7.5}
    headline, detail = split_metrics(metrics)
    assert list(headline) == list(HEADLINE)
    assert all(isinstance(value, float) for value in headline.values())  # flat numbers only
    assert headline["baseline_mae"] == pytest.approx(336 / 6)
    assert headline["tta_mae"] == 7.5 and headline["mae_raw"] == metrics["mae_months"]
    assert not set(headline) & set(detail) and "mae_months" not in detail["baseline_median"]
    assert {"mae_by_sex", "mae_by_age_band", "n_test", "baseline_median", "tta"} <= set(detail)


def test_read_evaluation_puts_headline_and_detail_back_together(frame, tmp_path):
    from boneage.kernel.artifacts import detail_metrics_path, read_evaluation
    from boneage.learning.evaluation import split_metrics

    metrics = evaluate_predictions(calibrate_frame(frame, None), 50.0, BANDS)
    headline, detail = split_metrics(metrics)
    write_metrics(headline, tmp_path / "evaluate.json")
    write_metrics(detail, detail_metrics_path(tmp_path / "evaluate.json"))
    assert detail_metrics_path(tmp_path / "evaluate.json").name == "evaluate-detail.json"
    assert read_evaluation(tmp_path / "evaluate.json") == json.loads(json.dumps(metrics))


def test_a_model_worse_than_the_baseline_is_a_loud_warning(frame, caplog):
    from boneage.learning.evaluation import warn_if_worse_than_baseline

    good = evaluate_predictions(frame, train_median=50.0, age_bands=BANDS)
    assert warn_if_worse_than_baseline(good) is False and not caplog.records
    bad = evaluate_predictions(frame.assign(predicted=frame["predicted"] + 120), 50.0, BANDS)
    assert warn_if_worse_than_baseline(bad) is True
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "WORSE than the median baseline" in record.getMessage()
    assert f"{bad['mae_months']:.2f}" in record.getMessage()
