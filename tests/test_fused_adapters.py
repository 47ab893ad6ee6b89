"""The fused adapter forwards give LyCORIS's own output and gradients (adapter parameters and input)."""

from __future__ import annotations

import pytest
import torch

from backend.training.fused_adapters import fused_forward_for, install_fused_forwards, kron_apply

LINEAR = ("linear", lambda: torch.nn.Linear(24, 36))
CONV = ("conv", lambda: torch.nn.Conv2d(12, 20, 3, stride=2, padding=1))
CONV1 = ("conv1x1", lambda: torch.nn.Conv2d(24, 36, 1))

CASES = [
    ("lora", LINEAR, {}), ("lora", LINEAR, {"alpha": 4.0}), ("lora", CONV, {}), ("lora", CONV, {"use_tucker": True}),
    ("lora", CONV1, {}),
    ("loha", LINEAR, {}), ("loha", CONV, {}), ("loha", CONV1, {}),
    ("lokr", LINEAR, {"factor": 4}), ("lokr", LINEAR, {"factor": 4, "lora_dim": 32}),
    ("lokr", LINEAR, {"factor": 2, "decompose_both": True, "lora_dim": 2}),
    ("lokr", CONV, {"factor": 4}), ("lokr", CONV, {"factor": 4, "lora_dim": 32}), ("lokr", CONV1, {"factor": 4}),
    ("dora", LINEAR, {}), ("dora", CONV, {}), ("dora", CONV1, {}),
    ("ia3", LINEAR, {}), ("ia3", CONV, {}), ("ia3", LINEAR, {"train_on_input": True}),
    ("ia3", CONV, {"train_on_input": True}),
]


def _module(algo: str, layer: torch.nn.Module, extra: dict, multiplier: float, scalar: bool):
    from lycoris.modules.ia3 import IA3Module
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    if algo == "ia3":
        m = IA3Module("test", layer, multiplier, **extra)
        with torch.no_grad():
            m.weight.add_(torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
        return m
    cls = {"lora": LoConModule, "dora": LoConModule, "loha": LohaModule, "lokr": LokrModule}[algo]
    kw = {"lora_dim": 4, "alpha": 3.0, "use_scalar": scalar, "bypass_mode": algo != "dora",
          "weight_decompose": algo == "dora", **extra}
    m = cls("test", layer, multiplier, **kw)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        if scalar:
            m.scalar.fill_(0.8)
    return m


def _grads(fn, m, x):
    x = x.clone().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    y = fn(m, x)
    weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    (y * weights).sum().backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


PARAMS = [pytest.param(algo, layer, extra, scalar, id=f"{algo}-{layer[0]}-{i}-{'scalar' if scalar else 'plain'}")
          for i, (algo, layer, extra) in enumerate(CASES) for scalar in (False, True)
          if not (algo == "ia3" and scalar)]   # IA3 has no scalar


@pytest.mark.parametrize("multiplier", [1.0, 0.6])
@pytest.mark.parametrize(("algo", "layer", "extra", "scalar"), PARAMS)
def test_fused_forward_equals_lycoris(algo, layer, extra, scalar, multiplier):
    torch.manual_seed(0)
    kind, make = layer
    m = _module(algo, make(), extra, multiplier, scalar)
    assert fused_forward_for(m) is not None, "this module should get a fused forward"
    install_fused_forwards([m])
    assert m._fused_unit_scalar is (algo != "ia3" and not scalar)   # a scalar buffer of 1 costs no operator
    g = torch.Generator().manual_seed(7)
    x = torch.randn((3, 5, 24) if kind == "linear" else (2, m.shape[1], 9, 9), generator=g)
    y_ref, gx_ref, gp_ref = _grads(lambda mod, inp: type(mod).forward(mod, inp), m, x)
    y, gx, gp = _grads(lambda mod, inp: mod.forward(inp), m, x)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5), (y - y_ref).abs().max()
    assert torch.allclose(gx, gx_ref, rtol=1e-4, atol=1e-5), (gx - gx_ref).abs().max()
    assert gp.keys() == gp_ref.keys() and gp
    for name in gp:
        assert torch.allclose(gp[name], gp_ref[name], rtol=1e-4, atol=1e-4), (name, (gp[name] - gp_ref[name]).abs().max())
    assert not torch.allclose(y, m.org_forward(x), atol=1e-3)   # the update is not zero: the check means something


