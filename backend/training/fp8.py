"""`training.fp8_base`: the frozen denoiser's linear weights stored in float8 (e4m3), upcast per layer.

kohya's --fp8_base stores the model in float8 and lets autocast upcast each weight as it is used. We
do the same per `nn.Linear` of any family (SD 1.5, SDXL, the Flux transformer), with two changes:
- each weight is stored divided by a per-tensor scale (its largest magnitude / 448, e4m3's largest
  value), so small weights keep e4m3's relative precision (2⁻⁴) instead of falling into its
  subnormals (steps of 2⁻⁹ below 2⁻⁶, where most SD weights lie);
- backward keeps the float8 weight, not the upcast copy: autograd would otherwise hold a bf16 copy of
  every linear weight from forward to backward, and most of the saving would be gone without
  gradient checkpointing.
The layer keeps its class (`nn.Linear`) and only its `forward` changes, before LyCORIS wraps it:
LyCORIS's bypass modules call the wrapped forward (`org_forward`), so adapters train on top of it.
Algorithms that rebuild the weight (W + ΔW) read the weight directly and are refused (checks).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max


@dataclass
class Fp8Stored:
    layers: int
    bytes_before: int
    bytes_after: int


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a layer computes in: autocast's when it is on for x's device, else x's own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def upcast_weight(module: torch.nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """The float8 weight of `module` back in `dtype`, its scale applied."""
    return module.weight.to(dtype) * module.fp8_scale.to(dtype)


class _Fp8Linear(torch.autograd.Function):
    """y = x·Wᵀ + b with W upcast from float8; backward keeps the float8 weight (and its scale) only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(weight, scale)
        ctx.x_dtype = x.dtype
        return F.linear(x, weight.to(dtype) * scale.to(dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        weight, scale = ctx.saved_tensors
        grad_x = grad.matmul(weight.to(grad.dtype) * scale.to(grad.dtype))
        return grad_x.to(ctx.x_dtype), None, None, None, None


def _fp8_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    dtype = compute_dtype(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Fp8Linear.apply(x, self.weight, self.fp8_scale, self.bias, dtype)
    return F.linear(x, upcast_weight(self, dtype), self.bias)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 weight, fp32 scale) with weight ≈ float8 · scale; an all-zero weight gets scale 1."""
    w = weight.detach().float()
    amax = w.abs().amax()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def store_linear_weights_in_fp8(model: torch.nn.Module) -> Fp8Stored:
    """Store every frozen `nn.Linear` weight of `model` in float8 and give the layer the upcasting
    forward. Call before adapters are applied (they capture the layer's forward)."""
    layers = before = after = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.requires_grad or module.weight.dtype == FP8:
            continue
        weight = module.weight
        before += weight.numel() * weight.element_size()
        q, scale = quantize(weight)
        module.weight = torch.nn.Parameter(q, requires_grad=False)
        module.register_buffer("fp8_scale", scale.to(weight.device))
        module.forward = types.MethodType(_fp8_linear_forward, module)
        after += q.numel() * q.element_size()
        layers += 1
    return Fp8Stored(layers, before, after)
