"""Settings that need a CUDA GPU, checked against this machine without importing torch.

The UI process never imports torch, so whether the worker will see a GPU is read from what torch's
own check depends on: the torch build (torch/version.py says cuda = None for a CPU build),
CUDA_VISIBLE_DEVICES, and the NVIDIA device nodes. Where that cannot be told (a ROCm build, WSL's
/dev/dxg, another OS), the count is unknown and these checks are left to the worker
(backend.training.checks.before_start), which makes the same ones with torch.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.preflight.inputs import Problem


@dataclass(frozen=True)
class Machine:
    cuda_gpus: int | None        # None: unknown without torch
    bitsandbytes: bool


def _torch_build() -> dict[str, Any] | None:
    """cuda and hip of torch/version.py (plain assignments), or None when torch is not found."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        tree = ast.parse((Path(spec.submodule_search_locations[0]) / "version.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id in ("cuda", "hip") and node.value is not None:
            try:
                found[target.id] = ast.literal_eval(node.value)
            except ValueError:
                found[target.id] = "?"
    return found


def _nvidia_devices() -> int:
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        return sum(1 for _ in gpus.iterdir())
    return sum(1 for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name))


def probe(environ: Mapping[str, str]) -> Machine:
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    build = _torch_build()
    if build is None or build.get("hip") is not None:
        return Machine(None, bnb)
    if build.get("cuda") is None:
        return Machine(0, bnb)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Machine(0, bnb)
    if not sys.platform.startswith("linux") or Path("/dev/dxg").exists():
        return Machine(None, bnb)
    count = _nvidia_devices()
    if visible is not None and count:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return Machine(count, bnb)


def device_problems(cfg: Any, machine: Machine | None = None) -> list[Problem]:
    """The checks of backend.training.checks (pick_device, before_start, optim.check_optimizer) that
    depend only on the config and the machine."""
    m = machine or probe(os.environ)
    t, optimizer = cfg.training, cfg.optimizer.name
    out: list[Problem] = []
    if optimizer == "adamw8bit" and not m.bitsandbytes:
        out.append(("optimizer.name", "adamw8bit needs the bitsandbytes package (and a CUDA GPU): pip install "
                                      "bitsandbytes, or choose adamw, adafactor or prodigy"))
    n = m.cuda_gpus
    if n is None:
        return out
    if t.device == "cuda" and n == 0:
        return out + [("training.device", "cuda, but no CUDA GPU is available on this machine (or to this torch "
                                          "build); set training.device = auto or cpu")]
    on_cpu = t.device == "cpu" or n == 0
    if on_cpu:
        where = "training.device = cpu" if t.device == "cpu" else "this machine has no CUDA GPU"
        if t.mixed_precision == "fp16":
            out.append(("training.mixed_precision", f"fp16 needs a CUDA GPU ({where}); use bf16 or no"))
        if optimizer == "adamw8bit" and m.bitsandbytes:
            out.append(("optimizer.name", f"adamw8bit needs a CUDA GPU ({where}); choose adamw, adafactor or "
                                          "prodigy"))
        # capturable keeps the step count on the device for CUDA graphs; torch asserts at the first step on
        # the CPU. (fused is left alone: torch >= 2.4 has CPU kernels for it.)
        if cfg.optimizer.extra_args.get("capturable") is True:
            out.append(("optimizer.extra_args.capturable", f"true needs a CUDA GPU ({where}); remove it or set "
                                                           "it to false"))
        # Several processes on the CPU are allowed (gloo): how the multi-process path is tested.
    elif t.num_processes // t.num_machines > n:
        per_machine = t.num_processes // t.num_machines
        out.append(("training.num_processes", f"{t.num_processes} over {t.num_machines} machine(s) is "
                                              f"{per_machine} GPUs per machine, but this machine has {n}; lower "
                                              "it, or set training.device = cpu to run the ranks on the CPU"))
    if t.compile and on_cpu and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        out.append(("training.compile", "compiling on the CPU needs a C++ compiler (g++ or clang++); install "
                                        "one or turn training.compile off"))
    if t.compile and not on_cpu and importlib.util.find_spec("triton") is None:
        out.append(("training.compile", "compiling on a GPU needs the triton package (pip install triton); or "
                                        "turn training.compile off"))
    return out
