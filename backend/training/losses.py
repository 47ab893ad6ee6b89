"""The loss maths, as small pure functions (tensors in, tensors out; randomness from a generator).

Each names its source. Tests compare each with an independent computation (tests/test_losses.py).
"""

from __future__ import annotations

import math
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


# -- flow matching (Flux.1) -----------------------------------------------------------------------

def flow_noisy(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x₀ + σ·ε, the straight path from data to noise.

    Liu et al., "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow",
    ICLR 2023; Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
    (SD3), 2024, §2 eq. 3 with a_t = 1 − t, b_t = t (sd-scripts flux_train_utils).
    """
    s = sigmas.reshape(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
    return (1.0 - s) * latents + s * noise


def flow_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model learns: d x_σ / dσ = ε − x₀ (Esser et al. 2024, eq. 4 with the path above;
    sd-scripts flux_train_network.py `target = noise - latents`)."""
    return noise - latents


def sigmoid_sigmas(n: int, scale: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """σ = sigmoid(scale · z), z ~ N(0, 1): logit-normal noise levels (Esser et al. 2024, §3.1 eq. 19;
    x-flux and sd-scripts `--timestep_sampling sigmoid` with `--sigmoid_scale`)."""
    return torch.sigmoid(scale * torch.randn((n,), generator=generator, device=device))


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """σ' = s·σ / (1 + (s − 1)·σ): noise levels moved towards noise for s > 1.

    Esser et al. 2024, §5.3.2 eq. 23 (resolution-dependent shifting, α = s); sd-scripts
    `--timestep_sampling shift` with `--discrete_flow_shift` and diffusers' FlowMatchEulerDiscreteScheduler.
    """
    return sigmas * shift / (1.0 + (shift - 1.0) * sigmas)


def flux_shift_mu(image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15,
                  base_seq_len: int = 256, max_seq_len: int = 4096) -> float:
    """μ of Flux's resolution-dependent shift: linear in the number of image tokens, 0.5 at 256 tokens
    (256² px) and 1.15 at 4096 (1024² px). Black Forest Labs' flux `sampling.get_lin_function` (also
    sd-scripts `--timestep_sampling flux_shift` and diffusers' `calculate_shift`)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + base_shift - m * base_seq_len


def flux_time_shift(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """σ' = e^μ / (e^μ + 1/σ − 1): the exponential shift of Black Forest Labs' flux `sampling.time_shift`
    (with its exponent 1), equal to `shift_sigmas` with s = e^μ."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))


def sample_flow_sigmas(method: str, n: int, *, sigmoid_scale: float, discrete_flow_shift: float,
                       image_seq_len: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Noise levels σ ∈ (0, 1) for a batch, as sd-scripts flux_train_utils draws them:
    uniform; sigmoid (logit-normal); shift (logit-normal, then `shift_sigmas`); flux_shift
    (logit-normal, then `flux_time_shift` with μ from the image's token count)."""
    if method == "uniform":
        return torch.rand((n,), generator=generator, device=device)
    sigmas = sigmoid_sigmas(n, sigmoid_scale, generator, device)
    if method == "sigmoid":
        return sigmas
    if method == "shift":
        return shift_sigmas(sigmas, discrete_flow_shift)
    if method == "flux_shift":
        return flux_time_shift(sigmas, flux_shift_mu(image_seq_len))
    raise ValueError(f"flow.timestep_sampling: {method!r} is not one of uniform, sigmoid, shift, flux_shift")


def flow_prediction(pred: torch.Tensor, noisy: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                    sigmas: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the loss compares, what it compares it with) for `flow.model_prediction_type`:
    raw: the velocity against ε − x₀; additive: pred + x_σ against ε − x₀ (both as sd-scripts
    `apply_model_prediction_type`); sigma_scaled: the x₀ estimate x_σ − σ·pred against x₀, the
    preconditioning of diffusers' SD3 training scripts (sd-scripts forms the same estimate but compares
    it with ε − x₀, which no velocity can match; we compare it with what it estimates)."""
    if kind == "raw":
        return pred, flow_target(latents, noise)
    if kind == "additive":
        return pred + noisy, flow_target(latents, noise)
    if kind == "sigma_scaled":
        s = sigmas.reshape(-1, *([1] * (pred.ndim - 1))).to(pred.dtype)
        return noisy - s * pred, latents
    raise ValueError(f"flow.model_prediction_type: {kind!r} is not one of raw, additive, sigma_scaled")


def flow_loss_weights(sigmas: torch.Tensor, scheme: str) -> torch.Tensor:
    """Per-sample loss weights of `flow.weighting_scheme`: none 1; sigma_sqrt σ⁻²; cosmap
    2 / (π(1 − 2σ + 2σ²)). Esser et al. 2024, §3.1 (cosmap eq. 20); diffusers' and sd-scripts'
    `compute_loss_weighting_for_sd3`."""
    if scheme == "none":
        return torch.ones_like(sigmas, dtype=torch.float32)
    if scheme == "sigma_sqrt":
        return sigmas.float() ** -2.0
    if scheme == "cosmap":
        return 2.0 / (math.pi * (1.0 - 2.0 * sigmas.float() + 2.0 * sigmas.float() ** 2))
    raise ValueError(f"flow.weighting_scheme: {scheme!r} is not one of none, sigma_sqrt, cosmap")
