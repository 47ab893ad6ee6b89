"""The GPU settings of a training process, and what attention runs.

TF32: on Ampere and newer cards fp32 matrix products and convolutions run on tensor cores with a
10-bit mantissa (PyTorch's default for matmul is full fp32). It matters wherever fp32 compute is
left: runs without mixed precision, the fp32 VAE, the fp32 adapter weights' products outside autocast.
The new `fp32_precision` settings are used where they exist: PyTorch 2.9 deprecates `allow_tf32` and
refuses a mix.

Left out on purpose (no GPU to measure them on; each can cost more than it gives):
- cudnn.benchmark: every new bucket shape would be benchmarked, and the algorithms it picks may need
  larger workspaces, which makes the VRAM peak depend on the card and on luck;
- channels-last: the UNet's GroupNorm and the attention's reshapes to (B, HW, C) would convert the
  layout back and forth around every block;
- CUDA graphs: bucketed shapes, per-step learning rates and LyCORIS's host-side dropout decisions
  would each force a re-capture or a fallback.
"""

from __future__ import annotations

from typing import Any

import torch


def configure(device: torch.device) -> dict[str, Any]:
    """Process-wide settings for training on `device`; what was set, for the `ready` event."""
    if device.type != "cuda":
        return {}
    major, minor = torch.cuda.get_device_capability(device)
    tf32 = major >= 8
    if tf32:
        enable_tf32()
    return {"device_name": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}", "tf32": tf32}


def enable_tf32(matmul: Any = torch.backends.cuda.matmul, cudnn: Any = torch.backends.cudnn) -> None:
    """TF32 for matmuls and convolutions: the `fp32_precision` settings where this PyTorch has them (2.9
    refuses a mix with `allow_tf32`), else `allow_tf32` (the requirements allow older ones)."""
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        matmul.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        cudnn.allow_tf32 = True


def attention_kinds(*models: Any) -> list[str]:
    """The attention implementations the models run: diffusers' processor classes (AttnProcessor2_0
    is PyTorch SDPA) and transformers' `attn_implementation` ("sdpa")."""
    kinds: set[str] = set()
    for model in models:
        if model is None:
            continue
        processors = getattr(model, "attn_processors", None)
        if isinstance(processors, dict):
            kinds.update(type(p).__name__ for p in processors.values())
        config = getattr(model, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if implementation:
            kinds.add(f"{type(model).__name__}:{implementation}")
    return sorted(kinds)


def take_peak(device: torch.device) -> float | None:
    """Peak GPU memory allocated so far (MiB), and a fresh start: training's own peak is measured
    apart from the caching before it (the VAE encoding full-size images can be the larger one)."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 1)
