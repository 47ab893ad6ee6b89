"""What the Runs tab shows, computed from a job folder alone (no Gradio here, so it is easy to test).

A `RunView` dict (kept per browser session in a gr.State) accumulates a job's events read by byte
offset: a reload or an app restart starts from offset 0 and rebuilds the same picture from disk.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from backend.compare.runs import ema_smooth
from backend.jobs.events import EventReader, last_event, read_log_tail
from backend.jobs.registry import JobRecord
from webui.text import code, md, strip_ansi

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SMOOTHED_KEYS = ("loss_smoothed", "smoothed_loss", "loss_ema", "loss_avg", "avg_loss")
LOG_KEEP_CHARS = 30_000      # what the log box holds: the tail, not the whole file
MAX_PLOT_POINTS = 2000
SMOOTHING = 0.9             # TensorBoard-style EMA weight of the loss chart when events carry none
TABLE_HEADERS = ["name", "kind", "status", "progress", "started", "duration", "id"]


def new_view(job_id: str | None) -> dict[str, Any]:
    """An empty view of job `job_id`; `read_new` fills it from the job folder."""
    return {"job": job_id, "ev_offset": 0, "log_offset": 0, "log": "", "steps": [], "loss": [],
            "smooth": [], "lr_steps": [], "lr": [], "samples": [], "progress": {}, "errors": []}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _lr_of(event: dict) -> float | None:
    if "lr" in event:
        return _number(event["lr"])
    for key in sorted(event):
        if key.startswith("lr"):
            return _number(event[key])
    return None


def apply_events(view: dict[str, Any], events: Iterable[dict]) -> set[str]:
    """Fold events into `view`; returns which parts changed: metrics, samples, progress, status."""
    changed: set[str] = set()
    for ev in events:
        kind = ev.get("type")
        if kind == "metric":
            step = ev.get("step")
            loss = _number(ev.get("loss"))
            if step is not None and loss is not None:
                view["steps"].append(step)
                view["loss"].append(loss)
                smooth = next((_number(ev[k]) for k in SMOOTHED_KEYS if k in ev), None)
                view["smooth"].append(smooth)
                changed.add("metrics")
            lr = _lr_of(ev)
            if step is not None and lr is not None:
                view["lr_steps"].append(step)
                view["lr"].append(lr)
                changed.add("metrics")
        elif kind == "progress":
            view["progress"] = {k: ev.get(k) for k in ("step", "total", "epoch", "it_s", "eta_s",
                                                       "peak_memory_mb")}
            changed.add("progress")
        elif kind == "phase":  # preparation before the first step: caching latents, text, …
            view["progress"] = {**view["progress"], "phase": ev.get("phase"), "done": ev.get("done"),
                                "phase_total": ev.get("total")}
            changed.add("progress")
        elif kind == "sample":
            view["samples"].append({"path": ev.get("path"), "prompt": ev.get("prompt", ""),
                                    "seed": ev.get("seed"), "step": ev.get("step")})
            changed.add("samples")
        elif kind == "error":
            view["errors"].append(str(ev.get("message") or "error"))
            changed.add("status")
        elif kind == "status":
            changed.add("status")
    return changed


def read_new(view: dict[str, Any], job_dir: Path) -> set[str]:
    """Read the events and log lines written since the last call; returns what changed."""
    events, view["ev_offset"] = EventReader(job_dir).read(view["ev_offset"])
    changed = apply_events(view, events)
    text, offset = read_log_tail(job_dir / "job.log", view["log_offset"])
    if offset != view["log_offset"] or text:
        # Colour codes (LyCORIS colours its log lines) would show as "[0;32mINFO[0m" in the text box.
        view["log"] = (view["log"] + strip_ansi(text))[-LOG_KEEP_CHARS:]
        view["log_offset"] = offset
        changed.add("log")
    return changed


def _thin(xs: list, ys: list, limit: int = MAX_PLOT_POINTS) -> tuple[list, list]:
    if len(xs) <= limit:
        return xs, ys
    stride = -(-len(xs) // limit)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


def loss_figure(view: dict[str, Any]) -> go.Figure:
    """Loss (raw and smoothed) against step, learning rate on a second y axis."""
    fig = go.Figure()
    steps, loss = view["steps"], view["loss"]
    smooth = view["smooth"]
    if any(s is None for s in smooth):
        smooth = ema_smooth(loss, SMOOTHING)
    x, y = _thin(steps, loss)
    fig.add_trace(go.Scatter(x=x, y=y, name="loss", mode="lines", line={"width": 1, "color": "#9bb7e0"}))
    x, y = _thin(steps, smooth)
    fig.add_trace(go.Scatter(x=x, y=y, name="loss (smoothed)", mode="lines",
                             line={"width": 2.5, "color": "#1f4e9c"}))
    if view["lr"]:
        x, y = _thin(view["lr_steps"], view["lr"])
        fig.add_trace(go.Scatter(x=x, y=y, name="learning rate", mode="lines", yaxis="y2",
                                 line={"width": 1.5, "dash": "dot", "color": "#d9822b"}))
    fig.update_layout(
        height=340, margin={"l": 50, "r": 60, "t": 40, "b": 40}, hovermode="x unified",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        xaxis={"title": "step"},
        yaxis={"title": "loss"},
        yaxis2={"title": "learning rate", "overlaying": "y", "side": "right", "showgrid": False,
                "exponentformat": "e", "rangemode": "tozero",
                # a constant rate would otherwise be centred in an axis running from -1 to 1
                **({"range": [0, max(view["lr"]) * 1.15]} if view["lr"] and max(view["lr"]) > 0 else {})},
        uirevision="keep",  # zoom survives updates
    )
    return fig


def _inside(job_dir: Path, raw: str | None) -> Path | None:
    """The sample's file if it lies inside the job folder (paths may be relative to it)."""
    if not raw:
        return None
    p = Path(raw)
    p = (job_dir / p) if not p.is_absolute() else p
    try:
        p = p.resolve()
        p.relative_to(job_dir.resolve())
    except (ValueError, OSError):
        return None
    return p if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() else None


