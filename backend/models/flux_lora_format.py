"""Flux LoRA files: LyCORIS's in-memory adapters on diffusers' FluxTransformer2DModel ↔ the kohya file.

In memory every adapter is named after the diffusers module it wraps (`lora_unet_transformer_blocks_0_
attn_to_q.lora_down.weight`). On disk we write what sd-scripts' flux_train_network.py writes and ComfyUI,
Forge and diffusers read: `lora_unet_` + the BFL module (`lora_unet_double_blocks_0_img_attn_qkv`,
`…_single_blocks_3_linear1`, `…_img_in`, `…_final_layer_linear`; see flux_lora_names.py). Text-encoder
keys (`lora_te1_…`, `lora_te3_…`) pass through unchanged.

Layout per algorithm (N = parts of the fused projection: 3 for qkv, 4 for linear1):

- LoRA/LoCon: q, k, v (and proj_mlp) become one adapter on the fused BFL weight: lora_down stacked
  ([N·r, in]), lora_up block-diagonal ([Σ out, N·r]), alpha × N, so alpha/rank and with it the update
  of every row is the same as before. sd-scripts' `split_qkv` writes the same stacking but keeps alpha,
  which weakens those layers to 1/N in every loader that scales by alpha/rank (kohya-ss/sd-scripts#2204).
  A part the network does not adapt (proj_mlp with target "attn") is a zero block. ComfyUI (alpha/rank
  of the fused adapter) and diffusers (its kohya converter spots the block-diagonal up and splits it
  back) both reproduce the update exactly.
- DoRA: its magnitude is per output row (LyCORIS wd_on_output), so dora_scale of the parts stacks
  exactly, and the fused layout is used when every part of the group is adapted. When one is not (single
  blocks with target "attn"), the fused magnitude would need that part's base-weight norms, which a file
  cannot get from a config: the group is then written split, as below. diffusers drops every
  dora_scale when it loads a Flux LoRA (it warns), so no DoRA file reproduces there.
- LoHa: fused like LoRA (hada_w1_a, hada_w2_a block-diagonal; hada_w1_b, hada_w2_b stacked; alpha × N):
  the Hadamard product of two block-row matrices is taken row block by row block, so it is exact too.
- full (native fine-tuning): diff and diff_b stacked along the rows.
- LoKr, IA³, GLoRA, Diag-OFT, BOFT, and any group whose parts differ in rank or alpha: a Kronecker
  product (or a per-module input scaling or rotation) of three projections is no single adapter of the
  fused one, so each part keeps its diffusers name under the prefix `lycoris_`
  (`lycoris_transformer_blocks_0_attn_to_q.lokr_w1`): ComfyUI's Flux key map (comfy/lora.py,
  model_lora_keys_unet, with comfy/utils.py flux_to_diffusers) sends each such name to its rows of the
  fused BFL weight, so the update is exact there. The same goes for norm_out.linear with those
  algorithms, which ComfyUI swaps back itself; and for the q/k RMSNorms, whose BFL weight (`scale`)
  ComfyUI keys only by the diffusers name.
- norm_out.linear → final_layer.adaLN_modulation.1: the output halves are swapped (lora_up rows,
  hada_w*_a rows, dora_scale, diff, diff_b).
- train_norm: Flux's LayerNorms have no weights (BFL and diffusers alike); LyCORIS 4.1.3 wraps them all
  the same and its forward then fails, so there is nothing to write.

Known loader limits (diffusers 0.42.1): its kohya Flux converter names the embedder and final-layer
adapters (img_in, txt_in, time_in, vector_in, guidance_in, final_layer) without the "transformer."
prefix its transformer loader filters on, so it drops them without a word, and it ignores final_layer
alphas; its single-block split assumes hidden size 3072 (Flux.1). ComfyUI loads all of them.
`from_file` reads our files back exactly, and also sd-scripts' own files (a fused adapter with a shared
lora_down becomes one adapter per part with that down and its rows of up: exact as well).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from backend.errors import ModelError
from backend.models.flux_lora_names import SPLIT, UNET, FluxNames, flux_names

LORA = ("lora_down.weight", "lora_up.weight")
LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
FULL = ("diff",)
# The parameters each fusable algorithm may have: (stacked along rank, block-diagonal, row-stacked).
FUSABLE = {
    "lora": (("lora_down.weight",), ("lora_up.weight",), ("dora_scale",)),
    "loha": (("hada_w1_b", "hada_w2_b"), ("hada_w1_a", "hada_w2_a"), ("dora_scale",)),
    "full": ((), (), ("diff", "diff_b")),
}
Params = dict[str, torch.Tensor]


def to_file(state: Mapping[str, torch.Tensor], transformer_config: Any) -> dict[str, torch.Tensor]:
    """The kohya Flux layout of a LyCORIS network's state dict (see the module docstring)."""
    names = flux_names(transformer_config)
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[int, tuple[str, Params]]] = {}
    for module, params in _modules(state, out).items():
        if module in names.parts:
            part = names.parts[module]
            pending.setdefault(part.fused, {})[part.index] = (module, params)
        elif module in names.swapped:
            fused = _kind(params) in FUSABLE
            target = names.renamed[module] if fused else SPLIT + module[len(UNET):]
            _put(out, target, _swap_halves(params) if fused else params)
        elif module in names.renamed:
            _put(out, names.renamed[module], params)
        elif module in names.diffusers_named:
            _put(out, SPLIT + module[len(UNET):], params)
        else:
            raise ModelError(f"LoRA module {module} is not part of a Flux transformer with this config")
    for fused, present in pending.items():
        merged = _fuse(fused, present, names)
        if merged is not None:
            _put(out, fused, merged)
        else:
            for module, params in present.values():
                _put(out, SPLIT + module[len(UNET):], params)
    return out


