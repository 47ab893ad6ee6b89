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
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backend.errors import ModelError

try:
    from lzma import LZMAError
except ImportError:  # Python built without lzma: zipfile then cannot open such members either
    LZMAError = zlib.error

# torch.<Name>Storage → (dtype as torch names it, bytes per element): torch/storage.py's legacy classes.
STORAGE_DTYPES = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16), "UntypedStorage": ("uint8", 1),
}
# Dtypes with no legacy storage class: torch 2.x saves them as an UntypedStorage (bytes) plus the dtype,
# passed to _rebuild_tensor_v3 (checked by saving each with torch 2.13).
V3_DTYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
             "float4_e2m1fn_x2", "uint16", "uint32", "uint64", "complex32")
MAX_PICKLE_BYTES = 256 << 20  # a state dict's object pickle is a few MB; more is a bomb, not weights
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


def _refuse_build(self: Any, _state: Any) -> None:
    # The pickle BUILD opcode calls __setstate__; the dataclass one for slots would set fields anyway.
    raise pickle.UnpicklingError(f"{type(self).__name__} given a state (BUILD), as no torch file does")


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str
    __setstate__ = _refuse_build


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


@dataclass(frozen=True, slots=True)
class _Dtype:
    name: str
    __setstate__ = _refuse_build


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
}
# Storage types and dtypes are objects, built afresh per lookup so that no file can change one for the next.
_STORAGE_TYPES = {("torch", name) for name in STORAGE_DTYPES} | {("torch.storage", "UntypedStorage")}
_DTYPES = {("torch", dtype) for dtype, _ in STORAGE_DTYPES.values()} | {("torch", d) for d in V3_DTYPES}


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: BinaryIO, source: str):
        super().__init__(fh)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STORAGE_TYPES:
            return _StorageType(name)
        if (module, name) in _DTYPES:
            return _Dtype(name)
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
        dtype, itemsize = STORAGE_DTYPES[pid[1].name]  # names come from find_class alone
        return StorageRef(dtype, itemsize, str(pid[2]), int(pid[4]))


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__  # MemoryError has no text


def _load(fh: BinaryIO, source: str) -> Any:
    try:
        return _Unpickler(fh, source).load()
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as err:
        raise ModelError(f"{source}: cannot read this checkpoint ({_why(err)}). It may be "
                         "truncated or not a PyTorch file; prefer a .safetensors download.") from err


def _zip_object(path: Path, zf: zipfile.ZipFile) -> Any:
    names = zf.namelist()
    pkl = next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)
    if pkl is None:
        raise ModelError(f"{path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
    size = zf.getinfo(pkl).file_size
    if size > MAX_PICKLE_BYTES:  # zipfile stops at the declared size, so this bounds what is inflated
        raise ModelError(f"{path}: its object pickle ({pkl}) declares {size:,} bytes, more than the "
                         f"{MAX_PICKLE_BYTES >> 20} MiB a state dict needs; it is not read. The file is "
                         "damaged or crafted; prefer a .safetensors download.")
    try:
        data = zf.read(pkl)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, LZMAError, EOFError,
            MemoryError) as err:  # encrypted, an unknown compression method, a corrupt stream
        raise ModelError(f"{path}: cannot read {pkl} ({_why(err)}); the file is damaged, "
                         "encrypted or not written by torch.save. Download it again.") from err
    obj = _load(io.BytesIO(data), str(path))
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


def _tensors(obj: Any, depth: int = 0, seen: set[int] | None = None) -> list[TensorRef]:
    # `seen`: a pickle can share one container many times over (memo), so a small file would
    # otherwise make a walk of 40**8 visits; each container is walked once.
    seen = set() if seen is None else seen
    if depth > 8 or id(obj) in seen:
        return []
    if isinstance(obj, TensorRef):
        return [obj]
    if isinstance(obj, dict | list | tuple):
        seen.add(id(obj))
        values = obj.values() if isinstance(obj, dict) else obj
        return [t for v in values for t in _tensors(v, depth + 1, seen)]
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
            except (zipfile.BadZipFile, ValueError) as err:  # ValueError: a member name that is not UTF-8
                raise ModelError(f"{path}: damaged zip ({_why(err)}); the download was probably cut off. "
                                 "Download it again.") from err
        with path.open("rb") as fh:
            return _legacy_object(path, fh)
    except OSError as err:
        raise ModelError(f"{path}: cannot read: {err.strerror or err}") from err


def state_dict_tensors(path: str | Path) -> dict[str, TensorRef]:
    """Tensor names → descriptions of the checkpoint's state dict (a nested `state_dict` is unwrapped,
    as Lightning and the SD checkpoints nest it)."""
    obj = read_checkpoint(path)
    seen: set[int] = set()
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        seen.add(id(obj))
        obj = obj["state_dict"]
        if id(obj) in seen:  # only a crafted file nests a dict in itself
            raise ModelError(f"{path}: its state_dict contains itself; not a checkpoint torch.save wrote")
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, TensorRef)}
