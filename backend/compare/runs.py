"""One run read from its job folder (DESIGN.md §3), never from a process: the one reader behind the
Runs tab, the Compare tab, the HTML report and the `compare` CLI.

`load_run(job_dir)` reads job.json, config.toml and events.jsonl into a `RunData`; `RunData.refresh()`
reads only the events appended since (a byte offset), so a running job can be followed cheaply. A
`RunCache` keeps them between polls; one made with `types` folds only those event types (the jobs
table needs statuses and progress, not every loss). Everything here is plain data: no torch, no Gradio.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import ConfigError, JobError
from backend.jobs import events as ev
from backend.jobs.events import EventReader
from backend.jobs.registry import (
    ACTIVE,
    CONFIG_FILE,
    FINISHED,
    JobRecord,
    job_dir,
    list_jobs,
    load_config,
    load_job,
)
from backend.paths import WorkspacePaths

# The one smoothing of loss curves: the Runs chart, the Compare slider's default, the outcome's final
# loss, the HTML report and the CLIs all start from this weight.
DEFAULT_SMOOTHING = 0.6
# Metric fields that are bookkeeping, not series: the event's own keys and the metric's step/epoch.
_NOT_METRICS = frozenset({"t", "type", "step", "epoch"})
# What the jobs table needs of each job (a RunCache made with these types skips the rest unparsed).
TABLE_EVENTS = frozenset({ev.STATUS, ev.PROGRESS})
_STARTS = ("starting", "running")


class EMA:
    """Exponential moving average with debiasing, as TensorBoard smooths its scalar charts, one value
    at a time (`ema_smooth` runs it over a list; the CLI feeds it as losses arrive).

    Source: TensorBoard `vz_line_chart2/line-chart.ts` (`resmoothDataset`): last = last·w + (1−w)·x,
    shown as last / (1 − w^n) so the first points are not pulled towards 0. Non-finite points pass
    through without entering the average. `weight` is in [0, 1); 0 returns the raw values.
    """

    def __init__(self, weight: float = DEFAULT_SMOOTHING):
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
        self.weight, self.last, self.n = weight, 0.0, 0

    def add(self, value: float) -> float:
        if not math.isfinite(value):
            return value
        self.last = self.last * self.weight + (1.0 - self.weight) * value
        self.n += 1
        return self.last / (1.0 - self.weight ** self.n)


def ema_smooth(values: list[float], weight: float = DEFAULT_SMOOTHING) -> list[float]:
    """`EMA` over `values`; a constant series is returned as it is (no rounding noise)."""
    ema = EMA(weight)
    finite = [v for v in values if math.isfinite(v)]
    if not finite or all(v == finite[0] for v in finite):
        return list(values)
    return [ema.add(v) for v in values]


@dataclass
class Series:
    """One metric over steps (in the order the events came)."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float) -> None:
        self.steps.append(step)
        self.values.append(value)


@dataclass(frozen=True)
class SampleRef:
    """A sample image from a `sample` event; `path` is absolute."""

    step: int
    prompt: str
    seed: int | None
    path: Path

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.prompt, self.seed)


@dataclass(frozen=True)
class Outcome:
    """What a run cost and what it gave; None where the job folder does not tell."""

    status: str
    steps: int | None
    total_steps: int | None
    wall_time_s: float | None
    it_s: float | None
    peak_memory_mb: float | None
    final_loss: float | None          # the last smoothed loss
    lora_path: Path | None
    lora_size_bytes: int | None