def gallery_items(view: dict[str, Any], job_dir: Path) -> list[tuple[str, str]]:
    """(image path, caption) grouped by step, newest step first, prompts in their order."""
    by_step: dict[int, list[tuple[str, str]]] = {}
    for s in view["samples"]:
        path = _inside(job_dir, s["path"])
        if path is None:
            continue
        step = s["step"] if isinstance(s["step"], int) else -1
        caption = f"step {step} · seed {s['seed']} · {s['prompt']}"
        by_step.setdefault(step, []).append((str(path), caption))
    return [item for step in sorted(by_step, reverse=True) for item in by_step[step]]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""


def duration(rec: JobRecord, now: float | None = None) -> float | None:
    if not rec.started_at or rec.status == "queued":
        return None
    if rec.ended_at:
        return rec.ended_at - rec.started_at
    return (now or time.time()) - rec.started_at if rec.active else None


def progress_text(progress: dict[str, Any]) -> str:
    step, total = progress.get("step"), progress.get("total")
    if step is None:
        return ""
    return f"{step}/{total}" if total else str(step)


def progress_html(rec: JobRecord | None, progress: dict[str, Any]) -> str:
    """A bar with step/total, it/s and ETA."""
    if rec is None:
        return "<div class='ld-progress ld-empty'>No job selected.</div>"
    step, total = progress.get("step"), progress.get("total")
    frac = min(1.0, step / total) if isinstance(step, int | float) and total else 0.0
    if rec.status == "completed":
        frac = 1.0
    parts = [f"step {progress_text(progress) or '–'}"]
    phase = progress.get("phase")
    if phase and phase != "ready" and progress.get("step") is None and rec.active:
        done, of = progress.get("done"), progress.get("phase_total")
        parts = [str(phase).replace("_", " ") + (f" {done}/{of}" if done is not None and of else "")]
    if progress.get("epoch") is not None:
        parts.append(f"epoch {progress['epoch']}")
    if progress.get("it_s"):
        it_s = float(progress["it_s"])
        parts.append(f"{it_s:.2f} it/s" if it_s >= 1 else f"{1 / it_s:.1f} s/it")
    if progress.get("eta_s") is not None and rec.active:
        parts.append(f"ETA {fmt_duration(progress['eta_s'])}")
    if progress.get("peak_memory_mb"):
        parts.append(f"peak memory {float(progress['peak_memory_mb']) / 1024:.1f} GB")
    label = html.escape(" · ".join(parts))
    return (f"<div class='ld-progress' data-status='{html.escape(rec.status)}'>"
            f"<div class='ld-bar'><div class='ld-fill' style='width:{frac * 100:.1f}%'></div></div>"
            f"<div class='ld-progress-label'><b>{html.escape(rec.status)}</b> · {label}</div></div>")


