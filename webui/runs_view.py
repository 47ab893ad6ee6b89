"""What the Runs tab shows, computed from a job folder alone (no Gradio here, so it is easy to test).

Runs are read by `backend.compare.runs` (the Compare tab's reader too), shared by every browser
session through caches kept in the app context: `shared_runs` (whole runs, for the selected job and
Compare) and `ProgressCache` (statuses and progress only, for the jobs table). A per-session view
dict only remembers what that session last drew, and follows the job's log by byte offset; a reload
or an app restart starts from offset 0 and rebuilds the same picture from disk.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from backend.compare.charts import loss_figure
from backend.compare.runs import DEFAULT_SMOOTHING, TABLE_EVENTS, RunCache, RunData
from backend.errors import JobError
from backend.jobs.events import LOG_FILE, read_log_tail
from backend.jobs.registry import JobRecord
from webui.text import code, md, progress_bar, strip_ansi

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LOG_KEEP_CHARS = 30_000      # what the log box holds: the tail, not the whole file
TABLE_HEADERS = ["name", "kind", "status", "progress", "started", "duration", "id"]


def shared_runs(ctx: Any) -> RunCache:
    """The app's one cache of whole runs (Runs tab and Compare tab), kept in `ctx.cache`."""
    with ctx.lock:
        return ctx.cache.setdefault("runs", RunCache(ctx.paths))


class ProgressCache:
    """The jobs tables' runs (Runs tab, Models tab downloads): only status and progress events are
    read, by byte offset, so a table of many long runs stays cheap."""

    def __init__(self) -> None:
        self.runs = RunCache(types=TABLE_EVENTS)

    def run(self, job_dir: Path, record: JobRecord | None = None) -> RunData | None:
        """The job's run, or None when its folder is gone."""
        try:
            return self.runs.run(job_dir, record)
        except JobError:
            return None

    def get(self, job_dir: Path) -> dict:
        """The job's last progress event ({} before the first)."""
        run = self.run(job_dir)
        return dict(run.last_progress) if run else {}


def new_view(job_id: str | None) -> dict[str, Any]:
    """What one session has drawn of job `job_id`: `read_new` updates it and says what changed."""
    return {"job": job_id, "log_offset": 0, "log": "", "metrics": -1, "samples": -1, "events": None}


def read_new(view: dict[str, Any], run: RunData) -> set[str]:
    """What changed since this session last looked at `run` (metrics, samples, progress, status, log);
    the run itself was brought up to date by its cache. Reads the log lines written since."""
    changed: set[str] = set()
    if run.metric_points() != view["metrics"]:
        view["metrics"] = run.metric_points()
        changed.add("metrics")
    if len(run.samples) != view["samples"]:
        view["samples"] = len(run.samples)
        changed.add("samples")
    events = (repr(run.last_progress), repr(run.phase))
    if events != view["events"]:
        view["events"] = events
        changed.add("progress")
    status = (len(run.statuses), len(run.errors))
    if status != view.get("status"):
        view["status"] = status
        changed.add("status")
    text, offset = read_log_tail(run.job_dir / LOG_FILE, view["log_offset"])
    if offset != view["log_offset"] or text:
        # Colour codes (LyCORIS colours its log lines) would show as "[0;32mINFO[0m" in the text box.
        view["log"] = (view["log"] + strip_ansi(text))[-LOG_KEEP_CHARS:]
        view["log_offset"] = offset
        changed.add("log")
    return changed


def run_figure(run: RunData) -> go.Figure:
    """The Runs tab's chart: the one loss figure (raw and smoothed loss), learning rate on a second axis."""
    return loss_figure([run], DEFAULT_SMOOTHING, "step", with_lr=True)


def progress_state(run: RunData | None) -> dict[str, Any]:
    """The last progress event's fields, and the preparation phase (phase, done, phase_total)."""
    if run is None:
        return {}
    phase = run.phase
    return {**run.last_progress, "phase": phase.get("phase"), "done": phase.get("done"),
            "phase_total": phase.get("total")}


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


def gallery_items(run: RunData) -> list[tuple[str, str]]:
    """(image path, caption) grouped by step, newest step first, prompts in their order."""
    by_step: dict[int, list[tuple[str, str]]] = {}
    for s in run.samples:
        path = _inside(run.job_dir, str(s.path))
        if path is None:
            continue
        caption = f"step {s.step} · seed {s.seed} · {s.prompt}"
        by_step.setdefault(s.step, []).append((str(path), caption))
    return [item for step in sorted(by_step, reverse=True) for item in by_step[step]]


# Times come from files anyone may edit (job.json, events.jsonl): one that cannot be shown (inf, nan,
# year 10000) is shown as blank, never an error that breaks every tick of the Runs tab.
_UNSHOWABLE = (OverflowError, ValueError, OSError, TypeError)


def fmt_duration(seconds: float | None) -> str:
    try:
        if seconds is None or seconds < 0:
            return ""
        h, rest = divmod(int(seconds), 3600)
    except _UNSHOWABLE:
        return ""
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(t: float | None) -> str:
    try:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""
    except _UNSHOWABLE:
        return ""


def progress_text(progress: dict[str, Any]) -> str:
    step, total = progress.get("step"), progress.get("total")
    if step is None:
        return ""
    return f"{step}/{total}" if total else str(step)


def progress_html(rec: JobRecord | None, progress: dict[str, Any]) -> str:
    """A bar with step/total, it/s and ETA."""
    if rec is None:
        return "<div class='ld-progress ld-empty'>No job selected.</div>"
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
    return progress_bar(rec.status, progress.get("step"), progress.get("total"), parts)


def job_header(rec: JobRecord | None, started_at: float | None = None) -> str:
    """Name, id, kind, status and when the job first started (`started_at`, else job.json's)."""
    if rec is None:
        return "Select a job in the table."
    started_at = started_at or rec.started_at
    lines = [f"### {md(rec.name)}", f"{code(rec.id)} · {md(rec.kind)} · **{md(rec.status)}**"
             + (f" · started {fmt_time(started_at)}" if started_at else "")]
    if rec.error:
        first = rec.error.strip().splitlines()[0] if rec.error.strip() else rec.error
        lines.append(f"**Error:** {md(first)}")
    return "\n\n".join(lines)


def jobs_rows(runs: list[RunData], now: float | None = None) -> list[list[str]]:
    """Table rows, newest job first. `started` is the first start and `duration` the time spent
    running summed over every start, as Compare counts it (a resumed job ran more than once)."""
    now = now or time.time()
    rows = []
    for run in sorted(runs, key=lambda r: (r.record.created_at, r.record.id), reverse=True):
        rec = run.record
        status = rec.status + (f" (#{rec.queue_position + 1})" if rec.status == "queued"
                               and rec.queue_position is not None else "")
        rows.append([rec.name, rec.kind, status, progress_text(run.last_progress), fmt_time(run.started_at),
                     fmt_duration(run.wall_time_s(now)), rec.id])
    return rows


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
