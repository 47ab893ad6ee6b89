"""How ComfyUI reads a Flux LoRA, written from the facts of its source (no ComfyUI code: it is not a
PyPI package, so it cannot be installed here).

Facts (comfy/lora.py model_lora_keys_unet, comfy/utils.py flux_to_diffusers and swap_scale_shift,
comfy/weight_adapter/{lora,loha,lokr,base}.py):
1. Key map. For every weight `diffusion_model.<path>.weight` of the loaded model, the LoRA module name
   `lora_unet_<path with . → _>` patches it. For a Flux model, flux_to_diffusers also lists every
   diffusers weight name with where it lives in the BFL model: a key, a (key, (dim, start, size)) slice,
   or (key, None, swap_scale_shift); `transformer.<name>`, `lycoris_<name with . → _>` and
   `lora_transformer_<…>` name the same target. Any other key in the file: "lora key not loaded".
2. Patches. LoRA: up @ down × alpha/rank (rank = lora_down rows); LoHa: (w1_a @ w1_b) ⊙ (w2_a @ w2_b) ×
   alpha/rank (rank = hada_w1_b rows); LoKr: kron(w1, w2) × alpha/dim (dim = rows of the decomposed
   factor's _b, else scale 1); full: `diff` (and `diff_b` on the bias). A slice narrows the weight first;
   a function (swap_scale_shift) is applied to the update before it is added. DoRA (dora_scale with one
   row per output row): W' = (W + ΔW) · m / ‖W + ΔW‖ per row, as LyCORIS defines it. ComfyUI master
   divides by ‖W‖ instead (Comfy-Org/ComfyUI PR #15458 fixes that), which changes DoRA files from any
   trainer alike, not their layout.
"""

from __future__ import annotations

import torch

PREFIX = "diffusion_model."


def swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def flux_to_diffusers(depth: int, depth_single: int, hidden: int) -> dict[str, object]:
    """diffusers state-dict key → BFL key (str), (BFL key, (dim, start, size)) or (BFL key, None, fn)."""
    out: dict[str, object] = {}
    for i in range(depth):
        d, b = f"transformer_blocks.{i}", f"{PREFIX}double_blocks.{i}"
        for end in ("weight", "bias"):
            for j, name in enumerate(("to_q", "to_k", "to_v")):
                out[f"{d}.attn.{name}.{end}"] = (f"{b}.img_attn.qkv.{end}", (0, j * hidden, hidden))
            for j, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
                out[f"{d}.attn.{name}.{end}"] = (f"{b}.txt_attn.qkv.{end}", (0, j * hidden, hidden))
        block = {"attn.to_out.0": "img_attn.proj", "norm1.linear": "img_mod.lin",
                 "norm1_context.linear": "txt_mod.lin", "attn.to_add_out": "txt_attn.proj",
                 "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
                 "ff_context.net.2": "txt_mlp.2"}
        for k, v in block.items():
            for end in ("weight", "bias"):
                out[f"{d}.{k}.{end}"] = f"{b}.{v}.{end}"
        for k, v in {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                     "attn.norm_added_q": "txt_attn.norm.query_norm",
                     "attn.norm_added_k": "txt_attn.norm.key_norm"}.items():
            out[f"{d}.{k}.weight"] = f"{b}.{v}.scale"
    for i in range(depth_single):
        d, b = f"single_transformer_blocks.{i}", f"{PREFIX}single_blocks.{i}"
        for end in ("weight", "bias"):
            for j, name in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
                out[f"{d}.{name}.{end}"] = (f"{b}.linear1.{end}", (0, j * hidden, hidden))
            out[f"{d}.proj_mlp.{end}"] = (f"{b}.linear1.{end}", (0, 3 * hidden, 4 * hidden))
            out[f"{d}.norm.linear.{end}"] = f"{b}.modulation.lin.{end}"
            out[f"{d}.proj_out.{end}"] = f"{b}.linear2.{end}"
        out[f"{d}.attn.norm_q.weight"] = f"{b}.norm.query_norm.scale"
        out[f"{d}.attn.norm_k.weight"] = f"{b}.norm.key_norm.scale"
    basic = {"proj_out": "final_layer.linear", "x_embedder": "img_in",
             "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
             "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
             "context_embedder": "txt_in", "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
             "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
             "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
             "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer"}
    for end in ("weight", "bias"):
        for k, v in basic.items():
            out[f"{k}.{end}"] = f"{PREFIX}{v}.{end}"
        out[f"norm_out.linear.{end}"] = (f"{PREFIX}final_layer.adaLN_modulation.1.{end}", None, swap_scale_shift)
    return out


