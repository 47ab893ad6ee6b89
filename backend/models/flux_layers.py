"""Flux.1's layers with their shapes, read from its config JSON alone (no torch): the FAMILY_MODULES entry
of backend.models.layers for model.family = "flux".

The transformer is diffusers' FluxTransformer2DModel (`transformer/config.json`): the time/guidance/text
embedders, the input embedders, `num_layers` double-stream blocks (FluxTransformerBlock), then
`num_single_layers` single-stream blocks (FluxSingleTransformerBlock), then norm_out and proj_out. The text
encoder LyCORIS may adapt is CLIP-L (`text_encoder/config.json`); T5 never trains (FluxFamily
network_text_encoders). tests/test_preflight_layers.py checks these lists against the real modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.models.layers import (
    SHIPPED_CONFIGS,
    ConfigMalformed,
    ModelModules,
    Module,
    ShapesUnknown,
    _Tree,
    clip_text_modules,
    own_config_folder,
    read_json,
)

TIME_PROJECTION = 256   # diffusers Timesteps(num_channels=256) feeds the time and guidance embedders
MLP_RATIO = 4           # FluxTransformerBlock's FeedForward and the single blocks' proj_mlp: 4 × width


def _int(cfg: dict[str, Any], key: str, default: int, least: int = 1) -> int:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        # diffusers cannot build this transformer either: reported against model.path, as for the UNet
        raise ConfigMalformed(f"transformer config {key} = {value!r}: a whole number of at least {least} is needed")
    return value


def transformer_modules(cfg: dict[str, Any]) -> list[Module]:
    """diffusers FluxTransformer2DModel (FLUX.1 [dev], [schnell] and the tiny demo) from its config.json."""
    heads, head = _int(cfg, "num_attention_heads", 24), _int(cfg, "attention_head_dim", 128)
    dim = heads * head
    in_ch = _int(cfg, "in_channels", 64)
    out_ch = _int(cfg, "out_channels", in_ch)
    patch = _int(cfg, "patch_size", 1)
    mlp = dim * MLP_RATIO
    t = _Tree()
    guidance = bool(cfg.get("guidance_embeds", False))
    t.box("time_text_embed", "CombinedTimestepGuidanceTextProjEmbeddings" if guidance
          else "CombinedTimestepTextProjEmbeddings")
    for name in ("timestep_embedder", "guidance_embedder") if guidance else ("timestep_embedder",):
        t.box(f"time_text_embed.{name}", "TimestepEmbedding")
        t.linear(f"time_text_embed.{name}.linear_1", TIME_PROJECTION, dim)
        t.linear(f"time_text_embed.{name}.linear_2", dim, dim)
    t.box("time_text_embed.text_embedder", "PixArtAlphaTextProjection")
    t.linear("time_text_embed.text_embedder.linear_1", _int(cfg, "pooled_projection_dim", 768), dim)
    t.linear("time_text_embed.text_embedder.linear_2", dim, dim)
    t.linear("context_embedder", _int(cfg, "joint_attention_dim", 4096), dim)
    t.linear("x_embedder", in_ch, dim)

    def modulation(path: str, cls: str, chunks: int) -> None:
        """AdaLayerNormZero(Single)/Continuous: a SiLU-Linear making `chunks` vectors, a LayerNorm without weights."""
        t.box(path, cls)
        t.linear(f"{path}.linear", dim, chunks * dim)
        t.norm(f"{path}.norm", "LayerNorm", dim)

    def attention(path: str, joint: bool) -> None:
        t.box(path, "FluxAttention")
        for side in ("", "added_") if joint else ("",):
            t.norm(f"{path}.norm_{side}q", "RMSNorm", head)
            t.norm(f"{path}.norm_{side}k", "RMSNorm", head)
        for name in ("to_q", "to_k", "to_v"):
            t.linear(f"{path}.{name}", dim, dim)
        if joint:  # the double blocks' attention also projects the text stream, and both outputs
            t.linear(f"{path}.to_out.0", dim, dim)
            for name in ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
                t.linear(f"{path}.{name}", dim, dim)

    def feed_forward(path: str) -> None:
        t.box(path, "FeedForward")
        t.linear(f"{path}.net.0.proj", dim, mlp)
        t.linear(f"{path}.net.2", mlp, dim)

    for i in range(_int(cfg, "num_layers", 19, least=0)):
        b = f"transformer_blocks.{i}"
        t.box(b, "FluxTransformerBlock")
        modulation(f"{b}.norm1", "AdaLayerNormZero", 6)
        modulation(f"{b}.norm1_context", "AdaLayerNormZero", 6)
        attention(f"{b}.attn", joint=True)
        t.norm(f"{b}.norm2", "LayerNorm", dim)
        feed_forward(f"{b}.ff")
        t.norm(f"{b}.norm2_context", "LayerNorm", dim)
        feed_forward(f"{b}.ff_context")
    for i in range(_int(cfg, "num_single_layers", 38, least=0)):
        b = f"single_transformer_blocks.{i}"
        t.box(b, "FluxSingleTransformerBlock")
        modulation(f"{b}.norm", "AdaLayerNormZeroSingle", 3)
        t.linear(f"{b}.proj_mlp", dim, mlp)
        t.linear(f"{b}.proj_out", dim + mlp, dim)   # attention output and MLP branch, concatenated
        attention(f"{b}.attn", joint=False)
    modulation("norm_out", "AdaLayerNormContinuous", 2)
    t.linear("proj_out", dim, patch * patch * out_ch)
    return t.modules


def flux_config_folder(model_path: Path) -> Path:
    """A diffusers folder itself, the `<stem>.config/` beside a BFL transformer file, else the shipped configs
    of the file's variant (flux-dev or flux-schnell), as FluxFamily.open resolves them."""
    from backend.errors import ModelError
    from backend.models import detect

    own = own_config_folder(model_path)
    if own is not None:
        return own
    try:
        variant = detect.detect(model_path).variant
    except ModelError as err:
        raise ShapesUnknown(str(err)) from None
    if variant not in ("dev", "schnell"):
        raise ShapesUnknown(f"{model_path}: not a Flux.1 [dev] or [schnell] transformer")
    return SHIPPED_CONFIGS / f"flux-{variant}"


def flux_modules(model_path: Path, family: str = "flux") -> ModelModules:
    """The transformer's modules and CLIP-L's, with FluxFamily.lora_targets."""
    from backend.models.flux import FluxFamily

    folder = flux_config_folder(model_path)
    transformer = transformer_modules(read_json(folder / "transformer" / "config.json"))
    clip = clip_text_modules(read_json(folder / "text_encoder" / "config.json"))
    return ModelModules(transformer, [clip], FluxFamily().lora_targets)
