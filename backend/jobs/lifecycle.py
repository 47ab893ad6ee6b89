"""What happens to a job's record when its worker is gone, is being stopped, or waits in the queue.

Plain functions over job folders, used by the Supervisor; each change goes through `update_job`,
under the lock the worker also takes, so no transition overwrites another.
"""

from __future__ import annotations

import fcntl
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backend.jobs import procs
from backend.jobs.events import LOG_FILE, EventWriter, last_lines, tail_events
from backend.jobs.registry import ACTIVE, JobRecord, update_job

LOG_TAIL_LINES = 40


def recorded_error(d: Path) -> str | None:
    """The message of an `error` event written after the last run began, if any."""
    for event in reversed(tail_events(d)):
        if event.get("type") == "error":
            return str(event.get("message") or "error")
        if event.get("type") == "status" and event.get("status") in ("starting", "queued"):
            return None
    return None


def reconcile(d: Path, returncode: int | None) -> str | None:
    """The worker is gone but job.json says it runs: make it `failed` (an error was recorded) or
    `interrupted`, with the last lines of job.log in the error. Returns the new status, or None if
    the worker had finished cleanly meanwhile."""
    tail = "\n".join(last_lines(d / LOG_FILE, LOG_TAIL_LINES))
    recorded = recorded_error(d)
    result: list[str] = []

    def change(rec: JobRecord) -> bool:
        if rec.status not in ACTIVE:
            return False
        error = recorded or rec.error
        rec.status = "failed" if error else "interrupted"
        if not error:
            how = f"signal {-returncode}" if returncode is not None and returncode < 0 else None
            error = ("the worker process ended without a clean exit"
                     + (f" ({how})" if how else "")
                     + (f" after {rec.signal_sent}" if rec.signal_sent else ""))
        rec.error = error + (f"\n--- last lines of job.log ---\n{tail}" if tail else "")
        rec.exit_code = returncode
        rec.ended_at = time.time()
        result.append(rec.status)
        return True

    update_job(d, change)
    if result:
        EventWriter(d).emit("status", status=result[0], reconciled=True)
        return result[0]
    return None


def escalate(d: Path, rec: JobRecord, now: float, grace_s: float, signal_wait_s: float) -> bool:
    """Stop request → (after the grace) SIGINT → SIGTERM → SIGKILL to the job's process group,
    one step per call when its time has come. True if a signal was sent."""
    grace = rec.stop_grace_s if rec.stop_grace_s is not None else grace_s
    if rec.signal_sent is None:
        due, sig = (rec.stop_requested_at or now) + grace, signal.SIGINT
    elif rec.signal_sent == "SIGINT":
        due, sig = (rec.signal_at or now) + signal_wait_s, signal.SIGTERM
    elif rec.signal_sent == "SIGTERM":
        due, sig = (rec.signal_at or now) + signal_wait_s, signal.SIGKILL
    else:
        return False
    if now < due:
        return False
    procs.signal_group(rec.pgid, rec.pid, sig)

    def change(r: JobRecord) -> None:
        r.signal_sent, r.signal_at = sig.name, time.time()

    update_job(d, change)
    return True


def queue_order(recs: list[JobRecord]) -> list[JobRecord]:
    """Queued jobs in the order they start: queue_position, then age."""
    queued = [r for r in recs if r.status == "queued"]
    return sorted(queued, key=lambda r: (r.queue_position if r.queue_position is not None else 1 << 30,
                                         r.created_at, r.id))


def renumber(jobs_dir: Path, ids: list[str]) -> None:
    """Give the queued jobs `ids` the queue positions 0, 1, 2 … in that order."""
    for pos, jid in enumerate(ids):
        def change(r: JobRecord, pos: int = pos) -> bool:
            if r.status != "queued" or r.queue_position == pos:
                return False
            r.queue_position = pos
            return True

        update_job(jobs_dir / jid, change)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialize queue changes between supervisors in different threads or processes."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
