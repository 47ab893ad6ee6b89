"""What the ranks of a multi-process run (`training.num_processes` > 1, `accelerate launch`) share.

The adapters are not driven through DDP: the forward runs through the denoiser, whose layers the
adapters hook, never through the adapter network's own forward, so DDP's gradient hooks would never
arm (its reducer only reduces after a forward through the wrapped module). Instead the gradients of
the trainable parameters are averaged in one flat all-reduce per optimizer step (as sd-scripts'
`all_reduce_network` does per tensor), on the device, without waiting for it on the host.

Requests (stop, save_now, sample_now) must act on every rank at the same step, since saving waits
for all ranks: each step the ranks agree on them through a CPU (gloo) group, so agreeing never waits
for the GPU. A stop seen by any rank (a signal reaches them all, not at the same moment) stops all;
save_now and sample_now are rank 0's, which alone reads them from control.json.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


class Ranks:
    """The process group of a run; with one process every method is a no-op."""

    def __init__(self, world: int, rank: int, local_main: bool = True):
        self.world, self.rank, self.local_main = world, rank, local_main
        self._cpu_group = None
        if world > 1:
            # Every rank creates the group at the same point (here, in prepare).
            self._cpu_group = (None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))

    @property
    def several(self) -> bool:
        return self.world > 1

    def cache_turn(self, filled: bool, on_disk: bool) -> None:
        """Disk caches are filled once per machine: the local main rank fills them while the others
        wait (called with filled=False before filling), then they read what it wrote (filled=True after)."""
        if self.several and on_disk and self.local_main == filled:
            dist.barrier()

    def requests(self, ctx: Any) -> tuple[bool, bool, bool]:
        """stop, save_now, sample_now before a step, read from the worker context `ctx` and agreed on."""
        stop = ctx.stop_requested
        actions = ctx.poll_control()
        agreed = self.agree(stop, "save_now" in actions, "sample_now" in actions)
        if agreed[0] and not stop:
            ctx.request_stop("stop requested on another rank")
        return agreed

    def agree(self, stop: bool, save_now: bool, sample_now: bool) -> tuple[bool, bool, bool]:
        """Stop if any rank stops; save_now and sample_now as rank 0 read them."""
        if not self.several:
            return stop, save_now, sample_now
        main = self.rank == 0
        flags = torch.tensor([int(stop), int(save_now and main), int(sample_now and main)], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._cpu_group)
        stop_all, save_all, sample_all = (bool(v) for v in flags.tolist())
        return stop_all, save_all, sample_all

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace each gradient by its mean over the ranks (a missing one counts as zeros)."""
        if not self.several or not params:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(self.world)
        for g, mean in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(mean)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar tensor over the ranks (on the device: no host wait)."""
        if not self.several:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def broadcast_from_main(self, params: list[torch.Tensor]) -> None:
        """Give every rank rank 0's values (once, after the adapters are built or restored)."""
        if not self.several or not params:
            return
        with torch.no_grad():
            flat = _flatten_dense_tensors([p.data for p in params])
            dist.broadcast(flat, src=0)
            for p, value in zip(params, _unflatten_dense_tensors(flat, [p.data for p in params]), strict=True):
                p.data.copy_(value)

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object, its tensors on the host) on every rank."""
        if not self.several:
            return value
        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        return box[0]

    def same_everywhere(self, params: list[torch.Tensor]) -> bool:
        """Whether every rank holds the same parameters (a check at the end: it waits for the device)."""
        if not self.several:
            return True
        with torch.no_grad():
            local = torch.stack([p.detach().double().sum() for p in params]).sum() if params else \
                torch.zeros((), dtype=torch.float64)
            local = local.cpu().reshape(1)
        lowest, highest = local.clone(), local.clone()
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN, group=self._cpu_group)
        dist.all_reduce(highest, op=dist.ReduceOp.MAX, group=self._cpu_group)
        return bool(lowest == highest)


def ranks_of(acc: Any) -> Ranks:
    return Ranks(acc.num_processes, acc.process_index, acc.is_local_main_process)
