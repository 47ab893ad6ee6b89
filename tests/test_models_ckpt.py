"""A .ckpt described from its pickle, without torch: what torch.load gives, refusing foreign globals."""

from __future__ import annotations

import pickle
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
