"""events.jsonl: one JSON object per line, appended by the worker, read by offset by anyone.

Every event type and its fields are declared once, here (`EVENTS`): the writer refuses an undeclared
type, a missing field or (for closed types) an unknown one, and the readers (the Runs and Compare
tabs through `backend.compare.runs.RunData`, the CLI) take the names from here.

The writer appends whole lines with O_APPEND and flushes each one. Readers keep the byte offset they
reached and ask only for what follows; a last line without its newline is still being written, so it
is left for the next read. Lines that are not valid JSON objects are skipped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

EVENTS_FILE = "events.jsonl"
LOG_FILE = "job.log"
DEFAULT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class EventType:
    """One kind of line in events.jsonl. Every event also has `t` (unix seconds) and `type`.

    `fields` maps each field to what it holds; `required` are those every event of the type has.
    An `open` type may carry further fields (a metric's numbers, a phase's timings, a summary)."""

    name: str
    fields: MappingProxyType
    required: tuple[str, ...] = ()
    open: bool = False


def _declare(name: str, required: tuple[str, ...], open: bool = False, **fields: str) -> EventType:  # noqa: A002
    return EventType(name, MappingProxyType(fields), required, open)


STATUS = "status"
PROGRESS = "progress"
PHASE = "phase"
METRIC = "metric"
SAMPLE = "sample"
CHECKPOINT = "checkpoint"
ERROR = "error"
CAPTION_SUMMARY = "caption_summary"
DOWNLOAD_SUMMARY = "download_summary"

EVENTS: MappingProxyType = MappingProxyType({e.name: e for e in (
    _declare(STATUS, ("status",),
             status="the job's new status (registry.STATUSES)", error="why it failed or stopped",
             pid="the job's worker pid: when the worker claims the job, and on `running`",
             pid_start_time="that process's start time (procs.start_time), on `running`",
             pgid="the process group a stop signals, on `running`", resume="the run continues a saved state",
             run="which start of the job's worker this is (1, 2 … after resumes)",
             reconciled="set by the supervisor for a worker that vanished"),
    _declare(PROGRESS, ("step", "total"),
             step="steps (or bytes, images) done", total="how many there are; None when unknown",
             it_s="steps per second", eta_s="seconds left", epoch="1-based epoch of the last step",
             peak_memory_mb="peak GPU memory (CPU: resident set) in MiB", unit="what a step counts",
             bytes_per_s="download speed", written="captions written", failed="images that failed"),
    _declare(PHASE, ("phase",), open=True,
             phase="preparation before the first step: cache_text, cache_latents, ready",
             done="items done", total="items in the phase", reused="cached items reused"),
    _declare(METRIC, ("step",), open=True,
             step="the optimizer step", epoch="1-based epoch of the step", loss="the step's loss",
             lr="the main learning rate; lr_<group> per optimizer group"),
    _declare(SAMPLE, ("path", "prompt", "seed", "step"),
             path="the image, relative to the job folder", prompt="its prompt", seed="its seed",
             step="the step it shows", index="the prompt's position in the list"),
    _declare(CHECKPOINT, ("path", "step"),
             path="the LoRA file, relative to the job folder", step="the step saved",
             epoch="1-based epoch of that step", reason="periodic, save_now, stop or final",
             state="the resumable state saved with it, if any",
             output_copy="where the final file was also written (saving.output_dir)"),
    _declare(ERROR, ("message",), message="what went wrong, for the user", traceback="for a bug report"),
    _declare(CAPTION_SUMMARY, (), open=True),
    _declare(DOWNLOAD_SUMMARY, (), open=True),
)})


def check_event(type: str, fields: dict[str, Any]) -> None:  # noqa: A002
    """ValueError unless `fields` fit the declaration of `type` (a bug in the writer, not the user)."""
    decl = EVENTS.get(type)
    if decl is None:
        raise ValueError(f"event type {type!r} is not declared in backend/jobs/events.py EVENTS")
    missing = [f for f in decl.required if f not in fields]
    unknown = [] if decl.open else [f for f in fields if f not in decl.fields]
    if missing or unknown:
        raise ValueError(f"{type} event: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"undeclared {', '.join(unknown)} (declare them in EVENTS)"] if unknown else [])))


def type_needle(type: str) -> bytes:  # noqa: A002
    """The bytes every line of `type` holds, as the writer spells them: '"type": "progress"'."""
    return json.dumps({"type": type})[1:-1].encode()


class EventWriter:
    """Appends events to `<job_dir>/events.jsonl`."""

    def __init__(self, job_dir: str | os.PathLike):
        self.path = Path(job_dir) / EVENTS_FILE

    def emit(self, type: str, **fields: Any) -> dict:  # noqa: A002 - "type" is the event's field name
        """Append `{"t": now, "type": type, **fields}` as one line and return it; ValueError when
        the fields do not fit the type's declaration in `EVENTS`."""
        check_event(type, fields)
        event = {"t": time.time(), "type": type, **fields}
        line = (json.dumps(event, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        # One write(2) per line on an O_APPEND descriptor: lines from several writers never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return event


def _read_complete(path: Path, offset: int, max_bytes: int | None) -> tuple[bytes, int]:
    """Bytes of complete lines after `offset` (at most ~max_bytes) and the offset after them."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if offset > size:  # the file was replaced or truncated: start again
                offset = 0
            fh.seek(offset)
            data = fh.read() if max_bytes is None else fh.read(max_bytes)
    except FileNotFoundError:
        return b"", offset
    end = data.rfind(b"\n")
    if end < 0:
        return b"", offset
    return data[: end + 1], offset + end + 1


class EventReader:
    """Reads `<job_dir>/events.jsonl` from a byte offset."""

    def __init__(self, job_dir: str | os.PathLike):
        self.path = Path(job_dir) / EVENTS_FILE

    def read(self, offset: int = 0, max_bytes: int | None = None,
             types: frozenset[str] | None = None) -> tuple[list[dict], int]:
        """Events in the complete lines after `offset`, and the offset to pass next time. With
        `types`, only events of those types: other lines are skipped before they are parsed."""
        data, new_offset = _read_complete(self.path, offset, max_bytes)
        needles = None if types is None else [type_needle(t) for t in types]
        events: list[dict] = []
        for raw in data.splitlines():
            if not raw.strip() or (needles is not None and not any(n in raw for n in needles)):
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict) and (types is None or obj.get("type") in types):
                events.append(obj)
        return events, new_offset

    def read_all(self) -> list[dict]:
        """Every complete event in the file."""
        return self.read(0)[0]


def tail_events(job_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict]:
    """The complete events in the last `max_bytes` of events.jsonl (a cheap look at recent state)."""
    path = Path(job_dir) / EVENTS_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    start = max(0, size - max_bytes)
    if start:
        # Begin after the line break before `start`, so the first line read is whole.
        with open(path, "rb") as fh:
            fh.seek(start - 1)
            chunk = fh.read(min(max_bytes, 64 * 1024))
        nl = chunk.find(b"\n")
        start = start - 1 + nl + 1 if nl >= 0 else size
    return EventReader(job_dir).read(start)[0]


def last_event(job_dir: str | os.PathLike, type: str,  # noqa: A002
               max_bytes: int = DEFAULT_MAX_BYTES) -> dict | None:
    """The most recent event of `type` in the last `max_bytes` of events.jsonl, or None. Reads a
    small tail first and more only if needed, and parses only lines that can match, so a jobs
    table with a step column stays cheap."""
    path = Path(job_dir) / EVENTS_FILE
    needle = type_needle(type)
    size = 8 * 1024
    while True:
        try:
            with open(path, "rb") as fh:
                total = os.fstat(fh.fileno()).st_size
                start = max(0, total - min(size, max_bytes))
                fh.seek(start)
                data = fh.read(total - start)
        except FileNotFoundError:
            return None
        lines = data.split(b"\n")
        if start:
            lines = lines[1:]  # cut by the seek
        for raw in reversed(lines):
            if needle not in raw:
                continue
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a partial last line
            if isinstance(event, dict) and event.get("type") == type:
                return event
        if start == 0 or size >= max_bytes:
            return None
        size *= 8


def read_log_tail(path: str | os.PathLike, offset: int = 0,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, int]:
    """Text of job.log after `offset` (complete lines, at most about `max_bytes`) and the new offset.

    With offset 0 on a big log only the last `max_bytes` are returned (from a line start), so a new
    page does not pull a whole multi-megabyte log.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", offset
    if offset > size:
        offset = 0
    if size - offset > max_bytes:
        # Jump ahead to the last max_bytes, then to the next line start.
        start = size - max_bytes
        with open(path, "rb") as fh:
            fh.seek(start)
            chunk = fh.read(max_bytes)
        nl = chunk.find(b"\n")
        chunk = chunk[nl + 1:] if nl >= 0 else b""
        offset = start + (nl + 1 if nl >= 0 else 0)
        end = chunk.rfind(b"\n")
        if end < 0:
            return "", offset
        return chunk[: end + 1].decode("utf-8", errors="replace"), offset + end + 1
    data, new_offset = _read_complete(path, offset, None)
    return data.decode("utf-8", errors="replace"), new_offset


def last_lines(path: str | os.PathLike, n: int = 40, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` lines of a text file (reading at most its last `max_bytes`); [] if missing."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut by the seek
    return lines[-n:] if n > 0 else []
