"""Each loss option against an independent computation (numpy loops, diffusers, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.training import losses


def _sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def test_v_target_matches_diffusers_get_velocity():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    ours = losses.v_target(x0, noise, sched.alphas_cumprod, t)
    assert torch.allclose(ours, sched.get_velocity(x0, noise, t), atol=1e-6)
    assert torch.equal(losses.prediction_target(x0, noise, sched.alphas_cumprod, t, False), noise)


def test_snr_and_min_snr_weights_elementwise():
    ac = _sd_alphas_cumprod()
    t = torch.tensor([0, 10, 200, 600, 999])
    snr = losses.snr(ac, t)
    gamma = 5.0
    for v_pred in (False, True):
        w = losses.min_snr_weights(snr, gamma, v_pred)
        for i, ti in enumerate(t.tolist()):
            a = float(ac[ti])
            s = a / (1 - a)
            expected = min(s, gamma) / (s + 1 if v_pred else s)
            assert math.isclose(float(w[i]), expected, rel_tol=1e-5)
    # Low noise (high SNR) is down-weighted; weights never exceed 1.
    w = losses.min_snr_weights(snr, gamma, False)
    assert w[0] < 0.01 and float(w.max()) <= 1.0 + 1e-6


def test_min_snr_weight_at_zero_snr_is_finite():
    snr = torch.tensor([0.0, 1.0])
    assert torch.equal(losses.min_snr_weights(snr, 5.0, False), torch.tensor([1.0, 1.0]))
    assert torch.allclose(losses.min_snr_weights(snr, 5.0, True), torch.tensor([0.0, 0.5]))


def test_offset_noise_adds_one_draw_per_sample_and_channel():
    noise = torch.zeros(2, 3, 4, 4)
    out = losses.offset_noise(noise, 0.1, torch.Generator().manual_seed(7))
    expected = 0.1 * torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    # Constant over each image plane, equal to strength × the generator's draws.
    assert torch.allclose(out, expected[:, :, None, None].expand(2, 3, 4, 4))


def test_pyramid_noise_against_a_numpy_construction():
    h = w = 16
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, h, w, generator=torch.Generator().manual_seed(1))
    out = losses.pyramid_noise(noise, iterations=3, discount=0.5, generator=g)
    # Independent: replay the same draws, upsample with numpy bilinear (half-pixel centres).
    g2 = torch.Generator().manual_seed(3)
    acc = noise.double().numpy().copy()
    for i in range(3):
        r = 2.0 + 2.0 * torch.rand((), generator=g2).item()
        sh, sw = max(1, int(h / r ** i)), max(1, int(w / r ** i))
        level = torch.randn((2, 4, sh, sw), generator=g2).double().numpy()
        acc += _bilinear(level, h, w) * 0.5 ** i
        if sh == 1 or sw == 1:
            break
    acc /= acc.std(ddof=1)
    assert np.allclose(out.double().numpy(), acc, atol=1e-5)
    assert abs(float(out.std()) - 1.0) < 1e-5


def _bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """align_corners=False bilinear resize of the last two axes."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            f = src - i0
            m[o, i0] += 1 - f
            m[o, i1] += f
        return m
    wh, ww = weights(x.shape[-2], h), weights(x.shape[-1], w)
    return np.einsum("oh,bchw,pw->bcop", wh, x, ww)


def test_zero_terminal_snr_rescale_matches_diffusers_and_its_definition():
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as reference

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ours = losses.rescale_zero_terminal_snr(betas)
    assert torch.allclose(ours, reference(betas.clone()), atol=1e-10)
    ac_old, ac_new = torch.cumprod(1 - betas, 0), torch.cumprod(1 - ours, 0)
    assert float(ac_new[-1]) == pytest.approx(0.0, abs=1e-12)          # terminal SNR is zero
    assert float(ac_new[0]) == pytest.approx(float(ac_old[0]), rel=1e-9)  # first step kept


def test_per_sample_mse_is_mean_over_all_but_batch():
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    expected = torch.tensor([float(((a[i] - b[i]) ** 2).mean()) for i in range(3)])
    assert torch.allclose(losses.per_sample_mse(a, b), expected, atol=1e-6)


def test_ddpm_objective_copies_the_schedule_to_the_latents_device_once():
    """The ᾱ table goes to the latents' device on the first step and stays there: no host→device copy
    per step (the meta device stands in for the GPU)."""
    import random

    from diffusers import DDPMScheduler
    from torch.utils._python_dispatch import TorchDispatchMode

    from backend.config import load_config
    from backend.training.objectives import DDPMObjective

    class CrossDeviceCopies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default and isinstance(out, torch.Tensor) \
                    and args[0].device != out.device:
                self.seen.append(tuple(args[0].shape))
            return out

    sched = DDPMScheduler(num_train_timesteps=1000)
    obj = DDPMObjective(load_config({"loss": {"min_snr_gamma": 5.0}, "model": {"v_prediction": True}}), sched)
    latents = torch.zeros(2, 4, 8, 8, device="meta")
    copies = []
    for _ in range(3):
        with CrossDeviceCopies() as mode:
            noised = obj.noise(latents, None, random.Random(0))
            obj.per_sample_loss(torch.zeros_like(latents), latents, noised)
        copies.append(mode.seen)
    assert copies[1] == copies[2] == []
    assert obj.alphas_cumprod(latents.device).device == latents.device
