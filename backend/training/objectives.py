"""What a training step asks of the denoiser: how clean latents are noised, what the model is given as
its time input, and what its output is compared with. One objective per kind of model: the DDPM noise
schedule of SD 1.5/SDXL, the rectified flow of Flux.1. The maths lives in `losses` (pure functions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from backend.training import losses


@dataclass
class Noised:
    """One batch made noisy: the denoiser's input, its time input, and what the loss needs later."""
    noisy: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor
    model_inputs: dict[str, Any] = field(default_factory=dict)  # further inputs (Flux dev: guidance)


class DDPMObjective:
    """ε- or v-prediction over the model's DDPM schedule, with noise offset, pyramid noise and Min-SNR-γ."""

    def __init__(self, cfg: Any, scheduler: Any):
        self.loss_cfg = cfg.loss
        self.v_prediction = cfg.model.v_prediction
        self.scheduler = scheduler
        self._alphas: dict[torch.device, torch.Tensor] = {}

    def alphas_cumprod(self, device: torch.device) -> torch.Tensor:
        """The schedule's ᾱ table on `device`, copied there once: a host→GPU copy per step would be a
        blocking one."""
        table = self._alphas.get(device)
        if table is None:
            table = self._alphas[device] = self.scheduler.alphas_cumprod.to(device)
        return table

    def noise(self, latents: torch.Tensor, gen: torch.Generator, host: random.Random | None = None) -> Noised:
        """`gen` draws on the device; `host` draws what Python needs as numbers (pyramid level sizes), so
        nothing waits for the GPU."""
        lc = self.loss_cfg
        noise = torch.randn(latents.shape, generator=gen, device=latents.device)
        if lc.noise_offset:
            noise = losses.offset_noise(noise, lc.noise_offset, gen)
        if lc.multires_noise_iterations:
            noise = losses.pyramid_noise(noise, lc.multires_noise_iterations, lc.multires_noise_discount, gen,
                                         sizes=host)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                          generator=gen, device=latents.device)
        return Noised(self.scheduler.add_noise(latents, noise, t), t, noise)

    def per_sample_loss(self, pred: torch.Tensor, latents: torch.Tensor, noised: Noised) -> torch.Tensor:
        t = noised.timesteps
        alphas = self.alphas_cumprod(latents.device)
        target = losses.prediction_target(latents, noised.noise, alphas, t, self.v_prediction)
        per_sample = losses.per_sample_mse(pred, target)
        if self.loss_cfg.min_snr_gamma:
            snr = losses.snr(alphas, t)
            per_sample = per_sample * losses.min_snr_weights(snr, self.loss_cfg.min_snr_gamma, self.v_prediction)
        return per_sample


class FlowObjective:
    """Rectified flow as sd-scripts' flux_train_network.py trains Flux.1: σ drawn by
    `flow.timestep_sampling`, x_σ = (1 − σ)·x₀ + σ·ε, the velocity ε − x₀ as target, σ as the time input,
    and for a guidance-distilled model (FLUX.1 [dev]) `flow.guidance_scale` as its guidance input."""

    def __init__(self, cfg: Any, guidance: bool, patch: int = 2):
        self.flow = cfg.flow
        self.guidance = guidance
        self.patch = patch  # latents are packed patch × patch into tokens (Flux: 2 × 2)

    def noise(self, latents: torch.Tensor, gen: torch.Generator, host: random.Random | None = None) -> Noised:
        f = self.flow
        b, _, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=gen, device=latents.device)
        sigmas = losses.sample_flow_sigmas(f.timestep_sampling, b, sigmoid_scale=f.sigmoid_scale,
                                           discrete_flow_shift=f.discrete_flow_shift,
                                           image_seq_len=(h // self.patch) * (w // self.patch), generator=gen,
                                           device=latents.device)
        inputs = {"guidance": torch.full((b,), f.guidance_scale, device=latents.device)} if self.guidance else {}
        return Noised(losses.flow_noisy(latents, noise, sigmas), sigmas, noise, inputs)

    def per_sample_loss(self, pred: torch.Tensor, latents: torch.Tensor, noised: Noised) -> torch.Tensor:
        sigmas = noised.timesteps
        compared, target = losses.flow_prediction(pred.float(), noised.noisy, latents, noised.noise, sigmas,
                                                  self.flow.model_prediction_type)
        return losses.per_sample_mse(compared, target) * losses.flow_loss_weights(sigmas, self.flow.weighting_scheme)
