"""Measured CUDA peaks against the VRAM estimate (tests/fixtures/vram_calibration.json).

A GPU run (benchmarks/gpu_check.py) records each training run it makes with `make_entry`; the test
suite compares the estimator with every recorded entry (`compare`). The shape of an entry is described
in the fixture file itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.paths import PROJECT_ROOT

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "vram_calibration.json"
REQUIRED = {"name": str, "config": dict, "gpu": str, "steps": int, "max_memory_allocated": int,
            "max_memory_reserved": int}


def make_entry(name: str, config: dict, *, gpu: str, steps: int, max_memory_allocated: int,
               max_memory_reserved: int, device_used: int | None = None, versions: dict | None = None,
               tolerance: float | None = None) -> dict:
    """One fixture entry. `config`: the sparse config of the run, without model.path."""
    entry = {"name": name, "config": {k: v for k, v in config.items()}, "gpu": gpu, "versions": versions or {},
             "steps": steps, "max_memory_allocated": int(max_memory_allocated),
             "max_memory_reserved": int(max_memory_reserved),
             "device_used": None if device_used is None else int(device_used)}
    entry["config"].get("model", {}).pop("path", None)
    if tolerance is not None:
        entry["tolerance"] = tolerance
    problems = check_entry(entry)
    if problems:
        raise ValueError("; ".join(problems))
    return entry


def check_entry(entry: Any) -> list[str]:
    """What is wrong with a fixture entry (empty when it is well formed)."""
    if not isinstance(entry, dict):
        return ["an entry must be a JSON object"]
    out = [f"{key}: expected {kind.__name__}" for key, kind in REQUIRED.items() if not isinstance(entry.get(key), kind)]
    if entry.get("device_used") is not None and not isinstance(entry["device_used"], int):
        out.append("device_used: expected an integer or null")
    return out


def load_entries(path: Path = FIXTURE) -> list[dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema") != 1 or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected {{'schema': 1, 'entries': [...]}}")
    return data["entries"]


def compare(entry: dict, report: dict) -> dict:
    """Relative errors of the estimate against one measured run: the live-tensor peak against
    max_memory_allocated, and the whole estimate against the device's used memory when recorded."""
    out = {"name": entry["name"],
           "tensors": report["tensor_peak_bytes"] / entry["max_memory_allocated"] - 1}
    if entry.get("device_used"):
        out["device"] = report["peak_bytes"] / entry["device_used"] - 1
    return out
