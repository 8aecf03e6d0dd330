"""Stage scripts fail on bad input with one clear line naming the file, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from boneage.kernel.errors import EXIT_USER_ERROR, BoneAgeError, DataError
from boneage.kernel.runner import report_user_errors

ROOT = Path(__file__).resolve().parents[1]


def _stage(name, tmp_path, params, *args, env=None):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), "--params",
                           str(params_path), *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=env)


# What TensorFlow's native start-up writes to stderr (absl, oneDNN, CUDA probing).
TF_START_UP = ("absl::InitializeLog", "oneDNN", "cuInit", "cuda_platform", "cudart_stub",
               "cpu_feature_guard")


@pytest.mark.slow
def test_tensorflow_stages_keep_its_start_up_lines_out_unless_asked(tmp_path):
    """train and evaluate log what they do and nothing of TensorFlow's start-up; with
    BONEAGE_VERBOSE=1 (or --verbose) its lines come through as the library writes them."""
    import os

    from factories import make_store

    store, split = make_store(tmp_path, count=40, size=32)
    params = {"train": {"width": 4, "epochs": 1, "batch_size": 8, "warmup_epochs": 0,
                        "precision": "float32"}, "evaluate": {}}
    quiet_env = {key: value for key, value in os.environ.items()
                 if key not in ("BONEAGE_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    train = _stage("train", tmp_path, params, "--store", store, "--split", split, "--out",
                   tmp_path / "trained", "--live", tmp_path / "live", env=quiet_env)
    assert train.returncode == 0, train.stderr
    assert not [line for line in train.stderr.splitlines()
                if any(mark in line for mark in TF_START_UP)], train.stderr
    assert "calibration linear" in train.stderr  # the stage's own log still shows
    # What a bare import prints on this machine (nothing on some): the verbose run shows it.
    bare = subprocess.run([sys.executable, "-c", "import tensorflow as tf; "
                           "tf.config.list_physical_devices()"], capture_output=True,
                          text=True, env=quiet_env, timeout=300)
    expected = [mark for mark in TF_START_UP if mark in bare.stderr]
    evaluate = _stage("evaluate", tmp_path, params, "--model", tmp_path / "trained", "--store",
                      store, "--split", split, "--metrics", tmp_path / "evaluate.json",
                      "--plots", tmp_path / "plots", env={**quiet_env, "BONEAGE_VERBOSE": "1"})
    assert evaluate.returncode == 0, evaluate.stderr
    assert all(mark in evaluate.stderr for mark in expected), (expected, evaluate.stderr)
    assert "test MAE" in evaluate.stderr


def test_fetch_of_a_folder_with_a_bad_age_names_file_row_and_field(tmp_path):
    source = tmp_path / "films"
    source.mkdir()
    (source / "labels.csv").write_text("id,boneage,male\n1,12,True\n2,twelve,False\n")
    for i in (1, 2):
        (source / f"{i}.png").write_bytes(b"not decoded by fetch")
    result = _stage("fetch", tmp_path, {"fetch": {"source": str(source)}}, "--out",
                    tmp_path / "raw")
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    assert "labels.csv" in result.stderr and "boneage" in result.stderr
    assert "twelve" in result.stderr or "line 3" in result.stderr or "row 2" in result.stderr


def test_preprocess_without_fetch_output_says_what_to_run(tmp_path):
    result = _stage("preprocess", tmp_path, {"preprocess": {"size": 32}}, "--raw",
                    tmp_path / "nothing", "--out", tmp_path / "prepared")
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr
    assert "run the fetch stage first" in result.stderr


def test_preprocess_with_on_error_fail_names_the_unreadable_film(tmp_path):
    from factories import write_raw

    import zipfile

    write_raw(tmp_path / "raw", count=6)
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip", "a") as archive:
        archive.writestr("f9999.png", b"\x89PNG\r\n\x1a\nbroken")
    labels = (tmp_path / "raw" / "labels.csv").read_text() + "f9999,100,1\n"
    (tmp_path / "raw" / "labels.csv").write_text(labels)
    result = _stage("preprocess", tmp_path, {"preprocess": {"size": 32, "on_error": "fail"}},
                    "--raw", tmp_path / "raw", "--out", tmp_path / "prepared")
    assert result.returncode == EXIT_USER_ERROR and "Traceback" not in result.stderr
    assert "f9999" in result.stderr and "on_error=fail" in result.stderr
    skipped = _stage("preprocess", tmp_path, {"preprocess": {"size": 32, "on_error": "skip"}},
                     "--raw", tmp_path / "raw", "--out", tmp_path / "prepared2")
    assert skipped.returncode == 0
    assert "f9999" in (tmp_path / "prepared2" / "store.json").read_text()


def test_train_with_a_missing_weights_file_or_tf_config_is_one_line_not_a_traceback(tmp_path):
    from factories import make_store

    store_dir, split_dir = make_store(tmp_path, count=30, size=32)
    cases = [({"architecture": "efficientnet_lite0", "weights": str(tmp_path / "nope.pth")},
              "nope.pth is not a file"),
             ({"distribute": "multi_worker"}, "needs TF_CONFIG")]
    for train, message in cases:
        result = _stage("train", tmp_path, {"train": {"epochs": 1, **train}}, "--store",
                        store_dir, "--split", split_dir, "--out", tmp_path / "model",
                        "--live", tmp_path / "live")
        assert result.returncode == EXIT_USER_ERROR, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(capsys):
    def bad_data():
        raise DataError("labels.csv row 3: boneage 'twelve' is not a number")

    assert report_user_errors(bad_data) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: labels.csv row 3: boneage 'twelve' is not a number\n"
    assert report_user_errors(lambda: 3) == 3 and report_user_errors(lambda: None) == 0

    def bug():
        raise ValueError("an internal mistake")  # not a BoneAgeError: a bug, shown in full

    with pytest.raises(ValueError, match="internal mistake"):
        report_user_errors(bug)
    assert issubclass(DataError, BoneAgeError) and issubclass(DataError, ValueError)
