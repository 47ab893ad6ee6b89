"""Names of the original (LDM/SGM, "single-file") layout for diffusers modules, and the reverse.

Used three ways: writing a diffusers pipeline as one original-layout checkpoint (what A1111, ComfyUI and
`from_single_file` read), naming SDXL LoRA modules the way sd-scripts does (`input_blocks_4_1_…`),
and reading such names back. The tables follow the block arithmetic of the original UNet
(`ldm/modules/diffusionmodules/openaimodel.py`): input block k = (layers+1)·level + layer + 1, the
downsampler closes each level; output blocks have layers+1 entries per level; the forward direction is
diffusers' `convert_ldm_unet_checkpoint`/`convert_ldm_vae_checkpoint`/`convert_open_clip_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from backend.errors import ModelError

if TYPE_CHECKING:
    import torch  # imported where tensors are joined: preflight maps LoRA names with this module, torch-free

_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
           ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
           ("conv_shortcut.", "skip_connection."))
_VAE_RESNET = (("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."), ("conv2.", "conv2."),
               ("conv_shortcut.", "nin_shortcut."))
_VAE_ATTN = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
             ("to_out.0.", "proj_out."))

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = {"sd15": "cond_stage_model.transformer.text_model.",
               "sdxl": "conditioner.embedders.0.transformer.text_model."}
OPEN_CLIP_PREFIX = {"sd2": "cond_stage_model.model.", "sdxl": "conditioner.embedders.1.model."}


def _layers(config: Mapping) -> int:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        if len(set(layers)) != 1:
            raise ModelError(f"UNet with different layers per block ({layers}) has no original-layout names")
        layers = layers[0]
    return layers


def unet_prefix_table(config: Mapping) -> dict[str, str]:
    """diffusers UNet module prefix (with trailing dot) → original-layout prefix, for `config`
    (a UNet2DConditionModel config: block_out_channels, layers_per_block, down/up_block_types)."""
    n = len(config["block_out_channels"])
    per = _layers(config) + 1
    table = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
             "mid_block.attentions.0.": "middle_block.1."}

    def resnet(hf: str, sd: str) -> None:
        for a, b in _RESNET:
            table[hf + a] = sd + b

    for i in range(n):
        for j in range(per - 1):
            k = per * i + j + 1
            resnet(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0.")
            table[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{k}.1."
        if i < n - 1:
            table[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{per * (i + 1)}.0.op."
        for j in range(per):
            k = per * i + j
            resnet(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0.")
            table[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{k}.1."
        if i < n - 1:
            has_attn = "CrossAttn" in config["up_block_types"][i]
            table[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{per * i + per - 1}.{2 if has_attn else 1}."
    resnet("mid_block.resnets.0.", "middle_block.0.")
    resnet("mid_block.resnets.1.", "middle_block.2.")
    return table


def vae_prefix_table(config: Mapping) -> dict[str, str]:
    """diffusers AutoencoderKL prefix → original-layout prefix (`encoder.down.0.block.0.` …)."""
    n = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    table = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}

    def resnet(hf: str, sd: str) -> None:
        for a, b in _VAE_RESNET:
            table[hf + a] = sd + b

    for i in range(n):
        for j in range(layers):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.")
        if i < n - 1:
            table[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = f"encoder.down.{i}.downsample.conv."
        for j in range(layers + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}.")
        if i < n - 1:
            table[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = f"decoder.up.{n - 1 - i}.upsample.conv."
    for part in ("encoder", "decoder"):
        resnet(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
        resnet(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
        for a, b in _VAE_ATTN:
            table[f"{part}.mid_block.attentions.0.{a}"] = f"{part}.mid.attn_1.{b}"
    return table


def rename(key: str, table: Mapping[str, str]) -> str:
    """`key` with its longest prefix found in `table` replaced; unchanged when none matches."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut]) + "."
        if prefix in table:
            return table[prefix] + key[len(prefix):]
    return key


def module_to_ldm(module_path: str, table: Mapping[str, str]) -> str:
    """A diffusers module path (`down_blocks.1.attentions.0.proj_in`) in original-layout names."""
    return rename(module_path + ".", table)[:-1]


def ldm_to_module(ldm_path: str, table: Mapping[str, str]) -> str:
    """The inverse of `module_to_ldm`."""
    return rename(ldm_path + ".", {v: k for k, v in table.items()})[:-1]


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    table = unet_prefix_table(config)
    return {UNET_PREFIX + rename(k, table): v for k, v in state.items()}


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    table = vae_prefix_table(config)
    out = {}
    for k, v in state.items():
        name = rename(k, table)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original attention uses 1×1 convolutions
        out[VAE_PREFIX + name] = v
    return out


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel state dict (flattened in transformers 5 or not) under `prefix`."""
    return {prefix + k.removeprefix("text_model."): v for k, v in state.items()
            if not k.endswith("position_ids")}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModel(WithProjection) in OpenCLIP names: fused in_proj, `resblocks`, `ln_final`,
    `text_projection` transposed (diffusers' `convert_open_clip_checkpoint`, reversed)."""
    flat = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": flat.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": flat.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": flat.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": flat.pop("final_layer_norm.bias")}
    if "text_projection.weight" in flat:
        out[prefix + "text_projection"] = flat.pop("text_projection.weight").T.contiguous()
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".layers.")
        if head != "encoder":
            raise ModelError(f"unexpected text-encoder weight {key!r}")
        idx, _, name = rest.partition(".")
        base = f"{prefix}transformer.resblocks.{idx}."
        if name.startswith("self_attn.") and name.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            proj, kind = name.split(".")[1:]
            fused.setdefault(f"{base}attn.in_proj_{kind}", {})[proj] = value
            continue
        name = (name.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
        out[base + name] = value
    import torch

    for key, parts in fused.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out
