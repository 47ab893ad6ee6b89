"""The one way a job's status changes: `set_status`.

ORDER (the same for every writer: supervisor, worker, lifecycle): under the job's lock, the `status`
event is appended to events.jsonl FIRST, then job.json is rewritten. So whoever sees a status in
job.json finds in events.jsonl every event up to and including that transition (a reader that
follows a job until job.json says it ended has all its events after one more read), and no status
event is ever written for a change that did not happen (the condition is checked under the same
lock, before anything is written); setting the status a job already has writes no event. A crash between the two leaves an event ahead of job.json, which
the supervisor's reconcile settles; never a job.json status without its event.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from backend.jobs.events import EventWriter
from backend.jobs.registry import STATUSES, JobRecord, job_lock, load_job, save_job

StatusOf = str | Callable[[JobRecord], str]
EventOf = Mapping[str, Any] | Callable[[JobRecord], Mapping[str, Any]] | None


def set_status(job_dir: str | os.PathLike, status: StatusOf, *, when: Callable[[JobRecord], bool] | None = None,
               change: Callable[[JobRecord], None] | None = None, event: EventOf = None,
               **fields: Any) -> tuple[JobRecord, bool]:
    """Move job `job_dir` to `status`, setting `fields` of job.json too.

    In order, under the job's lock: `when(rec)` (False: nothing is written), `change(rec)` (fields
    computed from the record), `fields`, then the status (`status(rec)` when callable, seeing the
    changed record). `event` (a mapping, or `event(rec)`) adds fields to the status event; an `error`
    field is copied from `fields`. Returns the record as it now is, and whether it changed."""
    job_dir = Path(job_dir)
    with job_lock(job_dir):
        rec = load_job(job_dir)
        old = rec.status
        if when is not None and not when(rec):
            return rec, False
        if change is not None:
            change(rec)
        for key, value in fields.items():
            if not hasattr(rec, key):
                raise AttributeError(f"job.json has no field {key!r}")
            setattr(rec, key, value)
        new = status(rec) if callable(status) else status
        if new not in STATUSES:
            raise ValueError(f"invalid status {new!r}")
        rec.status = new
        if new != old:  # an event records a transition; the same status again only updates fields
            extra = dict((event(rec) if callable(event) else event) or {})
            if fields.get("error") and "error" not in extra:
                extra["error"] = fields["error"]
            EventWriter(job_dir).emit("status", status=new, **extra)
        save_job(job_dir, rec)
        return rec, True
