"""Flux LoRA files: what LyCORIS trains on diffusers' FluxTransformer2DModel, written in the kohya (BFL)
layout, must read back bit for bit and give the trained network's output in diffusers and under
ComfyUI's loading rules (tests/_comfy_flux_rules.py). The real-architecture key checks are in
tests/test_flux_lora_keys.py."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from backend.models.flux_lora_format import from_file, to_file
from backend.models.flux_lora_names import SPLIT, UNET, dims
from backend.training.saving import save_lora_file
from tests import _comfy_flux_rules as comfy
from tests._flux_lora_support import inputs, lycoris_network, output, randomize, remove, tiny_flux

FLUX_METADATA = {"ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora",
                 "ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "3.0"}
# (algorithm, target, LyCORIS arguments): every algorithm LoRA Dash offers that LyCORIS builds on Flux.
ALGORITHMS = [
    ("locon", "attn-mlp", {}), ("locon", "attn", {}), ("locon", "all", {}), ("loha", "all", {}),
    ("lokr", "all", {"factor": 4}), ("locon", "all", {"dora_wd": True}), ("locon", "attn", {"dora_wd": True}),
    ("loha", "attn", {"dora_wd": True}), ("lokr", "attn-mlp", {"factor": 4, "dora_wd": True}),
    ("full", "all", {}), ("ia3", "all", {}), ("glora", "all", {}), ("diag-oft", "all", {}),
    ("boft", "attn", {}),
]
# What ComfyUI applies exactly (its IA³/GLoRA/OFT maths are its own business, not the file's layout).
COMFY_EXACT = [a for a in ALGORITHMS if a[0] in ("locon", "loha", "lokr", "full")]


@pytest.fixture(autouse=True)
def _quiet_lycoris():
    logging.getLogger("LyCORIS").setLevel(logging.WARNING)


def trained(algo: str, target: str, kwargs: dict, model=None, alpha: float = 3.0, scale: float = 0.2):
    """(model, state dict of a randomly 'trained' network, its output, the base output, base weights)."""
    model = model if model is not None else tiny_flux()
    base = copy.deepcopy(model.state_dict())
    kw = inputs(model)
    before = output(model, kw)
    net = lycoris_network(model, algo, target, alpha=alpha, **kwargs)
    randomize(net, scale=scale)
    after = output(model, kw)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    remove(net)
    return model, state, after, before, base


def _label(case) -> str:
    algo, target, kw = case
    return "-".join([algo, target, *sorted(kw)])


@pytest.mark.parametrize("case", ALGORITHMS, ids=_label)
def test_from_file_reads_to_file_back_exactly(case):
    model, state, _, _, _ = trained(*case)
    file = to_file(state, model.config)
    back = from_file(file, model.config)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state), [k for k in state if not torch.equal(back[k], state[k])]
    assert all(k.startswith((UNET, SPLIT)) for k in file)


def test_fused_layout_is_what_sd_scripts_writes_with_alpha_scaled():
    model, state, _, _, _ = trained("locon", "attn", {})
    file = to_file(state, model.config)
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert file[f"{qkv}.lora_down.weight"].shape == (12, 16)      # q, k, v downs stacked: 3 × rank 4
    assert file[f"{qkv}.lora_up.weight"].shape == (48, 12)        # block-diagonal
    assert torch.equal(file[f"{qkv}.lora_up.weight"][16:32, 4:8],
                       state["lora_unet_transformer_blocks_0_attn_to_k.lora_up.weight"])
    assert not file[f"{qkv}.lora_up.weight"][16:32, :4].any()
    assert file[f"{qkv}.alpha"].item() == 9.0                     # 3 × 3.0: alpha / rank stays 3/4
    # target attn adapts q/k/v of the single blocks but not proj_mlp: a zero block of linear1, alpha × 4
    linear1 = "lora_unet_single_blocks_1_linear1"
    assert file[f"{linear1}.lora_up.weight"].shape == (16 * 3 + 64, 16)
    assert not file[f"{linear1}.lora_up.weight"][48:].any() and not file[f"{linear1}.lora_down.weight"][12:].any()
    assert file[f"{linear1}.alpha"].item() == 12.0
    assert "lora_unet_single_blocks_1_linear2.lora_up.weight" not in file   # proj_out is not attention


def test_dora_with_a_part_missing_and_lokr_keep_diffusers_names():
    model, state, _, _, _ = trained("locon", "attn", {"dora_wd": True})
    file = to_file(state, model.config)
    assert "lora_unet_double_blocks_0_img_attn_qkv.dora_scale" in file   # all three parts: fused, stacked
    assert "lycoris_single_transformer_blocks_0_attn_to_q.dora_scale" in file  # proj_mlp missing: split
    model, state, _, _, _ = trained("lokr", "all", {"factor": 4})
    file = to_file(state, model.config)
    assert "lycoris_transformer_blocks_0_attn_add_v_proj.lokr_w1" in file
    assert "lycoris_norm_out_linear.lokr_w1" in file          # ComfyUI swaps the halves back itself
    assert "lora_unet_double_blocks_0_img_mod_lin.lokr_w1" in file


def _comfy_output(model, base, file, kw):
    """The transformer's output after ComfyUI's loading rules put `file` on its BFL weights."""
    layers, single, hidden = dims(model.config)
    table = comfy.flux_to_diffusers(layers, single, hidden)
    bfl = comfy.to_bfl({k: v.double() for k, v in base.items()}, table)
    used = comfy.apply_lora(bfl, file, comfy.key_map(bfl, layers, single, hidden))
    fresh = copy.deepcopy(model).double()
    fresh.load_state_dict(comfy.from_bfl(bfl, base.keys(), table))
    kw = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kw.items()}
    return output(fresh, kw).float(), used


@pytest.mark.parametrize("case", COMFY_EXACT, ids=_label)
def test_comfyui_rules_give_the_trained_output(case):
    model, state, trained_out, base_out, base = trained(*case)
    file = to_file(state, model.config)
    out, used = _comfy_output(model, base, file, inputs(model))
    assert used == set(file), f"keys ComfyUI would not load: {sorted(set(file) - used)[:5]}"
    assert (trained_out - base_out).abs().max() > 1e-2   # the adapters do change the output
    assert torch.allclose(out, trained_out, atol=1e-4, rtol=0), (out - trained_out).abs().max()


def test_comfyui_check_catches_sd_scripts_split_qkv_alpha():
    """The check above can fail: sd-scripts' split_qkv keeps alpha on the 3×-rank fused adapter, which
    ComfyUI then applies at a third of its strength."""
    model, state, trained_out, _, base = trained("locon", "attn-mlp", {})
    file = to_file(state, model.config)
    for key in [k for k in file if k.endswith("qkv.alpha") or k.endswith("linear1.alpha")]:
        file[key] = file[key] / (3 if "qkv" in key else 4)
    out, _ = _comfy_output(model, base, file, inputs(model))
    assert (out - trained_out).abs().max() > 1e-3


def _load_with_diffusers(model_kwargs: dict, base: dict, file, tmp_path):
    """A fresh transformer (the base weights) in a fresh FluxPipeline, the file loaded by
    FluxPipeline.load_lora_weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    path = tmp_path / "flux_lora.safetensors"
    meta = save_lora_file(path, file, FLUX_METADATA)
    assert meta["ss_base_model_version"] == "flux1"
    fresh = tiny_flux(**model_kwargs, weights=base)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=fresh)
    pipe.load_lora_weights(str(path))
    return fresh


