"""The real SD 1.5 architecture (UNet, VAE, CLIP ViT-L text encoder) with random weights, for benchmarks.

The configs are SD 1.5's own (runwayml/stable-diffusion-v1-5 model_index components); weights are
random with a fixed seed. Built once and saved as a diffusers folder with safetensors, so a timed run
loads it exactly like a user's model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215,
}
TEXT = {
    "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77,
    "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768, "vocab_size": 49408,
    "layer_norm_eps": 1e-05, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}
SEED = 15
VERSION = "1"


def _tokenizer(folder: Path) -> None:
    try:
        from backend.models.clip_vocab import write_tokenizer
    except ImportError:  # the full CLIP vocabulary is optional here: timing does not depend on it
        from backend.models.demo import write_tokenizer as write_demo

        write_demo(folder)
        return
    write_tokenizer(folder, "<|endoftext|>")


def build(folder: Path) -> Path:
    """Write the pipeline into `folder` once (about 4.3 GB of fp32 safetensors); later calls return it."""
    folder = Path(folder)
    marker = folder / ".bench-sd15"
    if marker.is_file() and marker.read_text().strip() == VERSION:
        return folder
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(SEED)
    with torch.no_grad():
        UNet2DConditionModel(**UNET).save_pretrained(tmp / "unet", safe_serialization=True)
        AutoencoderKL(**VAE).save_pretrained(tmp / "vae", safe_serialization=True)
        CLIPTextModel(CLIPTextConfig(**TEXT)).save_pretrained(tmp / "text_encoder", safe_serialization=True)
    _tokenizer(tmp / "tokenizer")
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=1))
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=1))
    (tmp / ".bench-sd15").write_text(VERSION + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder
