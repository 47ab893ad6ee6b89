"""The tensors of a PyTorch pickle checkpoint (.ckpt, .pt, .pth, .bin) described without torch.

`torch.save` writes a zip holding `<name>/data.pkl` (the object tree, pickled) and one
`<name>/data/<key>` entry per storage; files from torch < 1.6 are a run of pickles instead. We read
only the object pickle, with an unpickler that knows the few globals a state dict needs: the
tensor-rebuild functions get the storage's dtype and the tensor's shape and return a description,
no storage is built and no tensor data is read. Any other global (a class of a training framework, a
function that could run code) is refused, named in the error. The UI process can therefore say what a
.ckpt is without importing torch (DESIGN.md: the UI never imports torch).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backend.errors import ModelError

# torch.<Name>Storage → (dtype as torch names it, bytes per element): torch/storage.py's legacy classes.
STORAGE_DTYPES = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16), "UntypedStorage": ("uint8", 1),
    "Float8_e4m3fnStorage": ("float8_e4m3fn", 1), "Float8_e5m2Storage": ("float8_e5m2", 1),
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER (pre-zip format)


@dataclass(frozen=True)
class StorageRef:
    dtype: str
    itemsize: int
    key: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the checkpoint describes it: dtype, shape, and the storage it would read."""

    dtype: str
    shape: tuple[int, ...]
    storage: StorageRef


@dataclass(frozen=True)
class _StorageType:
    name: str


class _TensorClass:
    """torch.Tensor / torch.nn.Parameter named by `_rebuild_from_type_v2`: a marker, never built."""


def _rebuild_tensor(storage: Any, _offset: Any, size: Any, *_rest: Any) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2): (storage, storage_offset, size, stride, …)."""
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    return TensorRef(storage.dtype, tuple(int(d) for d in size), storage)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any = None, *_rest: Any) -> TensorRef:
    ref = _rebuild_tensor(storage, offset, size)
    return TensorRef(dtype.name if isinstance(dtype, _Dtype) else ref.dtype, ref.shape, ref.storage)


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Any, _new_type: Any, args: Any, _state: Any) -> Any:
    return func(*args)


@dataclass(frozen=True)
class _Dtype:
    name: str


def _ordered_dict(*args: Any) -> OrderedDict:
    return OrderedDict(*args)


# The globals a checkpoint of tensors needs, and what each becomes here. Nothing else is looked up.
_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorClass,
    ("torch.nn.parameter", "Parameter"): _TensorClass,
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    **{("torch", dtype): _Dtype(dtype) for dtype, _ in STORAGE_DTYPES.values()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: BinaryIO, source: str):
        super().__init__(fh)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise ModelError(f"{self.source}: holds {module}.{name}, which a file of weights does not need; "
                             "it is not read, since unpickling it could run code. Use a .safetensors "
                             "version of this model (or convert it with a trusted tool).") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        # ("storage", storage type, key, location, numel[, view metadata in the legacy format])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        dtype, itemsize = STORAGE_DTYPES[pid[1].name]
        return StorageRef(dtype, itemsize, str(pid[2]), int(pid[4]))


def _load(fh: BinaryIO, source: str) -> Any:
    try:
        return _Unpickler(fh, source).load()
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError) as err:
        raise ModelError(f"{source}: cannot read this checkpoint ({type(err).__name__}: {err}). It may be "
                         "truncated or not a PyTorch file; prefer a .safetensors download.") from err


def _zip_object(path: Path, zf: zipfile.ZipFile) -> Any:
    names = zf.namelist()
    pkl = next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)
    if pkl is None:
        raise ModelError(f"{path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
    obj = _load(io.BytesIO(zf.read(pkl)), str(path))
    sizes = {n: zf.getinfo(n).file_size for n in names}
    prefix = pkl[: -len("data.pkl")] + "data/"
    for ref in _tensors(obj):
        have = sizes.get(prefix + ref.storage.key)
        need = ref.storage.numel * ref.storage.itemsize
        if have is None or have < need:
            raise ModelError(f"{path} is damaged or truncated: the data of one of its tensors "
                             f"({prefix}{ref.storage.key}) is {'missing' if have is None else 'short'}. "
                             "Download it again.")
    return obj


def _legacy_object(path: Path, fh: BinaryIO) -> Any:
    """torch < 1.6: magic number, protocol version, system info, then the object, then the data."""
    source = str(path)
    if _load(fh, source) != LEGACY_MAGIC:
        raise ModelError(f"{path}: not a PyTorch checkpoint (neither a zip nor torch's older format)")
    _load(fh, source)  # protocol version
    _load(fh, source)  # system info (byte order, type sizes)
    return _load(fh, source)


def _tensors(obj: Any, depth: int = 0) -> list[TensorRef]:
    if depth > 8:
        return []
    if isinstance(obj, TensorRef):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v, depth + 1)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v, depth + 1)]
    return []


def read_checkpoint(path: str | Path) -> Any:
    """The checkpoint's object tree with every tensor as a `TensorRef`. ModelError when the file
    cannot be read, is truncated, or holds a global outside the short list a state dict needs."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as zf:
                    return _zip_object(path, zf)
            except zipfile.BadZipFile as err:
                raise ModelError(f"{path}: damaged zip ({err}); the download was probably cut off. "
                                 "Download it again.") from err
        with path.open("rb") as fh:
            return _legacy_object(path, fh)
    except OSError as err:
        raise ModelError(f"{path}: cannot read: {err.strerror or err}") from err


def state_dict_tensors(path: str | Path) -> dict[str, TensorRef]:
    """Tensor names → descriptions of the checkpoint's state dict (a nested `state_dict` is unwrapped,
    as Lightning and the SD checkpoints nest it)."""
    obj = read_checkpoint(path)
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, TensorRef)}