def test_kron_apply_is_the_kronecker_product():
    g = torch.Generator().manual_seed(1)
    w1, w2 = torch.randn(3, 4, generator=g), torch.randn(5, 6, generator=g)
    x = torch.randn(7, 24, generator=g)
    assert torch.allclose(kron_apply(x, w1, w2, None), x @ torch.kron(w1, w2).t(), atol=1e-5)
    w2c = torch.randn(5, 6, 3, 3, generator=g)
    xc = torch.randn(2, 24, 8, 8, generator=g)
    conv = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}
    full = torch.kron(w1[:, :, None, None], w2c)
    assert torch.allclose(kron_apply(xc, w1, w2c, conv), torch.nn.functional.conv2d(xc, full, padding=1), atol=1e-4)


def test_modules_lycoris_must_run_keep_their_forward():
    from lycoris.modules.locon import LoConModule

    assert fused_forward_for(LoConModule("t", torch.nn.Linear(8, 8), 1.0, 4, 1.0, dropout=0.1, bypass_mode=True)) is None
    assert fused_forward_for(LoConModule("t", torch.nn.Linear(8, 8), 1.0, 4, 1.0, rank_dropout=0.1,
                                         bypass_mode=True)) is None
    assert fused_forward_for(LoConModule("t", torch.nn.Conv2d(8, 8, 3, groups=2), 1.0, 4, 1.0,
                                         bypass_mode=True)) is None


MIXED = [pytest.param(algo, layer, extra, id=f"{algo}-{layer[0]}-{i}") for i, (algo, layer, extra) in enumerate(CASES)]


@pytest.mark.parametrize(("algo", "layer", "extra"), MIXED)
def test_fused_forward_under_mixed_precision(algo, layer, extra):
    """As in training with bf16 autocast: bf16 frozen layer, fp32 adapter, fp32 x (a LayerNorm or GroupNorm
    output), the forward under (emulated) CUDA autocast and the backward outside it. The fused forward
    runs, gives LyCORIS's output dtype and values, and its backward reaches x and every parameter."""
    from backend.training.cost.emulate import CudaEmulation

    kind, make = layer
    m = _module(algo, make(), extra, 1.0, False).float()
    m.org_module[0].to(torch.bfloat16)
    install_fused_forwards([m])
    x = torch.randn((3, 5, 24) if kind == "linear" else (2, m.shape[1], 9, 9), generator=torch.Generator().manual_seed(7))

    def under_autocast(fn):
        def run(mod, inp):
            with CudaEmulation(torch.bfloat16):
                return fn(mod, inp)
        return run

    y_ref, gx_ref, gp_ref = _grads(under_autocast(lambda mod, inp: type(mod).forward(mod, inp)), m, x)
    y, gx, gp = _grads(under_autocast(lambda mod, inp: mod.forward(inp)), m, x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert gx.dtype == torch.float32 and gp.keys() == gp_ref.keys() and gp
    assert torch.allclose(y.float(), y_ref.float(), rtol=0.05, atol=0.05), (y.float() - y_ref.float()).abs().max()


def test_fused_dora_compiles_without_graph_breaks():
    """torch.compile traces the DoRA forward and its fp32 region whole (Dynamo cannot trace the region's
    ContextVar) and gives the eager output and gradients."""
    import torch._dynamo

    def run(compiled: bool):
        torch._dynamo.reset()
        torch.manual_seed(0)
        lin = torch.nn.Linear(24, 24).requires_grad_(False)
        m = _module("dora", lin, {}, 1.0, False)
        install_fused_forwards([m])
        m.apply_to()
        x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(7), requires_grad=True)
        fn = torch.compile(lin, backend="aot_eager", fullgraph=True) if compiled else lin
        y = fn(x)
        y.square().sum().backward()
        return lin, y.detach(), x.grad, [p.grad for p in m.parameters()]

    lin, y_ref, gx_ref, gp_ref = run(False)
    assert torch._dynamo.explain(lin)(torch.randn(2, 5, 24)).graph_break_count == 0
    _, y, gx, gp = run(True)   # fullgraph=True: a graph break would raise
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
    assert all(torch.equal(a, b) for a, b in zip(gp, gp_ref, strict=True)) and gp
