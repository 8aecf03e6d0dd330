"""Grad-CAM shows the region that drives a model, and maps back onto the original film."""

import keras
import numpy as np
import pytest
from keras import layers

from boneage.reading.explain import GradCam, find_last_conv, overlay, to_original
from boneage.imaging.decoding import Film
from boneage.imaging.transforms import ImagingSettings, crop_box, prepare_with_geometry, reduce_for
from boneage.learning.models import IMAGE_INPUT, OUTPUT, SEX_INPUT, build_model


def bright_detector_model(size=32, nested=False):
    """A model whose output is driven only by *bright* regions of the film.

    The last conv has two channels: ``relu(x - 0.7)`` (bright only) and ``relu(x - 0.3)``
    (bright and mid grey); the output reads channel 0 alone. Grad-CAM must then be hot
    on the bright blob and cold on an equally large mid-grey blob elsewhere.
    """
    image = keras.Input((size, size, 1), name=IMAGE_INPUT)
    sex = keras.Input((1,), name=SEX_INPUT)
    conv = layers.Conv2D(2, 1, activation="relu", name="last_conv")
    if nested:
        inner_in = keras.Input((size, size, 1))
        backbone = keras.Model(inner_in, conv(layers.Rescaling(1 / 255)(inner_in)), name="bb")
        maps = backbone(image)
    else:
        maps = conv(layers.Rescaling(1 / 255)(image))
    conv.set_weights([np.ones((1, 1, 1, 2), np.float32), np.array([-0.7, -0.3], np.float32)])
    pooled = layers.GlobalAveragePooling2D()(maps)
    head = layers.Dense(1, name=OUTPUT)
    months = head(pooled)
    head.set_weights([np.array([[100.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    return keras.Model({IMAGE_INPUT: image, SEX_INPUT: sex}, months)


def two_blob_film(bright_at: str, size=32):
    film = np.full((size, size), 20, np.uint8)
    half = size // 2
    quadrants = {"top_left": (slice(2, half - 2), slice(2, half - 2)),
                 "bottom_right": (slice(half + 2, size - 2), slice(half + 2, size - 2))}
    other = "bottom_right" if bright_at == "top_left" else "top_left"
    film[quadrants[bright_at]] = 230  # drives the output
    film[quadrants[other]] = 130  # same size, seen by channel 1 only
    return film, quadrants[bright_at], quadrants[other]


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("bright_at", ["top_left", "bottom_right"])
def test_heatmap_is_hot_where_the_driving_region_is(nested, bright_at):
    model = bright_detector_model(nested=nested)
    film, driver, distractor = two_blob_film(bright_at)
    cam, months = GradCam(model).heatmap(film, 1)
    assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() == pytest.approx(1.0)
    assert cam[driver].mean() > 0.8, cam[driver].mean()
    assert cam[distractor].mean() < 0.05, cam[distractor].mean()
    assert months > 0


def test_last_conv_is_found_in_the_compact_model():
    model = build_model(architecture="compact", input_size=32, width=4)
    assert find_last_conv(model).name == "last_conv"


def test_heatmap_of_a_real_boneage_model_has_film_shape():
    model = build_model(architecture="compact", input_size=32, width=4)
    cam, _ = GradCam(model).heatmap(np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.uint8), 0)
    assert cam.shape == (32, 32) and np.isfinite(cam).all()


def test_heatmap_maps_back_through_pad_resize():
    settings = ImagingSettings(crop="none", size=32, resize="pad")
    original = np.zeros((200, 100), np.float32)  # portrait: padded left and right
    cam = np.zeros((32, 32), np.float32)
    cam[:8, 8:16] = 1.0  # top-left quarter of the film's area (film spans columns 8..24)
    _, geometry = prepare_with_geometry(Film(original), settings)
    assert geometry.box == (0, 200, 0, 100)  # not cropped
    full = to_original(cam, geometry, settings)
    assert full.shape == (200, 100)
    assert full[:40, :40].mean() > 0.8 and full[100:, :].max() < 0.05 and full[:, 60:].max() < 0.05


def test_heatmap_maps_back_into_the_hand_crop(hand_film):
    original = hand_film(200, 160, marker=False).astype(np.float32) / 255
    settings = ImagingSettings(size=32, crop="hand")
    # prepare crops a film reduced by a whole factor (here 2: 200x160 -> 100x80 >= 2 x 32)
    reduced, _ = reduce_for(original, settings.size)
    factor = original.shape[0] // reduced.shape[0]
    assert factor == 2
    top, bottom, left, right = (edge * factor for edge in crop_box(reduced)[1])
    full_res_box = crop_box(original)[1]  # the same hand found at full resolution
    assert max(abs(a - b) for a, b in zip((top, bottom, left, right), full_res_box)) <= 8
    _, geometry = prepare_with_geometry(Film(original), settings)
    assert geometry.box == (top, bottom, left, right)  # the crop prepare took, mapped back
    full = to_original(np.ones((32, 32), np.float32), geometry, settings)
    assert full[top:bottom, left:right].min() > 0.99
    assert full.sum() == pytest.approx((bottom - top) * (right - left), rel=0.01)


def test_overlay_is_colour_and_film_sized():
    picture = overlay(np.full((40, 30), 0.5, np.float32), np.linspace(0, 1, 1200).reshape(40, 30))
    assert picture.shape == (40, 30, 3) and picture.dtype == np.uint8
    assert not np.array_equal(picture[..., 0], picture[..., 2])  # colours where hot
