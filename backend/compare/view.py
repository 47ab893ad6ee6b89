"""What the Compare tab shows, without Gradio: picker choices, gallery cells, form parsing.

Kept here so the tab module stays a thin layer of handlers, and so this part is tested directly.
"""

from __future__ import annotations

import time
from typing import Any

from PIL import Image, ImageDraw

from backend.compare.grid import Grid
from backend.compare.runs import RunData, groups
from backend.config.io import parse_override
from backend.errors import ConfigError
from backend.jobs.registry import list_jobs
from backend.paths import WorkspacePaths

SWEEP_KINDS = ("int", "float", "bool", "choice", "str")


def run_choices(paths: WorkspacePaths) -> list[tuple[str, str]]:
    """(label, job id) for every training job, newest first: `name · status · date`."""
    recs = [r for r in list_jobs(paths) if r.kind == "train"]
    recs.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return [(f"{r.name} · {r.status} · {time.strftime('%m-%d %H:%M', time.localtime(r.created_at))}", r.id)
            for r in recs]


def group_choices(paths: WorkspacePaths) -> list[tuple[str, str]]:
    """(label, group) for every comparison group, newest first: `group (N runs)`."""
    return [(f"{g} ({len(ids)} runs)", g) for g, ids in groups(paths).items()]


def sweepable_fields() -> list[tuple[str, str]]:
    """(label, dotted path) of the options a sweep can vary: single values, not lists or tables."""
    from backend.config.fields import leaf_fields

    return [(f"{f.path} — {f.label}", f.path) for f in leaf_fields()
            if f.kind in SWEEP_KINDS and f.path not in ("model.path", "dataset.path")]


def placeholder(text: str, size: int = 256) -> Image.Image:
    """A grey square saying why a cell has no image."""
    img = Image.new("RGB", (size, size), (230, 230, 230))
    ImageDraw.Draw(img).text((12, size // 2 - 8), text, fill=(80, 80, 80))
    return img


def gallery_items(grid: Grid) -> list[tuple[Any, str]]:
    """The grid row by row for a gallery with one column per run: (image path or placeholder, caption)."""
    items: list[tuple[Any, str]] = []
    for (prompt, seed), cells in zip(grid.rows, grid.cells, strict=True):
        for label, ref in zip(grid.labels, cells, strict=True):
            head = f"{label} · seed {seed} · {prompt}" if seed is not None else f"{label} · {prompt}"
            if ref is None:
                items.append((placeholder("no sample"), f"{head} · no sample"))
            elif not ref.path.is_file():
                items.append((placeholder("image missing"), f"{head} · step {ref.step} · file missing"))
            else:
                items.append((str(ref.path), f"{head} · step {ref.step}"))
    return items


def lines(text: str | None) -> list[str]:
    """Non-empty stripped lines."""
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip()]


def overrides_from_text(text: str | None) -> dict[str, Any]:
    """`section.option=value` per line → {"section.option": value}; ConfigError naming a bad line."""
    out: dict[str, Any] = {}
    for line in lines(text):
        if line.startswith("#"):
            continue
        parts, value = parse_override(line)
        out[".".join(parts)] = value
    return out


def seed_from_text(value: Any) -> int | None:
    """The seed field: empty → None (each preset's own, the first run's for all); else a whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError([("training.seed", f"the seed must be a whole number ≥ 0, got {value!r}")])
    return value


def step_slider(steps: list[int]) -> tuple[int, int, bool]:
    """(minimum, maximum, interactive) of the sample-step slider over the sampled `steps` (sorted).
    Gradio refuses a slider whose minimum is not below its maximum, so with one sampled step (or
    none) the slider is fixed, ending at that step."""
    if not steps:
        return 0, 1, False
    lo, hi = steps[0], steps[-1]
    return (lo, hi, True) if lo < hi else (hi - 1, hi, False)


def signature(runs: list[RunData]) -> tuple:
    """Changes when anything shown could change: each run's event offset and status."""
    return tuple((r.id, r.offset, r.record.status) for r in runs)