@dataclass
class RunData:
    """A job folder read by events. `config` is the resolved config.toml as a dict; `types`, when
    set, are the only event types folded in (None: all)."""

    job_dir: Path
    record: JobRecord
    config: dict[str, Any]
    types: frozenset[str] | None = None
    series: dict[str, Series] = field(default_factory=dict)
    samples: list[SampleRef] = field(default_factory=list)
    progress: list[tuple[float, int, float | None]] = field(default_factory=list)  # (t, step, it/s)
    last_progress: dict[str, Any] = field(default_factory=dict)   # the newest progress event's fields
    phase: dict[str, Any] = field(default_factory=dict)           # the newest phase event's fields
    statuses: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_memory_mb: float | None = None
    total_steps: int | None = None
    last_step: int | None = None
    offset: int = 0
    config_key: tuple[int, int] | None = None  # config.toml's (mtime_ns, size) when `config` was read

    # identity ------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name or self.record.id

    @property
    def active(self) -> bool:
        return self.record.status in ACTIVE or self.record.status == "queued"

    @property
    def images_per_step(self) -> int:
        """Images one optimizer step sees: batch size × gradient accumulation × processes (GPUs)."""
        tr = self.config.get("training") if isinstance(self.config.get("training"), dict) else {}
        product = 1
        for key in ("batch_size", "gradient_accumulation_steps", "num_processes"):
            value = tr.get(key, 1)
            product *= value if isinstance(value, int) and value > 0 else 1
        return product

    # reading -------------------------------------------------------------------------------
    def refresh(self, record: JobRecord | None = None) -> RunData:
        """Read job.json again (or take `record`, just read by the caller) and the events appended
        since the last read."""
        if record is not None:
            self.record = record
        else:
            try:
                self.record = load_job(self.job_dir)
            except JobError:
                pass  # the folder is being deleted or job.json replaced: keep what we had
        self._reload_config()
        events, self.offset = EventReader(self.job_dir).read(self.offset, types=self.types)
        for event in events:
            self._take(event)
        return self

    def _reload_config(self) -> None:
        """Read config.toml again if it changed (users edit it before a Resume): one stat per refresh."""
        try:
            st = (self.job_dir / CONFIG_FILE).stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and key == self.config_key:
            return
        try:
            self.config = load_config(self.job_dir)
        except (JobError, ConfigError, OSError, UnicodeDecodeError):
            self.config = {}
        self.config_key = key

    def _take(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        t = _num(event.get("t"))
        step = _int(event.get("step"))
        if step is not None and kind in (ev.METRIC, ev.PROGRESS, ev.SAMPLE, ev.CHECKPOINT):
            self.last_step = step if self.last_step is None else max(self.last_step, step)
        if kind == ev.METRIC:
            self._take_metric(event, step if step is not None else (self.last_step or 0))
        elif kind == ev.PROGRESS:
            self.last_progress = {k: event.get(k) for k in ev.EVENTS[ev.PROGRESS].fields}
            memory = _num(event.get("peak_memory_mb"))
            if memory is not None:
                self.peak_memory_mb = memory if self.peak_memory_mb is None else max(self.peak_memory_mb, memory)
            if step is not None:
                self.total_steps = _int(event.get("total")) or self.total_steps
                self.progress.append((t or 0.0, step, _num(event.get("it_s"))))
        elif kind == ev.PHASE:
            self.phase = {k: v for k, v in event.items() if k not in ("t", "type")}
        elif kind == ev.SAMPLE:
            ref = self._sample(event, step)
            if ref is not None:
                self.samples.append(ref)
        elif kind == ev.ERROR:
            self.errors.append(str(event.get("message") or "error"))
        elif kind == ev.STATUS and isinstance(event.get("status"), str) and t is not None:
            self.statuses.append((t, event["status"]))

    def _take_metric(self, event: dict[str, Any], step: int) -> None:
        for key, value in event.items():
            if key in _NOT_METRICS:
                continue
            if isinstance(value, dict):  # e.g. lr: {unet: …, text_encoder: …}
                for sub, v in value.items():
                    if _num(v) is not None:
                        self.series.setdefault(f"{key}.{sub}", Series()).add(step, float(v))
            elif _num(value) is not None:
                self.series.setdefault(key, Series()).add(step, float(value))

    def _sample(self, event: dict[str, Any], step: int | None) -> SampleRef | None:
        path = event.get("path")
        if not isinstance(path, str) or not path:
            return None
        prompt = event.get("prompt")
        return SampleRef(step=step if step is not None else (self.last_step or 0),
                         prompt=prompt if isinstance(prompt, str) else "", seed=_int(event.get("seed")),
                         path=self._path(path))

    def _path(self, raw: str) -> Path:
        p = Path(raw)
        return p if p.is_absolute() else self.job_dir / p

    # derived -------------------------------------------------------------------------------
    def loss_series(self) -> Series:
        return self.series.get("loss", Series())

    def lr_series(self) -> dict[str, Series]:
        """The learning-rate series by name: per group (`lr_unet`, `lr_text_encoder` or `lr.unet`, …)
        where the engine logs them, else the single `lr` (which then repeats the main group's)."""
        groups = {k: s for k, s in self.series.items() if k.startswith(("lr.", "lr_"))}
        return groups or {k: s for k, s in self.series.items() if k == "lr"}

    def sample_steps(self) -> list[int]:
        return sorted({s.step for s in self.samples})

    def metric_points(self) -> int:
        """How many metric values were read (changes whenever a chart would)."""
        return sum(len(s.steps) for s in self.series.values())

    @property
    def started_at(self) -> float | None:
        """When the job first started: its first start event (job.json's `started_at` is the latest
        start, which after a resume is the resume), else job.json's."""
        first = next((t for t, status in self.statuses if status in _STARTS), None)
        return first if first is not None else self.record.started_at

    @property
    def epoch(self) -> int | None:
        """The 1-based epoch of the last step, as the progress events report it."""
        return _int(self.last_progress.get("epoch"))

    def wall_time_s(self, now: float | None = None) -> float | None:
        """Seconds spent running, summed over every start (a resumed job ran more than once)."""
        now = time.time() if now is None else now
        total, began = 0.0, None
        for t, status in self.statuses:
            if status in _STARTS and began is None:
                began = t
            elif status in FINISHED and began is not None:
                total, began = total + (t - began), None
        if began is not None:
            total += (now if self.record.status in ACTIVE else (self.record.ended_at or now)) - began
        if total > 0:
            return total
        rec = self.record
        if rec.started_at:
            end = rec.ended_at or (now if rec.status in ACTIVE else None)
            return (end - rec.started_at) if end else None
        return None

    def it_s(self) -> float | None:
        """Median of the rates the progress events reported; else steps over the time they took."""
        rates = [r for _, _, r in self.progress if r]
        if rates:
            return statistics.median(rates)
        if len(self.progress) >= 2:
            (t0, s0, _), (t1, s1, _) = self.progress[0], self.progress[-1]
            if t1 > t0 and s1 > s0:
                return (s1 - s0) / (t1 - t0)
        return None

    def lora_file(self) -> Path | None:
        """output/<saving.output_name>.safetensors, else the newest .safetensors in output/ or
        checkpoints/ (a stopped run's last save)."""
        saving = self.config.get("saving") if isinstance(self.config.get("saving"), dict) else {}
        name = saving.get("output_name") or "lora"
        exact = self.job_dir / "output" / f"{name}.safetensors"
        if exact.is_file():
            return exact
        for folder in ("output", "checkpoints"):
            found = sorted((self.job_dir / folder).glob("*.safetensors"), key=_mtime)
            if found:
                return found[-1]
        return None

    def outcome(self, smoothing: float = DEFAULT_SMOOTHING, now: float | None = None) -> Outcome:
        loss = self.loss_series().values
        smoothed = ema_smooth(loss, smoothing) if loss else []
        finite = [v for v in smoothed if math.isfinite(v)]
        lora = self.lora_file()
        try:
            size = lora.stat().st_size if lora else None
        except OSError:
            size, lora = None, None
        return Outcome(status=self.record.status, steps=self.last_step, total_steps=self.total_steps,
                       wall_time_s=self.wall_time_s(now), it_s=self.it_s(),
                       peak_memory_mb=self.peak_memory_mb, final_loss=finite[-1] if finite else None,
                       lora_path=lora, lora_size_bytes=size)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def run_labels(runs: list[RunData]) -> list[str]:
    """Legend and column names: each job's name, with its id where two runs share a name."""
    names = [r.name for r in runs]
    return [r.id if names.count(r.name) > 1 else r.name for r in runs]


def load_run(folder: str | os.PathLike, types: frozenset[str] | None = None,
             record: JobRecord | None = None) -> RunData:
    """Read one job folder (only events of `types` when given). JobError if it has no readable
    job.json; a missing or broken config.toml gives an empty config (the run still shows its loss)."""
    folder = Path(folder)
    record = record or load_job(folder)
    return RunData(job_dir=folder, record=record, config={}, types=types).refresh(record)


def load_runs(paths: WorkspacePaths, job_ids: list[str]) -> list[RunData]:
    """The runs of `job_ids`, in that order; JobError naming an id that is not in the workspace."""
    return [load_run(job_dir(paths, jid)) for jid in job_ids]


def groups(paths: WorkspacePaths) -> dict[str, list[str]]:
    """Comparison groups (JobRecord.group) → their job ids in launch order, newest group first."""
    out: dict[str, list[JobRecord]] = {}
    for rec in list_jobs(paths):
        if rec.group:
            out.setdefault(rec.group, []).append(rec)
    ordered = sorted(out.items(), key=lambda kv: max(r.created_at for r in kv[1]), reverse=True)
    return {g: [r.id for r in sorted(recs, key=lambda r: (r.created_at, r.id))] for g, recs in ordered}


class RunCache:
    """Runs kept between polls, refreshed by byte offset: for a UI that re-reads every second.
    Thread-safe (one lock); shared by every browser session of an app. With `types`, its runs fold
    only those event types (see TABLE_EVENTS)."""

    def __init__(self, paths: WorkspacePaths | None = None, types: frozenset[str] | None = None):
        self.paths = paths
        self.types = types
        self._runs: dict[Path, RunData] = {}
        self._lock = threading.Lock()

    def run(self, folder: str | os.PathLike, record: JobRecord | None = None) -> RunData:
        """The run in `folder`, brought up to date (`record`: its job.json, just read by the caller).
        JobError when the folder has no readable job.json (and a deleted job leaves the cache)."""
        folder = Path(folder)
        with self._lock:
            try:
                record = record or load_job(folder)
            except JobError:
                self._runs.pop(folder, None)
                raise
            run = self._runs.get(folder)
            # A folder made again under the same name (deleted, then a new job) starts over.
            if run is None or record.created_at != run.record.created_at:
                run = load_run(folder, self.types, record)
                self._runs[folder] = run
            else:  # job.json is small and the events are read from where we stopped
                run.refresh(record)
            return run

    def get(self, job_ids: list[str]) -> list[RunData]:
        """The runs of `job_ids` in the workspace, brought up to date. JobError for an unknown id."""
        if self.paths is None:
            raise ValueError("RunCache.get needs the workspace paths")
        out = []
        for jid in job_ids:
            try:
                folder = job_dir(self.paths, jid)
            except JobError:
                with self._lock:
                    self._runs.pop(self.paths.jobs / jid, None)
                raise
            out.append(self.run(folder))
        return out
