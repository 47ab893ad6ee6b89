"""Fused forwards for LyCORIS adapter modules: the same output and gradients, fewer operators per call.

LyCORIS 4.1.3 routes every adapter call through a generic layer (`kernels.select.choose`: device and
dtype probes, then triton kernels, a per-op `torch.compile` or the torch body) and keeps whole-weight
temporaries for backward on its rebuild paths. On a GPU each of those calls is Python overhead and
kernel launches per adapted layer per step. The forwards here compute each algorithm's update in
plain torch ops (tests/test_fused_adapters.py checks output and gradients against LyCORIS's own
forward for linear and conv layers, with scale, multiplier and scalar):

- LoRA/LoCon (bypass): W·x + (s·B)·(A·x), the scale folded into the small `up` matrix; Tucker convs
  add the `mid` conv.
- LoHa (bypass): W·x + op(x, ΔW) with ΔW = (w1a·w1b) ⊙ (w2a·w2b) rebuilt inside one autograd
  function that recomputes ΔW in backward instead of keeping it (LyCORIS keeps it per layer).
- LoKr (bypass): W·x + vec(w1 · unvec(x) · w2ᵀ), the Kronecker product never built
  (Hyeon-Woo et al., "FedPara", 2022; Yeh et al., "LyCORIS", 2024, §3.3).
- IA3: s ⊙ (W·x) + b per output row (or W·(s ⊙ x) + b per input), not a product by the scaled weight.
- DoRA on LoRA/LoCon: LyCORIS rebuilds and normalises the whole weight per call and multiplies by
  the difference (one more full-size product, fp32 full-size temporaries kept for backward). The
  same output is s ⊙ (W·x + ΔW·x) + b with s = m / ‖W + ΔW‖ per output row (Liu et al., "DoRA",
  2024, eq. 5); the row norms come from ‖W‖² (fixed), W·Aᵀ and A·Aᵀ, never from W + ΔW itself.

Modules with dropout, rank or module dropout, Tucker factors (LoHa, LoKr) or layer types other than
linear and 2-D conv keep LyCORIS's forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

from backend.training.precision import fp32_region


def _has_dropout(m: Any) -> bool:
    drop = getattr(m, "dropout", 0)
    no_drop = drop == 0 or isinstance(drop, torch.nn.Identity) or drop is None
    extra = getattr(m, "drop", None)
    no_drop = no_drop and (extra is None or isinstance(extra, torch.nn.Identity))
    return not no_drop or bool(m.rank_dropout) or bool(m.module_dropout)


def _conv_args(conv: Any) -> dict[str, Any]:
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}


def _factor(m: Any, with_multiplier: bool = True) -> torch.Tensor | float:
    """scale (· multiplier) · scalar: one factor for the update. `scalar` is a trained parameter with
    use_scalar, else a buffer of 1 (only LyCORIS's apply_max_norm changes it, which the trainer never
    calls): then the factor is a plain number and costs no operator."""
    f = m.scale * (m.multiplier if with_multiplier else 1.0)
    return f if getattr(m, "_fused_unit_scalar", False) else m.scalar * f


def _add_linear(base: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
                ) -> torch.Tensor:
    """base + h·weightᵀ (+ bias) as one matrix product that accumulates into `base` (addmm)."""
    out = base.shape[-1]
    flat = base.reshape(-1, out) if bias is None else base.reshape(-1, out) + bias
    return torch.addmm(flat, h.reshape(-1, h.shape[-1]), weight.t()).view(base.shape)


# -- LoRA / LoCon --------------------------------------------------------------------------------
def lora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """W·x + (s·B)·(A·x) for a LoConModule in bypass mode (linear, conv, Tucker conv)."""
    if not self.bypass_mode:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.org_forward(x, *args, **kwargs)
    f = _factor(self)
    up = (self.lora_up.weight if isinstance(f, float) and f == 1.0 else self.lora_up.weight * f).to(x.dtype)
    down = self.lora_down.weight.to(x.dtype)
    if self.module_type == "linear":
        return _add_linear(base, F.linear(x, down), up)
    if self.tucker:
        mid = self.lora_mid
        h = F.conv2d(F.conv2d(x, down), mid.weight.to(x.dtype), None, **_conv_args(mid))
    else:
        h = F.conv2d(x, down, None, **_conv_args(self.lora_down))
    return base + F.conv2d(h, up)


# -- LoHa ----------------------------------------------------------------------------------------
class HadamardDelta(torch.autograd.Function):
    """op(x, ΔW), ΔW = (w1a·w1b) ⊙ (w2a·w2b) reshaped to the layer's weight; ΔW is recomputed in
    backward, so only x (kept by the frozen layer anyway) and the small factors are saved."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor,
                w2b: torch.Tensor, shape: tuple[int, ...], conv: dict[str, Any] | None) -> torch.Tensor:
        ctx.save_for_backward(x, w1a, w1b, w2a, w2b)
        ctx.shape, ctx.conv = shape, conv
        dw = ((w1a @ w1b) * (w2a @ w2b)).view(shape)
        return F.linear(x, dw) if conv is None else F.conv2d(x, dw, None, **conv)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w1a, w1b, w2a, w2b = ctx.saved_tensors
        p1, p2 = w1a @ w1b, w2a @ w2b
        dw = (p1 * p2).view(ctx.shape)
        grad_x = None
        if ctx.conv is None:
            if ctx.needs_input_grad[0]:
                grad_x = grad @ dw
            grad_dw = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        else:
            c = ctx.conv
            if ctx.needs_input_grad[0]:
                grad_x = torch.nn.grad.conv2d_input(x.shape, dw, grad, c["stride"], c["padding"], c["dilation"],
                                                    c["groups"])
            grad_dw = torch.nn.grad.conv2d_weight(x, dw.shape, grad, c["stride"], c["padding"], c["dilation"],
                                                  c["groups"]).reshape(p1.shape)
        t1, t2 = grad_dw * p2, grad_dw * p1
        return grad_x, t1 @ w1b.t(), w1a.t() @ t1, t2 @ w2b.t(), w2a.t() @ t2, None, None


