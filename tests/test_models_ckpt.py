"""A .ckpt described from its pickle, without torch: what torch.load gives, refusing foreign globals."""

from __future__ import annotations

import io
import pickle
import struct
import threading
import zipfile
from collections import OrderedDict

import pytest
import torch

from backend.errors import ModelError
from backend.models.ckpt import state_dict_tensors
from backend.models.detect import detect, read_pickle_shapes


def _state() -> OrderedDict:
    return OrderedDict([
        ("model.diffusion_model.input_blocks.0.0.weight", torch.randn(8, 4, 3, 3).half()),
        ("cond_stage_model.transformer.text_model.final_layer_norm.weight", torch.nn.Parameter(torch.ones(8))),
        ("first_stage_model.encoder.conv_in.bias", torch.zeros(6, dtype=torch.bfloat16)[2:5]),  # a view
        ("model.diffusion_model.time_embed.0.weight", torch.zeros(16, 8, dtype=torch.float64).t()),
        ("alphas_cumprod", torch.arange(5, dtype=torch.int64)),
    ])


def _as_torch_sees_it(path) -> dict[str, tuple[str, tuple[int, ...]]]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj = obj.get("state_dict", obj)
    return {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in obj.items()}


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_names_dtypes_and_shapes_match_torch_load(tmp_path, zipped):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _state(), "global_step": 12, "epoch": 3}, path,
               _use_new_zipfile_serialization=zipped)
    ours = {k: (t.dtype, t.shape) for k, t in state_dict_tensors(path).items()}
    assert ours == _as_torch_sees_it(path)
    assert ours["first_stage_model.encoder.conv_in.bias"] == ("bfloat16", (3,))
    assert ours["model.diffusion_model.time_embed.0.weight"] == ("float64", (8, 16))
    det = detect(path)
    assert (det.kind, det.family) == ("checkpoint", "sd15")


def test_a_global_that_could_run_code_is_refused_and_never_called(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _state(), "hook": Evil()}, path)
    with pytest.raises(ModelError, match=r"builtin_*s?\.exec.*not read"):
        read_pickle_shapes(path)
    assert not marker.exists()
    # A framework's class (here: one of ours) is refused by name too, not imported.
    torch.save({"state_dict": _state(), "cfg": OrderedDict(a=ModelError("x"))}, path)
    with pytest.raises(ModelError, match=r"backend\.errors\.ModelError"):
        read_pickle_shapes(path)


