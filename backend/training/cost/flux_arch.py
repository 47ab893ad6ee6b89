"""Flux.1's architecture on the meta device for the cost tools (backend.training.cost.arch.ARCHITECTURES).

The parts are those FluxFamily loads: FluxTransformer2DModel, CLIP-L and T5 (T5 never trains: with
network.train_text_encoder only CLIP-L does, T5 stays in the compute dtype), and the 16-channel VAE. The
conditioning is what the text cache hands the step (T5 hidden states of the model's T5 length and CLIP-L's
pooled output, in the weight dtype; the T5 mask when model.apply_t5_attn_mask), and the family's own
`predict` packs the latents into tokens. Noising, the guidance input of [dev] and the loss are the
trainer's FlowObjective.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.training.cost.arch import Architecture, _frozen

if TYPE_CHECKING:
    import torch


def _t5_tokenizer(folder: Path) -> Any:
    """The folder's own T5 tokenizer (tokenizer_2/), else a stand-in: the shipped configs carry none (it is
    downloaded on a model's first real use, backend.models.t5_tokenizer) and the cost must not go online.
    Captions are padded to the T5 length, so any T5-style tokenizer gives the step the same shapes; the
    stand-in is the demo's, trained here on a few captions."""
    from transformers import AutoTokenizer

    own = folder / "tokenizer_2"
    if (own / "tokenizer.json").is_file() or (own / "spiece.model").is_file():
        return AutoTokenizer.from_pretrained(own, local_files_only=True)
    from backend.models.flux_demo import demo_texts, write_t5_tokenizer

    with tempfile.TemporaryDirectory(prefix="t5-standin-") as tmp:
        return AutoTokenizer.from_pretrained(write_t5_tokenizer(Path(tmp), demo_texts()), local_files_only=True)


def flux_architecture(family: Any, folder: Path) -> Architecture:
    """FLUX.1 [dev] or [schnell] (by its transformer's guidance input), from the config folder."""
    from backend.models.flux import T5_LENGTH
    from backend.models.loading import read_json

    transformer_cfg = read_json(folder / "transformer" / "config.json")
    vae_cfg = read_json(folder / "vae" / "config.json")
    guidance = bool(transformer_cfg.get("guidance_embeds"))
    default_length = T5_LENGTH["dev" if guidance else "schnell"]
    width = transformer_cfg.get("joint_attention_dim", 4096)
    pooled = transformer_cfg.get("pooled_projection_dim", 768)

    def text_options(cfg: Any) -> dict[str, Any]:
        """As FluxFamily.open sets them: model.t5_max_length (else the variant's) and the T5 mask."""
        model = cfg.model if cfg is not None else None
        return {"t5_max_length": int(getattr(model, "t5_max_length", None) or default_length),
                "apply_t5_attn_mask": bool(getattr(model, "apply_t5_attn_mask", False))}

    def denoiser(dtype: torch.dtype) -> torch.nn.Module:
        import torch
        from diffusers import FluxTransformer2DModel

        with torch.device("meta"):
            return _frozen(FluxTransformer2DModel.from_config(transformer_cfg), dtype)

    def text_encoders(dtype: torch.dtype, frozen_dtype: torch.dtype | None = None, cfg: Any = None) -> Any:
        import torch
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

        from backend.models.base import TextEncoders

        with torch.device("meta"):
            clip = _frozen(CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")), dtype)
            t5 = _frozen(T5EncoderModel(T5Config.from_pretrained(folder / "text_encoder_2")), frozen_dtype or dtype)
        tokenizers = [CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True), _t5_tokenizer(folder)]
        return TextEncoders(tokenizers, [clip, t5], options=text_options(cfg))

    def vae(dtype: torch.dtype) -> torch.nn.Module:
        import torch
        from diffusers import AutoencoderKL

        with torch.device("meta"):
            return _frozen(AutoencoderKL.from_config(vae_cfg), dtype)

    def conditioning(batch: int, height: int, width_px: int, dtype: torch.dtype, cfg: Any = None) -> tuple[dict, dict]:
        """The cached text outputs (FluxFamily.encode_prompts' keys; the trainer moves every one of them to
        the weight dtype); no per-batch conditioning (the guidance input comes with the noise)."""
        import torch

        opts = text_options(cfg)
        length = opts["t5_max_length"]
        cond = {"prompt_embeds": torch.empty(batch, length, width, dtype=dtype, device="meta"),
                "pooled_prompt_embeds": torch.empty(batch, pooled, dtype=dtype, device="meta")}
        if opts["apply_t5_attn_mask"]:
            cond["t5_mask"] = torch.empty(batch, length, dtype=dtype, device="meta")
        return cond, {}

    def objective(cfg: Any) -> Any:
        """FluxFamily.training_objective: [dev] (guidance-distilled) takes flow.guidance_scale as input."""
        from backend.training.objectives import FlowObjective

        return FlowObjective(cfg, guidance=guidance)

    blocks = len(vae_cfg.get("block_out_channels", (128, 256, 512, 512)))
    return Architecture(family=family, folder=folder, denoiser=denoiser, text_encoders=text_encoders, vae=vae,
                        conditioning=conditioning, objective=objective,
                        latent_channels=vae_cfg.get("latent_channels", 16), downscale=2 ** (blocks - 1), patch=2,
                        text_tokens=lambda cfg: text_options(cfg)["t5_max_length"], trained_text_encoders=(0,))