def loha_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """W·x + op(x, s·(w1a·w1b) ⊙ (w2a·w2b)) for a LohaModule in bypass mode (linear, conv)."""
    if not self.bypass_mode:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.org_forward(x, *args, **kwargs)
    # The custom backward runs outside autocast, so everything it multiplies must share one dtype: the
    # one the frozen layer computed in (autocast's; x may be fp32 after a LayerNorm or GroupNorm).
    dt = base.dtype
    w1a = (self.hada_w1_a * _factor(self)).to(dt)
    conv = None if self.module_type == "linear" else _conv_args(self.org_module[0])
    delta = HadamardDelta.apply(x.to(dt), w1a, self.hada_w1_b.to(dt), self.hada_w2_a.to(dt), self.hada_w2_b.to(dt),
                                tuple(self.shape), conv)
    return base + delta


# -- LoKr ----------------------------------------------------------------------------------------
def _lokr_factors(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(w1 [a_out, a_in], w2 [b_out, b_in(, k, k)]) with kron(w1, w2) = ΔW / scale."""
    w1 = m.lokr_w1 if m.use_w1 else m.lokr_w1_a @ m.lokr_w1_b
    if m.use_w2:
        w2 = m.lokr_w2
    else:
        w2 = m.lokr_w2_a @ m.lokr_w2_b
        if m.module_type != "linear":
            w2 = w2.view(w2.shape[0], -1, *m.shape[2:])
    return w1, w2


def kron_apply(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, conv: dict[str, Any] | None) -> torch.Tensor:
    """kron(w1, w2) applied to x without building it: w2 acts within each of the a_in groups of
    channels, then w1 mixes the groups (a batched product with w1 broadcast, no copy of it)."""
    a_out, a_in = w1.shape
    if conv is None:
        lead = x.shape[:-1]
        inner = x.reshape(-1, x.shape[-1] // a_in) @ w2.t()              # [T·a_in, b_out]
        inner = inner.view(-1, a_in, inner.shape[-1])                     # [T, a_in, b_out]
        out = torch.bmm(w1.expand(inner.shape[0], a_out, a_in), inner)    # [T, a_out, b_out]
        return out.view(*lead, -1)
    n, _, h, w = x.shape
    if w2.dim() == 2:
        w2 = w2.view(*w2.shape, 1, 1)
    inner = F.conv2d(x.reshape(n * a_in, -1, h, w), w2, None, **conv)   # [n·a_in, b_out, h', w']
    _, b_out, ho, wo = inner.shape
    out = torch.bmm(w1.expand(n, a_out, a_in), inner.view(n, a_in, -1))  # [n, a_out, b_out·h'·w']
    return out.view(n, a_out * b_out, ho, wo)


def lokr_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """W·x + s·kron(w1, w2)·x for a LokrModule in bypass mode (linear, conv)."""
    if not self.bypass_mode:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.org_forward(x, *args, **kwargs)
    w1, w2 = _lokr_factors(self)
    w1 = (w1 * _factor(self)).to(x.dtype)
    conv = None if self.module_type == "linear" else _conv_args(self.org_module[0])
    return base + kron_apply(x, w1, w2.to(x.dtype), conv)


# -- DoRA on LoRA/LoCon --------------------------------------------------------------------------
def _frozen_row_sq_norms(m: Any, weight: torch.Tensor) -> torch.Tensor:
    """‖W_i‖² per output row in fp32; W is frozen, so computed once per weight tensor and device."""
    cached = getattr(m, "_fused_row_sq", None)
    if torch.compiler.is_compiling():
        # Dynamo cannot guard on a tensor's _version (a graph break), and a write here would make the
        # next call recompile: a graph reads what eager calls cached, else computes the norms itself.
        if cached is not None and cached[0][:2] == (id(weight), weight.device):
            return cached[1]
        with torch.no_grad():
            return torch.linalg.vector_norm(weight.detach().reshape(weight.shape[0], -1), dim=1,
                                            dtype=torch.float32) ** 2
    key = (id(weight), weight.device, weight._version)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            flat = weight.detach().reshape(weight.shape[0], -1)
            sq = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32) ** 2
        cached = (key, sq)
        m._fused_row_sq = cached
    return cached[1]


class DoraScale(torch.autograd.Function):
    """s = m / ‖W + up·down‖ per output row (fp32), with a hand-written backward: a handful of small
    products instead of autograd's chain of elementwise steps, ΔW never built.

    ‖W_i + ΔW_i‖² = ‖W_i‖² + Σ_r up_ir·(2·W·downᵀ + up·down·downᵀ)_ir. With q = ∂L/∂‖·‖²:
    ∂/∂up = 2q ⊙ (W·downᵀ + up·G), G = down·downᵀ; ∂/∂down = 2·((q⊙up)ᵀ·W + (upᵀ·(q⊙up))·down);
    ∂/∂m = ∂L/∂s / ‖·‖. (LyCORIS adds eps = 1.2e-7 to the norm; here eps² goes under the root: a
    relative difference below 1e-7 for norms near 1.)"""

    @staticmethod
    def forward(ctx: Any, up: torch.Tensor, down: torch.Tensor, m: torch.Tensor, weight: torch.Tensor,
                row_sq: torch.Tensor) -> torch.Tensor:
        with fp32_region(up.device):
            w_down = (weight @ down.to(weight.dtype).t()).float()          # [out, r]
            gram = down @ down.t()                                          # [r, r]
            sq = (up * torch.addmm(w_down, up, gram, beta=2)).sum(1) + row_sq
            rinv = torch.rsqrt(sq.add_(torch.finfo(torch.float32).eps ** 2))
            s = m * rinv
        ctx.save_for_backward(up, down, weight, w_down, gram, rinv, s)
        return s

    @staticmethod
    def backward(ctx: Any, grad_s: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        up, down, weight, w_down, gram, rinv, s = ctx.saved_tensors
        with fp32_region(up.device):
            grad_m = grad_s * rinv
            q2 = (grad_m * s * rinv).neg_()[:, None]                        # 2·∂L/∂‖·‖², as a column
            grad_up = torch.addmm(w_down, up, gram) * q2
            qu = up * q2
            grad_down = torch.addmm((qu.t().to(weight.dtype) @ weight).float(), up.t() @ qu, down)
        return grad_up, grad_down, grad_m, None, None


def dora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """DoRA (LoConModule with weight_decompose, norm per output row): s ⊙ (W·x + ΔW·x) + b, computed
    as s ⊙ base + (s ⊙ up)·(down·x) + (1 − s) ⊙ b."""
    base = self.org_forward(x, *args, **kwargs)
    org = self.org_module[0]
    out = org.weight.shape[0]
    weight = org.weight.detach().reshape(out, -1)
    down = self.lora_down.weight.reshape(self.lora_down.weight.shape[0], -1)
    up = self.lora_up.weight.reshape(out, -1) * _factor(self, with_multiplier=False)   # ΔW = up·down
    s = DoraScale.apply(up, down, self.dora_scale.reshape(out), weight, _frozen_row_sq_norms(self, org.weight))
    if self.multiplier != 1:
        s = self.multiplier * (s - 1) + 1
    dt = base.dtype   # autocast's, where x may be fp32: an fp32 scale would promote the output
    up_s = (up * s[:, None]).to(dt)
    bias = None if org.bias is None else org.bias.detach()
    shift = None if bias is None else torch.addcmul(bias, bias, s, value=-1).to(dt)   # (1 − s) ⊙ b
    sx = s.to(dt)
    if self.module_type == "linear":
        return torch.addcmul(F.linear(F.linear(x, down.to(dt)), up_s, shift), base, sx)
    h = F.conv2d(x, self.lora_down.weight.to(dt), None, **_conv_args(self.lora_down))
    delta = F.conv2d(h, up_s.view(*up_s.shape, 1, 1), shift)
    return torch.addcmul(delta, base, sx.view(1, -1, 1, 1))


# -- IA3 ----------------------------------------------------------------------------------------
def ia3_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """(IA)³ (Liu et al., 2022): the layer's weight scaled per output row by s = w·mult + 1, which is
    s ⊙ (W·x) + b = s ⊙ base + (1 − s) ⊙ b; or per input channel: W·(s ⊙ x) + b. LyCORIS rebuilds
    and multiplies by the whole scaled weight instead (one more full-size product)."""
    s = self.weight * self.multiplier + 1
    if self.train_input:
        return self.org_forward(x * s.to(x.dtype), *args, **kwargs)
    base = self.org_forward(x, *args, **kwargs)
    bias = self.org_module[0].bias
    sx = s.to(base.dtype)   # autocast's, where x may be fp32: an fp32 scale would promote the output
    if bias is None:
        return base * sx
    b = bias.detach().to(base.dtype).view(s.shape)
    return torch.addcmul(b - b * sx, base, sx)


# -- installing ----------------------------------------------------------------------------------
def fused_forward_for(m: Any) -> Any | None:
    """The fused forward for LyCORIS module `m`, or None where LyCORIS's own must run."""
    from lycoris.modules.ia3 import IA3Module
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    if m.module_type not in ("linear", "conv2d") or _has_dropout(m) or getattr(m, "is_quant", False):
        return None
    if getattr(m.org_module[0], "groups", 1) != 1:  # the adapters' convs are ungrouped
        return None
    kind = type(m)
    if kind is IA3Module:
        return ia3_forward
    if kind is LoConModule:
        if m.wd:
            return None if m.tucker or not m.wd_on_out else dora_forward
        return lora_forward if m.bypass_mode else None
    if kind not in (LohaModule, LokrModule) or m.wd or not m.bypass_mode or m.tucker:
        return None
    return loha_forward if kind is LohaModule else lokr_forward


def install_fused_forwards(modules: list[Any]) -> dict[str, int]:
    """Give each eligible module its fused forward (before apply_to, which hooks `self.forward`).
    Returns how many modules got each kind."""
    counts: dict[str, int] = {}
    for m in modules:
        fwd = fused_forward_for(m)
        if fwd is not None:
            scalar = getattr(m, "scalar", None)
            m._fused_unit_scalar = isinstance(scalar, torch.Tensor) and not isinstance(
                scalar, torch.nn.Parameter) and bool(scalar.detach().cpu() == 1)
            m.forward = types.MethodType(fwd, m)
            counts[fwd.__name__] = counts.get(fwd.__name__, 0) + 1
    return counts
