"""Sample images during training, drawn by a diffusers pipeline around the modules already loaded.

Prompt embeddings are computed once, before the text encoders may be freed, so sampling never needs
them again and uses exactly the conditioning (clip skip included) the training sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class PreparedPrompt:
    index: int
    prompt: str
    negative: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    cond: dict[str, torch.Tensor]
    uncond: dict[str, torch.Tensor]


def prepare_prompts(prompts: list[Any], encode: Any) -> list[PreparedPrompt]:
    """Encode each sample prompt and its negative (batch of one each); `encode(list[str]) -> dict`."""
    out = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            cond = {k: v.detach().cpu() for k, v in encode([p.prompt]).items()}
            uncond = {k: v.detach().cpu() for k, v in encode([p.negative]).items()}
            out.append(PreparedPrompt(i, p.prompt, p.negative, p.seed, p.width, p.height, p.steps, p.guidance,
                                      cond, uncond))
    return out


def _slug(text: str, n: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


def sample_filename(step: int, p: PreparedPrompt) -> str:
    return f"step{step:08d}-{p.index:02d}-{_slug(p.prompt)}.png"


def draw_samples(*, family: Any, unet: Any, vae: Any, scheduler: Any, prompts: list[PreparedPrompt],
                 step: int, out_dir: Path, device: Any, dtype: Any, autocast: Any) -> list[tuple[Path, PreparedPrompt]]:
    """Draw every prompt once; returns (file, prompt) pairs. The UNet is left as it was (train/eval)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = family.build_pipeline(unet=unet, vae=vae, te=None, scheduler=scheduler)
    was_training = unet.training
    unet.eval()
    written = []
    try:
        for p in prompts:
            gen = torch.Generator(device="cpu").manual_seed(p.seed)
            latents = family.initial_latents(pipe, unet, p.width, p.height, gen).to(device, dtype)
            kwargs = family.sample_kwargs({k: v.to(device, dtype) for k, v in p.cond.items()},
                                          {k: v.to(device, dtype) for k, v in p.uncond.items()}, p.width, p.height)
            with torch.no_grad(), autocast():
                image = pipe(num_inference_steps=p.steps, guidance_scale=p.guidance, width=p.width,
                             height=p.height, latents=latents, generator=gen, output_type="pil",
                             **kwargs).images[0]
            path = out_dir / sample_filename(step, p)
            tmp = path.with_name(f".{path.name}.tmp")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            written.append((path, p))
    finally:
        unet.train(was_training)
    return written
