"""The loss maths, as small pure functions (tensors in, tensors out; randomness from a generator).

Each names its source. Tests compare each with an independent computation (tests/test_losses.py).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F


def _gather(values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] per sample, shaped to broadcast over a tensor with `ndim` dimensions."""
    out = values.to(timesteps.device)[timesteps].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def v_target(latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ᾱ_t)·ε − sqrt(1−ᾱ_t)·x₀.

    Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022, §4.
    """
    a = _gather(alphas_cumprod, timesteps, latents.ndim)
    return a.sqrt() * noise - (1.0 - a).sqrt() * latents


def prediction_target(latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
                      timesteps: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """What the denoiser learns to output: the noise ε (Ho et al., DDPM, 2020, eq. 14) or v."""
    return v_target(latents, noise, alphas_cumprod, timesteps) if v_prediction else noise


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) per sample (Kingma et al., "Variational Diffusion Models", 2021)."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].double()
    return (a / (1.0 - a)).float()


def min_snr_weights(snr_t: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-γ.

    Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023, eq. 9 and
    Table 1: ε-prediction min(SNR, γ)/SNR; v-prediction min(SNR, γ)/(SNR + 1) (as sd-scripts
    `apply_snr_weight`). At SNR = 0 (zero terminal SNR) the ε weight is its limit, 1.
    """
    clipped = torch.clamp(snr_t, max=gamma)
    if v_prediction:
        return clipped / (snr_t + 1.0)
    return torch.where(snr_t > 0, clipped / snr_t.clamp(min=1e-20), torch.ones_like(snr_t))


def offset_noise(noise: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ε + strength·n with n ~ N(0, 1) per sample and channel, constant over the image.

    N. Guttenberg, "Diffusion with Offset Noise", crosslabs.org, 2023 (sd-scripts `apply_noise_offset`
    without the adaptive term).
    """
    b, c = noise.shape[:2]
    shift = torch.randn((b, c, *([1] * (noise.ndim - 2))), generator=generator, device=noise.device,
                        dtype=noise.dtype)
    return noise + strength * shift


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float,
                  generator: torch.Generator | None = None, sizes: random.Random | None = None) -> torch.Tensor:
    """Multi-resolution (pyramid) noise, renormalised to unit standard deviation.

    J. Whitaker, "Multi-Resolution Noise for Diffusion Model Training", W&B report, 2023; the form of
    sd-scripts `pyramid_noise_like`: level i adds bilinear-upsampled noise drawn at size H/rⁱ, W/rⁱ
    (r uniform in [2, 4)), weighted discountⁱ, stopping once a side reaches 1. With `sizes`, r is
    drawn from it on the host: reading r from a GPU generator would wait for the GPU at every level.
    """
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(iterations):
        u = sizes.random() if sizes is not None else torch.rand((), generator=generator, device=noise.device).item()
        r = 2.0 + 2.0 * u
        sh, sw = max(1, int(h / (r ** i))), max(1, int(w / (r ** i)))
        level = torch.randn((b, c, sh, sw), generator=generator, device=noise.device, dtype=noise.dtype)
        out = out + F.interpolate(level, size=(h, w), mode="bilinear") * discount ** i
        if sh == 1 or sw == 1:
            break
    return out / out.std()


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose schedule ends at SNR 0 with the first step unchanged.

    Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", WACV 2024, Algorithm 1:
    shift and scale sqrt(ᾱ) so that its last value is 0 and its first is kept, then recover betas.
    """
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (over all but the batch dimension), computed in fp32."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
