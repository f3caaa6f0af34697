"""Reading PyTorch checkpoints without PyTorch, and without running code from the file.

A `torch.save` file is a pickle. Unpickling runs whatever callables the pickle names, so a file
from the internet could run anything; this reader only accepts the classes and functions a state
dict is made of (an allow-list, the idea of `torch.load(weights_only=True)`), builds every tensor
as a numpy array, and refuses anything else with an error naming the forbidden global.

The two layouts found in the wild, as `torch.serialization` writes them:

- **zip** (torch >= 1.6, the default): a zip archive `<name>/data.pkl` (the pickle),
  `<name>/data/<key>` (one raw little-endian storage per key), `<name>/byteorder`, `version`.
  A tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
  backward_hooks[, metadata])` whose `storage` is a persistent id
  `("storage", <storage class, e.g. torch.FloatStorage>, key, location, numel)`.
- **legacy** (torch < 1.6, or `_use_new_zipfile_serialization=False`; the 2018-2019 NetVLAD
  releases): five pickles in a row — the magic number 0x1950a86a20f9469cfc6c, the protocol
  version 1001, a system-info dict, the object (persistent ids `("storage", <class>, key,
  location, numel, view_metadata)`), and the list of storage keys — followed, for each key in
  that order, by an int64 element count and the raw storage bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage classes -> numpy dtypes (torch.<Name>Storage).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
    """The checkpoint names a global outside the allow-list; nothing of it was run."""


class _Storage:
    """A storage's dtype and key until its bytes are attached."""

    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.array: np.ndarray | None = None


