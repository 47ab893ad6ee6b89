"""The torch-free description of a model's layers (backend.models.layers, backend.models.flux_layers) is the
model: every Linear, Conv2d, norm and adapter-target container of real-architecture UNets, Flux transformers
and CLIP text encoders built from the shipped SD 1.5 / SD 2 / SDXL / FLUX.1 [dev] / [schnell] configs and
the demo configs, with the same paths, classes and shapes."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from backend.models import flux_layers, layers
from backend.models.loading import kohya_text_model_view
from tests._preflight_fixtures import architecture_configs, flux_stub

KEPT = {"Linear", "Conv2d", "LayerNorm", "GroupNorm", "Attention", "Transformer2DModel", "ResnetBlock2D",
        "Downsample2D", "Upsample2D", "CLIPAttention", "CLIPMLP", "TimestepEmbedding"}


def real_modules(root: torch.nn.Module, kept: set[str] = KEPT) -> set[tuple]:
    out = set()
    for path, m in root.named_modules():
        cls = type(m).__name__
        if cls not in kept:
            continue
        if cls == "Linear":
            out.add((path, cls, m.out_features, m.in_features, 0))
        elif cls == "Conv2d":
            out.add((path, cls, m.out_channels, m.in_channels, m.kernel_size[0]))
        elif cls in ("LayerNorm", "RMSNorm"):
            out.add((path, cls, m.normalized_shape[0], 0, 0))
        elif cls == "GroupNorm":
            out.add((path, cls, m.num_channels, 0, 0))
        else:
            out.add((path, cls, 0, 0, 0))
    return out


def described(modules: list[layers.Module], kept: set[str] = KEPT) -> set[tuple]:
    return {(m.path, m.cls, m.out, m.inp, m.kernel) for m in modules if m.cls in kept}


@pytest.mark.parametrize("name", ["sd15", "sdxl", "demo-sd15", "demo-sdxl"])
def test_layers_from_the_configs_are_the_models_layers(name):
    _, configs = architecture_configs(name)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        assert described(layers.unet_modules(configs["unet"])) == real_modules(unet)
        for part, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if part not in configs:
                continue
            enc = cls(CLIPTextConfig(**{k: v for k, v in configs[part].items() if not k.startswith("_")}))
            real = {m for m in real_modules(kohya_text_model_view(enc)) if m[0].startswith("text_model.encoder.")}
            assert described(layers.clip_text_modules(configs[part])) == real


def test_sd2_unet_and_unknown_architectures():
    import json

    cfg = json.loads((layers.SHIPPED_CONFIGS / "sd2" / "unet" / "config.json").read_text())
    with torch.device("meta"):
        assert described(layers.unet_modules(cfg)) == real_modules(UNet2DConditionModel.from_config(cfg))
    with pytest.raises(layers.ShapesUnknown, match="class_embed_type"):
        layers.unet_modules({**cfg, "class_embed_type": "timestep"})
    with pytest.raises(layers.ShapesUnknown, match="down block type"):
        layers.unet_modules({**cfg, "down_block_types": ["SimpleCrossAttnDownBlock2D"] * 4})


def _every_class_that_can_be_wrapped(root: torch.nn.Module, described_classes: set[str]) -> set[str]:
    """The classes compared for Flux: the ones described, and every class of the model LyCORIS could wrap
    itself (linear and conv layers; with train_norm, anything whose class name says Norm), so that a layer
    missing from the description fails the comparison."""
    wrappable = {type(m).__name__ for _, m in root.named_modules()
                 if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) or "Norm" in type(m).__name__}
    return described_classes | wrappable


@pytest.mark.parametrize("name", ["flux-dev", "flux-schnell", "demo-flux"])
def test_flux_layers_from_the_configs_are_the_models_layers(name):
    from diffusers import FluxTransformer2DModel

    _, configs = architecture_configs(name)
    mine = flux_layers.transformer_modules(configs["transformer"])
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(configs["transformer"])
        kept = _every_class_that_can_be_wrapped(model, {m.cls for m in mine})
        assert described(mine, kept) == real_modules(model, kept)
        clip = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in configs["text_encoder"].items()
                                               if not k.startswith("_")}))
        real = {m for m in real_modules(kohya_text_model_view(clip)) if m[0].startswith("text_model.encoder.")}
        assert described(layers.clip_text_modules(configs["text_encoder"])) == real
    # the classes FluxFamily.lora_targets names are there
    assert {"FluxAttention", "FluxTransformerBlock", "FluxSingleTransformerBlock"} <= {m.cls for m in mine}
    names = {m.path for m in mine}
    assert ("time_text_embed.guidance_embedder.linear_1" in names) == configs["transformer"]["guidance_embeds"]


def test_flux_model_paths_find_their_configs(tmp_path):
    """A diffusers folder is read itself; a BFL transformer file through the shipped configs of its variant;
    the family's registry entry gives CLIP-L only (T5 never trains) and FluxFamily's targets."""
    from backend.models.flux import FluxFamily

    dev, schnell = flux_stub(tmp_path, "flux-dev"), flux_stub(tmp_path, "flux-schnell")
    demo = flux_stub(tmp_path, "demo-flux")
    for section, folder in ((dev, layers.SHIPPED_CONFIGS / "flux-dev"),
                            (schnell, layers.SHIPPED_CONFIGS / "flux-schnell"), (demo, tmp_path / "demo-flux")):
        assert flux_layers.flux_config_folder(section["path"]) == folder
    model = layers.family_modules(dev["path"], "flux")
    assert len(model.text_encoders) == 1 and len(model.text_encoders[0]) == len(layers.clip_text_modules(
        architecture_configs("flux-dev")[1]["text_encoder"]))
    assert model.targets("all", True) == FluxFamily().lora_targets("all", True)
    small = layers.family_modules(demo["path"], "flux").unet
    assert max(m.out for m in small) < 1024 < max(m.out for m in model.unet)
    with pytest.raises(layers.ShapesUnknown):
        flux_layers.flux_config_folder(dev["clip_l_path"])          # a CLIP file is no transformer
    with pytest.raises(layers.ShapesUnknown, match="num_layers"):
        flux_layers.transformer_modules({"num_layers": "19"})
