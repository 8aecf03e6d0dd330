"""bench/accelerator_sweep.py: films travel losslessly, settings parse, one setting trains."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from factories import make_store

from boneage.kernel.config import load_section
from boneage.data.splits import training_ids
from boneage.data.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "accelerator_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("accelerator_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_carries_the_train_and_validation_films_losslessly_and_no_test_film(sweep, tmp_path):
    store_dir, split_dir = make_store(tmp_path, count=30, size=32)
    sweep.pack(store_dir, split_dir, tmp_path / "pack", ROOT / "params.yaml")
    films, ages, males, subsets, imaging, base = sweep.load_pack(tmp_path / "pack")
    store = open_store(store_dir)
    train_ids, val_ids = training_ids(split_dir, -1)
    assert len(films) == len(train_ids) + len(val_ids) < 30  # the test films stay behind
    expected = store.select(train_ids + val_ids)
    np.testing.assert_array_equal(films, store.images[expected["row"].to_numpy()])
    np.testing.assert_array_equal(ages, expected["boneage"].to_numpy(float))
    np.testing.assert_array_equal(males, expected["male"].to_numpy(float))
    assert subsets.tolist() == [0] * len(train_ids) + [1] * len(val_ids)
    assert imaging["size"] == 32
    assert base == load_section("train", ROOT / "params.yaml").model_dump(mode="json")


def test_settings_parse_into_nested_train_params(sweep):
    base = sweep.parse_overrides("epochs=40,seed=7,augment.zoom=0.1")
    setting = sweep.parse_overrides("loss=mae,augment.rotation_degrees=20,augment.horizontal_flip=true")
    assert sweep.merged(base, setting) == {
        "epochs": 40, "seed": 7, "loss": "mae",
        "augment": {"zoom": 0.1, "rotation_degrees": 20, "horizontal_flip": True}}
    assert sweep.parse_overrides("") == {}
    with pytest.raises(ValueError, match="expected key=value"):
        sweep.parse_overrides("epochs")


def test_one_setting_trains_on_the_packed_films_and_reports_validation_mae(sweep, tmp_path):
    store_dir, split_dir = make_store(tmp_path, count=30, size=32)
    params_path = tmp_path / "params.yaml"  # the settings start from this file, not code defaults
    params_path.write_text((ROOT / "params.yaml").read_text().replace("  lr: 0.002", "  lr: 0.0123"))
    sweep.pack(store_dir, split_dir, tmp_path / "pack", params_path)
    result = sweep.train_one(tmp_path / "pack", "tiny",
                             {"epochs": 2, "width": 4, "batch_size": 8, "precision": "float32",
                              "augment": {"mixup_alpha": 0.2}}, workers=1)
    train_ids, val_ids = training_ids(split_dir, -1)
    assert (result["n_train"], result["n_val"]) == (len(train_ids), len(val_ids))
    assert len(result["val_mae"]) == 2 and all(math.isfinite(v) for v in result["val_mae"])
    assert result["best_val_mae"] == pytest.approx(min(result["val_mae"]), abs=1e-3)
    assert result["precision"] == "float32"
    assert result["params"]["lr"] == 0.0123 and result["params"]["width"] == 4
