"""The released model: assembled from members (boneage.learning.release), verified and read by
``boneage predict`` when no --model is given (boneage.reading.release), with an interval.

A tiny release of two one-epoch members on phantom films is built once; the RSNA-trained
release that ships in boneage/release is checked where it and ../shared are present.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from factories import hand_radiograph, make_store, train_members

from boneage.interfaces.cli import main as cli_main
from boneage.kernel.artifacts import RELEASE_JSON, RELEASE_SUMS
from boneage.kernel.config import ReleaseParams, load_release as load_release_params
from boneage.kernel.errors import DataError, SetupError
from boneage.learning.conformal import ConformalIntervals, combine
from boneage.reading.predictor import Ensemble
from boneage.reading.release import RELEASE_ENV, load_release, verify_release

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "boneage" / "release"
FULLRES = ROOT.parent / "shared" / "datasets" / "rsna-bone-age-fullres-sample"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    from boneage.learning.release import build_release

    tmp = tmp_path_factory.mktemp("release")
    store, split = make_store(tmp, count=80, size=32)
    train_members(tmp, store, split, {"a": 1, "b": 2})
    # One epoch's calibration is rarely kept; member a gets a real one, so the release's
    # export of it carries a calibration layer (restore_member must take it off again).
    summary_path = tmp / "a" / "training.json"
    summary = json.loads(summary_path.read_text())
    summary["calibration"] = {"kind": "linear", "applied": True,
                              "female": {"slope": 1.05, "intercept": 3.0},
                              "male": {"slope": 0.95, "intercept": -2.0}}
    summary_path.write_text(json.dumps(summary))
    params = ReleaseParams(name="tiny", version="0.0.1", member_weights="equal",
                           min_band_films=10, interval_bands_months=[0, 120, 240],
                           age_bands_months=[0, 120, 240])
    build_release({"a": tmp / "a", "b": tmp / "b"}, store, split, params, tmp / "release",
                  split_params={"seed": 1},
                  pipeline_stages=["fetch", "member_a", "teach", "member_b", "release"])
    return tmp / "release"


@pytest.fixture()
def films(tmp_path):
    paths = []
    for index, age in enumerate((40, 150, 200)):
        path = tmp_path / f"film{index}.png"
        cv2.imwrite(str(path), hand_radiograph(age, 1, seed=index))
        paths.append(path)
    return paths


def test_the_release_folder_holds_members_card_and_checksums(tiny_release):
    record = json.loads((tiny_release / RELEASE_JSON).read_text())
    assert [m["name"] for m in record["members"]] == ["a", "b"]
    assert record["ensemble"]["weights"] == [0.5, 0.5]
    listed = dict(line.split("  ")[::-1] for line in
                  (tiny_release / RELEASE_SUMS).read_text().splitlines())
    on_disk = {p.relative_to(tiny_release).as_posix() for p in tiny_release.rglob("*")
               if p.is_file()} - {RELEASE_SUMS}
    assert set(listed) == on_disk and "members/a/model.keras" in listed
    card = (tiny_release / "MODEL_CARD.md").read_text()
    for words in ("Halabi", "research use", "not a medical device", "coverage", "Rebuild",
                  "| 0-120 |", "sha256"):
        assert words in card, words
    interval = record["ensemble"]["test"]["interval"]
    assert set(interval["by_age_band"]) == {"0-120", "120-240"}
    assert 0 <= interval["coverage"] <= 1 and interval["median_width_months"] > 0


def test_a_release_reading_is_the_weighted_mean_with_its_interval(tiny_release, films):
    released = Ensemble.from_release(folder=tiny_release)
    readings = released.predict_paths(films, sex="M")
    members = [Ensemble([tiny_release / "members" / name]).predict_paths(films, sex="M")
               for name in ("a", "b")]
    intervals = ConformalIntervals.from_dict(
        json.loads((tiny_release / RELEASE_JSON).read_text())["ensemble"]["intervals"])
    for index, reading in enumerate(readings):
        each = np.array([[m[index].months for m in members]])
        mean, spread = combine(each, [0.5, 0.5])
        assert reading.months == pytest.approx(mean[0], abs=1e-4)
        assert reading.spread == pytest.approx(spread[0], abs=1e-4)
        low, high = intervals.bounds([reading.months])
        assert reading.interval == pytest.approx((low[0], high[0]))
        assert reading.interval[0] <= reading.months <= reading.interval[1]
        assert reading.refer == (high[0] - low[0] > intervals.refer_width_months)
        row = reading.to_dict()
        assert row["model"]["name"] == "tiny" and row["model"]["version"] == "0.0.1"
        assert row["interval_months"] == [round(low[0], 1), round(high[0], 1)]
        assert " to " in row["interval_text"] and "months" in row["interval_text"]
        text = reading.text()
        assert "90% interval:" in text and "model: tiny 0.0.1 (ensemble of 2)" in text


def test_the_fast_variant_reads_with_the_best_member_alone(tiny_release, films):
    record = json.loads((tiny_release / RELEASE_JSON).read_text())
    fast = Ensemble.from_release("fast", folder=tiny_release)
    assert [p.model_dir.name for p in fast.predictors] == [record["fast"]["member"]]
    alone = Ensemble([tiny_release / "members" / record["fast"]["member"]])
    assert fast.predict_paths(films[:1], sex="F")[0].months == pytest.approx(
        alone.predict_paths(films[:1], sex="F")[0].months, abs=1e-4)


def test_tta_reads_each_film_as_the_mean_of_its_own_passes(tiny_release, films):
    """All passes of all films go through the model in one call; each film's reading must
    still be the mean of its own passes (a mixed-up reshape would average across films)."""
    from boneage.learning.tta import tta_films

    member = Ensemble([tiny_release / "members" / "a"])
    with_tta = Ensemble.of_predictors(member.predictors, tta=4)
    readings = with_tta.predict_paths(films, sex="M")
    predictor = member.predictors[0]
    prepared = np.stack([predictor.prepare(path.read_bytes(), path.name) for path in films])
    by_pass = np.array([predictor.predict_prepared(tta_films(prepared, index), 1.0)
                        for index in range(4)])  # (passes, films), one call per pass
    assert np.ptp(by_pass.mean(axis=0)) > 1e-3  # the films read differently
    assert [r.months for r in readings] == pytest.approx(by_pass.mean(axis=0), abs=1e-3)


def test_a_member_restored_from_the_release_exports_as_it_shipped(tiny_release, tmp_path):
    """A machine without the trainer's DVC cache rebuilds a member's train output from the
    release: the release stage's export of it then reads exactly as the shipped member."""
    import keras

    from boneage.learning.calibration import Calibration
    from boneage.learning.export import calibrated_model, exportable_model
    from boneage.learning.release import restore_member, uncalibrated_model

    restored = restore_member(tiny_release, "a", tmp_path / "member_a")
    summary = json.loads((restored / "training.json").read_text())
    original = json.loads((tiny_release.parent / "a" / "training.json").read_text())
    for key in ("params", "calibration", "imaging", "epochs_run", "n_train"):
        assert summary[key] == original[key], key
    assert summary["restored_from"] == "tiny 0.0.1 members/a"
    rng = np.random.default_rng(0)
    inputs = {"image": rng.uniform(0, 255, (3, 32, 32, 1)).astype("float32"),
              "sex": np.array([[0.0], [1.0], [1.0]], "float32")}
    shipped, _ = exportable_model(tiny_release.parent / "a")
    again, _ = exportable_model(restored)
    assert np.allclose(again.predict_on_batch(inputs), shipped.predict_on_batch(inputs),
                       atol=1e-4)
    # The restored train output is the raw model, as the train stage saved it.
    trained = keras.saving.load_model(tiny_release.parent / "a" / "model.keras")
    assert np.allclose(keras.saving.load_model(restored / "model.keras").predict_on_batch(inputs),
                       trained.predict_on_batch(inputs), atol=1e-4)
    # The calibration comes off (and goes back on) whatever its coefficients.
    raw = keras.saving.load_model(tiny_release.parent / "a" / "model.keras")
    doubled = calibrated_model(raw, {"kind": "linear", "female": {"slope": 2.0, "intercept": 1.0},
                                     "male": {"slope": 2.0, "intercept": 1.0}})
    assert isinstance(doubled.get_layer("boneage_months"), Calibration)
    assert uncalibrated_model(doubled) is raw and uncalibrated_model(raw) is raw
    broken = tmp_path / "broken"
    shutil.copytree(tiny_release, broken)
    with open(broken / "members" / "a" / "model.keras", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(DataError, match="sha256"):
        restore_member(broken, "a", tmp_path / "other")
    with pytest.raises(DataError, match="no member 'z'"):
        restore_member(tiny_release, "z", tmp_path / "other")


@pytest.mark.parametrize("weight_file", ["model.keras", "model.tflite"])
def test_a_changed_weight_file_is_refused_in_one_line(tiny_release, tmp_path, weight_file):
    copy = tmp_path / "release"
    shutil.copytree(tiny_release, copy)
    weights = copy / "members" / "a" / weight_file
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SetupError) as error:
        load_release(folder=copy)
    message = str(error.value)
    assert f"members/a/{weight_file}" in message and "sha256" in message and "\n" not in message


