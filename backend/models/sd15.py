"""Stable Diffusion 1.x (and its fine-tunes): one CLIP-L text encoder, a UNet with cross-attention."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from backend.errors import ModelError
from backend.models.base import LoraTargets, ModelFamily, TextEncoders, unet_lora_targets
from backend.models.loading import freeze

if TYPE_CHECKING:
    from backend.models.components import ModelSource

PIPELINE_PARTS = MappingProxyType({"unet": "weights", "vae": "weights", "text_encoder": "weights",
                                   "tokenizer": "tokenizer", "scheduler": "config"})


class SD15Family(ModelFamily):
    name = "sd15"
    label = "Stable Diffusion 1.5"
    text_encoder_prefixes = ("lora_te",)
    default_resolution = 512
    pipeline_parts = PIPELINE_PARTS
    pipeline_description = "an SD 1.5 pipeline with unet/, vae/, text_encoder/, tokenizer/, scheduler/"

    def load_text_encoders(self, src: ModelSource, *, device: Any, dtype: Any,
                           frozen_dtype: Any = None) -> TextEncoders:
        from backend.models import components

        enc = components.load_text_encoder(src, "text_encoder", dtype)
        return TextEncoders([components.load_tokenizer(src, "tokenizer")], [freeze(enc).to(device)])

    def encode_prompts(self, te: TextEncoders, prompts: list[str], *, clip_skip: int = 1) -> dict[str, Any]:
        tokenizer, encoder = te.tokenizers[0], te.encoders[0]
        layers = encoder.config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise ModelError(f"model.clip_skip: {clip_skip} is out of range for a text encoder with "
                             f"{layers} layers (1–{layers})")
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(encoder.device)
        if clip_skip == 1:
            hidden = encoder(ids)[0]
        else:
            # sd-scripts: the N-th last hidden state, passed through the final layer norm.
            states = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
            final_norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
            hidden = final_norm(states)
        return {"encoder_hidden_states": hidden}

    def predict(self, unet: Any, noisy_latents: Any, timesteps: Any, cond: dict[str, Any],
                extra: dict[str, Any]) -> Any:
        return unet(noisy_latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"],
                    **extra).sample

    def lora_targets(self, target: str, conv: bool) -> LoraTargets:
        return unet_lora_targets(target, conv)

    def base_model_version(self, v_prediction: bool, variant: str = "") -> str:
        return "sd_v1_v" if v_prediction else "sd_v1"

    def modelspec_architecture(self, v_prediction: bool, variant: str = "") -> str:
        return "stable-diffusion-v1/lora"

    def modelspec_implementation(self) -> str:
        return "diffusers"

    def build_pipeline(self, *, unet: Any, vae: Any, te: TextEncoders | None, scheduler: Any) -> Any:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=vae, unet=unet, scheduler=scheduler,
            text_encoder=te.encoders[0] if te else None, tokenizer=te.tokenizers[0] if te else None,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_prompt_kwargs(self, cond: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_embeds": cond["encoder_hidden_states"],
                "negative_prompt_embeds": negative["encoder_hidden_states"]}
