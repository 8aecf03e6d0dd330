import json

import cv2
import numpy as np
import pytest
from factories import make_store

from boneage.kernel.config import AugmentParams, TrainParams
from boneage.kernel.artifacts import TRAINED_MODEL, TRAINING_SUMMARY
from boneage.learning.recipe import MAX_AGE_WEIGHT, FilmBatches, age_weights, augment_films, mixup_batch
from boneage.data.store import open_store
from boneage.learning.training import make_dataset, run_training

TINY = dict(width=4, epochs=2, batch_size=8, early_stopping_patience=0, warmup_epochs=0)


def test_dataset_batches_have_model_inputs_and_augmentation_changes_films():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 24, 24), dtype=np.uint8)
    ages, male = np.arange(10, dtype=float) * 10, np.arange(10) % 2
    plain = make_dataset(images, ages, male, batch_size=4, training=False, seed=0)
    batches = list(plain)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    first_inputs, first_targets = batches[0]
    assert first_inputs["image"].shape == (4, 24, 24, 1)
    np.testing.assert_array_equal(first_inputs["image"].numpy()[..., 0], images[:4])
    np.testing.assert_array_equal(first_targets.numpy()[:, 0], ages[:4])
    np.testing.assert_array_equal(first_inputs["sex"].numpy()[:, 0], male[:4])

    # A subset named by store rows (the memory-mapped store is read in place, not copied).
    rows = np.array([7, 2, 9])
    subset = list(make_dataset(images, ages[rows], male[rows], rows=rows, batch_size=2,
                               training=False, seed=0))
    np.testing.assert_array_equal(
        np.concatenate([b[0]["image"].numpy()[..., 0] for b in subset]), images[rows])
    np.testing.assert_array_equal(np.concatenate([b[1].numpy()[:, 0] for b in subset]),
                                  ages[rows])

    augmented = make_dataset(images, ages, male, batch_size=10, training=True, seed=0,
                             augment=AugmentParams(rotation_degrees=20, zoom=0.2))
    inputs, targets = next(iter(augmented))
    order = np.argsort(targets.numpy()[:, 0])
    assert sorted(targets.numpy()[:, 0].tolist()) == ages.tolist()  # shuffled, nothing lost
    moved = inputs["image"].numpy()[order, ..., 0]
    assert not np.allclose(moved, images)
    assert moved.min() >= 0 and moved.max() <= 255


def test_mixup_mixes_each_film_with_the_same_weight_as_its_age_and_sex():
    ages = np.linspace(0, 200, 32, dtype=np.float32)[:, None]
    images = np.broadcast_to(ages[:, :, None], (32, 4, 4)).astype(np.float32)  # film = its age
    sexes = (ages > 100).astype(np.float32)
    mixed_images, mixed_sexes, mixed_ages = mixup_batch(images, sexes, ages, 5, 0.4)
    np.testing.assert_allclose(mixed_images[:, 0, 0], mixed_ages[:, 0], rtol=1e-5, atol=1e-4)
    # the same weights mix the sexes: lam*s_i + (1-lam)*s_j lies between the two
    assert ((mixed_sexes >= 0) & (mixed_sexes <= 1)).all()
    assert not np.allclose(mixed_ages, ages)
    again = mixup_batch(images, sexes, ages, 5, 0.4)
    np.testing.assert_array_equal(again[2], mixed_ages)  # seeded


def test_film_batches_checks_that_labels_follow_the_rows():
    with pytest.raises(ValueError, match="ages and sexes must follow rows"):
        FilmBatches(np.zeros((10, 4, 4), np.uint8), np.zeros(3), np.zeros(3), rows=np.arange(4))
    batches = FilmBatches(np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2), np.arange(3.0),
                          np.array([0.0, 1.0, 0.0]), rows=np.array([7, 2, 5]))
    images, sexes, ages = batches.batch(np.array([2, 0]), seed=1)
    np.testing.assert_array_equal(images[:, 0, 0], [20, 28])  # rows 5 and 7, unaugmented
    np.testing.assert_array_equal(ages[:, 0], [2, 0])
    np.testing.assert_array_equal(sexes[:, 0], [0, 0])