def test_each_member_ships_a_tflite_file_checked_against_keras(tiny_release):
    record = json.loads((tiny_release / RELEASE_JSON).read_text())
    sums = (tiny_release / RELEASE_SUMS).read_text()
    n_val = record["data"]["n_val"]
    for member in record["members"]:
        assert (tiny_release / member["path"] / "model.tflite").is_file()
        assert f"{member['path']}/model.tflite" in sums
        check = member["runtime_checks"]["tflite"]
        assert check["films"] == n_val and check["runtime"].startswith("LiteRT")
        assert 0 <= check["mean_abs_diff_months"] <= check["max_abs_diff_months"] <= 0.05
    assert "## Runtimes" in (tiny_release / "MODEL_CARD.md").read_text()


def test_the_release_reads_through_litert_as_keras_does(tiny_release, films):
    litert = Ensemble.from_release(folder=tiny_release)
    keras_read = Ensemble.from_release(folder=tiny_release, model_format="keras")
    assert {p.format for p in litert.predictors} == {"tflite"}
    assert {p.format for p in keras_read.predictors} == {"keras"}
    for lite, reference in zip(litert.predict_paths(films, sex="F"),
                               keras_read.predict_paths(films, sex="F")):
        assert lite.months == pytest.approx(reference.months, abs=0.05)
        assert lite.interval == pytest.approx(reference.interval, abs=0.05)