def test_truncated_and_damaged_files_say_so(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save(_state(), path)
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut off|damaged|not a PyTorch"):
        read_pickle_shapes(tmp_path / "cut.ckpt")
    # A zip whose tensor data entry is shorter than its tensors need.
    short = tmp_path / "short.ckpt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(short, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, body[:4] if "/data/0" in info.filename else body)
    with pytest.raises(ModelError, match="truncated"):
        read_pickle_shapes(short)
    (tmp_path / "text.ckpt").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        read_pickle_shapes(tmp_path / "text.ckpt")


def _within(seconds: float, fn, *args):
    """fn(*args), or a test failure if it has not returned after `seconds` (a hang, not an error).
    The thread is a daemon so that a hanging reader does not keep pytest from exiting."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed back to the test below
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _zip(path, pkl: bytes, compression=zipfile.ZIP_STORED, **members: bytes):
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for key, body in members.items():
            zf.writestr(f"archive/data/{key}", body)
    return path


def test_a_state_dict_nested_in_itself_is_refused_not_a_hang(tmp_path):
    loop: dict = {}
    loop["state_dict"] = loop
    path = _zip(tmp_path / "loop.ckpt", pickle.dumps(loop, 2))
    with pytest.raises(ModelError, match="contains itself"):
        _within(10, state_dict_tensors, path)


def test_a_container_shared_many_times_over_is_walked_once(tmp_path):
    # 40 references to one list, nested 9 deep: a 1 KB pickle, 40**8 paths to a walk that recurses.
    w = torch.ones(3)
    fan = [w]
    for _ in range(9):
        fan = [fan] * 40
    circle: list = []
    circle.extend([circle] * 50)
    path = tmp_path / "fan.ckpt"
    torch.save({"w": w, "fan": fan, "circle": circle}, path)
    assert path.stat().st_size < 10_000
    tensors = _within(10, state_dict_tensors, path)
    assert {k: (t.dtype, t.shape) for k, t in tensors.items()} == {"w": ("float32", (3,))}


@pytest.mark.parametrize("evil", [
    b"\x80\x02ctorch\nHalfStorage\n}X\x04\x00\x00\x00nameX\x0c\x00\x00\x00FloatStoragesb0}.",
    b"\x80\x02ctorch\nfloat8_e4m3fn\n}X\x04\x00\x00\x00nameX\x07\x00\x00\x00float32sb0}.",
    b"\x80\x02ctorch\nHalfStorage\nN}X\x04\x00\x00\x00nameX\x0c\x00\x00\x00FloatStorages\x86b0}.",
], ids=["storage", "dtype", "slot-state"])
def test_a_file_cannot_change_how_the_next_file_is_read(tmp_path, evil):
    good = tmp_path / "good.ckpt"
    torch.save({"h": torch.zeros(2, 2, dtype=torch.float16),
                "f8": torch.zeros(2, 2).to(torch.float8_e4m3fn)}, good)
    before = state_dict_tensors(good)
    assert (before["h"].dtype, before["f8"].dtype) == ("float16", "float8_e4m3fn")
    # BUILD gives the storage type (or dtype) a new name: a read error, not a change for later reads.
    with pytest.raises(ModelError, match="BUILD"):
        state_dict_tensors(_zip(tmp_path / "evil.ckpt", evil))
    assert state_dict_tensors(good) == before


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
                                   torch.float8_e5m2fnuz, torch.uint16, torch.uint32, torch.uint64],
                         ids=lambda d: str(d).removeprefix("torch."))
def test_fp8_and_wide_unsigned_checkpoints_are_read(tmp_path, dtype):
    # torch 2.x saves these as torch.storage.UntypedStorage (bytes) + _rebuild_tensor_v3(..., dtype).
    path = tmp_path / "model.ckpt"
    weight = torch.zeros(4, 6, dtype=dtype)
    torch.save({"state_dict": {"w": weight, "w_t": weight.t(), "row": weight[1]}}, path)
    ours = {k: (t.dtype, t.shape) for k, t in state_dict_tensors(path).items()}
    assert ours == _as_torch_sees_it(path)
    assert ours["w_t"] == (str(dtype).removeprefix("torch."), (6, 4))


class _Storage:
    def __init__(self, numel):
        self.numel = numel


class _Tensor:
    """Pickles as torch pickles a float32 tensor, with whatever size and storage numel a test gives."""

    def __init__(self, size, numel):
        self.size, self.storage = size, _Storage(numel)

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.size, (1,), False, OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def _tensor_pickle(size=(2,), numel=2) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({"w": _Tensor(size, numel)})
    return buf.getvalue()


def _flip(path, edit) -> None:
    """Rewrites the zip at `path` with `edit(data, local header offset, central header offset)`."""
    data = bytearray(path.read_bytes())
    edit(data, data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02"))
    path.write_bytes(bytes(data))


def _encrypted(path):
    _zip(path, _tensor_pickle(), **{"0": bytes(8)})

    def edit(data, local, central):
        data[local + 6] |= 1  # general purpose flag bit 0: encrypted
        data[central + 8] |= 1
    _flip(path, edit)


def _corrupt_deflate(path):
    _zip(path, _tensor_pickle() * 50, zipfile.ZIP_DEFLATED, **{"0": bytes(8)})

    def edit(data, local, _central):
        start = local + 30 + len("archive/data.pkl")
        for i in range(start + 2, start + 12):
            data[i] ^= 0xFF
    _flip(path, edit)


def _unknown_compression(path):
    _zip(path, _tensor_pickle(), **{"0": bytes(8)})

    def edit(data, local, central):
        data[local + 8] = data[central + 10] = 99
    _flip(path, edit)


def _bomb(path):
    # 300 MB of zeros, a 300 KB zip: data.pkl is refused from its declared size, before inflating.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
        fh.write(b"\x80\x04\x8e" + struct.pack("<Q", 300 << 20))
        chunk = bytes(1 << 20)
        for _ in range(300):
            fh.write(chunk)
        fh.write(b".")


def _not_utf8_name(path):
    _zip(path, _tensor_pickle(), **{"0": bytes(8)})

    def edit(data, _local, central):
        data[central + 9] |= 0x08  # flag bit 11: the name is UTF-8 …
        data[data.find(b"archive/data.pkl", central)] = 0xFF  # … and it is not
    _flip(path, edit)


@pytest.mark.parametrize("make, message", [
    (lambda p: _zip(p, _tensor_pickle(size=(float("inf"),)), **{"0": bytes(8)}), r"OverflowError"),
    (lambda p: _zip(p, _tensor_pickle(numel=float("inf")), **{"0": bytes(8)}), r"OverflowError"),
    (_encrypted, r"cannot read archive/data\.pkl .*encrypted"),
    (_corrupt_deflate, r"cannot read archive/data\.pkl .*decompressing"),
    (_unknown_compression, r"cannot read archive/data\.pkl .*compression method"),
    (_bomb, r"archive/data\.pkl\) declares 314,572,812 bytes, more than the 256 MiB"),
    (lambda p: p.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"."), r"MemoryError"),
    (_not_utf8_name, r"damaged zip"),
], ids=["inf-size", "inf-numel", "encrypted", "bad-deflate", "compression-99", "bomb", "bytes-2**62",
        "name-not-utf8"])
def test_a_crafted_or_damaged_file_is_a_model_error_naming_it(tmp_path, make, message):
    path = tmp_path / "model.ckpt"
    make(path)
    with pytest.raises(ModelError, match=message) as caught:
        _within(60, state_dict_tensors, path)
    assert str(caught.value).startswith(str(path))


def test_the_crafting_helpers_write_a_file_that_reads(tmp_path):
    # The bad files above differ from this one only by what each test breaks.
    path = _zip(tmp_path / "model.ckpt", _tensor_pickle(), **{"0": bytes(8)})
    assert {k: (t.dtype, t.shape) for k, t in state_dict_tensors(path).items()} == {"w": ("float32", (2,))}
