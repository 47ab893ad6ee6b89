"""Regions that compute in fp32 whatever autocast is doing around them.

`fp32_region()` turns CUDA autocast off for its body and marks it, so the CUDA emulation of the cost
probe (backend.training.cost.emulate, which cannot see a CUDA autocast state on a CPU-only machine)
leaves the body's operators alone too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar

import torch

_FP32 = ContextVar("fp32_region", default=False)


@contextmanager
def fp32_region(device: torch.device) -> Iterator[None]:
    off = torch.autocast(device_type="cuda", enabled=False) if device.type == "cuda" else nullcontext()
    if torch.compiler.is_compiling():
        # Dynamo cannot trace ContextVar.set (a graph break per DoRA layer); the emulation never compiles.
        with off:
            yield
        return
    token = _FP32.set(True)
    try:
        with off:
            yield
    finally:
        _FP32.reset(token)


def in_fp32_region() -> bool:
    return _FP32.get()
