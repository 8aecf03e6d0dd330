"""The backend-free half of the training recipe: augmentation, MixUp, loss and optimiser.

NumPy, OpenCV and Keras 3 only (no TensorFlow), so the train stage's ``tf.data`` pipeline
and a run under ``KERAS_BACKEND=jax`` on an accelerator (``bench/accelerator_sweep.py``)
train with the same augmentation, loss and learning-rate schedule.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np

from boneage.kernel.config import AugmentParams, TrainParams
from boneage.learning.models import age_bin_centres, build_model


def pose_matrix(width: int, height: int, *, angle: float = 0.0, scale: float = 1.0,
                shift=(0.0, 0.0), flip: bool = False) -> np.ndarray:
    """The 2x3 affine map of one pose of a ``width x height`` film: mirrored (``flip``), then
    rotated by ``angle`` degrees and scaled by ``scale`` (> 1 magnifies) about the film's
    centre, then shifted by ``shift`` (x, y) px. Training's augmentation and evaluation's
    test-time augmentation both pose films with it."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    if flip:  # mirror first: x -> width - 1 - x
        matrix = matrix @ np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    matrix[:, 2] += shift
    return matrix


def warp(film: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``film`` (H, W) under the affine ``matrix``, bilinear, black outside the film."""
    height, width = film.shape[:2]
    return cv2.warpAffine(film, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def augment_films(films: np.ndarray, seed: int, params: AugmentParams) -> np.ndarray:
    """Random pose and exposure for a batch of uint8 films ``(N, S, S)`` -> float32 0..255.

    The changes Keras' RandomFlip/Rotation/Translation/Zoom/Brightness/Contrast layers make
    (flip, rotation, shift and zoom about the centre with black outside, brightness offset,
    contrast about the film's mean, each clipped to 0..255) but with pose as one affine warp
    per film in OpenCV (:func:`pose_matrix`): the Keras layers resample the batch once per
    layer, which made the input side too slow on 2 cores (bench/README.md). ``seed`` fixes
    every draw, so a seeded pipeline gives the same batches run after run.
    """
    rng = np.random.default_rng(seed)
    count, height, width = films.shape
    angles = rng.uniform(-params.rotation_degrees, params.rotation_degrees, count)
    zooms = 1.0 + rng.uniform(-params.zoom, params.zoom, count)  # > 1 shows more of the film
    shifts = rng.uniform(-params.shift, params.shift, (count, 2)) * (width, height)
    flips = rng.random(count) < 0.5 if params.horizontal_flip else np.zeros(count, bool)
    out = np.empty(films.shape, np.float32)
    for index in range(count):
        matrix = pose_matrix(width, height, angle=angles[index], scale=1.0 / zooms[index],
                             shift=shifts[index], flip=bool(flips[index]))
        out[index] = warp(films[index], matrix)
    if params.brightness:
        out += (rng.uniform(-params.brightness, params.brightness, count) * 255.0)[:, None, None]
        np.clip(out, 0.0, 255.0, out=out)
    if params.contrast:
        factors = rng.uniform(1.0 - params.contrast, 1.0 + params.contrast, count)
        factors = factors.astype(np.float32)[:, None, None]
        means = out.mean(axis=(1, 2), keepdims=True)
        out = (out - means) * factors + means
        np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.float32, copy=False)


def mixup_batch(images: np.ndarray, sexes: np.ndarray, targets: np.ndarray, seed: int,
                alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MixUp within a batch: convex mixes of films, sexes and ages with Beta(alpha, alpha)
    weights, each film mixed with another of the same batch (Zhang et al. 2018)."""
    rng = np.random.default_rng(seed)
    count = len(images)
    lam = rng.beta(alpha, alpha, count).astype(np.float32)
    order = rng.permutation(count)
    lam_image = lam.reshape((count,) + (1,) * (images.ndim - 1))
    lam_vector = lam.reshape((count,) + (1,) * (targets.ndim - 1))
    return (lam_image * images + (1 - lam_image) * images[order],
            lam_vector * sexes + (1 - lam_vector) * sexes[order],
            lam_vector * targets + (1 - lam_vector) * targets[order])


AGE_WEIGHT_BIN_MONTHS = 12.0  # the age histogram the density weights come from
MAX_AGE_WEIGHT = 10.0  # no film weighs more than this many average films


def age_weights(ages: np.ndarray, kind: str) -> np.ndarray | None:
    """Per-film loss weights against the age distribution's pull toward its middle, or None.

    ``inverse_density`` weighs each film by 1 / (training films in its 12-month age bin),
    ``sqrt_inverse_density`` by the square root of that; both are scaled to a mean of 1 and
    capped at ``MAX_AGE_WEIGHT`` (a bin of 3 infants would otherwise outweigh hundreds of
    children), so the loss keeps its scale and only the balance between ages moves.
    """
    if kind == "none":
        return None
    powers = {"inverse_density": 1.0, "sqrt_inverse_density": 0.5}
    if kind not in powers:
        raise ValueError(f"train.age_weighting must be none or one of {sorted(powers)}, "
                         f"got {kind!r}")
    ages = np.asarray(ages, float).reshape(-1)
    bins = np.floor(ages / AGE_WEIGHT_BIN_MONTHS).astype(int)
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(float) ** -powers[kind]
    for _ in range(100):  # rescale to mean 1 and cap, until the cap no longer moves the mean
        weights = np.minimum(weights / weights.mean(), MAX_AGE_WEIGHT)
        if abs(weights.mean() - 1.0) < 1e-9:
            break
    return weights.astype(np.float32)


class FilmBatches:
    """Training or validation batches gathered from packed films: ``(image, sex, age)``.

    ``images`` may be the store's memory map with ``rows`` naming this set's films
    (``boneage`` and ``male`` follow ``rows``), so no copy of the films is held. With
    ``augment`` every batch gets random pose and exposure (and MixUp where
    ``augment.mixup_alpha`` > 0), all drawn from the batch's ``seed``; without, the films
    pass unchanged. The train stage calls :meth:`batch` from ``tf.data``; a run on another
    Keras backend from a ``keras.utils.PyDataset``. ``weights`` (per film, following ``rows``;
    :func:`age_weights`) are returned by :meth:`weighted_batch`, mixed along with the ages.
    """

    def __init__(self, images: np.ndarray, boneage: np.ndarray, male: np.ndarray, *,
                 rows: np.ndarray | None = None, augment: AugmentParams | None = None,
                 weights: np.ndarray | None = None):
        self.images = images
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows)
        if not len(boneage) == len(male) == len(self.rows):
            raise ValueError(f"{len(self.rows)} films but {len(boneage)} ages and {len(male)} "
                             "sexes: ages and sexes must follow rows")
        self.ages = np.asarray(boneage, np.float32)[:, None]
        self.sexes = np.asarray(male, np.float32)[:, None]
        if weights is not None and len(weights) != len(self.rows):
            raise ValueError(f"{len(self.rows)} films but {len(weights)} weights")
        self.weights = None if weights is None else np.asarray(weights, np.float32)[:, None]
        self.mixup_alpha = augment.mixup_alpha if augment is not None else 0.0
        posed = augment is not None and bool(
            augment.rotation_degrees or augment.shift or augment.zoom or augment.brightness
            or augment.contrast or augment.horizontal_flip)
        self.augment = augment if posed else None

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Films ``(n, S, S)`` float32 0..255, sexes ``(n, 1)`` and ages ``(n, 1)`` of the
        set's ``positions``."""
        positions = np.asarray(positions)
        films = np.asarray(self.images[self.rows[positions]])  # one batch copied out, uint8
        if self.augment is None:
            images = films.astype(np.float32)
        else:
            images = augment_films(films, seed, self.augment)
        sexes, ages = self.sexes[positions], self.ages[positions]
        if self.mixup_alpha > 0:
            images, sexes, ages = mixup_batch(images, sexes, ages, seed + 1, self.mixup_alpha)
        return images, sexes, ages

    def weighted_batch(self, positions: np.ndarray, seed: int):
        """:meth:`batch` plus each film's loss weight ``(n, 1)`` (mixed as MixUp mixes ages)."""
        if self.weights is None:
            raise ValueError("weighted_batch needs FilmBatches(..., weights=...)")
        images, sexes, ages = self.batch(positions, seed)
        weights = self.weights[np.asarray(positions)]
        if self.mixup_alpha > 0:  # the same draws as in batch(), applied to the weights
            _, _, weights = mixup_batch(images[:, :1, :1], sexes, weights, seed + 1,
                                        self.mixup_alpha)
        return images, sexes, ages, weights


def target_scaling(params: TrainParams, train_age: np.ndarray) -> tuple[float, float]:
    """Mean and sd of the training ages where ``train.standardise_target`` (sd 1 for a set
    of one age), else ``(0, 1)``: the network learns ``(age - mean) / sd``."""
    if not params.standardise_target:
        return 0.0, 1.0
    return float(np.mean(train_age)), float(np.std(train_age) or 1.0)


def build_for(params: TrainParams, input_size: int, train_age: np.ndarray | None = None, *,
              head: dict | None = None) -> keras.Model:
    """The model ``params`` describe, for films of ``input_size``: its target scaling (or its
    age-bin grid) from ``train_age``, or as ``head`` gives it (``target_mean``/``target_std``
    or ``age_bins``/``variance_weight``, read off a trained model to rebuild it). The one
    place a model is built from params, for the train stage, the export's float32 copy and a
    run on another backend alike; the caller sets the precision policy."""
    if head is None:
        if train_age is None:
            raise ValueError("build_for needs the training ages or the head to rebuild")
        mean, std = target_scaling(params, train_age)
        head = {"target_mean": mean, "target_std": std}
        if params.output == "age_bins":  # the grid covers the training ages, saved in the model
            head = {"age_bins": age_bin_centres(train_age, params.age_bin_months),
                    "variance_weight": params.age_bin_variance_weight}
    return build_model(architecture=params.architecture, input_size=input_size,
                       width=params.width, head=params.head, weights=params.weights,
                       frozen_stages=params.frozen_stages,
                       use_sex=params.use_sex, dropout=params.dropout, **head)


def make_loss(params: TrainParams):
    if params.loss == "mae":
        return keras.losses.MeanAbsoluteError()
    if params.loss == "mse":
        return keras.losses.MeanSquaredError()
    return keras.losses.Huber(delta=params.huber_delta_months)


def peak_lr(params: TrainParams, replicas: int = 1) -> float:
    """``train.lr``, times the replica count when ``train.scale_lr`` (linear scaling rule)."""
    return params.lr * replicas if params.scale_lr else params.lr


@keras.saving.register_keras_serializable(package="boneage")
class PartwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose step for the variables named in ``scaled_paths`` is ``lr_scale`` times the
    schedule's: a pretrained backbone fine-tuned more gently than the new head
    (discriminative learning rates; Keras 3 has no per-variable learning rate). Weight decay
    stays that of the schedule. Backend-free: the scale is applied in ``update_step``, which
    the TensorFlow and JAX optimisers both call once per variable."""

    def __init__(self, *, scaled_paths: list[str] = (), lr_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if lr_scale <= 0:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        self.scaled_paths = list(scaled_paths)
        self.lr_scale = float(lr_scale)
        self._factors: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        scaled = set(self.scaled_paths)
        self._factors = [self.lr_scale if v.path in scaled else 1.0 for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": self.scaled_paths,
                "lr_scale": self.lr_scale}


def make_optimizer(params: TrainParams, steps_per_epoch: int, replicas: int = 1,
                   model: keras.Model | None = None) -> keras.optimizers.Optimizer:
    """AdamW with warm-up and cosine decay over the run; with ``train.backbone_lr_scale``
    below 1 and a ``model`` that has a ``backbone`` layer, the backbone's trainable
    variables step at that fraction of the learning rate (:class:`PartwiseAdamW`)."""
    total = max(1, params.epochs * steps_per_epoch)
    warmup = min(params.warmup_epochs * steps_per_epoch, total - 1)
    lr = peak_lr(params, replicas)
    if params.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 10 if warmup else lr,
            decay_steps=total - warmup, alpha=0.01,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    else:
        learning_rate = lr
    backbone = _backbone(model)
    if params.backbone_lr_scale != 1.0 and backbone is not None:
        return PartwiseAdamW(learning_rate=learning_rate, weight_decay=params.weight_decay,
                             lr_scale=params.backbone_lr_scale,
                             scaled_paths=[v.path for v in backbone.trainable_variables])
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=params.weight_decay)


def _backbone(model: keras.Model | None) -> keras.Layer | None:
    if model is None:
        return None
    return next((layer for layer in model.layers if layer.name == "backbone"), None)
