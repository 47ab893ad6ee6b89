"""Noise schedulers: the training DDPM schedule and the samplers for sample images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.errors import ModelError

SAMPLERS = {
    "euler_a": "EulerAncestralDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}


def _scheduler_config(folder: Path) -> dict[str, Any]:
    from backend.models.loading import read_json

    files = sorted(Path(folder).glob("*config.json"))
    if not files:
        raise ModelError(f"no scheduler config in {folder}")
    return read_json(files[0])


def training_scheduler(folder: Path, *, v_prediction: bool, zero_terminal_snr: bool) -> Any:
    """A DDPMScheduler over the model's betas; zero terminal SNR applied with our pure function."""
    import torch
    from diffusers import DDPMScheduler

    from backend.training.losses import rescale_zero_terminal_snr

    cfg = {k: v for k, v in _scheduler_config(folder).items() if not k.startswith("_")}
    cfg.update(prediction_type="v_prediction" if v_prediction else "epsilon", clip_sample=False)
    cfg.pop("rescale_betas_zero_snr", None)
    sched = DDPMScheduler.from_config(cfg)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(sched.betas.double()).float()
        sched.betas = betas
        sched.alphas = 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
        sched.register_to_config(rescale_betas_zero_snr=True)
    return sched


def sampling_scheduler(name: str, training: Any) -> Any:
    """The sampler `name` over the training schedule (v-prediction and zero terminal SNR carried over)."""
    import diffusers

    cls_name = SAMPLERS.get(name)
    if cls_name is None:
        raise ModelError(f"sampling.sampler: {name!r} is not one of {', '.join(SAMPLERS)}")
    cfg = dict(training.config)
    if cfg.get("rescale_betas_zero_snr"):
        cfg["timestep_spacing"] = "trailing"  # Lin et al. 2023 §3.3: sample from the last timestep
    return getattr(diffusers, cls_name).from_config(cfg)