@pytest.mark.parametrize("algo", ["lora", "locon"])
def test_diffusers_loads_the_double_blocks(algo, tmp_path):
    """Double blocks (fused img/txt qkv) on a tiny transformer through diffusers' Flux LoRA loader."""
    shape = dict(layers=2, single=0)
    model, state, trained_out, base_out, base = trained(algo, "attn-mlp", {}, model=tiny_flux(**shape))
    fresh = _load_with_diffusers(shape, base, to_file(state, model.config), tmp_path)
    out = output(fresh, inputs(fresh))
    assert (trained_out - base_out).abs().max() > 1e-2
    assert torch.allclose(out, trained_out, atol=1e-4, rtol=0), (out - trained_out).abs().max()


def test_diffusers_loads_a_single_block_of_flux1_width(tmp_path):
    """diffusers splits linear1 as Flux.1 does (3 × 3072 + 12288 rows), so a single block is tested at
    that width: 24 heads of 128, one block, no double block."""
    shape = dict(heads=24, head_dim=128, layers=0, single=1, guidance=False)
    model, state, trained_out, base_out, base = trained("locon", "attn-mlp", {"bypass_mode": True},
                                                        model=tiny_flux(**shape), scale=0.02)
    file = to_file(state, model.config)
    assert file["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 3072 + 12288, 16)
    del model
    fresh = _load_with_diffusers(shape, base, file, tmp_path)
    out = output(fresh, inputs(fresh))
    assert (trained_out - base_out).abs().max() > 1e-2
    assert torch.allclose(out, trained_out, atol=1e-4, rtol=0), (out - trained_out).abs().max()


def test_sd_scripts_shared_down_splits_exactly():
    """sd-scripts without split_qkv trains one LoRA on the fused projection (one lora_down for q, k, v):
    each part then keeps that down and its rows of up, with the same alpha."""
    model = tiny_flux()
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(8, 16, generator=g), torch.randn(48, 8, generator=g)
    file = {"lora_unet_double_blocks_0_txt_attn_qkv.lora_down.weight": down,
            "lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight": up,
            "lora_unet_double_blocks_0_txt_attn_qkv.alpha": torch.tensor(4.0),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0)}
    back = from_file(file, model.config)
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha" in back
    for i, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
        p = f"lora_unet_transformer_blocks_0_attn_{name}"
        assert torch.equal(back[f"{p}.lora_down.weight"], down) and back[f"{p}.alpha"].item() == 4.0
        assert torch.equal(back[f"{p}.lora_up.weight"], up[16 * i:16 * (i + 1)])


def test_names_outside_the_config_are_refused():
    from backend.errors import ModelError

    model = tiny_flux(layers=1, single=1)
    with pytest.raises(ModelError, match="single_transformer_blocks_5"):
        to_file({"lora_unet_single_transformer_blocks_5_proj_out.alpha": torch.tensor(1.0)}, model.config)
    bad = {"lora_unet_double_blocks_0_img_attn_qkv.lokr_w1": torch.ones(2, 2),
           "lora_unet_double_blocks_0_img_attn_qkv.lokr_w2": torch.ones(24, 8)}
    with pytest.raises(ModelError, match="cannot be split"):
        from_file(bad, model.config)
