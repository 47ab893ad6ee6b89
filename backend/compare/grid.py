"""The sample grid: one row per (prompt, seed), one column per run, at a chosen step.

Runs rarely sample at exactly the same steps (different batch sizes, a run stopped early), so each
cell shows the run's sample of that prompt and seed nearest to the chosen step, and says which step
that was. A row is a (prompt, seed) pair that at least two of the runs drew (with one run: all of
its pairs); when there is none the grid is empty and `reason` says why.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from backend.compare.runs import RunData, SampleRef, run_labels
from backend.files import atomic_write_bytes

Key = tuple[str, int | None]


@dataclass(frozen=True)
class Grid:
    run_ids: list[str]
    labels: list[str]                       # column heads
    rows: list[Key]                         # (prompt, seed)
    cells: list[list[SampleRef | None]]     # cells[row][column]
    steps: list[int]                        # every step any run sampled at (for a slider)
    step: int | None                        # the step asked for
    reason: str | None = None               # why the grid is empty, if it is

    @property
    def empty(self) -> bool:
        return not self.rows


def nearest(samples: list[SampleRef], step: int) -> SampleRef | None:
    """The sample nearest to `step`; on a tie the earlier step; at the same step the last drawn."""
    if not samples:
        return None
    i = min(range(len(samples)), key=lambda i: (abs(samples[i].step - step), samples[i].step, -i))
    return samples[i]


def _keys_in_order(runs: list[RunData]) -> list[Key]:
    seen: dict[Key, None] = {}
    for run in runs:
        for s in run.samples:
            seen.setdefault(s.key, None)
    return list(seen)


def _describe(key: Key) -> str:
    prompt, seed = key
    short = prompt if len(prompt) <= 40 else prompt[:37] + "…"
    return f"{short!r} seed {seed}" if seed is not None else repr(short)


def _empty_reason(runs: list[RunData], labels: list[str]) -> str:
    parts = []
    for run, label in zip(runs, labels, strict=True):
        keys = list(dict.fromkeys(s.key for s in run.samples))
        if not keys:
            prompts = (run.config.get("sampling") or {}).get("prompts") if isinstance(
                run.config.get("sampling"), dict) else None
            why = "no sample prompts in its settings" if not prompts else "no sample drawn yet"
            parts.append(f"{label}: {why}")
        else:
            shown = ", ".join(_describe(k) for k in keys[:3]) + (" …" if len(keys) > 3 else "")
            parts.append(f"{label}: {shown}")
    return ("No sample prompt and seed is common to these runs, so there is nothing to put side by "
            "side (loss and settings still compare). " + "; ".join(parts) + ". Launch them as an A/B "
            "comparison to give every run the same prompts and seeds.")


def build_grid(runs: list[RunData], step: int | None = None) -> Grid:
    """The grid at `step` (None: the last step any run sampled at)."""
    labels = run_labels(runs)
    ids = [r.id for r in runs]
    steps = sorted({s for r in runs for s in r.sample_steps()})
    if step is None and steps:
        step = steps[-1]
    by_run: list[dict[Key, list[SampleRef]]] = []
    for run in runs:
        table: dict[Key, list[SampleRef]] = {}
        for s in run.samples:
            table.setdefault(s.key, []).append(s)
        by_run.append(table)
    need = 1 if len(runs) == 1 else 2
    rows = [k for k in _keys_in_order(runs) if sum(k in t for t in by_run) >= need]
    if not rows:
        reason = "No runs chosen." if not runs else _empty_reason(runs, labels)
        return Grid(ids, labels, [], [], steps, step, reason)
    cells = [[nearest(t.get(k, []), step or 0) for t in by_run] for k in rows]
    return Grid(ids, labels, rows, cells, steps, step)


# PNG ---------------------------------------------------------------------------------------

def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip() + " …"
    return lines


def _open(path: Path, size: int) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return im
    except (OSError, UnidentifiedImageError):
        return None


def auto_cell(grid: Grid, largest: int = 256, smallest: int = 128) -> int:
    """Cell side: the biggest sample's longer side, within [smallest, largest] (small samples are not
    lost in white space, big ones are shrunk)."""
    side = 0
    for ref in (c for row in grid.cells for c in row if c is not None):
        try:
            with Image.open(ref.path) as im:
                side = max(side, *im.size)
        except (OSError, UnidentifiedImageError):
            continue
    return max(smallest, min(largest, side or largest))


def render_grid(grid: Grid, cell: int | None = None) -> Image.Image:
    """The grid as one image: run names on top, prompt and seed on the left, the step under each cell."""
    cell = cell or auto_cell(grid)
    pad, head, foot, left = 8, 44, 22, 240
    font, small = _font(15), _font(12)
    rows = grid.rows or [("", None)]
    width = left + len(grid.labels) * (cell + pad) + pad
    height = head + len(rows) * (cell + foot + pad) + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for c, label in enumerate(grid.labels):
        x = left + c * (cell + pad)
        for i, line in enumerate(_wrap(draw, label, font, cell, 2)):
            draw.text((x, pad + i * 18), line, fill="black", font=font)
    if grid.empty:
        for i, line in enumerate(_wrap(draw, grid.reason or "no samples", small, width - 2 * pad, 12)):
            draw.text((pad, head + i * 16), line, fill="black", font=small)
        return img
    for r, (prompt, seed) in enumerate(grid.rows):
        y = head + r * (cell + foot + pad)
        lines = _wrap(draw, prompt, small, left - 2 * pad, max(1, cell // 16 - 2))
        lines.append(f"seed {seed}" if seed is not None else "")
        for i, line in enumerate(lines):
            draw.text((pad, y + i * 16), line, fill="black", font=small)
        for c, ref in enumerate(grid.cells[r]):
            x = left + c * (cell + pad)
            thumb = _open(ref.path, cell) if ref else None
            if thumb is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(235, 235, 235))
                draw.text((x + 8, y + cell // 2 - 8), "no sample" if ref is None else "image missing",
                          fill=(90, 90, 90), font=small)
            else:
                img.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
            if ref is not None:
                draw.text((x, y + cell + 3), f"step {ref.step}", fill=(60, 60, 60), font=small)
    return img


def save_grid_png(grid: Grid, path: str | os.PathLike, cell: int | None = None) -> Path:
    """Write the grid as a PNG (atomically) and return its path."""
    buf = io.BytesIO()
    render_grid(grid, cell).save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
