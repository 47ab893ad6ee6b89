"""The layers of a model, with their shapes, read from its config JSON alone (no torch, no weights).

`backend.preflight` needs to know which layers LyCORIS will wrap and how large they are, in the UI
process, which never imports torch. The diffusers configs say it all: `unet/config.json` of a diffusers
folder, the `<stem>.config/` folder beside a single file, or the shipped configs of the family
(backend/models/configs). The module paths and class names below are diffusers' and transformers'
(UNet2DConditionModel, CLIPTextModel; Flux's FluxTransformer2DModel in backend.models.flux_layers);
tests/test_preflight_layers.py checks them against the modules of real-architecture models built on fake
tensors.

Each family contributes one function in FAMILY_MODULES: (model path, family) → ModelModules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from backend.models.base import LoraTargets, unet_lora_targets

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"

# family → "module:function" taking the model path and returning its ModelModules.
FAMILY_MODULES: dict[str, str] = {
    "sd15": "backend.models.layers:sd_modules",
    "sdxl": "backend.models.layers:sd_modules",
    "flux": "backend.models.flux_layers:flux_modules",
}


class ShapesUnknown(Exception):
    """The config uses an architecture feature this module does not describe: shapes are not known."""


class ConfigMalformed(ShapesUnknown):
    """A value of the config has the wrong type or range: diffusers cannot build this model either, so
    preflight reports it against model.path instead of leaving it to the worker."""


@dataclass(frozen=True)
class Module:
    """One module of a model: a container (cls only) or a leaf layer with its shape."""

    path: str            # as named_modules() names it, e.g. "down_blocks.0.attentions.0.proj_in"
    cls: str             # the class name: "Linear", "Conv2d", "LayerNorm", "GroupNorm" or a container's
    out: int = 0         # out_features / out_channels / normalized size
    inp: int = 0         # in_features / in_channels
    kernel: int = 0      # conv kernel side (1 for 1×1); 0 for the others

    @property
    def is_conv(self) -> bool:
        return self.cls == "Conv2d"


@dataclass
class ModelModules:
    """The denoiser's modules, each text encoder's (under the `text_model.` view LyCORIS is given), and
    the family's `lora_targets(target, conv)` (the same function its ModelFamily uses)."""

    unet: list[Module]
    text_encoders: list[list[Module]]
    targets: Callable[[str, bool], LoraTargets]


class _Tree:
    def __init__(self) -> None:
        self.modules: list[Module] = []

    def box(self, path: str, cls: str) -> None:
        self.modules.append(Module(path, cls))

    def linear(self, path: str, inp: int, out: int) -> None:
        self.modules.append(Module(path, "Linear", out, inp))

    def conv(self, path: str, inp: int, out: int, kernel: int) -> None:
        self.modules.append(Module(path, "Conv2d", out, inp, kernel))

    def norm(self, path: str, cls: str, size: int) -> None:
        self.modules.append(Module(path, cls, size))


