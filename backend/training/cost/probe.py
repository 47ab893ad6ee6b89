"""Count what a step dispatches and follow its memory, per owner (frozen model, adapter) and phase.

Owners. In the forward pass an adapter's code runs between the frozen layer's call and the frozen
layer's own forward (LyCORIS puts the adapter's forward in the layer's place and calls the original as
`org_forward`): `mark_adapters` wraps both, so a stack says who is running. Backward work has no
Python call to wrap: `OwnerTracker` (a torch-function mode, above autograd) tags every autograd node
with the owner that created it, and a pre-hook on the node tells the probe whose gradient is being
computed when the engine runs it.

`StepProbe` (a dispatch mode, below autograd) sees every ATen operator the step dispatches, each a
kernel launch on a GPU unless it only makes a view. It adds up operators and FLOPs (the formulas of
`torch.utils.flop_counter`) per phase and owner, and the bytes of every storage an operator creates
(not views and in-place results: their storage is an input's), until its storage is freed: the live
total's maximum is the step's peak beyond what existed before.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

FROZEN, ADAPTER, STEP = "frozen", "adapter", "step"
ALLOCATE_ONLY = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


class OwnerTracker(TorchFunctionMode):
    """Who runs now: an owner stack for the forward pass, node owners for the backward pass."""

    def __init__(self, default: str = FROZEN):
        super().__init__()
        self.stack: list[str] = []
        self.default = default
        self.backward_owner: str | None = None

    def current(self) -> str:
        if self.stack:
            return self.stack[-1]
        return self.backward_owner or self.default

    def run_as(self, owner: str, fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.stack.append(owner)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
        return wrapped

    def _tag(self, node: Any, owner: str) -> None:
        todo = [node]
        while todo:
            n = todo.pop()
            if n is None or "owner" in n.metadata:  # metadata lives on the node itself: no reference kept
                continue
            n.metadata["owner"] = owner
            n.register_prehook(self._prehook(owner))
            todo.extend(next_fn for next_fn, _ in n.next_functions)

    def _prehook(self, owner: str) -> Callable:
        def hook(grad_outputs: Any) -> None:
            self.backward_owner = owner
        return hook

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if torch.is_grad_enabled():
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                    self._tag(value.grad_fn, self.current())
        return out


def mark_adapters(modules: list[Any], tracker: OwnerTracker) -> None:
    """Make `tracker` know when adapter code runs: the adapter's forward (in the frozen layer's place)
    as ADAPTER, the frozen layer's own forward inside it as FROZEN."""
    for m in modules:
        layer = m.org_module[0]
        layer.forward = tracker.run_as(ADAPTER, layer.forward)
        m.org_forward = tracker.run_as(FROZEN, m.org_forward)


def _is_view(func: Any) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def _aliases_an_input(func: Any) -> bool:
    """A view or an in-place result: its storage is an input's, counted when that was made (or made before
    the step, as the frozen weights whose transposes every linear layer dispatches)."""
    return any(r.alias_info is not None for r in func._schema.returns)


class StepProbe(TorchDispatchMode):
    """Operators, FLOPs and live bytes of everything dispatched while active (see the module docstring).
    Set `phase` as the step goes (forward, backward, optimizer, step)."""

    def __init__(self, tracker: OwnerTracker | None = None, count: bool = True):
        super().__init__()
        self.tracker = tracker
        self.count = count
        self.phase = STEP
        self.ops: dict[tuple[str, str], int] = defaultdict(int)
        self.kernels: dict[tuple[str, str], int] = defaultdict(int)
        self.flops: dict[tuple[str, str], int] = defaultdict(int)
        self.by_name: dict[str, int] = defaultdict(int)
        self.live: dict[int, tuple[int, str]] = {}
        self.live_bytes = 0
        self.live_by_phase: dict[str, int] = defaultdict(int)
        self.peak = 0
        self.peak_at = ""
        self.peak_by_phase: dict[str, int] = {}
        self.phase_peaks: dict[str, int] = defaultdict(int)

    def owner(self) -> str:
        if self.phase == STEP or self.tracker is None:
            return STEP
        return self.tracker.current()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.count:
            key = (self.phase, self.owner())
            self.ops[key] += 1
            self.by_name[func.overloadpacket.__name__] += 1
            if not _is_view(func) and func.overloadpacket.__name__ not in ALLOCATE_ONLY:
                self.kernels[key] += 1
            formula = flop_registry.get(func.overloadpacket)
            if formula is not None:
                self.flops[key] += int(formula(*args, **kwargs, out_val=out))
        if not _aliases_an_input(func):
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    self._allocated(value)
        return out

    def _allocated(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        size = storage.nbytes()
        self.live[key] = (size, self.phase)
        self.live_bytes += size
        self.live_by_phase[self.phase] += size
        weakref.finalize(storage, self._freed, key)
        if self.live_bytes > self.phase_peaks[self.phase]:
            self.phase_peaks[self.phase] = self.live_bytes
        if self.live_bytes > self.peak:
            self.peak, self.peak_at = self.live_bytes, self.phase
            self.peak_by_phase = dict(self.live_by_phase)

    def _freed(self, key: int) -> None:
        size, phase = self.live.pop(key, (0, STEP))
        self.live_bytes -= size
        self.live_by_phase[phase] -= size

    def live_from(self, phase: str) -> int:
        """Bytes still alive that were made in `phase`."""
        return self.live_by_phase.get(phase, 0)

    def totals(self, table: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (phase, owner), n in sorted(table.items()):
            out[phase][owner] = n
        return dict(out)
