"""Rebuild a damaged job.json from what else the job folder holds.

events.jsonl is written before job.json at every status change (see `backend.jobs.status`), so it
knows the job's history: when it started (each `starting` status event is one run), its last status
and its last error. The `running` event names the worker process (pid, start time, group), so a job
whose job.json broke while its worker runs stays running, never resumable beside it. config.toml
tells the kind (`backend.jobs.kinds.guess_kind`), the name and the number of processes. Whatever
fields of the damaged job.json still have the right type are kept.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from backend.errors import ConfigError, JobError
from backend.jobs import procs
from backend.jobs.events import LOG_FILE, EventReader, EventWriter
from backend.jobs.kinds import KINDS, guess_kind
from backend.jobs.registry import (
    ACTIVE,
    FINISHED,
    STATUSES,
    DamagedJobError,
    JobRecord,
    job_lock,
    load_config,
    load_job,
    read_job_json,
    save_job,
    valid_fields,
    valid_time,
)
from backend.jobs.validation import num_processes_of
from backend.paths import WorkspacePaths

_STAMP = re.compile(r"^\d{8}-\d{6}-?")


def _salvage(d: Path) -> dict[str, Any]:
    try:
        return valid_fields(read_job_json(d))
    except DamagedJobError:
        return {}


def _config(d: Path) -> dict[str, Any] | None:
    try:
        return load_config(d)
    except (ConfigError, JobError, OSError, UnicodeDecodeError):
        return None


def _status_events(events: list[dict]) -> list[dict]:
    # An unknown status ("paused") would be written into job.json and leave it damaged: skip it.
    return [e for e in events if e.get("type") == "status" and e.get("status") in STATUSES]


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and valid_time(value)
    return float(value) if ok else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _live_worker(old: dict[str, Any], statuses: list[dict]) -> tuple[int, float, int | None] | None:
    """(pid, start time, pgid) of the job's worker if it still runs: the one job.json names, if that
    field survived, else the last one a status event names."""
    named = [(_whole(e.get("pid")), _number(e.get("pid_start_time")), _whole(e.get("pgid")))
             for e in statuses if "pid_start_time" in e]
    for pid, start, pgid in [(old.get("pid"), old.get("pid_start_time"), old.get("pgid")), *named[-1:]]:
        if pid and start is not None and procs.is_alive(pid, start):
            return pid, start, pgid
    return None


def rebuild_record(d: Path, paths: WorkspacePaths) -> tuple[JobRecord, str | None, list[str]]:
    """(the rebuilt record, a status event to add or None, what each field was rebuilt from)."""
    old, config = _salvage(d), _config(d)
    events = EventReader(d).read_all()
    statuses = _status_events(events)
    sources: list[str] = []
    kind = old.get("kind") if old.get("kind") in KINDS else guess_kind(config or {})
    if kind is None:
        raise JobError(f"cannot repair {d.name}: neither job.json nor config.toml says what kind of job it is "
                       "(config.toml is " + ("unreadable" if config is None else "of no known kind")
                       + "); delete the job instead")
    sources.append("kind from " + ("job.json" if old.get("kind") == kind else "config.toml"))
    saving = (config or {}).get("saving")
    output_name = saving.get("output_name") if isinstance(saving, dict) else None
    name = old.get("name") or (output_name if isinstance(output_name, str) else None) \
        or _STAMP.sub("", d.name) or d.name
    last = statuses[-1]["status"] if statuses else old.get("status")
    starts = [e for e in statuses if e["status"] == "starting"]
    worker = _live_worker(old, statuses)
    alive = worker is not None
    event_status = None
    if alive and (last in ACTIVE or last is None):
        status = last or "running"  # its worker runs on: a Resume now would start a second one
    elif last in ACTIVE or last is None:
        status, event_status = "interrupted", "interrupted"
    elif last == "queued":
        status, event_status = "stopped", "stopped"  # never started again by a repair: the user decides
    else:
        status = last
    sources.append(f"status {status} from " + ("events.jsonl" if statuses else "job.json"))
    errors = [e for e in events if e.get("type") == "error"]
    error = old.get("error")
    if status == "failed" and errors:
        error = str(errors[-1].get("message") or "error")
    elif status == "interrupted" and not error:
        error = "the job's job.json was damaged and its worker is gone; rebuilt from events.jsonl"
    first_t = _number(events[0].get("t")) if events else None
    if event_status is not None:
        ended_at = time.time()
    elif status in FINISHED:
        ended_at = _number(statuses[-1].get("t")) if statuses else old.get("ended_at")
    else:
        ended_at = None
    rec = JobRecord(
        id=d.name, kind=kind, name=str(name), status=status,
        created_at=old.get("created_at", first_t if first_t is not None else d.stat().st_mtime),
        started_at=_number(starts[-1].get("t")) if starts else old.get("started_at"),
        ended_at=ended_at,
        error=error, workspace=str(paths.root), group=old.get("group"), resume=bool(old.get("resume", False)),
        num_processes=old.get("num_processes") or num_processes_of(config or {}),
        runs=max(len(starts), old.get("runs", 0)),
        pid=worker[0] if worker else None, pid_start_time=worker[1] if worker else None,
        pgid=worker[2] if worker else None,
        # A stop under way goes on: escalation counts from its request (now, if that was lost).
        stop_requested_at=(old.get("stop_requested_at") or time.time()) if status == "stopping" else None,
        extra=old.get("extra", {}),
    )
    return rec, event_status, sources


def repair_job(d: Path, paths: WorkspacePaths) -> JobRecord:
    """Write a new job.json for the damaged job in `d` (under its lock) and note it in job.log.
    JobError when the job is not damaged or cannot be told apart (then only deleting is left)."""
    d = Path(d)
    with job_lock(d):
        try:
            load_job(d)
        except DamagedJobError as err:
            problems = err.problems
        else:
            raise JobError(f"job {d.name} is not damaged: nothing to repair")
        rec, event_status, sources = rebuild_record(d, paths)
        rec.extra = {**rec.extra, "repaired": {"at": time.time(), "problems": problems, "from": sources}}
        if event_status is not None:  # the status event first, as set_status writes them
            EventWriter(d).emit("status", status=event_status, reconciled=True)
        save_job(d, rec)
    with open(d / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: job.json rebuilt ({'; '.join(problems)}); "
                  f"{', '.join(sources)} ===\n")
    return rec