def from_file(state: Mapping[str, torch.Tensor], transformer_config: Any) -> dict[str, torch.Tensor]:
    """The inverse of `to_file`: the diffusers-named state LyCORIS loads (network_weights, samples)."""
    names = flux_names(transformer_config)
    back = names.bfl_to_diffusers()
    out: dict[str, torch.Tensor] = {}
    for module, params in _modules(state, out).items():
        if module.startswith(SPLIT):
            _put(out, UNET + module[len(SPLIT):], params)
        elif module in names.groups:
            for part, part_params in _unfuse(module, params, names):
                _put(out, part, part_params)
        elif module in back:
            diffusers = back[module]
            _put(out, diffusers, _swap_halves(params) if diffusers in names.swapped else params)
        else:
            _put(out, module, params)  # already diffusers-named (or not a transformer module)
    return out


# --- writing ------------------------------------------------------------------------------------------------
def _fuse(fused: str, present: dict[int, tuple[str, Params]], names: FluxNames) -> Params | None:
    """One adapter on the fused BFL weight with the same update as the parts, or None when none exists."""
    sizes = names.sizes[fused]
    parts = {i: params for i, (_, params) in present.items()}
    kinds = {_kind(p) for p in parts.values()}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind not in FUSABLE:
        return None
    rank_keys, diagonal_keys, row_keys = FUSABLE[kind]
    keys = set(rank_keys + diagonal_keys + row_keys + ("alpha",))
    if any(set(p) - keys for p in parts.values()) or len({frozenset(p) for p in parts.values()}) > 1:
        return None  # an extra tensor (e.g. Tucker) or parts that differ in what they carry
    first = next(iter(parts.values()))
    if any(p.get("alpha") is not None and not torch.equal(p["alpha"], first["alpha"]) for p in parts.values()):
        return None
    if any(p[k].shape != first[k].shape for p in parts.values() for k in rank_keys):
        return None
    if "dora_scale" in first and len(parts) < len(sizes):
        return None  # a missing part's magnitude would be its base weight's norms: not known here
    n = len(sizes)
    out: Params = {}
    for key in rank_keys:  # [r, in] per part → [n·r, in]
        blocks = [parts[i][key] if i in parts else torch.zeros_like(first[key]) for i in range(n)]
        out[key] = torch.cat(blocks, dim=0)
    for key in diagonal_keys:  # [out_i, r] per part → block-diagonal [Σ out_i, n·r]
        r = first[key].shape[1]
        big = first[key].new_zeros(sum(sizes), n * r)
        offset = 0
        for i, size in enumerate(sizes):
            if i in parts:
                _check_rows(fused, parts[i][key], size)
                big[offset:offset + size, i * r:(i + 1) * r] = parts[i][key]
            offset += size
        out[key] = big
    for key in (k for k in row_keys if k in first):  # [out_i, …] per part → [Σ out_i, …]
        rows = []
        for i, size in enumerate(sizes):
            if i in parts:
                _check_rows(fused, parts[i][key], size)
                rows.append(parts[i][key])
            else:
                rows.append(first[key].new_zeros(size, *first[key].shape[1:]))
        out[key] = torch.cat(rows, dim=0)
    if "alpha" in first:  # the fused rank is n·r: alpha × n keeps alpha/rank
        out["alpha"] = (first["alpha"].double() * n).to(first["alpha"].dtype)
    return out


def _check_rows(fused: str, tensor: torch.Tensor, size: int) -> None:
    if tensor.shape[0] != size:
        raise ModelError(f"{fused}: a part has {tensor.shape[0]} output rows where this Flux config has {size}")


