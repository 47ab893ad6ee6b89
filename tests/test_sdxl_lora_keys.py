"""SDXL LoRA files in sd-scripts' layout: SGM-named UNet keys, lora_te1_/lora_te2_ text encoders.

The file a LyCORIS network becomes loads with diffusers `load_lora_weights` and reproduces the network's
own output; every key follows the rules ComfyUI (comfy/lora.py) and A1111 (extensions-builtin/Lora)
match on; an SD 1.5 LoRA is refused for an SDXL model before training."""

from __future__ import annotations

import re

import pytest
import toml
import torch
from safetensors.torch import save_file

from backend.errors import ModelError
from backend.models import detect, inspect, sdxl, single_file
from backend.models.loading import kohya_text_model_view
from backend.models.sdxl_demo import tiny_sdxl_pipeline

# comfy/lora.py LORA_CLIP_MAP and A1111's lora_te2 → resblocks conversion accept exactly these.
TE_KEY = re.compile(r"^lora_te[12]_text_model_encoder_layers_\d+_(mlp_fc[12]|self_attn_(q|k|v|out)_proj)$")


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xl")
    return tmp, tiny_sdxl_pipeline(tmp / "a"), tiny_sdxl_pipeline(tmp / "b")


def make_network(pipe, tmp, algo: str, conv: bool):
    from lycoris.kohya import create_network

    targets = sdxl.SDXLFamily().lora_targets("all" if conv else "attn-mlp", conv)
    preset = tmp / f"{algo}-{conv}.toml"
    preset.write_text(toml.dumps({"enable_conv": conv, "unet_target_module": targets.unet_modules,
                                  "unet_target_name": targets.unet_names,
                                  "text_encoder_target_module": targets.text_encoder_modules,
                                  "text_encoder_target_name": []}))
    tes = [kohya_text_model_view(pipe.text_encoder), kohya_text_model_view(pipe.text_encoder_2)]
    torch.manual_seed(1)
    extra = {"conv_dim": 4, "conv_alpha": 2.0} if conv else {}
    net = create_network(1.0, 4, 2.0, pipe.vae, tes, pipe.unet, algo=algo, preset=str(preset), **extra)
    net.apply_to(tes, pipe.unet, apply_text_encoder=True, apply_unet=True)
    with torch.no_grad():  # a trained-looking network: non-zero up/second factors
        for name, p in net.named_parameters():
            if "lora_up" in name or "lokr_w2" in name:
                p.normal_(0, 0.05)
    return net, {k: v.detach().clone() for k, v in net.state_dict().items()}


def image(pipe):
    with torch.no_grad():
        return pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images


def module_names(state) -> set[str]:
    return {k.partition(".")[0] for k in state}


def check_loader_rules(state, pipe):
    """ComfyUI maps lora_unet_<diffusion_model name>; A1111 replaces lora_unet with diffusion_model and
    looks the module up: both need each UNet name to be an original-layout module with weights."""
    ldm = {k.removeprefix("model.diffusion_model.").rsplit(".", 1)[0].replace(".", "_")
           for k in single_file.to_single_file(pipe, "sdxl") if k.startswith("model.diffusion_model.")}
    names = module_names(state)
    unet = {n for n in names if n.startswith("lora_unet_")}
    assert unet and all(n.removeprefix("lora_unet_") in ldm for n in unet), sorted(
        n for n in unet if n.removeprefix("lora_unet_") not in ldm)[:5]
    te = names - unet
    assert {n[:8] for n in te} == {"lora_te1", "lora_te2"} and all(TE_KEY.match(n) for n in te), sorted(te)[:5]


def test_lora_file_loads_in_diffusers_and_matches_the_network(pipes):
    tmp, pipe, fresh = pipes
    net, state = make_network(pipe, tmp, "lora", conv=True)
    on_file = sdxl.lora_keys_to_file(state, pipe.unet)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in on_file
    assert "lora_unet_output_blocks_2_2_conv.lora_up.weight" in on_file  # SDXL's first upsampler
    assert "lora_unet_label_emb_0_0.alpha" in on_file and "lora_unet_input_blocks_0_0.alpha" in on_file
    assert not any("down_blocks" in k or "up_blocks" in k for k in on_file)
    check_loader_rules(on_file, pipe)
    path = tmp / "xl-lora.safetensors"
    save_file(on_file, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0",
                                            "ss_network_module": "lycoris.kohya", "ss_network_dim": "4",
                                            "ss_network_alpha": "2.0", "ss_network_args": '{"algo": "lora"}'})
    with_network = image(pipe)
    base = image(fresh)
    fresh.load_lora_weights(str(path))
    loaded = image(fresh)
    fresh.unload_lora_weights()
    assert (loaded - base).abs().max() > 1e-3  # the LoRA changes the image
    assert torch.allclose(loaded, with_network, atol=1e-4)  # …exactly as the trained network does
    back = sdxl.lora_keys_from_file(on_file, pipe.unet)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    det = detect.detect(path)
    assert (det.kind, det.family) == ("lora", "sdxl")
    info = inspect.inspect_file(path)
    assert info.lora.rank == 4 and info.lora.algo == "lora" and info.lora.base_model == "sdxl_base_v1-0"


def test_lokr_keys_follow_the_same_rules(pipes):
    tmp, _, _ = pipes
    pipe = tiny_sdxl_pipeline(tmp / "c")
    _, state = make_network(pipe, tmp, "lokr", conv=False)
    on_file = sdxl.lora_keys_to_file(state, pipe.unet)
    assert any(k.endswith(".lokr_w1") for k in on_file)
    check_loader_rules(on_file, pipe)
    assert detect.classify({k: detect.TensorInfo("F16", tuple(v.shape)) for k, v in on_file.items()}).family == "sdxl"


def test_sd15_lora_refused_for_sdxl(tmp_path):
    sd15 = tmp_path / "sd15.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32)},
              str(sd15), metadata={"ss_base_model_version": "sd_v1"})
    with pytest.raises(ModelError, match=r"network.network_weights: .*SD 1.x LoRA .*model is SDXL base"):
        inspect.check_lora_for_model(sd15, "sdxl")
    assert inspect.check_lora_for_model(sd15, "sd15").family == "sd15"
    unmarked = tmp_path / "unmarked.safetensors"  # no metadata: the key names tell
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(unmarked))
    with pytest.raises(ModelError, match="SD 1.x LoRA"):
        inspect.check_lora_for_model(unmarked, "sdxl")
