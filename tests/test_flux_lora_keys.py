"""Flux LoRA key names on the real Flux.1 [dev] architecture (19 double, 38 single blocks, hidden 3072),
built on the meta device: no weights, every module name.

The BFL module list below is written from BFL's flux/model.py (facts); diffusers' own converter must
turn it into exactly the diffusers model's keys, and ComfyUI's Flux key map (tests/_comfy_flux_rules.py)
must know every module our files name, with matching shapes and without two modules patching the
same rows."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from backend.models.flux_lora_format import to_file
from backend.models.flux_lora_names import UNET, flux_names
from tests import _comfy_flux_rules as comfy
from tests._flux_lora_support import FLUX1_DEV, lycoris_network, remove

HIDDEN, MLP, HEAD, DEPTH, SINGLE = 3072, 12288, 128, 19, 38
# Which file tensors each ComfyUI weight adapter reads (comfy/weight_adapter/{lora,loha,lokr,glora,oft,boft}.py).
COMFY_READS = {
    "locon": {"lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha", "dora_scale"},
    "lokr": {"lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha",
             "dora_scale"},
    "glora": {"a1.weight", "a2.weight", "b1.weight", "b2.weight", "alpha", "dora_scale"},
    "diag-oft": {"oft_blocks", "rescale", "alpha", "dora_scale"},
    "full": {"diff", "diff_b"},
}


def bfl_flux1() -> dict[str, tuple[int, ...]]:
    """Every tensor of the BFL Flux.1 [dev] transformer and its shape (flux/model.py, modules/layers.py)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, n_in: int, n_out: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)

    linear("img_in", 64, HIDDEN)
    linear("txt_in", 4096, HIDDEN)
    for emb, n_in in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        linear(f"{emb}.in_layer", n_in, HIDDEN)
        linear(f"{emb}.out_layer", HIDDEN, HIDDEN)
    for i in range(DEPTH):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            linear(f"{b}_mod.lin", HIDDEN, 6 * HIDDEN)
            linear(f"{b}_attn.qkv", HIDDEN, 3 * HIDDEN)
            linear(f"{b}_attn.proj", HIDDEN, HIDDEN)
            shapes[f"{b}_attn.norm.query_norm.scale"] = shapes[f"{b}_attn.norm.key_norm.scale"] = (HEAD,)
            linear(f"{b}_mlp.0", HIDDEN, MLP)
            linear(f"{b}_mlp.2", MLP, HIDDEN)
    for i in range(SINGLE):
        b = f"single_blocks.{i}"
        linear(f"{b}.linear1", HIDDEN, 3 * HIDDEN + MLP)
        linear(f"{b}.linear2", HIDDEN + MLP, HIDDEN)
        shapes[f"{b}.norm.query_norm.scale"] = shapes[f"{b}.norm.key_norm.scale"] = (HEAD,)
        linear(f"{b}.modulation.lin", HIDDEN, 3 * HIDDEN)
    linear("final_layer.linear", HIDDEN, 64)
    linear("final_layer.adaLN_modulation.1", HIDDEN, 2 * HIDDEN)
    return shapes


@pytest.fixture(scope="module")
def flux1():
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(**FLUX1_DEV)


@pytest.fixture(scope="module")
def comfy_key_map():
    return comfy.key_map({comfy.PREFIX + k for k in bfl_flux1()}, DEPTH, SINGLE, HIDDEN)


