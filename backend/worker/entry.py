"""The worker process: `python -m backend.worker JOB_DIR`, one entry for every kind of job.

It owns job.json's status: starting → running → completed | stopped | failed, with a `status`
event for each transition. SIGINT/SIGTERM ask the runner to stop cleanly (finish the step, save
state, return); a second signal interrupts it where it is. Anything unhandled becomes a failed job
with an `error` event holding the traceback, and exit code 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.errors import LoraDashError
from backend.jobs import procs
from backend.jobs.events import EventWriter
from backend.jobs.registry import JOB_FILE, JobRecord, load_config, load_job, update_job
from backend.paths import WorkspacePaths
from backend.worker.context import WorkerContext
from backend.worker.kinds import resolve_runner

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rank_of(environ: Mapping[str, str]) -> int:
    """This process's rank under `accelerate launch`/torchrun (RANK), 0 when launched alone."""
    try:
        return int(environ.get("RANK", "0"))
    except ValueError:
        return 0


def error_summary(err: BaseException) -> str:
    """What job.json's `error` says: a LoraDashError's own message, else the type and message."""
    if isinstance(err, LoraDashError):
        return str(err)
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _set_status(job_dir: Path, events: EventWriter, status: str, **fields: Any) -> JobRecord:
    def change(rec: JobRecord) -> None:
        rec.status = status
        for key, value in fields.items():
            setattr(rec, key, value)

    # Event first: whoever sees the new status in job.json finds every event up to it in the file.
    events.emit("status", status=status, **({"error": fields["error"]} if fields.get("error") else {}))
    return update_job(job_dir, change)


def _claim(job_dir: Path, events: EventWriter, under_launcher: bool) -> JobRecord:
    """Mark the job as ours: status starting, and our pid unless a launcher (accelerate) holds it."""
    me, my_group = os.getpid(), os.getpgid(0)

    def change(rec: JobRecord) -> None:
        # Under a launcher (accelerate) the job's pid is the launcher's, the leader of our group:
        # keep it, so liveness and stop signals cover every rank. Otherwise the job's pid is ours.
        launched = under_launcher or (rec.pgid == my_group and rec.pid != me
                                      and procs.is_alive(rec.pid, rec.pid_start_time))
        if not launched:
            rec.pid, rec.pid_start_time, rec.pgid = me, procs.start_time(me), my_group
        rec.started_at = time.time()
        rec.ended_at = rec.exit_code = rec.error = None
        if rec.status not in ("starting", "stopping"):
            rec.status = "starting"

    rec = update_job(job_dir, change)
    events.emit("status", status=rec.status, pid=me, resume=rec.resume)
    return rec


def run_worker(job_dir: Path, environ: Mapping[str, str]) -> int:
    rank = rank_of(environ)
    is_main = rank == 0
    under_launcher = "LOCAL_RANK" in environ  # accelerate/torchrun started us; its pid is the job's
    # This machine's job.json is kept by its first process: rank 0, or on the other machines of a
    # multi-machine run (training.machine_rank > 0) local rank 0. Only rank 0 writes training events.
    owns_record = is_main or (under_launcher and environ.get("LOCAL_RANK") == "0")
    if under_launcher:
        parent = os.getppid()
        procs.die_with_parent()
        if os.getppid() != parent:  # the launcher died before the call took effect
            return 1
    log = logging.getLogger("loradash.worker")
    job_dir = job_dir.resolve()
    record = load_job(job_dir)
    paths = WorkspacePaths(Path(record.workspace) if record.workspace else job_dir.parent.parent)
    events = EventWriter(job_dir)
    if owns_record:
        record = _claim(job_dir, events, under_launcher)
    log.info("job %s (%s) rank %d pid %d%s", record.id, record.kind, rank, os.getpid(),
             " resuming" if record.resume else "")

    ctx: WorkerContext | None = None
    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        signals_seen.append(signum)
        if ctx is None or len(signals_seen) > 1:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        ctx.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        config = load_config(job_dir)
        ctx = WorkerContext(job_dir, paths, record, config, log, is_main_process=is_main)
        runner = resolve_runner(record.kind)
        if owns_record:
            # A stop asked for during start-up keeps the job "stopping".
            now_status = "stopping" if load_job(job_dir).status == "stopping" else "running"
            _set_status(job_dir, events, now_status)
        result = runner(ctx)
    except KeyboardInterrupt as err:
        log.warning("interrupted by %s before the runner returned", err or "a signal")
        if owns_record:
            _set_status(job_dir, events, "stopped", ended_at=time.time(), exit_code=0,
                        error=f"stopped by {err or 'a signal'} before the current step finished; "
                              "resume starts from the last saved state")
        return 0
    except Exception as err:  # the process boundary: record any failure, with its traceback
        log.exception("job %s failed", record.id)
        if owns_record:
            summary = error_summary(err)
            events.emit("error", message=summary, traceback=traceback.format_exc())
            _set_status(job_dir, events, "failed", ended_at=time.time(), exit_code=1, error=summary)
        return 1
    # No new look at control.json here: a stop that comes after the last step is too late to matter.
    stopped = ctx is not None and ctx.stop_reason is not None
    final = "stopped" if stopped else "completed"
    log.info("job %s %s", record.id, final)
    if owns_record:
        fields: dict[str, Any] = {"ended_at": time.time(), "exit_code": 0, "error": None}
        if isinstance(result, dict):
            rec = load_job(job_dir)
            fields["extra"] = {**rec.extra, "result": result}
        _set_status(job_dir, events, final, **fields)
    return 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if len(argv) != 1:
        print("usage: python -m backend.worker JOB_DIR", file=sys.stderr)
        return 2
    rank = rank_of(environ)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format=(f"[rank {rank}] " if "LOCAL_RANK" in environ else "") + LOG_FORMAT)
    job_dir = Path(argv[0])
    if not (job_dir / JOB_FILE).is_file():
        print(f"{job_dir}: not a job folder (no job.json)", file=sys.stderr)
        return 2
    if load_job(job_dir).kind == "train":
        from backend.training.run import skip_unused_libraries

        skip_unused_libraries()  # a process of its own: safe to leave out what training never uses
    return run_worker(job_dir, environ)
