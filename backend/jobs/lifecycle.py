"""What happens to a job's record when its worker is gone, is being stopped, or waits in the queue.

Plain functions over job folders, used by the Supervisor; each change goes through `set_status` or
`update_job`, under the lock the worker also takes, so no transition overwrites another.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from backend.files import remove_orphan_temps
from backend.jobs import procs
from backend.jobs.events import LOG_FILE, last_lines, tail_events
from backend.jobs.registry import ACTIVE, SUBFOLDERS, JobRecord, update_job
from backend.jobs.status import set_status
from backend.paths import WorkspacePaths

LOG_TAIL_LINES = 40
ORPHAN_AGE_S = 60.0          # no job.json or checkpoint write takes this long between temp file and rename
CACHE_ORPHAN_AGE_S = 600.0   # cache entries are written by running workers: leave recent temp files alone


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

    def change(rec: JobRecord) -> None:
        error = recorded or rec.error
        rec.status = "failed" if error else "interrupted"  # read by `status` below
        if not error:
            how = f"signal {-returncode}" if returncode is not None and returncode < 0 else None
            error = ("the worker process ended without a clean exit"
                     + (f" ({how})" if how else "")
                     + (f" after {rec.signal_sent}" if rec.signal_sent else ""))
        rec.error = error + (f"\n--- last lines of job.log ---\n{tail}" if tail else "")
        rec.exit_code = returncode
        rec.ended_at = time.time()

    rec, changed = set_status(d, lambda r: r.status, when=lambda r: r.status in ACTIVE, change=change,
                              event={"reconciled": True})
    return rec.status if changed else None


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


def remove_orphans(paths: WorkspacePaths, recs: list[JobRecord]) -> list[Path]:
    """Temp files that atomic writes left behind when their process was killed (a checkpoint save cut
    short, a job.json update), in the folders of jobs with no worker and in workspace/cache. Only
    files older than any write takes, so another process's write in progress is never touched."""
    removed: list[Path] = []
    for rec in recs:
        if rec.status in ACTIVE:
            continue  # its worker may be writing; it cleans its own folder when it starts
        d = paths.jobs / rec.id
        for folder in (d, *(d / sub for sub in SUBFOLDERS)):
            removed += remove_orphan_temps(folder, older_than_s=ORPHAN_AGE_S)
    removed += remove_orphan_temps(paths.root / "cache", recursive=True, older_than_s=CACHE_ORPHAN_AGE_S)
    return removed
