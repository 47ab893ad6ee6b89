"""The comparison as tables and plain data: the outcome table, and the JSON the CLI prints."""

from __future__ import annotations

import math
from typing import Any

from backend.compare.diff import format_value, settings_diff
from backend.compare.grid import build_grid
from backend.compare.runs import DEFAULT_SMOOTHING, RunData, run_labels

OUTCOME_HEADERS = ["Run", "Status", "Steps", "Wall time", "it/s", "Peak memory", "Final loss (smoothed)",
                   "LoRA file"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_memory(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def fmt_num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def outcome_table(runs: list[RunData], smoothing: float = DEFAULT_SMOOTHING) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of what each run cost and gave, as display text."""
    rows = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        o = run.outcome(smoothing)
        steps = "—" if o.steps is None else (f"{o.steps}/{o.total_steps}" if o.total_steps else str(o.steps))
        lora = "—" if o.lora_path is None else f"{fmt_bytes(o.lora_size_bytes)} ({o.lora_path.name})"
        rows.append([label, o.status, steps, fmt_duration(o.wall_time_s), fmt_num(o.it_s, 3),
                     fmt_memory(o.peak_memory_mb), fmt_num(o.final_loss), lora])
    return list(OUTCOME_HEADERS), rows


def diff_rows(runs: list[RunData]) -> tuple[list[str], list[list[str]]]:
    headers = ["Option", "Path", *run_labels(runs)]
    rows = [[r.label, r.path, *(format_value(v) for v in r.values)] for r in settings_diff([x.config for x in runs])]
    return headers, rows


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def comparison_data(runs: list[RunData], smoothing: float = DEFAULT_SMOOTHING, step: int | None = None) -> dict[str, Any]:
    """Everything the comparison shows, as JSON-ready data (the CLI's --json)."""
    grid = build_grid(runs, step)
    out_runs = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        o = run.outcome(smoothing)
        out_runs.append({
            "id": run.id, "name": label, "status": o.status, "group": run.record.group,
            "steps": o.steps, "total_steps": o.total_steps, "images_per_step": run.images_per_step,
            "wall_time_s": o.wall_time_s, "it_s": o.it_s, "peak_memory_mb": o.peak_memory_mb,
            "final_smoothed_loss": _finite(o.final_loss),
            "lora_file": str(o.lora_path) if o.lora_path else None, "lora_size_bytes": o.lora_size_bytes,
            "sample_steps": run.sample_steps(),
        })
    return {
        "smoothing": smoothing,
        "runs": out_runs,
        "diff": [{"path": r.path, "label": r.label, "values": list(r.values)}
                 for r in settings_diff([x.config for x in runs])],
        "grid": {
            "step": grid.step, "steps": grid.steps, "columns": grid.run_ids, "reason": grid.reason,
            "rows": [{"prompt": p, "seed": s,
                      "cells": [None if c is None else {"step": c.step, "path": str(c.path)} for c in cells]}
                     for (p, s), cells in zip(grid.rows, grid.cells, strict=True)],
        },
    }
