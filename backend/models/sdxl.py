"""Stable Diffusion XL (base 1.0 and its fine-tunes: Pony, Illustrious, NoobAI, …).

Two text encoders, CLIP ViT-L and OpenCLIP ViT-bigG with a projection: the penultimate hidden states
of both are concatenated (768 + 1280 = 2048 wide for the real model) and the bigG projection of the
end token is the pooled embedding. The UNet also takes six size/crop numbers per image, the "time ids"
(Podell et al., "SDXL", 2023, §2.2 micro-conditioning). Models load from diffusers folders or single
files (backend.models.components).

LoRA files name UNet modules the way sd-scripts does for SDXL, after the original (SGM) UNet
(`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`): A1111/Forge read those names directly
("SDXL loras seem to already have correct compvis keys"), ComfyUI maps `lora_unet_` + its own
`diffusion_model` names, and diffusers maps them with `_maybe_map_sgm_blocks_to_diffusers`. Diffusers-
style names would reach A1111 only through `convert_diffusers_name_to_compvis`, whose SD 1.x block
arithmetic puts SDXL's first upsampler at the wrong index. Text encoders: `lora_te1_…`, `lora_te2_…`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from backend.errors import ModelError
from backend.models import components, detect, ldm_keys
from backend.models.base import LoraTargets, ModelFamily, TextEncoders, unet_lora_targets
from backend.models.loading import freeze

PIPELINE_PARTS = MappingProxyType({"unet": "weights", "vae": "weights", "text_encoder": "weights",
                                   "text_encoder_2": "weights", "tokenizer": "tokenizer",
                                   "tokenizer_2": "tokenizer", "scheduler": "config"})
UNET_LORA = "lora_unet_"
log = logging.getLogger(__name__)


def time_ids(original_size: Sequence[int], crop_top_left: Sequence[int], target_size: Sequence[int]) -> list[int]:
    """SDXL's six conditioning numbers for one image: (orig h, orig w, crop top, crop left, target h,
    target w), in pixels. Podell et al., "SDXL", 2023, §2.2 (size and crop conditioning); the order of
    diffusers' `StableDiffusionXLPipeline._get_add_time_ids` and sd-scripts' `get_size_embeddings`."""
    return [int(original_size[0]), int(original_size[1]), int(crop_top_left[0]), int(crop_top_left[1]),
            int(target_size[0]), int(target_size[1])]


def sgm_name_map(unet: Any) -> dict[str, str]:
    """LyCORIS/kohya module name of every UNet module (`lora_unet_down_blocks_1_…`) → sd-scripts' SDXL
    name (`lora_unet_input_blocks_4_1_…`), from the module tree and block layout of `unet`."""
    table = ldm_keys.unet_prefix_table(unet.config)
    out = {}
    for name, _ in unet.named_modules():
        if name:
            out[UNET_LORA + name.replace(".", "_")] = UNET_LORA + ldm_keys.module_to_ldm(name, table).replace(".", "_")
    return out


def _rename(state: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        module, dot, param = key.partition(".")
        out[names.get(module, module) + dot + param] = value
    return out


def lora_keys_to_file(state: Mapping[str, Any], unet: Any) -> dict[str, Any]:
    """A network's state dict with SDXL UNet modules renamed to sd-scripts' SGM names (text-encoder
    keys untouched). Raises ModelError for a UNet key with no SGM name rather than writing it wrongly."""
    names = sgm_name_map(unet)
    missing = sorted({k.partition(".")[0] for k in state if k.startswith(UNET_LORA)} - set(names))
    if missing:
        raise ModelError(f"LoRA modules with no SDXL name: {', '.join(missing[:5])}")
    return _rename(state, names)


def lora_keys_from_file(state: Mapping[str, Any], unet: Any) -> dict[str, Any]:
    """The inverse of `lora_keys_to_file`; diffusers-style names pass through unchanged, so files
    written either way load."""
    inverse = {v: k for k, v in sgm_name_map(unet).items()}
    return _rename(state, inverse)


class SDXLFamily(ModelFamily):
    name = "sdxl"
    label = "Stable Diffusion XL"
    text_encoder_prefixes = ("lora_te1", "lora_te2")
    default_resolution = 1024

    pipeline_parts = PIPELINE_PARTS
    pipeline_description = ("an SDXL pipeline with unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, "
                            "tokenizer_2/, scheduler/")

    # -- loading ------------------------------------------------------------------------------
    def load_text_encoders(self, src: components.ModelSource, *, device: Any, dtype: Any,
                           frozen_dtype: Any = None) -> TextEncoders:
        toks = [components.load_tokenizer(src, "tokenizer"), components.load_tokenizer(src, "tokenizer_2")]
        encs = [freeze(components.load_text_encoder(src, part, dtype)).to(device)
                for part in ("text_encoder", "text_encoder_2")]
        return TextEncoders(toks, encs)

    def load_noise_scheduler(self, src: components.ModelSource, *, v_prediction: bool,
                             zero_terminal_snr: bool) -> Any:
        detect.check_prediction(src.detected, src.path, v_prediction)
        if src.detected.zero_terminal_snr and not zero_terminal_snr:
            log.warning("%s was trained with zero terminal SNR; loss.zero_terminal_snr is off", src.path)
        return super().load_noise_scheduler(src, v_prediction=v_prediction, zero_terminal_snr=zero_terminal_snr)

    # -- encoding -----------------------------------------------------------------------------
    def encode_prompts(self, te: TextEncoders, prompts: list[str], *, clip_skip: int = 1) -> dict[str, Any]:
        """Penultimate hidden states of both encoders, concatenated, and bigG's pooled projection.
        SDXL was trained on the penultimate layer of each, so `clip_skip` does not apply."""
        import torch

        states, pooled = [], None
        for tokenizer, encoder in zip(te.tokenizers, te.encoders, strict=True):
            ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = getattr(out, "text_embeds", None)
        if pooled is None:
            raise ModelError("the second SDXL text encoder has no projection (text_embeds); expected "
                             "CLIPTextModelWithProjection")
        return {"encoder_hidden_states": torch.cat(states, dim=-1), "text_embeds": pooled}

    def extra_conditioning(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`time_ids` (B×6) from the batch's `original_size`, `crop_top_left` and `target_size`
        (each B pairs of (height, width) / (top, left) in pixels)."""
        import torch

        try:
            rows = [time_ids(o, c, t) for o, c, t in zip(batch["original_size"], batch["crop_top_left"],
                                                         batch["target_size"], strict=True)]
        except KeyError as err:
            raise ModelError(f"SDXL needs each batch's {err.args[0]!r} (size/crop conditioning); the data "
                             "loader did not provide it") from err
        return {"time_ids": torch.tensor(rows, dtype=torch.float32)}

    def predict(self, unet: Any, noisy_latents: Any, timesteps: Any, cond: dict[str, Any],
                extra: dict[str, Any]) -> Any:
        hidden = cond["encoder_hidden_states"]
        added = {"text_embeds": cond["text_embeds"].to(hidden.dtype),
                 "time_ids": extra["time_ids"].to(device=noisy_latents.device, dtype=hidden.dtype)}
        return unet(noisy_latents, timesteps, encoder_hidden_states=hidden, added_cond_kwargs=added).sample

    # -- LoRA naming and metadata -------------------------------------------------------------
    def lora_targets(self, target: str, conv: bool) -> LoraTargets:
        return unet_lora_targets(target, conv, ("add_embedding.linear_1", "add_embedding.linear_2"))

    def lora_keys_to_file(self, state: Mapping[str, Any], unet: Any) -> dict[str, Any]:
        return lora_keys_to_file(state, unet)

    def lora_keys_from_file(self, state: Mapping[str, Any], unet: Any) -> dict[str, Any]:
        return lora_keys_from_file(state, unet)

    def base_model_version(self, v_prediction: bool, variant: str = "") -> str:
        return "sdxl_base_v1-0"  # sd-scripts writes this for v-prediction SDXL too; A1111 needs the prefix

    def modelspec_architecture(self, v_prediction: bool, variant: str = "") -> str:
        return "stable-diffusion-xl-v1-base/lora"

    # -- sampling -----------------------------------------------------------------------------
    def build_pipeline(self, *, unet: Any, vae: Any, te: TextEncoders | None, scheduler: Any) -> Any:
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=vae, unet=unet, scheduler=scheduler,
            text_encoder=te.encoders[0] if te else None, text_encoder_2=te.encoders[1] if te else None,
            tokenizer=te.tokenizers[0] if te else None, tokenizer_2=te.tokenizers[1] if te else None,
            force_zeros_for_empty_prompt=False, add_watermarker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_prompt_kwargs(self, cond: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_embeds": cond["encoder_hidden_states"],
                "negative_prompt_embeds": negative["encoder_hidden_states"],
                "pooled_prompt_embeds": cond["text_embeds"],
                "negative_pooled_prompt_embeds": negative["text_embeds"]}
