"""Reads PyTorch ``.pth`` checkpoints into NumPy arrays, without PyTorch.

A ``.pth`` written by ``torch.save`` is either

* a zip archive (PyTorch >= 1.6): ``<name>/data.pkl`` (the pickled object, whose tensors point
  to storages by key), ``<name>/data/<key>`` (each storage's raw bytes) and ``<name>/byteorder``;
* or the legacy format: consecutive pickles -- magic number, protocol version, system info, the
  object, the list of storage keys -- followed by each storage as an 8-byte element count and
  its raw bytes.

Either way the tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)``. The unpickler here allows only those names (and the containers a state_dict
uses), so a file cannot run code: anything else is refused with :class:`PthError`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from segnode_jax.errors import UserError

# torch storage class name -> NumPy dtype (bfloat16 is widened below).
_STORAGE_DTYPES = {
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
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class PthError(UserError):
    """The file is not a readable PyTorch checkpoint (the message says what was found)."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def from_bytes(self, raw: bytes) -> np.ndarray:
        if self.dtype == "bfloat16":
            half = np.frombuffer(raw, np.uint16)
            return (half.astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, self.dtype)


class _Tensor:
    """A tensor to be materialised once its storage's bytes are known."""

    def __init__(self, storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self, storages: dict[str, np.ndarray]) -> np.ndarray:
        kind, key = self.storage
        flat = storages[key]
        if not self.size:
            return np.array(flat[self.offset])
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset :], shape=self.size, strides=strides)
        return np.array(view)  # a contiguous copy, independent of the file


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


class _Unpickler(pickle.Unpickler):
    """Knows torch's tensor/storage names and plain containers; refuses every other global."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
    }

    def __init__(self, file, storage_types: dict[str, _StorageType]):
        super().__init__(file)
        self.storage_types = storage_types

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise PthError(
            f"the file refers to {module}.{name}, which a state_dict does not contain; only tensors, "
            "numbers, strings and dicts are read (save the model's state_dict(), not the model object)"
        )

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise PthError(f"unknown persistent id {pid!r} in the pickle")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise PthError(f"unknown storage type {storage_type!r}")
        self.storage_types[key] = storage_type
        return ("storage", key)


def _materialise(obj, storages):
    if isinstance(obj, _Tensor):
        return obj.to_numpy(storages)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, storages)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise PthError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl inside)")
        root = pkl[0][: -len("data.pkl")]
        byteorder = z.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
        types: dict[str, _StorageType] = {}
        obj = _Unpickler(io.BytesIO(z.read(pkl[0])), types).load()
        storages = {}
        for key, st in types.items():
            raw = z.read(f"{root}data/{key}")
            arr = st.from_bytes(raw)
            if byteorder == "big":
                arr = arr.byteswap()
            storages[key] = arr
    return _materialise(obj, storages)


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:  # noqa: BLE001 - any failure means "not this format"
            magic = None
        if magic != _LEGACY_MAGIC:
            raise PthError(
                f"{path} is not a PyTorch checkpoint (neither a zip archive nor the legacy format); "
                "pass the .pth file written by torch.save"
            )
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info (byte order, type sizes)
        types: dict[str, _StorageType] = {}
        obj = _Unpickler(f, types).load()
        keys = pickle.load(f)
        storages = {}
        for key in keys:
            st = types[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * st.itemsize())
            if len(raw) != numel * st.itemsize():
                raise PthError(f"{path} is truncated (storage {key} is incomplete)")
            storages[str(key)] = st.from_bytes(raw)
    return _materialise(obj, storages)


def load(path: str | os.PathLike) -> Any:
    """The object saved in a ``.pth`` file, tensors as NumPy arrays.

    Arguments:
      path: a file written by ``torch.save`` (zip or legacy format).

    Returns:
      The unpickled object (usually a dict of name -> ``np.ndarray``).

    Raises:
      PthError: not a PyTorch checkpoint, truncated, or it holds something other than tensors
        and plain containers (e.g. a pickled model object).
      FileNotFoundError: no such file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except PthError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, ValueError, zipfile.BadZipFile) as e:
        raise PthError(f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None
