import keras
import numpy as np
import pytest

from boneage.learning.models import APPLICATIONS, IMAGE_INPUT, SEX_INPUT, build_model


def _inputs(n=2, size=32, male=1.0):
    rng = np.random.default_rng(0)
    return {IMAGE_INPUT: rng.uniform(0, 255, (n, size, size, 1)).astype("float32"),
            SEX_INPUT: np.full((n, 1), male, dtype="float32")}


@pytest.mark.parametrize("architecture", ["compact", *sorted(APPLICATIONS)])
def test_every_architecture_maps_film_and_sex_to_one_age(architecture):
    model = build_model(architecture=architecture, input_size=32, width=4)
    assert set(model.input) == {IMAGE_INPUT, SEX_INPUT}
    out = model.predict(_inputs(), verbose=0)
    assert out.shape == (2, 1)
    assert np.isfinite(out).all()


def test_output_is_destandardised_to_months():
    model = build_model(architecture="compact", input_size=32, width=4, target_mean=120.0,
                        target_std=40.0)
    last = model.get_layer("standardised_age")
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.full_like(bias, 0.5)])
    np.testing.assert_allclose(model.predict(_inputs(), verbose=0), 140.0, rtol=1e-5)


def test_sex_changes_the_prediction_only_when_used():
    with_sex = build_model(architecture="compact", input_size=32, width=4, use_sex=True, dropout=0)
    without = build_model(architecture="compact", input_size=32, width=4, use_sex=False, dropout=0)
    for model, should_differ in ((with_sex, True), (without, False)):
        girl = model.predict(_inputs(male=0.0), verbose=0)
        boy = model.predict(_inputs(male=1.0), verbose=0)
        assert (not np.allclose(girl, boy)) == should_differ


def test_keras_file_round_trip_keeps_predictions(tmp_path):
    model = build_model(architecture="compact", input_size=32, width=4, target_mean=100,
                        target_std=30)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(_inputs(), verbose=0),
                               model.predict(_inputs(), verbose=0), rtol=1e-5)


def test_local_backbone_weights_file_is_loaded(tmp_path):
    """`train.weights: <path>` loads a weights file (here one the test writes, as no hub is reachable)."""
    source = keras.applications.MobileNetV3Small(include_top=False, weights=None, pooling="avg",
                                                 input_shape=(32, 32, 3), include_preprocessing=True)
    rng = np.random.default_rng(3)
    source.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in source.get_weights()])
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = build_model(architecture="mobilenetv3small", input_size=32, weights=str(path))
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for loaded, saved in zip(backbone.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


def test_bad_weights_are_refused_with_the_path(tmp_path):
    with pytest.raises(ValueError, match="nothere.weights.h5"):
        build_model(architecture="mobilenetv3small", input_size=32,
                    weights=str(tmp_path / "nothere.weights.h5"))
    other = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                              input_shape=(32, 32, 3))
    wrong = tmp_path / "efficientnet.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ValueError, match="does not fit"):
        build_model(architecture="mobilenetv3small", input_size=32, weights=str(wrong))
    with pytest.raises(ValueError, match="compact CNN"):
        build_model(architecture="compact", input_size=32, weights=str(wrong))


def test_imagenet_weights_request_reaches_keras_applications(monkeypatch):
    """Offline here, so check the request is passed on rather than downloading."""
    seen = {}
    real = keras.applications.ResNet50

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "ResNet50", spy)
    build_model(architecture="resnet50", input_size=32, weights="imagenet")
    assert seen["weights"] == "imagenet" and seen["include_top"] is False


def test_flatten_head_keeps_the_last_feature_map_whole():
    gap = build_model(architecture="compact", input_size=32, width=4, head="gap")
    flatten = build_model(architecture="compact", input_size=32, width=4, head="flatten")
    last_map = flatten.get_layer("last_conv").output.shape  # (None, 4, 4, channels)
    assert flatten.get_layer("flatten").output.shape[-1] == last_map[1] * last_map[2] * last_map[3]
    assert gap.get_layer("gap").output.shape[-1] == last_map[3]
    out = flatten.predict(_inputs(), verbose=0)
    assert out.shape == (2, 1) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown head"):
        build_model(architecture="compact", input_size=32, width=4, head="max")


def test_age_bin_centres_cover_the_ages_with_a_bin_to_spare():
    from boneage.learning.models import age_bin_centres

    centres = age_bin_centres([3.0, 100.0, 228.0], 6.0)
    assert centres[0] == 0.0  # 3 - one bin would be below 0: clipped
    assert centres[-1] == 234.0  # 228 is a bin edge: one bin above it
    assert np.allclose(np.diff(centres), 6.0)
    assert age_bin_centres([30.0, 60.0], 12.0) == [12.0, 24.0, 36.0, 48.0, 60.0, 72.0]
    with pytest.raises(ValueError, match="age_bin_months"):
        age_bin_centres([30.0], 0.0)


def test_age_bin_head_outputs_the_expected_age_of_its_bins():
    centres = [0.0, 60.0, 120.0, 180.0, 240.0]
    model = build_model(architecture="compact", input_size=32, width=4, age_bins=centres)
    logits = model.get_layer("age_bin_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])  # uniform: mean of the grid
    np.testing.assert_allclose(model.predict(_inputs(), verbose=0), 120.0, rtol=1e-5)
    logits.set_weights([np.zeros_like(kernel), np.array([0, 0, 0, 50.0, 0], "float32")])
    np.testing.assert_allclose(model.predict(_inputs(), verbose=0), 180.0, rtol=1e-5)
    bias = np.log(np.array([1e-9, 1e-9, 1.0, 3.0, 1e-9], "float32"))  # 1:3 between 120 and 180
    logits.set_weights([np.zeros_like(kernel), bias])
    np.testing.assert_allclose(model.predict(_inputs(), verbose=0), 165.0, rtol=1e-4)


def test_age_bin_variance_penalty_is_a_training_loss_only():
    centres = [0.0, 60.0, 120.0]
    model = build_model(architecture="compact", input_size=32, width=4, age_bins=centres,
                        variance_weight=0.5)
    logits = model.get_layer("age_bin_logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])  # uniform over 3 bins
    model(_inputs(), training=False)
    assert not model.losses
    model(_inputs(), training=True)
    variance = np.var(centres)  # of the uniform distribution over the grid: 2400 months^2
    np.testing.assert_allclose(float(sum(model.losses)), 0.5 * variance, rtol=1e-5)
    plain = build_model(architecture="compact", input_size=32, width=4, age_bins=centres)
    plain(_inputs(), training=True)
    assert not plain.losses


def test_age_bin_model_file_round_trip_keeps_grid_and_predictions(tmp_path):
    model = build_model(architecture="compact", input_size=32, width=4,
                        age_bins=[0.0, 50.0, 100.0, 150.0], variance_weight=0.2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    output = loaded.get_layer("boneage_months")
    assert output.centres == [0.0, 50.0, 100.0, 150.0] and output.variance_weight == 0.2
    np.testing.assert_allclose(loaded.predict(_inputs(), verbose=0),
                               model.predict(_inputs(), verbose=0), rtol=1e-5)


def test_age_bin_head_needs_a_grid():
    from boneage.learning.models import AgeBinExpectation

    with pytest.raises(ValueError, match="at least 2 bin centres"):
        AgeBinExpectation([120.0])
