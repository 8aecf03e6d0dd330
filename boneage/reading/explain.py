"""Grad-CAM heatmaps: which parts of the film drove the predicted bone age.

Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel of the last convolutional
feature map by the mean gradient of the output (here: months) with respect to it, sums,
and keeps the positive part. For a regression the map shows where evidence *raised* the
predicted age; a reader checks that it sits on the growth plates and carpals, not on a
marker or the plate border.

Runs on the exported ``.keras`` model under TensorFlow (``GradientTape``). The last conv
layer is found generically, also inside a nested ``keras.applications`` backbone: its
``call`` is wrapped for the duration of one forward pass to keep its output.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from boneage.imaging.transforms import Geometry, ImagingSettings

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")


def find_last_conv(model) -> object:
    """The last convolution layer that outputs a 4-D map, searching nested models too."""
    import keras

    found = None
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _safe_last(layer)
            if inner is not None:
                found = inner
        elif type(layer).__name__ in CONV_TYPES:
            found = layer
    if found is None:
        raise ValueError(f"model {model.name} has no convolution layer; Grad-CAM needs one")
    return found


def _safe_last(model):
    try:
        return find_last_conv(model)
    except ValueError:
        return None


@contextmanager
def _capturing(layer, store: dict):
    """Keep the layer's output from the next forward pass in ``store['maps']``."""
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        store["maps"] = out
        return out

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")


class GradCam:
    """Grad-CAM for a boneage Keras model (inputs ``image`` and ``sex``, output months)."""

    def __init__(self, model):
        self.model = model
        self.layer = find_last_conv(model)

    @classmethod
    def from_export(cls, model_dir: str | Path) -> "GradCam":
        import keras

        import boneage.learning.calibration  # noqa: F401  (registers the custom layers)
        import boneage.learning.models  # noqa: F401  (registers the custom layers)
        from boneage.kernel.artifacts import EXPORT_KERAS

        return cls(keras.saving.load_model(Path(model_dir) / EXPORT_KERAS))

    def heatmap(self, film: np.ndarray, male: float) -> tuple[np.ndarray, float]:
        """(Grad-CAM in [0, 1] at the model-input size, predicted months) for one prepared film."""
        import tensorflow as tf

        from boneage.learning.models import IMAGE_INPUT, SEX_INPUT

        size = film.shape[:2]
        image = tf.constant(film.astype(np.float32)[None, ..., None])
        sex = tf.constant([[float(male)]], dtype=tf.float32)
        store: dict = {}
        with _capturing(self.layer, store), tf.GradientTape() as tape:
            output = self.model({IMAGE_INPUT: image, SEX_INPUT: sex}, training=False)
            months = tf.reshape(tf.cast(output, tf.float32), [-1])[0]
        maps = store["maps"]
        grads = tape.gradient(months, maps)
        maps, grads = tf.cast(maps, tf.float32)[0].numpy(), tf.cast(grads, tf.float32)[0].numpy()
        weights = grads.mean(axis=(0, 1))
        cam = np.maximum((maps * weights).sum(axis=-1), 0.0)
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else cam
        cam = cv2.resize(cam.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(cam, 0.0, 1.0), float(months.numpy())


HEATMAP_SIDE = 1024
"""Long side (px) of the heatmap PNG: the film is shrunk to it before anything is blended, so
drawing a heatmap costs a few MB whatever the film's size (issue 22)."""


def output_shape(height: int, width: int, max_side: int = HEATMAP_SIDE) -> tuple[int, int]:
    """(height, width) of a heatmap picture of a ``height x width`` film: the film's own size,
    shrunk so that its long side is at most ``max_side``."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_original(cam: np.ndarray, geometry: Geometry, settings: ImagingSettings,
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """Map a model-input heatmap ``(size, size)`` back onto the decoded film: undo the resize,
    the pad and the hand crop that :func:`boneage.imaging.transforms.prepare_with_geometry`
    reported taking (``geometry``). The map is drawn at ``shape`` (the film's size scaled,
    :func:`output_shape`), by default the film's own ``(height, width)``."""
    height, width = geometry.height, geometry.width
    out_h, out_w = shape or (height, width)
    top, bottom, left, right = geometry.box
    crop_h, crop_w = bottom - top, right - left
    if settings.resize == "pad":
        size = settings.size
        scale = size / max(crop_h, crop_w)
        new_h, new_w = max(1, round(crop_h * scale)), max(1, round(crop_w * scale))
        y0, x0 = (size - new_h) // 2, (size - new_w) // 2
        cam = cam[y0:y0 + new_h, x0:x0 + new_w]
    if (out_h, out_w) != (height, width):  # the crop box in the output's px
        top, bottom = round(top * out_h / height), round(bottom * out_h / height)
        left, right = round(left * out_w / width), round(right * out_w / width)
    full = np.zeros((out_h, out_w), dtype=np.float32)
    if bottom > top and right > left:
        full[top:bottom, left:right] = cv2.resize(cam, (right - left, bottom - top),
                                                  interpolation=cv2.INTER_LINEAR)
    return full


def display_grey(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A decoded film as stored (uint8/uint16/float, grey or colour) -> uint8 grey at ``shape``
    (height, width): shrunk first, in its own dtype, then converted, so no full-size float
    or colour copy is made."""
    from boneage.imaging.decoding import grey_plane

    if pixels.shape[:2] != tuple(shape):
        interpolation = cv2.INTER_AREA if pixels.shape[0] >= shape[0] else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (shape[1], shape[0]), interpolation=interpolation)
    grey = grey_plane(pixels)
    if grey.dtype == np.uint8:
        return grey
    scale = 255.0 / 65535.0 if grey.dtype == np.uint16 else 255.0
    return np.clip(np.round(grey.astype(np.float32) * np.float32(scale)), 0, 255).astype(np.uint8)


def overlay(grey: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A BGR image: the film in grey with the heatmap (jet colours) blended where it is hot;
    ``grey`` and ``cam`` of the same size (the picture's)."""
    if grey.dtype != np.uint8:
        grey = np.clip(np.round(grey * 255.0), 0, 255).astype(np.uint8)
    film = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    colours = cv2.applyColorMap(np.round(cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (np.float32(alpha) * np.sqrt(np.clip(cam, 0, 1).astype(np.float32)))[..., None]
    return np.round(film * (1 - weight) + colours * weight).astype(np.uint8)


def explain_png(film: np.ndarray, cam: np.ndarray, max_side: int = HEATMAP_SIDE) -> bytes:
    """PNG bytes of :func:`overlay` at most ``max_side`` px a side. ``film``: the decoded film as
    stored (:attr:`boneage.imaging.decoding.Film.pixels`) or a model input; ``cam``: its heatmap
    at any size (:func:`to_original` with ``shape=output_shape(...)`` avoids a full-size one).
    The film is shrunk to the picture's size before the blend."""
    shape = output_shape(*film.shape[:2], max_side=max_side)
    if cam.shape != shape:
        cam = cv2.resize(cam.astype(np.float32), (shape[1], shape[0]),
                         interpolation=cv2.INTER_AREA if cam.shape[0] > shape[0]
                         else cv2.INTER_LINEAR)
    picture = overlay(display_grey(film, shape), cam)
    ok, buffer = cv2.imencode(".png", picture)
    if not ok:
        raise RuntimeError("could not encode the heatmap as PNG")
    return buffer.tobytes()
