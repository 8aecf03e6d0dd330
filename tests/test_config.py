"""params.yaml loading: the repo's file is valid, and typos or bad values name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from boneage.kernel.config import (
    SECTIONS,
    EvaluateParams,
    ExportParams,
    FetchParams,
    Params,
    ParamsError,
    PreprocessParams,
    SplitParams,
    TrainParams,
    load_params,
    load_section,
)

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

EXPECTED_TYPES = {
    "fetch": FetchParams,
    "preprocess": PreprocessParams,
    "split": SplitParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def repo_with(tmp_path: Path, section: str, **changes) -> Path:
    """The repo's params.yaml with some keys of one section changed (dotted: a.b)."""
    data = yaml.safe_load(REPO_PARAMS.read_text())
    for key, value in changes.items():
        target = data[section]
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return write(tmp_path, yaml.safe_dump(data))


# ----------------------------------------------------------------------------- the repo file


def test_repo_params_load_and_match_the_yaml():
    params = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert isinstance(params, Params)
    assert set(raw) == set(SECTIONS)  # every section the pipeline knows is written out
    # values come from the file, not the model defaults (which differ for these keys)
    assert params.preprocess.size == raw["preprocess"]["size"]
    assert params.preprocess.crop == raw["preprocess"]["crop"]
    assert params.train.epochs == raw["train"]["epochs"]
    assert params.train.width == raw["train"]["width"]
    assert params.fetch.synthetic.height == raw["fetch"]["synthetic"]["height"]
    assert params.train.augment.rotation_degrees == raw["train"]["augment"]["rotation_degrees"]
    assert params.preprocess.percentiles == tuple(raw["preprocess"]["percentiles"])
    assert params.evaluate.age_bands_months == raw["evaluate"]["age_bands_months"]
    assert params.export.formats == raw["export"]["formats"]


@pytest.mark.parametrize("section", sorted(EXPECTED_TYPES))
def test_load_section_of_repo_file(section):
    loaded = load_section(section, REPO_PARAMS)
    assert type(loaded) is EXPECTED_TYPES[section]
    assert loaded == getattr(load_params(REPO_PARAMS), section)


def test_load_section_only_validates_its_own_section(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 1\nsplit:\n  seed: 7\n")
    assert load_section("split", path).seed == 7
    with pytest.raises(ParamsError, match=r"train\.lrr"):
        load_section("train", path)


def test_load_section_missing_section_gives_defaults(tmp_path):
    path = write(tmp_path, "split:\n  seed: 7\n")
    assert load_section("train", path) == TrainParams()


def test_unknown_section_name_is_refused():
    with pytest.raises(ParamsError, match="trian"):
        load_section("trian", REPO_PARAMS)


def test_params_are_frozen():
    params = load_params(REPO_PARAMS)
    with pytest.raises(Exception):
        params.train.lr = 1.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("loader", ["params", "section"])
@pytest.mark.parametrize(
    "text, dotted",
    [
        ("train:\n  lrr: 0.1\n", "train.lrr"),
        ("train:\n  augment:\n    rotaton_degrees: 5\n", "train.augment.rotaton_degrees"),
        ("fetch:\n  synthetic:\n    cont: 5\n", "fetch.synthetic.cont"),
        ("preprocess:\n  sizee: 64\n", "preprocess.sizee"),
    ],
)
def test_unknown_key_names_dotted_key(tmp_path, loader, text, dotted):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        if loader == "params":
            load_params(path)
        else:
            load_section(dotted.split(".")[0], path)
    message = str(info.value)
    assert f"{dotted}: unknown key" in message
    assert str(path) in message


def test_unknown_top_level_section_is_refused(tmp_path):
    path = write(tmp_path, "trian:\n  lr: 0.1\n")
    with pytest.raises(ParamsError, match=r"trian: unknown key"):
        load_params(path)


def test_unknown_key_in_repo_file_copy(tmp_path):
    path = repo_with(tmp_path, "train", augment__rotaton_degrees=3)
    with pytest.raises(ParamsError, match=r"train\.augment\.rotaton_degrees"):
        load_section("train", path)


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "section, changes, expected",
    [
        ("train", {"lr": -1}, r"train\.lr: .*greater than 0.*-1"),
        ("train", {"epochs": 0}, r"train\.epochs"),
        ("train", {"loss": "l1"}, r"train\.loss"),
        ("train", {"augment__rotation_degrees": 400}, r"train\.augment\.rotation_degrees"),
        ("preprocess", {"resize": "stretch"}, r"preprocess\.resize: .*'stretch'"),
        ("preprocess", {"size": 8}, r"preprocess\.size"),
        ("preprocess", {"contrast": "hist"}, r"preprocess\.contrast"),
        ("fetch", {"on_error": "ignore"}, r"fetch\.on_error"),
        ("split", {"val": 0.0}, r"split\.val"),
        ("export", {"formats": ["keras", "onnx"]}, r"export\.formats\.1"),
    ],
)
def test_bad_value_names_dotted_key(tmp_path, section, changes, expected):
    path = repo_with(tmp_path, section, **changes)
    with pytest.raises(ParamsError, match=expected):
        load_section(section, path)
    with pytest.raises(ParamsError, match=expected):
        load_params(path)


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.6, 0.5), (0.9, 0.15)])
def test_split_fractions_must_leave_a_train_set(tmp_path, val, test):
    path = repo_with(tmp_path, "split", val=val, test=test)
    with pytest.raises(ParamsError) as info:
        load_section("split", path)
    message = str(info.value)
    assert "split" in message and "val + test" in message
    assert str(path) in message


