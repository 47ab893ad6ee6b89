"""The Flux demo: a tiny Flux.1 [dev]-architecture pipeline (one double and two single blocks, a 16-channel
VAE, a tiny CLIP-L with the real CLIP tokenizer, a tiny T5 whose tokenizer is trained here, offline, with
the `tokenizers` library on the demo captions), random weights, saved as a diffusers folder. It runs every
Flux code path of training and sampling on a laptop CPU in about a minute.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from backend.models import clip_vocab, demo
from backend.paths import WorkspacePaths

DEMO_MODEL = "demo-flux"
SEED = 2468
CLIP_WIDTH, T5_WIDTH, HEAD_DIM = 32, 32, 16
TRANSFORMER_CONFIG = {
    "patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 2,
    "attention_head_dim": HEAD_DIM, "num_attention_heads": 2, "joint_attention_dim": T5_WIDTH,
    "pooled_projection_dim": CLIP_WIDTH, "axes_dims_rope": [4, 6, 6],  # sums to the head width
}
VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
    "latent_channels": 16, "norm_num_groups": 8, "sample_size": 128, "scaling_factor": 0.3611,
    "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False,  # Flux's AE has neither
}
CLIP_CONFIG = {"vocab_size": clip_vocab.VOCAB_SIZE, "hidden_size": CLIP_WIDTH, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
               "projection_dim": CLIP_WIDTH, "hidden_act": "quick_gelu", "bos_token_id": 0, "eos_token_id": 2,
               "pad_token_id": 1}
T5_CONFIG = {"d_model": T5_WIDTH, "d_ff": 64, "d_kv": 8, "num_layers": 2, "num_heads": 4,
             "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 8,
             "relative_attention_max_distance": 32, "pad_token_id": 0, "eos_token_id": 1,
             "decoder_start_token_id": 0, "is_encoder_decoder": False, "use_cache": False}
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                    "base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5's vocabulary


def demo_texts() -> list[str]:
    """What the demo's T5 tokenizer learns from: the demo captions and the demo presets' prompts."""
    return [caption for *_, caption in demo.demo_images()] + [
        "dashdemo, red circle, white gradient background", "a blue square on a dark background"]


def write_t5_tokenizer(folder: Path, texts: list[str], max_length: int = 512) -> Path:
    """A T5-style tokenizer (SentencePiece unigram, `▁` word boundaries, `</s>` appended, `<pad>` = 0)
    trained on `texts` with the `tokenizers` library, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=256, special_tokens=list(T5_SPECIALS), unk_token="<unk>",
                                      show_progress=False)  # its progress lines would land in JSON output
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "model_max_length": max_length, "pad_token": "<pad>",
         "eos_token": "</s>", "unk_token": "<unk>", "extra_ids": 0}, indent=1), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=1), encoding="utf-8")
    return folder


def tiny_flux_pipeline(tokenizer_root: Path, seed: int = SEED, *, variant: str = "dev"):
    """A FluxPipeline with tiny random weights; tokenizers are written under `tokenizer_root`."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import (
        AutoTokenizer,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
    )

    clip_tok = CLIPTokenizer.from_pretrained(clip_vocab.write_tokenizer(tokenizer_root / "tokenizer", clip_vocab.EOS,
                                                                        clip_vocab.derive()))
    t5_tok = AutoTokenizer.from_pretrained(write_t5_tokenizer(tokenizer_root / "tokenizer_2", demo_texts()))
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TRANSFORMER_CONFIG, guidance_embeds=variant == "dev")
    vae = AutoencoderKL(**VAE_CONFIG)
    clip = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG))
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), **T5_CONFIG))
    sched = FlowMatchEulerDiscreteScheduler(**(SCHEDULER_CONFIG if variant == "dev"
                                               else {"num_train_timesteps": 1000, "shift": 1.0}))
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5,
                        tokenizer_2=t5_tok, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_flux_demo_model(folder: Path) -> None:
    """Write the tiny Flux pipeline into `folder` (diffusers layout, safetensors weights)."""
    with tempfile.TemporaryDirectory(prefix=".demo-flux-tok-", dir=folder.parent) as tok:
        pipe = tiny_flux_pipeline(Path(tok))
        pipe.save_pretrained(folder, safe_serialization=True)
        # Our own tokenizer files are the reference: keep them exactly as written.
        write_t5_tokenizer(folder / "tokenizer_2", demo_texts())


def build_flux_demo(paths: WorkspacePaths) -> tuple[Path, Path]:
    """Build (once) `models/demo-flux/` and the shared demo dataset; returns (model_dir, dataset_dir).
    A second call with both present is a no-op."""
    model_dir = paths.models / DEMO_MODEL
    dataset_dir = paths.datasets / demo.DEMO_DATASET
    if not demo._is_current(model_dir):
        demo._build_into(model_dir, build_flux_demo_model)
    if not demo._is_current(dataset_dir):
        demo._build_into(dataset_dir, demo.build_demo_dataset)
    return model_dir, dataset_dir
