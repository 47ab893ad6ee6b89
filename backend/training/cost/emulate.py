"""The CUDA behaviour a meta-device run must copy to cost what a GPU run costs.

- Attention: `F.scaled_dot_product_attention` on a GPU runs a fused kernel (flash attention for
  fp16/bf16 with head size ≤ 256 and no mask, memory-efficient attention otherwise) that keeps only
  the output and the log-sum-exp for backward. On the meta device it would take the math path and
  materialise the B·H·N² attention matrix; here it calls the CUDA kernel's own operator, whose meta
  implementation gives the right shapes, saved tensors and FLOPs.
- Autocast: under `torch.autocast("cuda", dtype)` matrix products and convolutions run in the lower
  precision and normalisations and softmax in fp32, each input cast as the op is called (the casts are
  recorded by autograd and their outputs may be kept for backward). The meta device has no autocast,
  so the same casts are made here, at the same place: PyTorch's "Autocast Op Reference" (CUDA ops that
  can autocast to float16 / to float32), restricted to the ops the diffusion models call.
- Regions marked with backend.training.precision.fp32_region run without autocast, as they do on CUDA.
- LyCORIS reads a weight on the CPU (`weight.cpu()`) to initialise DoRA's magnitude; a meta tensor stays
  where it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from backend.training.precision import in_fp32_region

LOWER = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
         torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm,
         torch.Tensor.bmm, torch.baddbmm, torch.addmm, torch.addbmm,
         torch.einsum, torch.tensordot}  # composites of bmm/mm: autocast casts their inner products
FP32 = {F.group_norm, torch.group_norm, F.layer_norm, torch.layer_norm, F.softmax, torch.softmax,
        torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax, torch.exp, torch.rsqrt,
        F.mse_loss, torch.norm, torch.linalg.vector_norm, torch.cumsum, torch.sum, torch.Tensor.sum, torch.pow,
        torch.Tensor.pow, torch.Tensor.__pow__, torch.prod, torch.reciprocal, torch.log}
FLASH_MAX_HEAD = 256


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """SDPA through the kernel CUDA picks: flash attention, else memory-efficient attention. The argument
    names are SDPA's own (diffusers' Flux attention passes them by name)."""
    q, k, v = query, key, value
    half = q.dtype in (torch.float16, torch.bfloat16)
    if half and attn_mask is None and q.shape[-1] <= FLASH_MAX_HEAD and not enable_gqa:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False,
                                                                  scale=scale)[0]
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, grad, dropout_p, is_causal,
                                                                  scale=scale)[0]


class CudaEmulation(TorchFunctionMode):
    """Run torch functions as a CUDA device would (see the module docstring). `autocast` is the
    mixed-precision dtype (None: no autocast)."""

    def __init__(self, autocast: torch.dtype | None = None):
        super().__init__()
        self.autocast = autocast

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        if self.autocast is not None and not in_fp32_region():
            if func in LOWER or func is F.scaled_dot_product_attention:
                args, kwargs = _cast(args, self.autocast), {k: _cast(v, self.autocast) for k, v in kwargs.items()}
            elif func in FP32:
                args, kwargs = _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention:
            return fused_attention(*args, **kwargs)
        return func(*args, **kwargs)