def _count(value: Any, name: str, least: int = 1) -> int:
    """`value` as a whole number of at least `least` (a bool or "2" would fail in diffusers, 0 heads
    divides by zero here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigMalformed(f"unet config {name} = {value!r}: a whole number of at least {least} is needed")
    return value


def _int(cfg: dict[str, Any], key: str, default: int, least: int = 1) -> int:
    return _count(cfg.get(key, default), key, least)


def _list(value: Any, name: str, kind: type) -> list[Any]:
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) for v in value):
        raise ConfigMalformed(f"unet config {name} = {value!r}: a list of {kind.__name__} values is needed")
    return value


def _per_block(value: Any, n: int, name: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ShapesUnknown(f"{name} has {len(value)} entries for {n} blocks")
        return list(value)
    return [value] * n


def _counts_per_block(cfg: dict[str, Any], key: str, default: int, n: int) -> list[int]:
    return [_count(v, key) for v in _per_block(cfg.get(key, default), n, key)]


# UNet2DConditionModel options this description covers, with the values it assumes.
_ASSUMED = {"time_embedding_type": "positional", "class_embed_type": None, "encoder_hid_dim": None,
            "encoder_hid_dim_type": None, "dual_cross_attention": False, "attention_type": "default",
            "class_embeddings_concat": False, "time_cond_proj_dim": None, "num_attention_heads": None,
            "conv_shortcut": False}


def unet_modules(cfg: dict[str, Any]) -> list[Module]:
    """diffusers UNet2DConditionModel (SD 1.x/2.x, SDXL and the tiny demos) from its config.json."""
    for key, value in _ASSUMED.items():
        if cfg.get(key, value) != value:
            raise ShapesUnknown(f"unet config {key} = {cfg.get(key)!r}")
    down_types = _list(cfg.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]),
                       "down_block_types", str)
    up_types = _list(cfg.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3), "up_block_types", str)
    channels = [_count(c, "block_out_channels")
                for c in _list(cfg.get("block_out_channels", [320, 640, 1280, 1280]), "block_out_channels", int)]
    n = len(down_types)
    if len(channels) != n or len(up_types) != n:
        raise ShapesUnknown("block_out_channels, down_block_types and up_block_types differ in length")
    heads = _counts_per_block(cfg, "attention_head_dim", 8, n)
    cross = _counts_per_block(cfg, "cross_attention_dim", 1280, n)
    layers = _counts_per_block(cfg, "layers_per_block", 2, n)
    depth = _counts_per_block(cfg, "transformer_layers_per_block", 1, n)
    only_cross = _per_block(cfg.get("only_cross_attention", False), n, "only_cross_attention")
    if not all(isinstance(v, bool) for v in only_cross):
        raise ConfigMalformed(f"unet config only_cross_attention = {cfg.get('only_cross_attention')!r}: true/false "
                              "(or a list of them) is needed")
    mid_only_cross = cfg.get("mid_block_only_cross_attention")
    if mid_only_cross is None:
        mid_only_cross = only_cross[0] if isinstance(cfg.get("only_cross_attention", False), bool) else False
    linear_proj = bool(cfg.get("use_linear_projection", False))
    scale_shift = cfg.get("resnet_time_scale_shift", "default") == "scale_shift"
    t = _Tree()
    c0 = channels[0]
    t.conv("conv_in", _int(cfg, "in_channels", 4), c0, _int(cfg, "conv_in_kernel", 3))
    temb = c0 * 4 if cfg.get("time_embedding_dim") is None else _int(cfg, "time_embedding_dim", 0)
    t.box("time_embedding", "TimestepEmbedding")
    t.linear("time_embedding.linear_1", c0, temb)
    t.linear("time_embedding.linear_2", temb, temb)
    add = cfg.get("addition_embed_type")
    if add == "text_time":
        proj_in = _int(cfg, "projection_class_embeddings_input_dim", 0)
        t.box("add_embedding", "TimestepEmbedding")
        t.linear("add_embedding.linear_1", proj_in, temb)
        t.linear("add_embedding.linear_2", temb, temb)
    elif add is not None:
        raise ShapesUnknown(f"unet config addition_embed_type = {add!r}")

    def resnet(path: str, inp: int, out: int) -> None:
        t.box(path, "ResnetBlock2D")
        t.norm(f"{path}.norm1", "GroupNorm", inp)
        t.conv(f"{path}.conv1", inp, out, 3)
        t.linear(f"{path}.time_emb_proj", temb, out * 2 if scale_shift else out)
        t.norm(f"{path}.norm2", "GroupNorm", out)
        t.conv(f"{path}.conv2", out, out, 3)
        if inp != out:
            t.conv(f"{path}.conv_shortcut", inp, out, 1)

    def transformer(path: str, ch: int, n_heads: int, n_layers: int, ctx_dim: int, only: bool) -> None:
        inner = (ch // n_heads) * n_heads
        t.box(path, "Transformer2DModel")
        t.norm(f"{path}.norm", "GroupNorm", ch)
        (t.linear if linear_proj else lambda p, i, o: t.conv(p, i, o, 1))(f"{path}.proj_in", ch, inner)
        for k in range(n_layers):
            b = f"{path}.transformer_blocks.{k}"
            t.box(b, "BasicTransformerBlock")
            t.norm(f"{b}.norm1", "LayerNorm", inner)
            attention(f"{b}.attn1", inner, ctx_dim if only else inner)
            t.norm(f"{b}.norm2", "LayerNorm", inner)
            attention(f"{b}.attn2", inner, ctx_dim)
            t.norm(f"{b}.norm3", "LayerNorm", inner)
            t.box(f"{b}.ff", "FeedForward")
            t.box(f"{b}.ff.net.0", "GEGLU")
            t.linear(f"{b}.ff.net.0.proj", inner, inner * 8)
            t.linear(f"{b}.ff.net.2", inner * 4, inner)
        (t.linear if linear_proj else lambda p, i, o: t.conv(p, i, o, 1))(f"{path}.proj_out", inner, ch)

    def attention(path: str, dim: int, ctx_dim: int) -> None:
        t.box(path, "Attention")
        t.linear(f"{path}.to_q", dim, dim)
        t.linear(f"{path}.to_k", ctx_dim, dim)
        t.linear(f"{path}.to_v", ctx_dim, dim)
        t.linear(f"{path}.to_out.0", dim, dim)

    out_ch = c0
    for i, kind in enumerate(down_types):
        inp, out_ch = out_ch, channels[i]
        if kind not in ("CrossAttnDownBlock2D", "DownBlock2D"):
            raise ShapesUnknown(f"down block type {kind}")
        for j in range(layers[i]):
            resnet(f"down_blocks.{i}.resnets.{j}", inp if j == 0 else out_ch, out_ch)
            if kind == "CrossAttnDownBlock2D":
                transformer(f"down_blocks.{i}.attentions.{j}", out_ch, heads[i], depth[i], cross[i], only_cross[i])
        if i < n - 1:
            t.box(f"down_blocks.{i}.downsamplers.0", "Downsample2D")
            t.conv(f"down_blocks.{i}.downsamplers.0.conv", out_ch, out_ch, 3)
    mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid == "UNetMidBlock2DCrossAttn":
        ch = channels[-1]
        resnet("mid_block.resnets.0", ch, ch)
        transformer("mid_block.attentions.0", ch, heads[-1], depth[-1], cross[-1], bool(mid_only_cross))
        resnet("mid_block.resnets.1", ch, ch)
    elif mid is not None:
        raise ShapesUnknown(f"mid block type {mid}")
    rev = channels[::-1]
    rev_heads, rev_cross, rev_layers = heads[::-1], cross[::-1], layers[::-1]
    rev_depth = cfg.get("reverse_transformer_layers_per_block") or depth[::-1]
    if not isinstance(rev_depth, list) or len(rev_depth) != n or not all(type(v) is int for v in rev_depth):
        # diffusers also takes a list per block (one depth per layer): not described here
        raise ShapesUnknown(f"unet config reverse_transformer_layers_per_block = {rev_depth!r}")
    rev_depth = [_count(v, "reverse_transformer_layers_per_block") for v in rev_depth]
    rev_only = only_cross[::-1]
    out_ch = rev[0]
    for i, kind in enumerate(up_types):
        prev, out_ch, inp = out_ch, rev[i], rev[min(i + 1, n - 1)]
        if kind not in ("CrossAttnUpBlock2D", "UpBlock2D"):
            raise ShapesUnknown(f"up block type {kind}")
        count = rev_layers[i] + 1
        for j in range(count):
            skip = inp if j == count - 1 else out_ch
            resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else out_ch) + skip, out_ch)
            if kind == "CrossAttnUpBlock2D":
                transformer(f"up_blocks.{i}.attentions.{j}", out_ch, rev_heads[i], rev_depth[i], rev_cross[i],
                            rev_only[i])
        if i < n - 1:
            t.box(f"up_blocks.{i}.upsamplers.0", "Upsample2D")
            t.conv(f"up_blocks.{i}.upsamplers.0.conv", out_ch, out_ch, 3)
    if cfg.get("norm_num_groups", 32) is not None:
        _int(cfg, "norm_num_groups", 32)
        t.norm("conv_norm_out", "GroupNorm", c0)
    t.conv("conv_out", c0, _int(cfg, "out_channels", 4), _int(cfg, "conv_out_kernel", 3))
    return t.modules


def clip_text_modules(cfg: dict[str, Any]) -> list[Module]:
    """transformers CLIPTextModel(WithProjection) layers as LyCORIS sees them: under `text_model.`."""
    try:
        width, inner, count = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as err:
        raise ShapesUnknown(f"text encoder config: {err}") from None
    t = _Tree()
    for i in range(count):
        layer = f"text_model.encoder.layers.{i}"
        t.box(f"{layer}.self_attn", "CLIPAttention")
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            t.linear(f"{layer}.self_attn.{name}", width, width)
        t.norm(f"{layer}.layer_norm1", "LayerNorm", width)
        t.box(f"{layer}.mlp", "CLIPMLP")
        t.linear(f"{layer}.mlp.fc1", width, inner)
        t.linear(f"{layer}.mlp.fc2", inner, width)
        t.norm(f"{layer}.layer_norm2", "LayerNorm", width)
    return t.modules


def own_config_folder(model_path: Path) -> Path | None:
    """The model's own diffusers configs: the folder itself, or the `<stem>.config/` folder beside a
    single file; None when a single file has none."""
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path
    side = model_path.with_name(model_path.stem + ".config")
    return side if (side / "model_index.json").is_file() else None


def config_folder(model_path: Path, family: str) -> Path:
    """Where a model's diffusers configs are: its own, else the configs shipped for the family
    (backend.models.single_file picks the same)."""
    return own_config_folder(model_path) or SHIPPED_CONFIGS / family


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ShapesUnknown(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise ShapesUnknown(f"{path}: not a JSON object")
    return data


# The stem/embedding linears `network.target = all` adds per family (backend.models.sdxl lora_targets;
# tests/test_preflight_layers.py checks the adapted layers against the families' real networks).
EXTRA_ALL_NAMES = {"sd15": (), "sdxl": ("add_embedding.linear_1", "add_embedding.linear_2")}


def sd_modules(model_path: Path, family: str) -> ModelModules:
    """SD 1.x and SDXL: the UNet, then text_encoder (and text_encoder_2 where the model has one)."""
    folder = config_folder(model_path, family)
    try:
        unet = unet_modules(read_json(folder / "unet" / "config.json"))
    except ConfigMalformed as err:
        raise ConfigMalformed(f"{folder / 'unet' / 'config.json'}: {err}") from None
    encoders = [clip_text_modules(read_json(folder / sub / "config.json"))
                for sub in ("text_encoder", "text_encoder_2") if (folder / sub / "config.json").is_file()]
    return ModelModules(unet, encoders, partial(unet_lora_targets, extra_all_names=EXTRA_ALL_NAMES[family]))


def family_modules(model_path: Path, family: str) -> ModelModules | None:
    """The ModelModules of `family`'s model at `model_path`, or None for a family without a lister."""
    import importlib

    spec = FAMILY_MODULES.get(family)
    if spec is None:
        return None
    module_name, _, func = spec.partition(":")
    return getattr(importlib.import_module(module_name), func)(Path(model_path), family)