def test_a_tflite_file_that_reads_differently_is_not_shipped(tiny_release):
    from boneage.data.splits import read_ids
    from boneage.data.store import open_store
    from boneage.learning.evaluation import predict_store
    from boneage.learning.release import check_runtime
    from boneage.learning.runtimes import RunnerModel, load_runner

    member = tiny_release / "members" / "a"
    store = open_store(tiny_release.parent / "prepared")
    ids = read_ids(tiny_release.parent / "split" / "val.txt")
    reference = predict_store(RunnerModel(load_runner(member / "model.keras", "keras")), store,
                              ids)
    assert check_runtime(member, store, ids, reference)["max_abs_diff_months"] <= 0.05
    column = reference.columns.get_loc("predicted")
    reference.iloc[3, column] += 0.2  # one film, as a skewed runtime would read it
    with pytest.raises(DataError) as error:
        check_runtime(member, store, ids, reference)
    message = str(error.value)
    assert f"film {reference['id'].iloc[3]} 0.2" in message and "not shipping" in message


@pytest.mark.parametrize("model_format, imports_tensorflow", [("auto", False), ("keras", True)])
def test_predict_with_the_release_imports_tensorflow_only_for_keras(
        tiny_release, films, model_format, imports_tensorflow):
    """LiteRT reads the release's TFLite files: no TensorFlow start-up, and none of its or
    LiteRT's native lines (the XNNPACK delegate's) in the terminal."""
    code = ("import sys, json; from boneage.interfaces.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps([rc, 'tensorflow' in sys.modules]))")
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", *map(str, films), "--sex", "F", "--format",
         model_format], capture_output=True, text=True, timeout=300,
        env={**os.environ, RELEASE_ENV: str(tiny_release)})
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, imports_tensorflow]
    assert result.stdout.count("bone age") == len(films)
    assert result.stderr == ""