# --- reading ------------------------------------------------------------------------------------------------
def _unfuse(fused: str, params: Params, names: FluxNames) -> list[tuple[str, Params]]:
    """Per-part adapters with the same update as one adapter on the fused BFL weight."""
    kind = _kind(params)
    if kind not in FUSABLE:
        raise ModelError(f"{fused}: a {kind} adapter on the fused Flux projection cannot be split into the "
                         "q/k/v adapters LoRA Dash trains")
    members, sizes = names.groups[fused], names.sizes[fused]
    rank_keys, diagonal_keys, row_keys = FUSABLE[kind]
    n = len(members)
    for key in diagonal_keys + row_keys:
        if key in params and params[key].shape[0] != sum(sizes):
            raise ModelError(f"{fused}.{key} has {params[key].shape[0]} rows; this Flux config has {sum(sizes)}")
    total = params[rank_keys[0]].shape[0] if rank_keys else 0
    sparse = bool(rank_keys) and total % n == 0 and all(
        _block_diagonal(params[k], sizes, total // n) for k in diagonal_keys)
    out = []
    offset = 0
    for i, (member, size) in enumerate(zip(members, sizes, strict=True)):
        part: Params = {}
        if sparse:
            r = total // n
            part.update({k: params[k][i * r:(i + 1) * r] for k in rank_keys})
            part.update({k: params[k][offset:offset + size, i * r:(i + 1) * r] for k in diagonal_keys})
        else:  # a shared down (what sd-scripts trains without split_qkv): each part keeps all of it
            part.update({k: params[k] for k in rank_keys})
            part.update({k: params[k][offset:offset + size] for k in diagonal_keys})
        part.update({k: params[k][offset:offset + size] for k in row_keys if k in params})
        if "alpha" in params:
            part["alpha"] = (params["alpha"].double() / n).to(params["alpha"].dtype) if sparse else params["alpha"]
        offset += size
        if "dora_scale" in params or _adds_something(part, kind, sparse):
            out.append((member, {k: v.contiguous() for k, v in part.items()}))
    return out


def _adds_something(part: Params, kind: str, sparse: bool) -> bool:
    """False for a part whose update is zero: a zero block written for a part the network does not adapt."""
    if kind == "full":
        return any(bool(part[k].any()) for k in ("diff", "diff_b") if k in part)
    _, diagonal_keys, _ = FUSABLE[kind]
    if sparse:
        return any(bool(v.any()) for k, v in part.items() if k != "alpha")
    return all(bool(part[k].any()) for k in diagonal_keys)  # a zero up (or hada_w*_a) row block adds nothing


def _block_diagonal(matrix: torch.Tensor, sizes: tuple[int, ...], r: int) -> bool:
    offset = 0
    for i, size in enumerate(sizes):
        rows = matrix[offset:offset + size]
        if rows[:, :i * r].any() or rows[:, (i + 1) * r:].any():
            return False
        offset += size
    return True


# --- shared -------------------------------------------------------------------------------------------------
def _modules(state: Mapping[str, torch.Tensor], passthrough: dict[str, torch.Tensor]) -> dict[str, Params]:
    """Transformer adapters grouped by module; every other key (text encoders) copied to `passthrough`."""
    modules: dict[str, Params] = {}
    for key, value in state.items():
        module, dot, param = key.partition(".")
        if dot and module.startswith((UNET, SPLIT)):
            modules.setdefault(module, {})[param] = value
        else:
            passthrough[key] = value
    return modules


def _kind(params: Params) -> str:
    if all(k in params for k in LORA):
        return "lora"
    if all(k in params for k in LOHA):
        return "loha"
    if all(k in params for k in FULL):
        return "full"
    return "other"


def _swap_halves(params: Params) -> Params:
    """norm_out.linear ↔ final_layer.adaLN_modulation.1: exchange the two halves of every output row
    (scale, shift ↔ shift, scale). Its own inverse."""
    kind = _kind(params)
    if kind not in FUSABLE:
        raise ModelError(f"a {kind} adapter on Flux's final_layer.adaLN_modulation.1 cannot be read: LoRA Dash "
                         "reads lora, loha and full adapters there")
    _, diagonal_keys, row_keys = FUSABLE[kind]
    out = dict(params)
    for key in diagonal_keys + row_keys:
        if key in out:
            first, second = out[key].chunk(2, dim=0)
            out[key] = torch.cat([second, first], dim=0)
    return out


def _put(out: dict[str, torch.Tensor], module: str, params: Params) -> None:
    for param, value in params.items():
        out[f"{module}.{param}"] = value


__all__ = ["from_file", "to_file"]