def key_map(model_keys, depth: int, depth_single: int, hidden: int) -> dict[str, object]:
    """LoRA module name → what it patches, for a Flux model whose state dict has `model_keys`."""
    out: dict[str, object] = {}
    for k in model_keys:
        if k.startswith(PREFIX) and k.endswith(".weight"):
            out["lora_unet_" + k[len(PREFIX):-len(".weight")].replace(".", "_")] = k
    for k, to in flux_to_diffusers(depth, depth_single, hidden).items():
        if k.endswith(".weight"):
            base = k[:-len(".weight")]
            out[f"transformer.{base}"] = to
            out["lycoris_" + base.replace(".", "_")] = to
            out["lora_transformer_" + base.replace(".", "_")] = to
    return out


def to_bfl(diffusers_sd: dict[str, torch.Tensor], table: dict[str, object]) -> dict[str, torch.Tensor]:
    """A diffusers Flux state dict in BFL layout, as ComfyUI assembles one (convert_diffusers_mmdit)."""
    rows: dict[str, int] = {}
    for k, t in table.items():
        if isinstance(t, tuple) and t[1] is not None and k in diffusers_sd:
            rows[t[0]] = max(rows.get(t[0], 0), t[1][1] + t[1][2])
    out: dict[str, torch.Tensor] = {}
    for k, w in diffusers_sd.items():
        t = table[k]
        if isinstance(t, str):
            out[t] = w.clone()
        elif t[1] is None:
            out[t[0]] = t[2](w)
        else:
            dim, start, size = t[1]
            if t[0] not in out:
                out[t[0]] = w.new_empty(rows[t[0]], *w.shape[1:])
            out[t[0]].narrow(dim, start, size).copy_(w)
    return out


def from_bfl(bfl: dict[str, torch.Tensor], diffusers_keys, table: dict[str, object]) -> dict[str, torch.Tensor]:
    out = {}
    for k in diffusers_keys:
        t = table[k]
        if isinstance(t, str):
            out[k] = bfl[t]
        elif t[1] is None:
            out[k] = t[2](bfl[t[0]])  # swap_scale_shift is its own inverse
        else:
            out[k] = bfl[t[0]].narrow(*t[1]).clone()
    return out


def apply_lora(bfl: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], kmap: dict[str, object]) -> set[str]:
    """Patch `bfl` in place with every module of `lora`; returns the LoRA keys it used."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        module, _, param = key.partition(".")
        modules.setdefault(module, {})[param] = value.double()
    used: set[str] = set()
    for module, p in modules.items():
        if module not in kmap:
            continue
        target = kmap[module]
        key, offset, fn = (target, None, None) if isinstance(target, str) else (
            target[0], target[1], target[2] if len(target) > 2 else None)
        weight = bfl[key] if offset is None else bfl[key].narrow(*offset)
        diff, scale = _update(p)
        if diff is None:
            continue
        used |= {f"{module}.{k}" for k in p}
        fn = fn or (lambda x: x)
        if "diff_b" in p:
            bias_key = key[:-len(".weight")] + ".bias"
            bias = bfl[bias_key] if offset is None else bfl[bias_key].narrow(*offset)
            bias += fn(p["diff_b"]).to(bias.dtype)
        if "dora_scale" in p:
            merged = weight.double() + fn(diff * scale)
            norm = merged.reshape(merged.shape[0], -1).norm(dim=1, keepdim=True) + torch.finfo(weight.dtype).eps
            weight.copy_(merged * p["dora_scale"] / norm)
        else:
            weight += fn(diff * scale).to(weight.dtype)
    return used


def _update(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, float]:
    alpha = p["alpha"].item() if "alpha" in p else None
    if "lora_up.weight" in p:
        down = p["lora_down.weight"]
        return p["lora_up.weight"].flatten(1) @ down.flatten(1), (alpha / down.shape[0] if alpha is not None else 1.0)
    if "hada_w1_a" in p:
        diff = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
        return diff, (alpha / p["hada_w1_b"].shape[0] if alpha is not None else 1.0)
    if any(k.startswith("lokr_") for k in p):
        dim = None
        w1 = p.get("lokr_w1")
        if w1 is None:
            dim, w1 = p["lokr_w1_b"].shape[0], p["lokr_w1_a"] @ p["lokr_w1_b"]
        w2 = p.get("lokr_w2")
        if w2 is None:
            dim, w2 = p["lokr_w2_b"].shape[0], p["lokr_w2_a"] @ p["lokr_w2_b"]
        return torch.kron(w1, w2), (alpha / dim if alpha is not None and dim is not None else 1.0)
    if "diff" in p:
        return p["diff"], 1.0
    return None, 1.0
