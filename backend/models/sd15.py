"""Stable Diffusion 1.x (and its fine-tunes): one CLIP-L text encoder, a UNet with cross-attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models.base import LoraTargets, ModelFamily, TextEncoders, unet_lora_targets
from backend.models.loading import check_diffusers_folder, freeze, load_vae_any

PIPELINE_PARTS = {"unet": "weights", "vae": "weights", "text_encoder": "weights", "tokenizer": "tokenizer",
                  "scheduler": "config"}
# kohya networks/lora.py: the UNet blocks LoCon reaches for 3×3 convs.


class SD15Family(ModelFamily):
    name = "sd15"
    label = "Stable Diffusion 1.5"
    text_encoder_prefixes = ("lora_te",)
    default_resolution = 512

    def check_model(self, path: Path) -> None:
        path = Path(path)
        if path.is_file():
            self._source(path)  # single-file checks of backend.models.detect
            return
        check_diffusers_folder(path, PIPELINE_PARTS, "an SD 1.5 pipeline with unet/, vae/, "
                                                     "text_encoder/, tokenizer/, scheduler/")

    def _source(self, path: Path) -> Any:
        """A single-file checkpoint, read one component at a time (backend.models.components)."""
        from backend.models import components

        return components.open_source(Path(path), self.name)

    def load_text_encoders(self, path: Path, *, device: Any, dtype: Any) -> TextEncoders:
        from transformers import CLIPTextModel, CLIPTokenizer

        if Path(path).is_file():
            from backend.models import components

            src = self._source(path)
            enc = components.load_text_encoder(src, "text_encoder", dtype)
            return TextEncoders([components.load_tokenizer(src, "tokenizer")], [freeze(enc).to(device)])
        tokenizer = CLIPTokenizer.from_pretrained(Path(path) / "tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(Path(path) / "text_encoder", dtype=dtype,
                                                local_files_only=True)
        return TextEncoders([tokenizer], [freeze(encoder).to(device)])

    def load_vae(self, path: Path, vae_path: str | Path | None, *, device: Any, dtype: Any) -> Any:
        from diffusers import AutoencoderKL

        if Path(path).is_file():
            from backend.models import components

            src = self._source(path)
            vae = load_vae_any(vae_path, src.folder("vae"), dtype=dtype) if vae_path \
                else components.load_vae(src, dtype)
        elif vae_path:
            vae = load_vae_any(vae_path, Path(path) / "vae", dtype=dtype)
        else:
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype,
                                                local_files_only=True, low_cpu_mem_usage=True)
        return freeze(vae).to(device)

    def load_unet(self, path: Path, *, device: Any, dtype: Any) -> Any:
        from diffusers import UNet2DConditionModel

        if Path(path).is_file():
            from backend.models import components

            return freeze(components.load_unet(self._source(path), dtype)).to(device)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype,
                                                    local_files_only=True, low_cpu_mem_usage=True)
        return freeze(unet).to(device)

    def load_noise_scheduler(self, path: Path, *, v_prediction: bool, zero_terminal_snr: bool) -> Any:
        from backend.models.schedulers import training_scheduler

        folder = self._source(path).folder("scheduler") if Path(path).is_file() else Path(path) / "scheduler"
        return training_scheduler(folder, v_prediction=v_prediction,
                                  zero_terminal_snr=zero_terminal_snr)

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

    def base_model_version(self, v_prediction: bool) -> str:
        return "sd_v1_v" if v_prediction else "sd_v1"

    def modelspec_architecture(self, v_prediction: bool) -> str:
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
