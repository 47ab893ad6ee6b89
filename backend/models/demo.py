"""The built-in demo: a tiny SD 1.5-architecture pipeline and a generated kohya dataset.

Everything is made here, offline, with fixed seeds: the model has the real SD 1.5 component classes
(UNet with cross-attention, AutoencoderKL, CLIPTextModel, CLIPTokenizer, a scheduler config) with
random weights and small widths, so every code path of training and sampling runs in seconds on a CPU.
The tokenizer is byte-level (the 512 byte tokens plus the two specials, an empty merges list): with
transformers 5.x it must be loaded from files, and `model_max_length=77` must be set or the pipeline
overflows.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from backend.models.clip_vocab import bytes_to_unicode
from backend.paths import WorkspacePaths

DEMO_MODEL = "demo-sd15"
DEMO_DATASET = "demo"
DEMO_SUBSET = "5_demo"
TRIGGER = "dashdemo"
SEED = 1234
MARKER = ".loradash-demo"   # written last: its presence means the folder is complete
VERSION = "1"               # bump when the demo's shape changes so old copies are rebuilt

# (width, height) of the demo images: square ones and wide ones, bucketed at the demo resolution.
SQUARE = (128, 128)
WIDE = (192, 128)

UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    # Four blocks give the real 8× down-scaling, so latents have SD's shape at a small resolution.
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 128,
    "scaling_factor": 0.18215,
}
TEXT_CONFIG = {
    "vocab_size": 514,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "bos_token_id": 512,
    "eos_token_id": 513,
    "pad_token_id": 513,
}
SCHEDULER_CONFIG = {  # SD 1.5's noise schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (235, 200, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30)}
BACKGROUNDS = {"white": ((255, 255, 255), (210, 210, 210)), "dark": ((20, 20, 40), (80, 80, 120)),
               "sky": ((120, 170, 240), (240, 250, 255)), "sunset": ((250, 160, 80), (120, 40, 110))}


def write_tokenizer(folder: Path) -> None:
    """A CLIPTokenizer folder: 512 byte tokens (+ their word-final forms) and the two specials."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **specials},
        indent=1), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=1), encoding="utf-8")


def _is_current(folder: Path) -> bool:
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() == VERSION
    except FileNotFoundError:
        return False


def _make_readable(folder: Path) -> None:
    """mkdtemp and safetensors create private (0700/0600) entries: give them the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _build_into(folder: Path, build) -> None:
    """Build in a temporary sibling, then rename: an interrupted build never leaves a half folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(VERSION + "\n", encoding="utf-8")
        _make_readable(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_demo_model(folder: Path) -> None:
    """Write the tiny SD 1.5-architecture diffusers pipeline into `folder` (safetensors weights)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    tok_dir = folder / "tokenizer"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Our own tokenizer files are the reference: keep them exactly as written.
    write_tokenizer(tok_dir)


def _gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int], angle: int):
    import numpy as np
    from PIL import Image

    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (y / max(h - 1, 1)) if angle == 0 else ((x + y) / max(w + h - 2, 1))
    rgb = np.array(top, np.float32) * (1 - t[..., None]) + np.array(bottom, np.float32) * t[..., None]
    return Image.fromarray(rgb.clip(0, 255).astype("uint8"), "RGB")


def _draw_shape(img, shape: str, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, (y0 + y1) // 2), ((x0 + x1) // 2, y1), (x0, (y0 + y1) // 2)],
                     fill=colour)


def demo_images() -> list[tuple[str, tuple[int, int], str, str, str, str]]:
    """(file stem, size, shape, colour, background, caption) of every demo image, in a fixed order."""
    out = []
    colours, backgrounds = list(COLOURS), list(BACKGROUNDS)
    for i in range(18):
        size = WIDE if i % 3 == 2 else SQUARE
        shape = SHAPES[i % len(SHAPES)]
        colour = colours[(i * 5) % len(colours)]
        bg = backgrounds[(i // 2) % len(backgrounds)]
        kind = "wide" if size == WIDE else "square"
        caption = f"{TRIGGER}, {colour} {shape}, {bg} gradient background, {kind}, simple shapes"
        out.append((f"demo_{i:02d}", size, shape, colour, bg, caption))
    return out


def build_demo_dataset(folder: Path) -> None:
    """Write `5_demo/` with the generated images and their `.txt` captions (trigger word first)."""
    import random

    subset = folder / DEMO_SUBSET
    subset.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    for stem, size, shape, colour, bg, caption in demo_images():
        top, bottom = BACKGROUNDS[bg]
        img = _gradient(size, top, bottom, angle=rng.randint(0, 1))
        w, h = size
        side = rng.randint(h // 3, h // 2)
        x0 = rng.randint(4, w - side - 4)
        y0 = rng.randint(4, h - side - 4)
        _draw_shape(img, shape, COLOURS[colour], (x0, y0, x0 + side, y0 + side))
        img.save(subset / f"{stem}.png", optimize=False)
        (subset / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")


def build_demo(paths: WorkspacePaths, family: str = "sd15") -> tuple[Path, Path]:
    """Build (once) the demo model and dataset in the workspace; returns (model_dir, dataset_dir).

    Idempotent: folders already built by this version are left alone, so a second call is a no-op.
    """
    if family != "sd15":
        from backend.errors import ModelError

        raise ModelError(f"no demo model for family {family!r} yet; available: sd15")
    model_dir = paths.models / DEMO_MODEL
    dataset_dir = paths.datasets / DEMO_DATASET
    if not _is_current(model_dir):
        _build_into(model_dir, build_demo_model)
    if not _is_current(dataset_dir):
        _build_into(dataset_dir, build_demo_dataset)
    return model_dir, dataset_dir
