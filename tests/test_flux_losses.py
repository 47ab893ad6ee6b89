"""The flow-matching maths (backend/training/losses.py) against values worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from backend.training import losses
from backend.training.objectives import FlowObjective


def test_path_and_velocity():
    x0, eps = torch.full((2, 1, 2, 2), 2.0), torch.full((2, 1, 2, 2), -1.0)
    noisy = losses.flow_noisy(x0, eps, torch.tensor([0.25, 1.0]))
    assert torch.allclose(noisy[0], torch.full((1, 2, 2), 1.25))  # 0.75·2 + 0.25·(−1)
    assert torch.allclose(noisy[1], eps[1])  # σ = 1 is pure noise
    assert torch.equal(losses.flow_target(x0, eps), torch.full((2, 1, 2, 2), -3.0))


def test_shifts():
    assert losses.shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2
    assert losses.shift_sigmas(torch.tensor(0.2), 3.1582).item() == pytest.approx(0.63164 / 1.43164)
    assert losses.shift_sigmas(torch.tensor([0.0, 1.0]), 3.0).tolist() == [0.0, 1.0]
    assert losses.flux_shift_mu(256) == pytest.approx(0.5)
    assert losses.flux_shift_mu(4096) == pytest.approx(1.15)
    assert losses.flux_shift_mu(1024) == pytest.approx(0.5 + 768 * 0.65 / 3840)  # 512² px: 0.63
    # e^μ = 3: the same as a shift of 3
    assert losses.flux_time_shift(torch.tensor(0.5), math.log(3.0)).item() == pytest.approx(0.75)


def test_sampled_sigmas_follow_the_method():
    def draw(method, **kw):
        args = {"sigmoid_scale": 1.0, "discrete_flow_shift": 3.0, "image_seq_len": 4096, **kw}
        return losses.sample_flow_sigmas(method, 4, generator=torch.Generator().manual_seed(7), **args)

    z = torch.randn(4, generator=torch.Generator().manual_seed(7))
    u = torch.rand(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(draw("uniform"), u)
    assert torch.allclose(draw("sigmoid", sigmoid_scale=2.0), 1 / (1 + torch.exp(-2.0 * z)))
    s = 1 / (1 + torch.exp(-z))
    assert torch.allclose(draw("shift"), 3 * s / (1 + 2 * s))
    mu = math.exp(1.15)  # 4096 tokens: Flux's largest shift
    assert torch.allclose(draw("flux_shift"), mu / (mu + 1 / s - 1))
    with pytest.raises(ValueError, match="flow.timestep_sampling"):
        draw("sigma")


def test_prediction_types_and_weights():
    x0, eps, sigmas = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0.1, 0.5, 0.9])
    noisy = losses.flow_noisy(x0, eps, sigmas)
    exact = eps - x0  # the true velocity makes every prediction type's loss zero
    for kind in ("raw", "sigma_scaled"):
        compared, target = losses.flow_prediction(exact, noisy, x0, eps, sigmas, kind)
        assert torch.allclose(compared, target, atol=1e-6), kind
    compared, target = losses.flow_prediction(exact - noisy, noisy, x0, eps, sigmas, "additive")
    assert torch.allclose(compared, target, atol=1e-6)
    compared, target = losses.flow_prediction(torch.ones_like(x0), noisy, x0, eps, sigmas, "sigma_scaled")
    assert torch.allclose(compared[1], noisy[1] - 0.5) and torch.equal(target, x0)
    half = torch.tensor([0.5])
    assert losses.flow_loss_weights(half, "none").tolist() == [1.0]
    assert losses.flow_loss_weights(half, "sigma_sqrt").tolist() == [4.0]
    assert losses.flow_loss_weights(half, "cosmap").item() == pytest.approx(4 / math.pi)  # 2 / (π · 0.5)
    with pytest.raises(ValueError, match="flow.weighting_scheme"):
        losses.flow_loss_weights(half, "mode")


def test_flow_objective_feeds_sigma_and_guidance():
    flow = SimpleNamespace(timestep_sampling="shift", sigmoid_scale=1.0, discrete_flow_shift=3.0,
                           model_prediction_type="raw", weighting_scheme="none", guidance_scale=2.5)
    latents = torch.randn(2, 16, 4, 6)
    noised = FlowObjective(SimpleNamespace(flow=flow), guidance=True).noise(latents, torch.Generator().manual_seed(3))
    s = noised.timesteps.reshape(-1, 1, 1, 1)
    assert ((noised.timesteps > 0) & (noised.timesteps < 1)).all()
    assert torch.allclose(noised.noisy, (1 - s) * latents + s * noised.noise)
    assert noised.model_inputs["guidance"].tolist() == [2.5, 2.5]
    loss = FlowObjective(SimpleNamespace(flow=flow), guidance=False).per_sample_loss(
        noised.noise - latents, latents, noised)
    assert loss.shape == (2,) and torch.allclose(loss, torch.zeros(2))
    assert FlowObjective(SimpleNamespace(flow=flow), guidance=False).noise(latents, torch.Generator()).model_inputs == {}