def test_a_changed_interval_is_refused_too(tiny_release, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(tiny_release, copy)
    record = json.loads((copy / RELEASE_JSON).read_text())
    record["ensemble"]["intervals"]["quantiles"] = [1.0, 1.0]
    (copy / RELEASE_JSON).write_text(json.dumps(record))
    with pytest.raises(SetupError, match="release.json"):
        verify_release(copy)


def test_a_missing_release_says_how_to_get_it(tmp_path):
    with pytest.raises(SetupError) as error:
        load_release(folder=tmp_path / "nowhere")
    assert "dvc repro release/dvc.yaml" in str(error.value) and "--model" in str(error.value)


def test_predict_without_model_reads_with_the_release(tiny_release, films, monkeypatch, capsys):
    monkeypatch.setenv(RELEASE_ENV, str(tiny_release))
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["model"]["name"] == "tiny" and row["model"]["members"] == 2
    assert row["interval_coverage"] == 0.9 and len(row["interval_months"]) == 2
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--json", "--fast"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"]["members"] == 1
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--csv"]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]
    assert "interval_low_months" in header and "tiny 0.0.1" in line
    assert cli_main(["predict", str(films[0]), "--sex", "F", "--fast", "--model",
                     str(tiny_release / "members" / "a")]) == 2
    assert "--fast" in capsys.readouterr().err


def test_without_a_release_predict_fails_in_one_line_before_tensorflow(tmp_path, films):
    code = ("import sys, json; from boneage.interfaces.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps([rc, 'tensorflow' in sys.modules]))")
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", str(films[0]), "--sex", "F"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, RELEASE_ENV: str(tmp_path / "none")})
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [2, False]
    assert result.stderr.count("\n") == 1 and "no released model" in result.stderr