def test_split_fractions_just_below_one_are_fine(tmp_path):
    path = repo_with(tmp_path, "split", val=0.49, test=0.5)
    assert load_section("split", path).val == pytest.approx(0.49)


def test_one_fold_is_refused(tmp_path):
    path = repo_with(tmp_path, "split", folds=1)
    with pytest.raises(ParamsError, match="folds"):
        load_section("split", path)


@pytest.mark.parametrize("percentiles", [[99.0, 1.0], [5.0, 5.0], [-1.0, 99.0], [1.0, 101.0]])
def test_bad_percentiles_are_refused(tmp_path, percentiles):
    path = repo_with(tmp_path, "preprocess", percentiles=percentiles)
    with pytest.raises(ParamsError) as info:
        load_section("preprocess", path)
    message = str(info.value)
    assert "preprocess" in message and "percentiles" in message


def test_reversed_percentiles_name_the_dotted_key(tmp_path):
    path = repo_with(tmp_path, "preprocess", percentiles=[99.0, 1.0])
    with pytest.raises(ParamsError, match=r"preprocess\.percentiles"):
        load_section("preprocess", path)


def test_age_bands_must_increase(tmp_path):
    path = repo_with(tmp_path, "evaluate", age_bands_months=[0, 60, 24])
    with pytest.raises(ParamsError, match="age_bands_months"):
        load_section("evaluate", path)


def test_several_errors_are_all_listed(tmp_path):
    path = write(tmp_path, "train:\n  lr: -1\n  lrr: 2\n  dropout: 1.5\n")
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    message = str(info.value)
    for key in ("train.lr:", "train.lrr:", "train.dropout:"):
        assert key in message


# ----------------------------------------------------------------------------- the file itself


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope" / "params.yaml"
    with pytest.raises(ParamsError, match="not found") as info:
        load_params(path)
    assert str(path) in str(info.value)
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    assert str(path) in str(info.value)


def test_invalid_yaml_names_path(tmp_path):
    path = write(tmp_path, "train:\n  lr: [0.1\n")
    with pytest.raises(ParamsError, match="not valid YAML") as info:
        load_params(path)
    assert str(path) in str(info.value)
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section("train", path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- train\n- split\n")
    with pytest.raises(ParamsError, match="mapping") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_section_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "train: 5\n")
    with pytest.raises(ParamsError, match="train"):
        load_section("train", path)
    with pytest.raises(ParamsError, match="train"):
        load_params(path)


def test_empty_file_gives_defaults(tmp_path):
    path = write(tmp_path, "")
    assert load_params(path) == Params()
    assert load_section("preprocess", path) == PreprocessParams()


def test_params_error_is_a_value_error():
    assert issubclass(ParamsError, ValueError)


def test_params_yaml_is_the_single_source_of_defaults():
    """Code that builds a section without the file (benches, the sweep, tests) must train
    what the pipeline trains: every default equals params.yaml's value, and params.yaml
    spells out every knob."""
    root = Path(__file__).resolve().parents[1]
    written = yaml.safe_load((root / "params.yaml").read_text())

    def keys(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(keys(Params().model_dump())) == set(keys(written))
    assert load_params(root / "params.yaml").model_dump() == Params().model_dump()
    from boneage.imaging.transforms import ImagingSettings  # the settings a model card records

    assert ImagingSettings() == ImagingSettings.from_params(load_params(root / "params.yaml")
                                                             .preprocess)
