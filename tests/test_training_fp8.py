"""training.fp8_base: float8 storage of the frozen denoiser's linear weights, upcast per layer."""

from __future__ import annotations

import math

import pytest
import torch

from backend.config.schema import NetworkSection
from backend.models.registry import get_family
from backend.training.fp8 import FP8, store_linear_weights_in_fp8, upcast_weight
from backend.training.networks import build_network
from tests._training_fixtures import events, new_job, start_worker, wait_worker


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 48)).requires_grad_(False)


def _dequantized_copy(fp8_model: torch.nn.Module, like: torch.nn.Module) -> torch.nn.Module:
    """`like` with each linear weight replaced by the fp8 model's weight, upcast to fp32."""
    with torch.no_grad():
        for (_, ours), (_, ref) in zip(fp8_model.named_modules(), like.named_modules(), strict=True):
            if isinstance(ref, torch.nn.Linear):
                ref.weight.copy_(upcast_weight(ours, torch.float32))
    return like


def test_fp8_layers_compute_with_their_upcast_weight_within_fp8_error_of_the_original():
    ref, model = _mlp(), _mlp()
    x = torch.randn(3, 7, 64, requires_grad=True)
    y_ref = ref(x)
    stored = store_linear_weights_in_fp8(model)
    assert stored.layers == 2 and all(m.weight.dtype == FP8 for m in model if isinstance(m, torch.nn.Linear))
    y = model(x)
    # The same numbers as the dequantized weights (the mechanism), and close to the original (e4m3: 2⁻⁴).
    deq = _dequantized_copy(model, _mlp())
    assert torch.equal(y, deq(x))
    assert 0 < ((y - y_ref).norm() / y_ref.norm()).item() < 0.06
    (g,) = torch.autograd.grad(y.square().sum(), x)
    (g_deq,) = torch.autograd.grad(deq(x).square().sum(), x)
    assert torch.allclose(g, g_deq, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model(x)
    assert y16.dtype == torch.bfloat16 and ((y16.float() - y_ref).norm() / y_ref.norm()).item() < 0.06
    (g16,) = torch.autograd.grad(y16.float().sum(), x)
    assert g16.dtype == torch.float32


def test_weight_bytes_are_half_of_bf16_and_small_weights_keep_their_precision():
    model = _mlp().to(torch.bfloat16)
    with torch.no_grad():
        model[0].weight.mul_(1e-3)  # all in e4m3's subnormal range without the per-tensor scale
    before = model[0].weight.float().clone()
    stored = store_linear_weights_in_fp8(model)
    assert stored.bytes_after * 2 == stored.bytes_before
    back = upcast_weight(model[0], torch.float32)
    assert ((back - before).norm() / before.norm()).item() < 0.05


def test_backward_keeps_the_fp8_weight_not_an_upcast_copy():
    """Autograd would hold a full-precision copy of every weight until backward; ours keeps fp8 only."""
    model = _mlp()
    store_linear_weights_in_fp8(model)
    saved: list[torch.Tensor] = []
    x = torch.randn(3, 7, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
    weights = [t for t in saved if t.dim() == 2]
    assert weights and all(t.dtype == FP8 for t in weights), [(t.dtype, tuple(t.shape)) for t in saved]


@pytest.mark.parametrize("algo", ["lora", "loha", "lokr"])
def test_adapters_train_on_fp8_layers_as_on_their_dequantized_weights(demo_workspace, algo):
    """LyCORIS wraps the fp8 layers (its bypass modules call the wrapped forward); the output and the
    adapters' gradients are those of the same model with the dequantized weights."""
    from diffusers import UNet2DConditionModel

    fam = get_family("sd15")
    folder = demo_workspace / "models" / "demo-sd15"
    load = lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet").requires_grad_(False)  # noqa: E731
    unet, ref = load(), load()
    assert store_linear_weights_in_fp8(unet).layers > 0
    _dequantized_copy(unet, ref)
    cfg = NetworkSection(algo=algo, rank=4, alpha=2.0)
    outputs, grads = [], []
    for model in (unet, ref):
        torch.manual_seed(1)
        net = build_network(cfg, fam, model, None)
        with torch.no_grad():
            for p in net.net.parameters():
                p.add_(torch.randn_like(p) * 0.05)  # up-weights start at 0: make the adapters matter
        torch.manual_seed(2)
        x, c = torch.randn(2, 4, 8, 8), torch.randn(2, 77, model.config.cross_attention_dim)
        y = model(x, torch.tensor([10, 600]), encoder_hidden_states=c).sample
        y.square().mean().backward()
        outputs.append(y.detach())
        grads.append([p.grad.clone() for p in net.trainable_parameters()])
        net.restore()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(*grads, strict=True))
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_fp8_base_is_refused_for_algorithms_that_rebuild_the_weight():
    """By the schema, so validate (and the dashboard's Start) refuse it before a job exists."""
    from backend.config import load_config
    from backend.errors import ConfigError

    for opts in ({"algo": "ia3"}, {"dora": True}):
        with pytest.raises(ConfigError, match="training.fp8_base works with network.algo"):
            load_config({"training": {"fp8_base": True}, "network": opts})


def test_fp8_base_run_in_a_worker_and_the_lora_loads_in_diffusers(demo_copy):
    from diffusers import StableDiffusionPipeline

    job = new_job(demo_copy, ["training.fp8_base=true", "training.mixed_precision='bf16'", "training.max_steps=3",
                              "network.train_text_encoder=false"])
    assert wait_worker(start_worker(job), job) == 0, (job / "job.log").read_text()[-3000:]
    ready = next(e for e in events(job, "phase") if e.get("phase") == "ready")
    fp8 = ready["fp8_base"]
    assert fp8["layers"] > 0 and fp8["bytes_after"] * 2 == fp8["bytes_before"]  # bf16 → e4m3
    losses = [e["loss"] for e in events(job, "metric")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    pipe = StableDiffusionPipeline.from_pretrained(demo_copy / "models" / "demo-sd15", local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def draw() -> torch.Tensor:
        return pipe("dashdemo", num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images

    before = draw()
    pipe.load_lora_weights(str(job / "output" / "demo-lora.safetensors"))
    assert (draw() - before).abs().max() > 1e-4
