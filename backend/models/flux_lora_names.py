"""Where each adapter of a diffusers Flux transformer lives in the original (BFL) Flux checkpoint.

LyCORIS names an adapter after the diffusers module it wraps (`lora_unet_transformer_blocks_0_attn_to_q`);
sd-scripts, ComfyUI and Forge name it after the BFL module (`lora_unet_double_blocks_0_img_attn_qkv`).
Three BFL projections hold several diffusers ones stacked along their output rows:

    double_blocks.N.img_attn.qkv  = [to_q; to_k; to_v]                    (hidden rows each)
    double_blocks.N.txt_attn.qkv  = [add_q_proj; add_k_proj; add_v_proj]
    single_blocks.N.linear1       = [to_q; to_k; to_v; proj_mlp]         (hidden ×3, then 4 × hidden)

and final_layer.adaLN_modulation.1 is diffusers' norm_out.linear with its two output halves swapped
(BFL: shift, scale; diffusers: scale, shift). Facts from BFL's flux/model.py and diffusers'
convert_flux_transformer_checkpoint_to_diffusers; tests/test_flux_lora_keys.py checks this table against
that converter on the real Flux.1 architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from backend.errors import ModelError

UNET = "lora_unet_"
SPLIT = "lycoris_"   # a diffusers-named module in the file: ComfyUI maps it to its slice of the BFL weight
MLP_RATIO = 4        # FluxTransformerBlock / FluxSingleTransformerBlock: mlp hidden = 4 × hidden
# Flux.1 [dev] and [schnell]: what diffusers' FluxTransformer2DModel uses when its config does not say.
FLUX1_DEFAULTS = {"num_layers": 19, "num_single_layers": 38, "num_attention_heads": 24, "attention_head_dim": 128}


@dataclass(frozen=True)
class Part:
    """A diffusers projection stored as rows [offset, offset + size) of a fused BFL weight."""

    fused: str     # the BFL adapter name, e.g. lora_unet_double_blocks_0_img_attn_qkv
    index: int     # its position in the group
    offset: int
    size: int


@dataclass(frozen=True)
class FluxNames:
    renamed: dict[str, str]              # diffusers adapter name → BFL adapter name (one module each)
    parts: dict[str, Part]               # diffusers adapter name → its place in a fused BFL module
    groups: dict[str, tuple[str, ...]]   # fused BFL adapter name → its diffusers parts, in row order
    sizes: dict[str, tuple[int, ...]]    # fused BFL adapter name → the rows of each part
    diffusers_named: frozenset[str]      # adapters with no BFL weight of their own that ComfyUI keys
    swapped: frozenset[str]              # diffusers adapters whose output halves BFL stores swapped

    def bfl_to_diffusers(self) -> dict[str, str]:
        return {bfl: diffusers for diffusers, bfl in self.renamed.items()}


def lora_name(path: str) -> str:
    """The adapter name LyCORIS and sd-scripts give a module path (kohya: dots become underscores)."""
    return UNET + path.replace(".", "_")


def dims(config: Any) -> tuple[int, int, int]:
    """(double blocks, single blocks, hidden size) from a FluxTransformer2DModel config (a mapping, or
    an object with those attributes)."""
    def get(key: str) -> Any:
        value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
        return FLUX1_DEFAULTS[key] if value is None else value

    try:
        return (int(get("num_layers")), int(get("num_single_layers")),
                int(get("num_attention_heads")) * int(get("attention_head_dim")))
    except (TypeError, ValueError) as err:
        raise ModelError(f"not a Flux transformer config ({err}): expected num_layers, num_single_layers, "
                         "num_attention_heads and attention_head_dim") from None


def flux_names(config: Any) -> FluxNames:
    return _names(*dims(config))


@lru_cache(maxsize=8)
def _names(num_layers: int, num_single_layers: int, hidden: int) -> FluxNames:
    renamed: dict[str, str] = {}
    groups: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, tuple[int, ...]] = {}
    diffusers_named: set[str] = set()
    qkv = (hidden, hidden, hidden)

    def one(diffusers: str, bfl: str) -> None:
        renamed[lora_name(diffusers)] = lora_name(bfl)

    def group(bfl: str, parts: list[str], rows: tuple[int, ...]) -> None:
        groups[lora_name(bfl)] = tuple(lora_name(p) for p in parts)
        sizes[lora_name(bfl)] = rows

    for i in range(num_layers):
        d, b = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for stream, ctx in (("img", ""), ("txt", "_context")):
            one(f"{d}.norm1{ctx}.linear", f"{b}.{stream}_mod.lin")
            one(f"{d}.ff{ctx}.net.0.proj", f"{b}.{stream}_mlp.0")
            one(f"{d}.ff{ctx}.net.2", f"{b}.{stream}_mlp.2")
        one(f"{d}.attn.to_out.0", f"{b}.img_attn.proj")
        one(f"{d}.attn.to_add_out", f"{b}.txt_attn.proj")
        group(f"{b}.img_attn.qkv", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"], qkv)
        group(f"{b}.txt_attn.qkv", [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"], qkv)
        # q/k RMSNorms: BFL calls their weight `scale`, which ComfyUI keys only by the diffusers name
        diffusers_named.update(lora_name(f"{d}.attn.{n}") for n in ("norm_q", "norm_k", "norm_added_q",
                                                                       "norm_added_k"))
    for i in range(num_single_layers):
        d, b = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        one(f"{d}.norm.linear", f"{b}.modulation.lin")
        one(f"{d}.proj_out", f"{b}.linear2")
        group(f"{b}.linear1", [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"],
              qkv + (MLP_RATIO * hidden,))
        diffusers_named.update(lora_name(f"{d}.attn.{n}") for n in ("norm_q", "norm_k"))
    for diffusers, bfl in (("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                           ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                           ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                           ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                           ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                           ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                           ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                           ("norm_out.linear", "final_layer.adaLN_modulation.1"),
                           ("proj_out", "final_layer.linear")):
        one(diffusers, bfl)
    parts = {}
    for fused, members in groups.items():
        offset = 0
        for index, (member, size) in enumerate(zip(members, sizes[fused], strict=True)):
            parts[member] = Part(fused, index, offset, size)
            offset += size
    return FluxNames(renamed, parts, groups, sizes, frozenset(diffusers_named),
                     frozenset({lora_name("norm_out.linear")}))
