"""`training.compile`: torch.compile of the denoiser's repeated blocks (regional compilation).

Compiling each transformer block rather than the whole model: the blocks of one class share their
code, so the compiled graph is reused across them (parameters are graph inputs, not constants) and
compiling takes one block's time, not the model's; the rest of the model (and LyCORIS's Python
around the blocks, e.g. module dropout) runs as usual. The classes come from diffusers' own
`_repeated_blocks` list (UNet: BasicTransformerBlock; Flux: its double and single stream blocks).
Compilation happens at the first call, so it sees the adapters and fp8 forwards already in place.
"""

from __future__ import annotations

from typing import Any

from backend.errors import TrainingError


def compile_repeated_blocks(model: Any) -> int:
    """torch.compile each repeated block of `model` in place; returns how many."""
    names = tuple(getattr(model, "_repeated_blocks", None) or ())
    count = 0
    for module in model.modules():
        if type(module).__name__ in names:
            module.compile()
            count += 1
    if not count:
        raise TrainingError(f"training.compile: {type(model).__name__} declares no repeated blocks to compile "
                            f"(looked for {', '.join(names) or 'none'}); turn training.compile off")
    return count


def compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process so far (0: nothing was compiled)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
