"""Shared pieces of the single-file, SDXL and model-manager tests: tiny pipelines of both families,
written in the original single-file layout, and a guard that fails any network access."""

from __future__ import annotations

import socket
from pathlib import Path

from backend.models import clip_vocab

SD15_UNET = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64], "layers_per_block": 2, "cross_attention_dim": 32,
    "attention_head_dim": 8, "norm_num_groups": 16,
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [8, 16], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 8, "sample_size": 32,
}
SD15_TEXT = {"vocab_size": clip_vocab.VOCAB_SIZE, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
             "projection_dim": 32, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
             "hidden_act": "quick_gelu"}


def tiny_sd15_pipeline(tokenizer_dir: Path, seed: int = 0, prediction_type: str = "epsilon"):
    """A StableDiffusionPipeline with tiny random weights and the real CLIP tokenizer."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(clip_vocab.write_tokenizer(tokenizer_dir, clip_vocab.EOS))
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), tokenizer=tok,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                skip_prk_steps=True, steps_offset=1, prediction_type=prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def block_network(monkeypatch) -> list[str]:
    """Make every socket connection and name lookup fail; returns the list of attempts made."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def same_state(a, b) -> list[str]:
    """Names whose tensors differ (or are missing) between two modules."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in set(sa) | set(sb) if k not in sa or k not in sb or not torch.equal(sa[k], sb[k])]
