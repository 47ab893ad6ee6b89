"""Job folders written by hand in the documented format (DESIGN.md §3), for the Compare tests.

They test the readers, not the engine: job.json and config.toml come from the real registry and
config code, events.jsonl lines are written as the worker writes them, sample images are real PNGs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

from backend.config import load_config, to_dict
from backend.jobs.registry import create_job, update_job
from backend.paths import WorkspacePaths

T0 = 1_790_000_000.0


def write_events(job_dir: Path, events: list[dict[str, Any]], partial_tail: str = "") -> None:
    with open(job_dir / "events.jsonl", "a", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
        fh.write(partial_tail)


def make_run(paths: WorkspacePaths, name: str, overrides: dict[str, Any] | None = None, *,
             steps: int = 20, loss0: float = 0.5, decay: float = 0.05, lr: float = 1e-4,
             sample_steps: tuple[int, ...] = (10, 20), prompts: tuple[tuple[str, int], ...] = (("a cat", 1),),
             status: str = "completed", step_s: float = 0.5, color: tuple[int, int, int] = (200, 30, 30),
             group: str | None = None, lora_bytes: int | None = 4096, peak_memory_mb: float | None = 1500.0,
             t0: float = T0) -> Path:
    """A training job folder with `steps` metric/progress events, samples at `sample_steps` for each
    (prompt, seed), and an output LoRA file of `lora_bytes` bytes."""
    cfg = to_dict(load_config({}, overrides or {}))
    d = create_job(paths, "train", cfg, name, group=group, status="queued", now=t0)
    events: list[dict[str, Any]] = [{"t": t0, "type": "status", "status": "queued"},
                                    {"t": t0 + 1, "type": "status", "status": "starting"},
                                    {"t": t0 + 2, "type": "status", "status": "running"}]
    t = t0 + 2
    for step in range(1, steps + 1):
        t += step_s
        loss = loss0 * math.exp(-decay * step) + 0.02 * ((-1) ** step)
        metric = {"t": t, "type": "metric", "step": step, "loss": loss, "lr": lr}
        progress = {"t": t, "type": "progress", "step": step, "total": steps, "epoch": 1,
                    "it_s": round(1 / step_s, 4), "eta_s": (steps - step) * step_s}
        if peak_memory_mb is not None:
            progress["peak_memory_mb"] = peak_memory_mb * step / steps
        events += [metric, progress]
        if step in sample_steps:
            for i, (prompt, seed) in enumerate(prompts):
                rel = f"samples/step{step:06d}_{i}.png"
                shade = tuple(min(255, c + step) for c in color)
                Image.new("RGB", (64, 48), shade).save(d / rel)
                events.append({"t": t, "type": "sample", "path": rel, "prompt": prompt, "seed": seed,
                               "step": step})
    if status in ("completed", "stopped", "failed"):
        events.append({"t": t + 1, "type": "status", "status": status})
    write_events(d, events)
    if lora_bytes is not None:
        out_name = cfg["saving"]["output_name"]
        (d / "output" / f"{out_name}.safetensors").write_bytes(b"\0" * lora_bytes)

    def finish(rec) -> None:
        rec.status, rec.started_at, rec.queue_position = status, t0 + 1, None
        rec.ended_at = t + 1 if status in ("completed", "stopped", "failed") else None

    update_job(d, finish)
    return d