def test_age_weights_favour_rare_ages_keep_mean_one_and_are_capped():
    # 200 children at 120 months, 20 at 30 months, 2 infants at 3 months
    ages = np.concatenate([np.full(200, 120.0), np.full(20, 30.0), np.full(2, 3.0)])
    assert age_weights(ages, "none") is None
    full, root = age_weights(ages, "inverse_density"), age_weights(ages, "sqrt_inverse_density")
    for weights in (full, root):
        assert weights.shape == ages.shape and abs(weights.mean() - 1) < 1e-5
        assert weights[-1] > weights[-3] > weights[0]  # infants > toddlers > children
        assert weights.max() <= MAX_AGE_WEIGHT * (1 + 1e-5)
    assert full[-1] / full[0] > root[-1] / root[0]  # the square root weighs ages more gently
    with pytest.raises(ValueError, match="age_weighting"):
        age_weights(ages, "inverse")


def test_weighted_dataset_gives_each_film_its_weight_mixed_like_its_age():
    images = np.zeros((12, 8, 8), dtype=np.uint8)
    ages = np.linspace(10, 120, 12)
    rows = np.arange(12)[::-1]
    data = make_dataset(images, ages, np.zeros(12), rows=rows, batch_size=12, training=True,
                        seed=3, weights=ages / 10, augment=AugmentParams(
                            rotation_degrees=0, shift=0, zoom=0, brightness=0, contrast=0,
                            mixup_alpha=0.4))
    _inputs, targets, weights = next(iter(data))
    np.testing.assert_allclose(weights.numpy(), targets.numpy() / 10, rtol=1e-5)
    assert not np.allclose(np.sort(targets.numpy()[:, 0]), ages)  # mixed, not just shuffled


@pytest.mark.slow
def test_training_with_age_weighting_runs_and_records_it(tmp_path):
    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    run_training(store_dir, split_dir, TrainParams(**TINY, age_weighting="inverse_density",
                                                   precision="float32"), tmp_path / "out")
    summary = json.loads((tmp_path / "out" / TRAINING_SUMMARY).read_text())
    assert summary["params"]["age_weighting"] == "inverse_density"
    assert np.isfinite(summary["best_val_mae_months"])


def test_mixup_mixes_targets_within_their_range():
    images = np.zeros((16, 8, 8), dtype=np.uint8)
    ages = np.linspace(0, 150, 16)
    data = make_dataset(images, ages, np.zeros(16), batch_size=16, training=True, seed=3,
                        augment=AugmentParams(rotation_degrees=0, shift=0, zoom=0, brightness=0,
                                              contrast=0, mixup_alpha=0.4))
    _, targets = next(iter(data))
    values = targets.numpy()[:, 0]
    assert values.min() >= 0 and values.max() <= 150
    assert not set(np.round(values, 3)).issubset(set(np.round(ages, 3)))


def test_augment_films_without_changes_returns_the_films():
    films = np.random.default_rng(1).integers(0, 255, (3, 20, 20), dtype=np.uint8)
    off = AugmentParams(rotation_degrees=0, shift=0, zoom=0, brightness=0, contrast=0)
    out = augment_films(films, 5, off)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, films, atol=1e-4)


def test_augment_films_is_seeded_and_keeps_a_centred_hand_centred():
    disc = np.zeros((48, 48), np.uint8)
    cv2.circle(disc, (24, 24), 10, 200, -1)  # centre 23.5..24.5 of a 0..47 grid
    films = np.repeat(disc[None], 16, axis=0)
    pose = AugmentParams(rotation_degrees=30, shift=0, zoom=0.2, brightness=0, contrast=0)
    first, again = augment_films(films, 7, pose), augment_films(films, 7, pose)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, augment_films(films, 8, pose))
    areas = (first > 100).sum(axis=(1, 2)) / (disc > 100).sum()
    assert areas.min() >= 1 / 1.2 ** 2 - 0.1 and areas.max() <= 1 / 0.8 ** 2 + 0.1
    assert areas.max() - areas.min() > 0.1  # zoom varies film to film
    for film in first:  # rotation and zoom are about the centre: the disc stays put
        rows, cols = np.nonzero(film > 100)
        assert abs(rows.mean() - 24) < 1 and abs(cols.mean() - 24) < 1