def test_serve_reads_the_release_through_litert_and_explains_with_keras(tiny_release, films,
                                                                          monkeypatch):
    from fastapi.testclient import TestClient

    from boneage.interfaces.serve import create_app

    monkeypatch.setenv(RELEASE_ENV, str(tiny_release))
    with TestClient(create_app(None)) as client:
        assert client.get("/healthz").json()["format"] == "tflite"
        answer = client.post("/api/predict", files={"file": ("film.png", films[0].read_bytes())},
                             data={"sex": "F"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
    reference = Ensemble.from_release(folder=tiny_release, model_format="keras").predict_paths(
        films[:1], sex="F")[0]
    assert body["boneage_months"] == pytest.approx(reference.months, abs=0.1)
    assert body["model"]["name"] == "tiny" and body["heatmap_png"].startswith("data:image/png")


def test_the_dicom_commands_verify_the_release_once_and_read_it_through_litert(
        tiny_release, monkeypatch):
    import argparse

    from boneage.interfaces.hospital_cli import _reader
    from boneage.reading import release

    calls = []
    real = release.load_release
    monkeypatch.setattr(release, "load_release",
                        lambda *args, **kwargs: calls.append(args) or real(*args, **kwargs))
    monkeypatch.setenv(RELEASE_ENV, str(tiny_release))
    args = argparse.Namespace(model=None, fast=False, format="auto", explain=False,
                              verbose=False, workers=1)
    ensemble = _reader(args).ensemble
    assert len(calls) == 1  # every file's sha256 read once (41 ms for the shipped 23 MB)
    assert [p.format for p in ensemble.predictors] == ["tflite", "tflite"]
    assert ensemble.identity["name"] == "tiny"


def test_a_release_without_its_keras_files_is_refused_as_a_param():
    with pytest.raises(ValueError, match="must include keras"):
        ReleaseParams(formats=["tflite"])
    assert ReleaseParams(formats=["keras", "tflite", "keras"]).formats == ["keras", "tflite"]


def test_release_params_name_existing_members(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("members:\n  a: {seed: 1}\n  b: {seed: 2}\nrelease:\n  members: [a, c]\n")
    with pytest.raises(Exception, match="c"):
        load_release_params(params)
    params.write_text("members:\n  a: {seed: 1}\nrelease:\n  coverage: 0.9\n")
    assert load_release_params(params)[1] == ["a"]


def test_the_cards_rebuild_command_unfreezes_every_stage_of_the_pipeline(tiny_release):
    """Teach stages included: a stage left frozen would keep its old output in a rebuild
    on new code (release 1.4.0's card left out `teach`)."""
    from boneage.learning.release import pipeline_stages

    record = json.loads((tiny_release / RELEASE_JSON).read_text())
    assert record["rebuild"].split(" && ")[0] == (
        "dvc unfreeze release/dvc.yaml:fetch release/dvc.yaml:member_a "
        "release/dvc.yaml:teach release/dvc.yaml:member_b release/dvc.yaml:release")
    stages = pipeline_stages(ROOT / "release" / "dvc.yaml")
    assert "teach" in stages and stages[-1] == "release"
    assert {f"member_{name}" for name in load_release_params(ROOT / "release" / "params.yaml")[1]
            } <= set(stages)


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHIPPED / RELEASE_JSON).is_file() or not FULLRES.is_dir(),
                    reason="needs the shipped release (boneage/release) and "
                           "../shared/datasets/rsna-bone-age-fullres-sample")
def test_the_shipped_release_reads_the_fullres_sample_as_its_card_says():
    import pandas as pd

    record = verify_release(SHIPPED)
    expected = record.get("external", {}).get("rsna_fullres_sample")
    if expected is None:
        pytest.skip("this release records no full-resolution figure")
    labels = pd.read_csv(FULLRES / "boneage-training-dataset.csv", dtype={"id": str})
    released = Ensemble.from_release()
    errors = []
    for row in labels.itertuples():
        reading = released.predict_paths(
            [FULLRES / "boneage-training-dataset" / f"{row.id}.png"],
            sex="M" if str(row.male) == "True" else "F", force=True)[0]
        errors.append(abs(reading.months - row.boneage))
    assert float(np.mean(errors)) == pytest.approx(expected["mae_months"], abs=0.5)


@pytest.mark.skipif(not (SHIPPED / RELEASE_JSON).is_file(),
                    reason="no release committed in boneage/release")
def test_dvc_artifacts_get_fetches_the_release_from_a_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if not (clone / "boneage" / "release" / RELEASE_JSON).is_file():
        pytest.skip("HEAD does not hold the release yet (it is only in the work tree)")
    version = json.loads((clone / "boneage" / "release" / RELEASE_JSON).read_text())["version"]
    name = "release:boneage-rsna100px"
    # DVC's model registry finds an artifact's versions by its GTO tags
    subprocess.run(["git", "-C", str(clone), "tag", "-a", f"release={name.split(':')[1]}"
                    f"@v{version}", "-m", f"Registering artifact {name} version v{version}"],
                   check=True)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "dvc"), "artifacts", "get", str(clone), name,
                             "-o", str(tmp_path / "got")], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = tmp_path / "got"
    verify_release(got)  # every file arrives with its recorded sha256
    assert (got / RELEASE_JSON).read_bytes() == (SHIPPED / RELEASE_JSON).read_bytes()
