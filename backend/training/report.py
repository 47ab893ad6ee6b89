"""Events of a training run: progress every step, metrics read from the device in batches.

Reading a loss with `.item()` waits for the GPU to finish; doing it every step stalls the pipeline.
Losses stay on the device until `flush` reads a batch of them with one transfer, checks them for
NaN/inf, and writes one `metric` event per step.
"""

from __future__ import annotations

import math
import resource
import sys
from typing import Any

import torch

from backend.errors import TrainingError

NAN_MESSAGE = ("the loss became {value} at step {step}. Usual causes: a learning rate too high for this "
               "optimizer, fp16 mixed precision overflowing (try bf16 or no), or a VAE that produces NaN in "
               "fp16. The last good checkpoint (if any) is kept in checkpoints/.")


def peak_memory_mb(device_type: str) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size of this process (CPU), in MiB."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class Reporter:
    def __init__(self, ctx: Any, total_steps: int, device_type: str, metric_every: int = 10):
        self.ctx = ctx
        self.total = total_steps
        self.device_type = device_type
        self.metric_every = metric_every
        self._pending: list[tuple[int, int, torch.Tensor, dict[str, float]]] = []
        self.last_loss: float | None = None

    def phase(self, name: str, **fields: Any) -> None:
        self.ctx.emit("phase", phase=name, **fields)

    def step_done(self, step: int, epoch: int, loss: torch.Tensor, lrs: dict[str, float]) -> None:
        self._pending.append((step, epoch, loss.detach(), lrs))
        self.ctx.progress(step, self.total, epoch=epoch,
                          peak_memory_mb=round(peak_memory_mb(self.device_type), 1))
        if len(self._pending) >= self.metric_every:
            self.flush()

    def flush(self) -> None:
        """Read the pending losses in one transfer, check them, emit their metric events."""
        if not self._pending:
            return
        values = torch.stack([p[2].float() for p in self._pending]).cpu().tolist()
        pending, self._pending = self._pending, []
        for (step, epoch, _, lrs), value in zip(pending, values, strict=True):
            if not math.isfinite(value):
                raise TrainingError(NAN_MESSAGE.format(value=value, step=step))
            self.last_loss = value
            main_lr = lrs.get("unet", next(iter(lrs.values()), None))
            fields = {f"lr_{k}": v for k, v in lrs.items()}
            # The raw loss only: readers smooth it (backend.compare.runs.ema_smooth), one way everywhere.
            self.ctx.emit("metric", step=step, epoch=epoch, loss=value, lr=main_lr, **fields)