def test_augment_films_shift_brightness_and_contrast_stay_in_range():
    films = np.random.default_rng(2).integers(0, 255, (32, 24, 24), dtype=np.uint8)
    shifted = augment_films(films, 3, AugmentParams(rotation_degrees=0, zoom=0, shift=0.2,
                                                    brightness=0, contrast=0))
    assert (shifted == 0).any(axis=(1, 2)).mean() > 0.5  # shifted films show black borders
    out = augment_films(films, 3, AugmentParams(rotation_degrees=0, zoom=0, shift=0.2,
                                                brightness=0.3, contrast=0.3))
    assert out.min() >= 0 and out.max() <= 255
    exposure = AugmentParams(rotation_degrees=0, zoom=0, shift=0, brightness=0.2, contrast=0)
    offsets = augment_films(np.full((64, 8, 8), 128, np.uint8), 4, exposure)[:, 0, 0] - 128
    assert offsets.min() >= -0.2 * 255 - 1e-3 and offsets.max() <= 0.2 * 255 + 1e-3
    assert offsets.std() > 10  # one offset per film, not one per batch


@pytest.mark.slow
def test_training_is_deterministic_and_writes_model_curves_and_summary(tmp_path):
    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    params = TrainParams(**TINY, precision="float32")  # auto's measured choice may differ
    histories = []
    for run in ("a", "b"):
        result = run_training(store_dir, split_dir, params, tmp_path / run, tmp_path / f"live{run}")
        histories.append(result.history)
        summary = json.loads((tmp_path / run / TRAINING_SUMMARY).read_text())
        assert (tmp_path / run / TRAINED_MODEL).is_file()
        assert summary["n_train"] + summary["n_val"] == 32
        assert summary["params"]["width"] == 4
        assert (tmp_path / f"live{run}" / "plots" / "metrics" / "eval" / "mae.tsv").is_file()
    assert histories[0] == histories[1]
    assert len(histories[0]["val_mae"]) == 2


def test_every_epoch_validates_on_each_validation_film_once(tmp_path):
    """Training reads one repeated dataset for the whole fit (see training.train); each
    epoch's validation MAE must still be over exactly the validation films, with the last
    short batch included and nothing read twice."""
    from boneage.learning.models import IMAGE_INPUT, SEX_INPUT
    from boneage.data.splits import training_ids

    store_dir, split_dir = make_store(tmp_path, count=60, size=32)
    params = TrainParams(**TINY, precision="float32")  # auto's measured choice may differ
    store = open_store(store_dir)
    _, val_ids = training_ids(split_dir, params.fold)
    assert len(val_ids) % params.batch_size != 0  # a short last batch
    result = run_training(store_dir, split_dir, params, tmp_path / "out")
    rows = store.select(val_ids)
    films = store.images[rows["row"].to_numpy()].astype(np.float32)[..., None]
    sexes = rows["male"].to_numpy(np.float32)[:, None]
    predicted = result.model.predict({IMAGE_INPUT: films, SEX_INPUT: sexes}, verbose=0)[:, 0]
    mae = float(np.abs(predicted - rows["boneage"].to_numpy()).mean())
    assert result.history["val_mae"][result.best_epoch - 1] == pytest.approx(mae, rel=1e-4)


@pytest.mark.slow
def test_training_learns_a_learnable_signal(tmp_path):
    """Films whose dot count grows with age: the model must beat predicting the mean."""
    store_dir, split_dir = make_store(tmp_path, count=160, size=32)
    params = TrainParams(**{**TINY, "epochs": 12, "width": 8, "lr": 3e-3},
                         augment=AugmentParams(rotation_degrees=0, shift=0, zoom=0, brightness=0,
                                               contrast=0))
    result = run_training(store_dir, split_dir, params, tmp_path / "out")
    store = open_store(store_dir)
    val_ages = store.index["boneage"].to_numpy()
    mean_mae = np.abs(val_ages - val_ages.mean()).mean()
    assert min(result.history["val_mae"]) < 0.6 * mean_mae