def test_diffusers_converter_turns_the_bfl_list_into_the_diffusers_model(flux1):
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    bfl = {k: torch.empty(s, device="meta") for k, s in bfl_flux1().items()}
    converted = convert_flux_transformer_checkpoint_to_diffusers(bfl)
    want = {k: tuple(v.shape) for k, v in flux1.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == want


def test_our_names_and_comfyui_slices_agree_with_diffusers_converter():
    """BFL tensors holding their row numbers (one column: the converter only cuts rows) through diffusers'
    converter show where each diffusers weight sits; ComfyUI's table and flux_lora_names must say the same."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    rows = convert_flux_transformer_checkpoint_to_diffusers(
        {k: torch.arange(s[0], dtype=torch.float32) for k, s in bfl_flux1().items()})
    table = comfy.flux_to_diffusers(DEPTH, SINGLE, HIDDEN)
    for key, target in table.items():
        if key not in rows:
            continue  # ComfyUI's table also lists aliases other models use
        if isinstance(target, str):
            expected = torch.arange(bfl_flux1()[target[len(comfy.PREFIX):]][0], dtype=torch.float32)
        elif target[1] is None:
            expected = target[2](torch.arange(2 * HIDDEN, dtype=torch.float32))
        else:
            _, start, size = target[1]
            expected = torch.arange(start, start + size, dtype=torch.float32)
        assert torch.equal(rows[key], expected), key
    names = flux_names(FLUX1_DEV)
    for module, part in names.parts.items():
        target = table[_path(module) + ".weight"]
        assert UNET + target[0][len(comfy.PREFIX):-len(".weight")].replace(".", "_") == part.fused
        assert target[1] == (0, part.offset, part.size), module
    for module, bfl_name in names.renamed.items():
        target = table[_path(module) + ".weight"]
        key = target if isinstance(target, str) else target[0]
        assert UNET + key[len(comfy.PREFIX):-len(".weight")].replace(".", "_") == bfl_name, module
        assert (not isinstance(target, str)) == (module in names.swapped)


def _path(lora_name: str) -> str:
    """lora_unet_transformer_blocks_0_attn_to_q → transformer_blocks.0.attn.to_q (by the model's names)."""
    return _diffusers_paths()[lora_name]


@functools.cache
def _diffusers_paths() -> dict[str, str]:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**FLUX1_DEV)
    return {UNET + name.replace(".", "_"): name for name, _ in model.named_modules() if name}


ALGORITHMS = [("locon", {}), ("loha", {}), ("lokr", {"factor": 16}), ("glora", {}), ("diag-oft", {}),
              ("locon", {"dora_wd": True}), ("loha", {"dora_wd": True}), ("full", {}), ("ia3", {})]


def in_memory_state(model, algo: str, kwargs: dict, target: str) -> dict[str, torch.Tensor]:
    """The state dict LyCORIS would save for `model` (meta tensors). DoRA and full cannot be built on
    the meta device (LyCORIS copies the base weights), so their extra tensors are added with LyCORIS's
    shapes (dora_scale [out, 1]; diff, diff_b like the weight and bias) on a LoRA network's modules."""
    base_algo = algo if algo != "full" else "locon"
    kw = {k: v for k, v in kwargs.items() if k != "dora_wd"}
    with torch.device("meta"):
        net = lycoris_network(model, base_algo, target, rank=16, alpha=8.0, **kw)
        state = dict(net.state_dict())
        remove(net)
    state = {k: torch.tensor(8.0) if k.endswith(".alpha") else v for k, v in state.items()}  # scalars: real
    if kwargs.get("dora_wd") or algo == "full":
        modules = {k.split(".")[0] for k in state}
        for name in modules:
            layer = model.get_submodule(_path(name))
            if algo == "full":
                state = {k: v for k, v in state.items() if not k.startswith(name + ".")}
                state[f"{name}.diff"] = torch.empty(layer.weight.shape, device="meta")
                state[f"{name}.diff_b"] = torch.empty(layer.bias.shape, device="meta")
            else:
                state[f"{name}.dora_scale"] = torch.empty(layer.weight.shape[0], 1, device="meta")
    return state


@pytest.mark.parametrize("target", ["attn", "attn-mlp", "all"])
@pytest.mark.parametrize("algo, kwargs", ALGORITHMS, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_every_module_in_our_file_is_one_comfyui_expects(flux1, comfy_key_map, algo, kwargs, target):
    logging.getLogger("LyCORIS").setLevel(logging.WARNING)
    file = to_file(in_memory_state(flux1, algo, kwargs, target), flux1.config)
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in file.items():
        module, _, param = key.partition(".")
        modules.setdefault(module, {})[param] = value
    bfl = bfl_flux1()
    patched: dict[str, list[tuple[int, int]]] = {}
    for module, params in modules.items():
        assert module in comfy_key_map, f"ComfyUI has no key for {module}"
        if algo != "ia3":  # ComfyUI has no IA³ adapter at all: its files name modules ComfyUI knows, unused
            assert set(params) <= COMFY_READS[algo], f"{module}: {set(params) - COMFY_READS[algo]}"
        target_key = comfy_key_map[module]
        key, offset = (target_key, None) if isinstance(target_key, str) else target_key[:2]
        rows = bfl[key[len(comfy.PREFIX):]][0]
        start, size = (0, rows) if offset is None else offset[1:]
        for param in ("lora_up.weight", "hada_w1_a", "hada_w2_a", "dora_scale", "diff", "diff_b", "b1.weight"):
            if param in params:
                assert params[param].shape[0] == size, f"{module}.{param}: {params[param].shape} for {size} rows"
        if algo == "lokr":
            w1, w2 = (params.get(f"lokr_{w}", params.get(f"lokr_{w}_a")) for w in ("w1", "w2"))
            assert w1.shape[0] * w2.shape[0] == size, module
        if algo == "diag-oft":
            assert params["oft_blocks"].shape[0] * params["oft_blocks"].shape[1] == size, module
        spans = patched.setdefault(key, [])
        assert all(start + size <= s or s + n <= start for s, n in spans), f"{module} overlaps on {key}"
        spans.append((start, size))
    fused = [m for m in modules if m.endswith(("_qkv", "_linear1"))]
    if algo in ("locon", "loha", "full") and not (kwargs.get("dora_wd") and target == "attn"):
        assert len(fused) == 2 * DEPTH + SINGLE and not any(m.startswith("lycoris_") for m in modules)
    elif algo in ("lokr", "glora", "diag-oft", "ia3"):
        assert not fused and any(m.startswith("lycoris_transformer_blocks_") for m in modules)
    else:  # DoRA with target attn: the double blocks' qkv fused, the single blocks' q/k/v split
        assert len(fused) == 2 * DEPTH and "lycoris_single_transformer_blocks_37_attn_to_v" in modules