class _Tensor:
    """A tensor waiting for its storage (legacy files give storages after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = (
            storage,
            offset,
            tuple(size),
            tuple(stride),
        )

    def materialize(self) -> np.ndarray:
        data = self.storage.array
        itemsize = data.dtype.itemsize
        if not self.size:
            return np.array(data[self.offset])
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a copy: independent of the storage buffer


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _Tensor(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


class _StorageClass:
    def __init__(self, name: str):
        self.name = name


def _numpy_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(name, *unused):
    return np.dtype(name)


class _NumpyArray:
    """Stands in for a pickled numpy array (`ndarray.__reduce__`): rebuilt from its dtype and raw
    bytes only; object arrays (whose elements are pickles themselves) are refused."""

    def __init__(self, *unused):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafeCheckpointError(f"unexpected numpy array state {state!r:.80}")
        _, shape, dtype, fortran_order, data = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafeCheckpointError(f"refusing a numpy array of dtype {dtype!r:.40}")
        if not isinstance(data, bytes | bytearray):
            raise UnsafeCheckpointError("refusing a numpy array whose data is not raw bytes")
        order = "F" if fortran_order else "C"
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


def _numpy_reconstruct(cls, shape, typecode):
    return _NumpyArray()


def _encode(text, encoding="latin1"):
    return text.encode(encoding)


class _Namespace(dict):
    """Stands in for `argparse.Namespace` (some checkpoints pickle their training options)."""

    def __setstate__(self, state):
        self.update(state)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): object(),  # only an argument of _numpy_reconstruct; not callable
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("_codecs", "encode"): _encode,
    ("argparse", "Namespace"): _Namespace,
    **{("torch", name): _StorageClass(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, path: str, storages: dict):
        super().__init__(handle, encoding="utf-8")
        self.path, self.storages = path, storages

    def find_class(self, module, name):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"{self.path}: refusing to load the global {module}.{name}: a checkpoint of "
                "weights needs only tensors and containers, and loading this one could run code. "
                "Nothing from the file was executed."
            )
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise UnsafeCheckpointError(f"{self.path}: unknown persistent id {pid!r:.80}")
        storage_class, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_class, _StorageClass):
            raise UnsafeCheckpointError(
                f"{self.path}: a storage of unknown type {storage_class!r:.80}"
            )
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[storage_class.name], key, numel)
        return self.storages[key]


def _dtype(dtype):
    if dtype == "bfloat16":
        return np.dtype(np.uint16)  # converted to float32 below
    return np.dtype(dtype).newbyteorder("<")


def _attach(storage: _Storage, raw: bytes, path: str) -> None:
    dtype = _dtype(storage.dtype)
    if len(raw) < storage.numel * dtype.itemsize:
        raise ValueError(
            f"{path}: storage {storage.key} is truncated ({len(raw)} bytes for {storage.numel} "
            f"values of {dtype.itemsize} bytes)."
        )
    array = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    if storage.dtype == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    storage.array = array


def _materialize(value):
    if isinstance(value, _Tensor):
        return value.materialize()
    if isinstance(value, _NumpyArray):
        return value.array
    if isinstance(value, dict):
        materialized = {key: _materialize(item) for key, item in value.items()}
        return (
            collections.OrderedDict(materialized)
            if isinstance(value, collections.OrderedDict)
            else materialized
        )
    if isinstance(value, list | tuple):
        return type(value)(_materialize(item) for item in value)
    return value


def _read_zip(path: str, archive: zipfile.ZipFile):
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
    if len(pickles) != 1:
        raise ValueError(f"{path}: a zip checkpoint holds one data.pkl. Found: {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
        raise ValueError(f"{path}: big-endian checkpoints are not supported.")
    storages: dict = {}
    with archive.open(pickles[0]) as handle:
        obj = _RestrictedUnpickler(handle, path, storages).load()
    for key, storage in storages.items():
        member = f"{prefix}data/{key}"
        if member not in names:
            raise ValueError(f"{path}: storage {key} ({member}) is missing from the archive.")
        _attach(storage, archive.read(member), path)
    return _materialize(obj)


def _read_legacy(path: str, handle):
    storages: dict = {}

    def load():
        return _RestrictedUnpickler(handle, path, storages).load()

    magic = load()
    if magic != LEGACY_MAGIC:
        raise ValueError(
            f"{path}: not a PyTorch checkpoint (no zip archive, no legacy magic number)."
        )
    if load() != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported legacy PyTorch protocol version.")
    load()  # system info (endianness, type sizes)
    obj = load()
    keys = load()
    if not isinstance(keys, list):
        raise ValueError(f"{path}: damaged legacy checkpoint (no storage key list).")
    for key in keys:
        storage = storages.get(str(key))
        header = handle.read(8)
        if storage is None or len(header) != 8:
            raise ValueError(f"{path}: damaged or truncated legacy checkpoint at storage {key}.")
        (numel,) = struct.unpack("<q", header)
        dtype = _dtype(storage.dtype)
        storage.numel = numel
        _attach(storage, handle.read(numel * dtype.itemsize), path)
    missing = [key for key, storage in storages.items() if storage.array is None]
    if missing:
        raise ValueError(f"{path}: storages {missing[:5]} have no data (truncated file).")
    return _materialize(obj)


def read_torch_checkpoint(path) -> object:
    """Loads a `torch.save` file (zip or legacy layout) with numpy arrays for tensors.

    Args:
        path: the `.pth` / `.pth.tar` / `.pt` file.

    Returns:
        The saved object (dicts, lists, numbers, strings; tensors as numpy arrays).

    Raises:
        UnsafeCheckpointError: the pickle names a global outside `ALLOWED_GLOBALS` (nothing is
            run).
        ValueError: not a PyTorch checkpoint, truncated or damaged (the message names the file).
        FileNotFoundError: no file at `path`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive)
        with open(path, "rb") as handle:
            return _read_legacy(path, io.BufferedReader(handle))
    except UnsafeCheckpointError as error:
        if str(error).startswith(path):
            raise
        raise UnsafeCheckpointError(
            f"{path}: {error}. Nothing from the file was executed."
        ) from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, KeyError, TypeError,
            AttributeError, IndexError) as error:  # fmt: skip
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})."
        ) from None
