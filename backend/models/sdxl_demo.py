"""The SDXL demo: a tiny SDXL-architecture model as a single-file checkpoint, built offline.

Same component classes and block layout as SDXL base (DownBlock2D then two cross-attention levels,
several transformer blocks per attention, text_time added conditioning, CLIP-L + OpenCLIP-bigG-style
text encoders with projection, the real CLIP tokenizer with `!` padding on the second), random
weights and small widths. The two text encoders have different widths (32 and 48) because diffusers
tells them apart by width when reading a single file. It is written in the original single-file layout
with its architecture configs beside it (`demo-sdxl.config/`), so the demo exercises the same loading
path as a checkpoint downloaded from Civitai.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from backend.models import clip_vocab, demo, single_file
from backend.paths import WorkspacePaths

DEMO_MODEL = "demo-sdxl"
SEED = 4321
VERSION = "1"
TE1_WIDTH, TE2_WIDTH, TIME_DIM = 32, 48, 8

UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 1, 2],
    "attention_head_dim": [2, 4, 4],
    "cross_attention_dim": TE1_WIDTH + TE2_WIDTH,
    "norm_num_groups": 16,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_DIM,
    # six time ids (original size, crop top-left, target size) + the pooled bigG embedding
    "projection_class_embeddings_input_dim": 6 * TIME_DIM + TE2_WIDTH,
}
VAE_CONFIG = {**demo.VAE_CONFIG, "scaling_factor": 0.13025}  # SDXL VAE's scale
_TEXT_COMMON = {"vocab_size": clip_vocab.VOCAB_SIZE, "num_hidden_layers": 3, "num_attention_heads": 4,
                "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
TE1_CONFIG = {**_TEXT_COMMON, "hidden_size": TE1_WIDTH, "intermediate_size": 64, "projection_dim": TE1_WIDTH,
              "hidden_act": "quick_gelu"}
TE2_CONFIG = {**_TEXT_COMMON, "hidden_size": TE2_WIDTH, "intermediate_size": 96, "projection_dim": TE2_WIDTH,
              "hidden_act": "gelu"}
SCHEDULER_CONFIG = {  # SDXL base's noise schedule and sampler settings
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
    "interpolation_type": "linear", "use_karras_sigmas": False,
}


def tiny_sdxl_pipeline(tokenizer_root: Path, seed: int = SEED, *, prediction_type: str = "epsilon"):
    """A StableDiffusionXLPipeline with tiny random weights; tokenizers are written under `tokenizer_root`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    derived = clip_vocab.derive()
    tok1 = CLIPTokenizer.from_pretrained(clip_vocab.write_tokenizer(tokenizer_root / "tokenizer",
                                                                    clip_vocab.EOS, derived))
    tok2 = CLIPTokenizer.from_pretrained(clip_vocab.write_tokenizer(tokenizer_root / "tokenizer_2", "!", derived))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    te1 = CLIPTextModel(CLIPTextConfig(**TE1_CONFIG))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TE2_CONFIG))
    sched = EulerDiscreteScheduler(**{**SCHEDULER_CONFIG, "prediction_type": prediction_type})
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=sched,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _is_current(checkpoint: Path) -> bool:
    from backend.errors import ModelError
    from backend.models.detect import read_header

    if not (checkpoint.is_file() and (single_file.sidecar_config(checkpoint) / "model_index.json").is_file()):
        return False
    try:
        return read_header(checkpoint).metadata.get("loradash.demo") == VERSION
    except ModelError:
        return False


def build_sdxl_demo(paths: WorkspacePaths) -> tuple[Path, Path]:
    """Build (once) `models/demo-sdxl.safetensors` (+ `.config/`) and the shared demo dataset.
    Returns (checkpoint, dataset_dir); a second call with both present is a no-op."""
    from backend.models.demo import build_demo

    checkpoint = paths.models / f"{DEMO_MODEL}.safetensors"
    if not _is_current(checkpoint):
        with tempfile.TemporaryDirectory(prefix=".demo-sdxl-tok-", dir=paths.models) as tok:
            pipe = tiny_sdxl_pipeline(Path(tok))
            single_file.write_single_file_model(
                pipe, checkpoint, "sdxl", metadata={"loradash.demo": VERSION,
                                                    "modelspec.architecture": "stable-diffusion-xl-v1-base",
                                                    "modelspec.title": "LoRA Dash tiny SDXL"})
    _, dataset = build_demo(paths, "sd15")
    return checkpoint, dataset
