"""Flux.1 as ComfyUI users keep it: the transformer in Black Forest Labs' layout (flux1-dev.safetensors,
`double_blocks.0.img_attn.qkv.weight`, …) and the text encoders in files of their own (clip_l.safetensors
in the transformers layout, t5xxl_fp16.safetensors as a T5 encoder state dict). The AE (ae.safetensors) is
an LDM-layout VAE that `loading.load_vae_any` reads.

The BFL ↔ diffusers names follow diffusers' `convert_flux_transformer_checkpoint_to_diffusers`, with the
widths taken from the model's config instead of the fixed 3072 of the real model, so the tiny demo and
any Flux-architecture model convert the same way (tests check the names and shapes against diffusers'
converter on the real architecture). Modules are built on the meta device and the file's tensors
assigned, so a 23 GB transformer is never allocated twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models.detect import FLUX_PREFIXES

# (BFL module, diffusers module) pairs that map one to one; {i} is the block index.
DOUBLE_PAIRS = (
    ("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
    ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
    ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
    ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"),
)
DOUBLE_NORMS = (
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight"), ("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
)
SINGLE_PAIRS = (("modulation.lin", "norm.linear"), ("linear2", "proj_out"))
SINGLE_NORMS = (("norm.query_norm.scale", "attn.norm_q.weight"), ("norm.key_norm.scale", "attn.norm_k.weight"))
TOP_PAIRS = (
    ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
    ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
    ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    ("txt_in", "context_embedder"), ("img_in", "x_embedder"), ("final_layer.linear", "proj_out"),
)
GUIDANCE_PAIRS = (("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                  ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"))
FINAL_MOD = ("final_layer.adaLN_modulation.1", "norm_out.linear")  # halves swapped: (shift, scale) ↔ (scale, shift)


def _fused(config: Mapping[str, Any]) -> Iterator[tuple[str, list[str], list[int]]]:
    """(BFL tensor, diffusers tensors, row sizes) of the fused projections: q/k/v of the double blocks,
    q/k/v + MLP input of the single blocks' `linear1`."""
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = int(inner * 4.0)  # FluxSingleTransformerBlock's mlp_ratio
    for i in range(config["num_layers"]):
        for bfl, names in (("img_attn.qkv", ("to_q", "to_k", "to_v")),
                           ("txt_attn.qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for suffix in ("weight", "bias"):
                yield (f"double_blocks.{i}.{bfl}.{suffix}",
                       [f"transformer_blocks.{i}.attn.{n}.{suffix}" for n in names], [inner] * 3)
    for i in range(config["num_single_layers"]):
        for suffix in ("weight", "bias"):
            yield (f"single_blocks.{i}.linear1.{suffix}",
                   [f"single_transformer_blocks.{i}.{n}.{suffix}" for n in ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                          "proj_mlp")],
                   [inner, inner, inner, mlp])


def _renamed(config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(BFL tensor, diffusers tensor) of every tensor that only changes name."""
    def linear(bfl: str, hf: str) -> Iterator[tuple[str, str]]:
        yield f"{bfl}.weight", f"{hf}.weight"
        yield f"{bfl}.bias", f"{hf}.bias"

    for i in range(config["num_layers"]):
        for bfl, hf in DOUBLE_PAIRS:
            yield from linear(f"double_blocks.{i}.{bfl}", f"transformer_blocks.{i}.{hf}")
        for bfl, hf in DOUBLE_NORMS:
            yield f"double_blocks.{i}.{bfl}", f"transformer_blocks.{i}.{hf}"
    for i in range(config["num_single_layers"]):
        for bfl, hf in SINGLE_PAIRS:
            yield from linear(f"single_blocks.{i}.{bfl}", f"single_transformer_blocks.{i}.{hf}")
        for bfl, hf in SINGLE_NORMS:
            yield f"single_blocks.{i}.{bfl}", f"single_transformer_blocks.{i}.{hf}"
    for bfl, hf in TOP_PAIRS + (GUIDANCE_PAIRS if config.get("guidance_embeds") else ()):
        yield from linear(bfl, hf)


def _swap_halves(t: Any) -> Any:
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def bfl_to_diffusers(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A BFL-layout transformer state dict (bare or under `model.diffusion_model.`) in diffusers'
    FluxTransformer2DModel names. ModelError naming the first missing or unexpected tensor."""
    import torch

    prefix = next((p for p in FLUX_PREFIXES[::-1] if f"{p}img_in.weight" in state), "")
    src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out: dict[str, Any] = {}
    used: set[str] = set()

    def take(key: str) -> Any:
        if key not in src:
            raise ModelError(f"the Flux transformer file has no {prefix}{key}; it is incomplete or of another "
                             "architecture than its config says")
        used.add(key)
        return src[key]

    for bfl, hf in _renamed(config):
        out[hf] = take(bfl)
    for bfl, names, sizes in _fused(config):
        out.update(zip(names, torch.split(take(bfl), sizes, dim=0), strict=True))
    for suffix in ("weight", "bias"):
        out[f"{FINAL_MOD[1]}.{suffix}"] = _swap_halves(take(f"{FINAL_MOD[0]}.{suffix}"))
    extra = sorted(set(src) - used)
    if extra:
        raise ModelError(f"the Flux transformer file has tensors this architecture lacks, e.g. {prefix}{extra[0]} "
                         f"({len(extra)} in all); is it a Flux.1 [dev]/[schnell] transformer?")
    return out


def diffusers_to_bfl(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `bfl_to_diffusers`: a FluxTransformer2DModel state dict in the BFL layout."""
    import torch

    out = {bfl: state[hf] for bfl, hf in _renamed(config)}
    for bfl, names, _ in _fused(config):
        out[bfl] = torch.cat([state[n] for n in names], dim=0)
    for suffix in ("weight", "bias"):
        out[f"{FINAL_MOD[0]}.{suffix}"] = _swap_halves(state[f"{FINAL_MOD[1]}.{suffix}"])
    return out


def read_file(path: Path, what: str) -> dict[str, Any]:
    """Every tensor of a .safetensors file (memory mapped)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{what}: {path} is not a .safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, RuntimeError, ValueError) as err:
        raise ModelError(f"{what}: cannot read {path} ({err})") from err


def _assign(model: Any, state: dict[str, Any], dtype: Any, what: str, path: Path) -> Any:
    """Load `state` into a meta-initialised `model` (cast to `dtype`), refusing missing tensors."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys:
        raise ModelError(f"{what}: {path} lacks {result.missing_keys[0]} ({len(result.missing_keys)} tensors "
                         "missing); pick a complete file of this model")
    if result.unexpected_keys:
        raise ModelError(f"{what}: {path} has tensors this model lacks, e.g. {result.unexpected_keys[0]}; "
                         "is it the right kind of file?")
    return model


def load_transformer(path: Path, config_dir: Path, dtype: Any) -> Any:
    """FluxTransformer2DModel from a BFL-layout file and the `transformer/` config in `config_dir`."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(config_dir / "transformer")
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    state = bfl_to_diffusers(read_file(path, "model.path"), model.config)
    return _assign(model, state, dtype, "model.path", path)


def load_clip_l(path: Path, config_dir: Path, dtype: Any) -> Any:
    """CLIPTextModel from clip_l.safetensors (`text_model.…` names, as ComfyUI keeps it, or transformers
    5's flattened names). Its projection and logit scale, when present, are not used by Flux."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig.from_pretrained(config_dir / "text_encoder")
    with init_empty_weights(include_buffers=False):
        model = CLIPTextModel(config)
    state = {k.removeprefix("text_model."): v for k, v in read_file(path, "model.clip_l_path").items()
             if k not in ("text_projection.weight", "logit_scale", "text_model.embeddings.position_ids")}
    return _assign(model, state, dtype, "model.clip_l_path", path)


def load_t5(path: Path, config_dir: Path, dtype: Any) -> Any:
    """T5EncoderModel from t5xxl_fp16.safetensors (or an fp8 e4m3 file, upcast here). Scaled-fp8 files
    hold per-tensor scales that a plain cast would drop: refused."""
    from accelerate import init_empty_weights
    from transformers import T5Config, T5EncoderModel

    state = read_file(path, "model.t5_path")
    if any(k.endswith("scale_weight") or k == "scaled_fp8" for k in state):
        raise ModelError(f"model.t5_path: {path} is a scaled-fp8 T5 file; use t5xxl_fp16.safetensors or "
                         "t5xxl_fp8_e4m3fn.safetensors")
    state = {k: v for k, v in state.items() if k.startswith(("encoder.", "shared."))}
    shared = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if shared is not None:  # tied: files keep one or both
        state["shared.weight"] = state["encoder.embed_tokens.weight"] = shared
    config = T5Config.from_pretrained(config_dir / "text_encoder_2")
    with init_empty_weights(include_buffers=False):
        model = T5EncoderModel(config)
    return _assign(model, state, dtype, "model.t5_path", path)


def write_component_files(pipe: Any, folder: Path, stem: str = "flux") -> dict[str, Path]:
    """`pipe`'s weights as ComfyUI users keep Flux: `<stem>.safetensors` (BFL transformer), clip_l,
    t5xxl and ae files, plus `<stem>.config/` with the pipeline's configs and tokenizers. For tests and
    for models whose shapes differ from the shipped configs."""
    from safetensors.torch import save_file

    from backend.models import ldm_keys, single_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"transformer": folder / f"{stem}.safetensors", "clip_l": folder / f"{stem}-clip_l.safetensors",
             "t5": folder / f"{stem}-t5xxl.safetensors", "ae": folder / f"{stem}-ae.safetensors"}
    contiguous = {}
    for name, state in (
            ("transformer", diffusers_to_bfl(pipe.transformer.state_dict(), pipe.transformer.config)),
            ("clip_l", {f"text_model.{k}": v for k, v in pipe.text_encoder.state_dict().items()}),
            ("t5", pipe.text_encoder_2.state_dict()),
            ("ae", {k.removeprefix(ldm_keys.VAE_PREFIX): v
                    for k, v in ldm_keys.vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()})):
        contiguous[name] = {k: v.detach().contiguous().clone() for k, v in state.items()}
        save_file(contiguous[name], str(files[name]))
    single_file.write_config_folder(pipe, single_file.sidecar_config(files["transformer"]))
    return files
