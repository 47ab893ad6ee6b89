"""The torch-free description of a model's layers (backend.models.layers) is the model: every Linear,
Conv2d, norm and adapter-target container of real-architecture UNets and CLIP text encoders built from
the shipped SD 1.5 / SD 2 / SDXL configs and the demo configs, with the same paths, classes and shapes."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from backend.models import layers
from backend.models.loading import kohya_text_model_view
from tests._preflight_fixtures import architecture_configs

KEPT = {"Linear", "Conv2d", "LayerNorm", "GroupNorm", "Attention", "Transformer2DModel", "ResnetBlock2D",
        "Downsample2D", "Upsample2D", "CLIPAttention", "CLIPMLP", "TimestepEmbedding"}


def real_modules(root: torch.nn.Module) -> set[tuple]:
    out = set()
    for path, m in root.named_modules():
        cls = type(m).__name__
        if cls not in KEPT:
            continue
        if cls == "Linear":
            out.add((path, cls, m.out_features, m.in_features, 0))
        elif cls == "Conv2d":
            out.add((path, cls, m.out_channels, m.in_channels, m.kernel_size[0]))
        elif cls == "LayerNorm":
            out.add((path, cls, m.normalized_shape[0], 0, 0))
        elif cls == "GroupNorm":
            out.add((path, cls, m.num_channels, 0, 0))
        else:
            out.add((path, cls, 0, 0, 0))
    return out


def described(modules: list[layers.Module]) -> set[tuple]:
    return {(m.path, m.cls, m.out, m.inp, m.kernel) for m in modules if m.cls in KEPT}


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