def test_training_summary_records_the_precision_and_the_calibration(tmp_path):
    """The calibration is fitted on every validation film with the best epoch's model: its
    raw MAE is that epoch's validation MAE, and its line is the least-squares one of those
    films' reference ages on their predictions (which lowers the squared error, not always
    the MAE)."""
    from boneage.data.splits import training_ids
    from boneage.learning.training import predict_films

    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    result = run_training(store_dir, split_dir,
                          TrainParams(**TINY, precision="float32", calibration="linear"),
                          tmp_path / "out")
    summary = json.loads((tmp_path / "out" / TRAINING_SUMMARY).read_text())
    assert summary["precision"] == "float32"
    assert summary["precision_probe"] == {"chosen": "float32", "reason": "set in train.precision"}
    calibration = summary["calibration"]
    assert calibration["kind"] == "linear" and calibration["n_val"] == summary["n_val"]
    # 8 validation films: far fewer than a line needs, so the fit is recorded, not applied
    assert calibration["applied"] is False and "8 validation films" in calibration["rejected"][0]
    assert calibration["female"] == calibration["male"] == {"slope": 1.0, "intercept": 0.0}
    fitted = calibration["fitted"]
    assert fitted["female"] == fitted["male"]
    assert calibration["val_mae_raw"] == pytest.approx(
        result.history["val_mae"][result.best_epoch - 1], rel=1e-4)
    rows = open_store(store_dir).select(training_ids(split_dir, -1)[1])
    true = rows["boneage"].to_numpy(float)
    predicted = predict_films(result.model, open_store(store_dir).images, rows["row"].to_numpy(),
                              rows["male"].to_numpy(float))
    slope, intercept = np.polyfit(predicted, true, 1)
    assert fitted["male"]["slope"] == pytest.approx(slope, rel=1e-6)
    assert fitted["male"]["intercept"] == pytest.approx(intercept, rel=1e-6, abs=1e-6)
    raw_squares = ((predicted - true) ** 2).mean()
    assert ((slope * predicted + intercept - true) ** 2).mean() <= raw_squares


def test_age_bin_head_is_built_over_the_training_ages(tmp_path):
    from boneage.learning.models import OUTPUT, AgeBinExpectation

    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    params = TrainParams(**TINY, output="age_bins", age_bin_months=12.0)
    result = run_training(store_dir, split_dir, params, tmp_path / "out")
    output = result.model.get_layer(OUTPUT)
    assert isinstance(output, AgeBinExpectation)
    summary = json.loads((tmp_path / "out" / TRAINING_SUMMARY).read_text())
    ages = open_store(store_dir).index["boneage"].to_numpy()
    assert output.centres[0] <= ages.min() and output.centres[-1] >= ages.max()
    assert np.allclose(np.diff(output.centres), 12.0)
    assert summary["params"]["output"] == "age_bins"
    assert np.isfinite(result.history["val_mae"]).all()


def _backbone_and_head_model():
    import keras

    image = keras.Input((4,), name="image")
    inner = keras.Input((4,))
    backbone = keras.Model(inner, keras.layers.Dense(3, name="features")(inner), name="backbone")
    output = keras.layers.Dense(1, name="age")(backbone(image))
    return keras.Model(image, output)


def test_backbone_lr_scale_steps_the_backbone_at_that_fraction_of_the_head_and_reloads(tmp_path):
    import keras

    from boneage.learning.recipe import PartwiseAdamW, make_optimizer

    def first_step_sizes(scale):
        keras.utils.set_random_seed(0)
        model = _backbone_and_head_model()
        params = TrainParams(lr=0.01, lr_schedule="constant", warmup_epochs=0,
                             weight_decay=0.0, backbone_lr_scale=scale)
        optimizer = make_optimizer(params, steps_per_epoch=1, model=model)
        model.compile(optimizer=optimizer, loss="mae")
        before = [np.array(v) for v in model.trainable_variables]
        x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        model.train_on_batch(x, np.full((8, 1), 50.0, "float32"))
        steps = {v.path: np.abs(np.array(v) - b).max()
                 for v, b in zip(model.trainable_variables, before)}
        return model, optimizer, steps

    _, plain, plain_steps = first_step_sizes(1.0)
    model, scaled, scaled_steps = first_step_sizes(0.1)
    assert not isinstance(plain, PartwiseAdamW) and isinstance(scaled, PartwiseAdamW)
    backbone_paths = {v.path for v in model.get_layer("backbone").trainable_variables}
    assert backbone_paths and set(scaled.scaled_paths) == backbone_paths
    for path, step in scaled_steps.items():  # Adam's first step is ~lr per weight
        expected = plain_steps[path] * (0.1 if path in backbone_paths else 1.0)
        assert step == pytest.approx(expected, rel=1e-3), path
    model.save(tmp_path / "model.keras")  # evaluate reloads the trained model with its optimiser
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.optimizer, PartwiseAdamW)
    assert reloaded.optimizer.lr_scale == pytest.approx(0.1)