def job_header(rec: JobRecord | None) -> str:
    if rec is None:
        return "Select a job in the table."
    lines = [f"### {md(rec.name)}", f"{code(rec.id)} · {md(rec.kind)} · **{md(rec.status)}**"
             + (f" · started {fmt_time(rec.started_at)}" if rec.started_at else "")]
    if rec.error:
        first = rec.error.strip().splitlines()[0] if rec.error.strip() else rec.error
        lines.append(f"**Error:** {md(first)}")
    return "\n\n".join(lines)


def jobs_rows(records: list[JobRecord], progress_of: Callable[[JobRecord], dict],
              now: float | None = None) -> list[list[str]]:
    """Table rows, newest job first."""
    now = now or time.time()
    rows = []
    for rec in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True):
        status = rec.status + (f" (#{rec.queue_position + 1})" if rec.status == "queued"
                               and rec.queue_position is not None else "")
        rows.append([rec.name, rec.kind, status, progress_text(progress_of(rec)), fmt_time(rec.started_at),
                     fmt_duration(duration(rec, now)), rec.id])
    return rows


class ProgressCache:
    """The last progress event of each job, re-read only when its events.jsonl changed."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int], dict]] = {}

    def get(self, job_dir: Path) -> dict:
        try:
            st = os.stat(job_dir / "events.jsonl")
        except FileNotFoundError:
            return {}
        key = (st.st_size, st.st_mtime_ns)
        hit = self._seen.get(str(job_dir))
        if hit and hit[0] == key:
            return hit[1]
        ev = last_event(job_dir, "progress") or {}
        self._seen[str(job_dir)] = (key, ev)
        return ev


def files_of(job_dir: Path) -> tuple[Path | None, list[Path]]:
    """The final LoRA (newest file in output/) and the checkpoint LoRA files, oldest first."""
    def lora_files(folder: Path) -> list[Path]:
        try:
            return sorted((p for p in folder.iterdir() if p.suffix == ".safetensors" and p.is_file()),
                          key=lambda p: (p.stat().st_mtime, p.name))
        except OSError:
            return []

    outputs = lora_files(job_dir / "output")
    return (outputs[-1] if outputs else None), lora_files(job_dir / "checkpoints")


def export_notes_markdown(notes: list[tuple[str, str]], extras: dict) -> str:
    """What an sd-scripts export could not carry, by option (kept in loradash_extras.toml)."""
    if not notes:
        return "Every option of this run maps to sd-scripts."
    lines = [f"- {code(path)}: {md(why)}" if path else f"- {md(why)}" for path, why in notes]
    kept = " (kept in `loradash_extras.toml`, which LoRA Dash's import reads back)" if extras else ""
    return f"**Not expressible in sd-scripts**{kept}:\n\n" + "\n".join(lines)
