"""The worker process: `python -m backend.worker JOB_DIR`, one entry for every kind of job.

It owns job.json's status: starting → running → completed | stopped | failed, each change through
`set_status` (status event, then job.json). SIGINT/SIGTERM ask the runner to stop cleanly (finish
the step, save state, return); a second signal interrupts it where it is. A failure becomes a failed
job with an `error` event and exit code 1: an expected one (a LoraDashError: config, dataset, model…)
as one clear line in job.log, anything else with its traceback.
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

from backend.errors import LoraDashError
from backend.files import disk_full_error, is_disk_full, remove_orphan_temps
from backend.jobs import procs
from backend.jobs.events import EventWriter
from backend.jobs.kinds import resolve_runner
from backend.jobs.registry import JOB_FILE, JobRecord, load_config, load_job
from backend.jobs.status import set_status
from backend.known_warnings import silence_known_warnings
from backend.paths import WorkspacePaths
from backend.worker.context import WorkerContext

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ORPHAN_AGE_S = 60.0


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


def _claim(job_dir: Path, under_launcher: bool) -> JobRecord:
    """Mark the job as ours: our pid unless a launcher (accelerate) holds it, and status starting
    (a job the supervisor claimed is starting already: its status event is written; one started by
    hand or by `python -m backend train` moves from queued here)."""
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

    def status(rec: JobRecord) -> str:  # claimed by the supervisor (or stopping already): unchanged
        return rec.status if rec.status in ("starting", "stopping") else "starting"

    rec, _ = set_status(job_dir, status, change=change,
                        event=lambda r: {"pid": me, "resume": r.resume, "run": r.runs})
    return rec


def _named_disk_full(err: Exception, job_dir: Path) -> Exception:
    """A full disk met anywhere in the run (a sample image, a log line) as the error that names the
    folder and its free space; other errors as they are."""
    if not is_disk_full(err) or isinstance(err, LoraDashError):
        return err
    folder = Path(err.filename).parent if getattr(err, "filename", None) else job_dir
    return disk_full_error(err, folder)


def _remove_orphan_temps(job_dir: Path, log: logging.Logger) -> None:
    """Temp files a killed run left in its folder. checkpoints/, samples/ and output/ have no other
    writer now; job.json's folder may have the supervisor's, so only old temp files go there."""
    removed = remove_orphan_temps(job_dir, older_than_s=ORPHAN_AGE_S)
    for sub in ("checkpoints", "samples", "output"):
        removed += remove_orphan_temps(job_dir / sub)
    if removed:
        log.info("removed %d temp file(s) left by an earlier run: %s", len(removed),
                 ", ".join(p.name for p in removed))


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
        record = _claim(job_dir, under_launcher)
        _remove_orphan_temps(job_dir, log)
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
            # A stop asked for during start-up keeps the job "stopping". The event names the worker
            # process, so a repair of a job.json damaged while it runs finds it (backend.jobs.repair).
            set_status(job_dir, lambda r: "stopping" if r.status == "stopping" else "running",
                       event=lambda r: {"pid": r.pid, "pid_start_time": r.pid_start_time, "pgid": r.pgid})
        result = runner(ctx)
    except KeyboardInterrupt as err:
        log.warning("interrupted by %s before the runner returned", err or "a signal")
        if owns_record:
            set_status(job_dir, "stopped", ended_at=time.time(), exit_code=0,
                        error=f"stopped by {err or 'a signal'} before the current step finished; "
                              "resume starts from the last saved state")
        return 0
    except Exception as caught:  # the process boundary: record any failure
        err = _named_disk_full(caught, job_dir)
        expected = isinstance(err, LoraDashError)
        if expected:  # the user's to fix (config, dataset, model…): one clear line, no traceback
            log.error("job %s failed: %s", record.id, err)
        else:
            log.exception("job %s failed", record.id)
        if owns_record:
            summary = error_summary(err)
            # The event keeps the traceback (for a bug report); job.log, which users read, does not.
            events.emit("error", message=summary, traceback=traceback.format_exc())
            set_status(job_dir, "failed", ended_at=time.time(), exit_code=1, error=summary)
        return 1
    # No new look at control.json here: a stop that comes after the last step is too late to matter.
    stopped = ctx is not None and ctx.stop_reason is not None
    final = "stopped" if stopped else "completed"
    log.info("job %s %s", record.id, final)
    if owns_record:
        keep = (lambda r: r.extra.update(result=result)) if isinstance(result, dict) else None
        set_status(job_dir, final, change=keep, ended_at=time.time(), exit_code=0, error=None)
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
    silence_known_warnings()
    job_dir = Path(argv[0])
    if not (job_dir / JOB_FILE).is_file():
        print(f"{job_dir}: not a job folder (no job.json)", file=sys.stderr)
        return 2
    if load_job(job_dir).kind == "train":
        from backend.training.run import skip_unused_libraries

        skip_unused_libraries()  # a process of its own: safe to leave out what training never uses
    return run_worker(job_dir, environ)
