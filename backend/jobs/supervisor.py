"""The supervisor: starts workers, keeps the queue, stops jobs, and reconciles job.json with reality.

Everything lives in the job folders (status `queued` + `queue_position` is the queue), so a new
Supervisor, in this process or another, carries on where the last one stopped. Workers run in their
own process group with stdout/stderr going to job.log, so closing the UI orphans nothing. No method
blocks for long: a stop escalates (control request → SIGINT → SIGTERM → SIGKILL) on later poll()
calls, from timestamps kept in job.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from backend.errors import JobError
from backend.jobs import control, procs
from backend.jobs.background import BackgroundPoller
from backend.jobs.events import LOG_FILE, EventWriter
from backend.jobs.launch import worker_argv
from backend.jobs.lifecycle import escalate, file_lock, queue_order, reconcile, renumber
from backend.jobs.registry import (
    ACTIVE,
    RESUMABLE,
    JobIndex,
    JobRecord,
    create_job,
    job_dir,
    load_job,
    update_job,
)
from backend.jobs.validation import num_processes_of, validate_config
from backend.paths import PROJECT_ROOT, WorkspacePaths

QUEUE_LOCK = ".queue.lock"
UNLIMITED_KINDS = frozenset({"download", "download_url"})   # no GPU: they do not take a slot
RESUMABLE_KINDS = frozenset({"train", "selftest"})
SPAWN_GRACE_S = 60.0                         # a "starting" job with no pid yet is being spawned
LINGER_S = 300.0                             # how long a finished job's process may hold its slot


class Supervisor:
    """Runs the jobs of one workspace; safe to share between threads (e.g. UI sessions)."""

    def __init__(self, paths: WorkspacePaths, max_concurrent: int = 1, *, grace_s: float = 30.0,
                 signal_wait_s: float = 10.0, min_poll_interval_s: float = 0.5, autostart: bool = True):
        self.paths = paths
        self.max_concurrent = max(1, int(max_concurrent))
        self.grace_s = grace_s
        self.signal_wait_s = signal_wait_s
        self.min_poll_interval_s = min_poll_interval_s
        self.autostart = autostart  # False: only reconcile and report (e.g. `jobs` on the CLI)
        self._index = JobIndex(paths)
        self._children: dict[str, subprocess.Popen] = {}
        # Tokens typed into the UI (CIVITAI_TOKEN, HF_TOKEN): handed to workers in their environment,
        # held in memory only, never written into a job folder.
        self._secret_env: dict[str, str] = {}
        self._lock = threading.RLock()
        self._last_poll = 0.0
        self._last_list: list[JobRecord] = []
        self._background = BackgroundPoller(self.poll)
        paths.jobs.mkdir(parents=True, exist_ok=True)
        self.poll(force=True)

    # reading ---------------------------------------------------------------------------------
    def jobs(self) -> list[JobRecord]:
        """All jobs, oldest first, after a (throttled) poll."""
        return self.poll()

    def get(self, job_id: str) -> JobRecord:
        return load_job(job_dir(self.paths, job_id))

    def job_dir(self, job_id: str) -> Path:
        return job_dir(self.paths, job_id)

    def queue(self) -> list[JobRecord]:
        """Queued jobs in the order they will start."""
        return queue_order(self._index.list())

    # the loop ----------------------------------------------------------------------------------
    def poll(self, force: bool = False) -> list[JobRecord]:
        """Reconcile dead workers, escalate stops, start queued jobs while slots are free.

        Called every second by every open page: within `min_poll_interval_s` of the last poll it
        returns the previous answer; otherwise it stats each job.json and re-reads only changed ones.
        """
        with self._lock:
            now = time.time()
            if not force and now - self._last_poll < self.min_poll_interval_s:
                return [r.copy() for r in self._last_list]
            for rec in self._index.list(copy=False):
                if rec.status in ACTIVE:
                    self._check_active(rec, now)
            self._reap()
            if self.autostart:
                self._start_queued()
            recs = self._index.list(copy=False)
            self._last_poll, self._last_list = time.time(), recs
            return [r.copy() for r in recs]

    def set_secret(self, name: str, value: str | None) -> None:
        """Pass `name=value` to the workers started from now on (None or "" removes it)."""
        if value:
            self._secret_env[name] = value
        else:
            self._secret_env.pop(name, None)

    def start_background(self, interval_s: float = 2.0) -> threading.Thread:
        """Poll every `interval_s` s in a daemon thread, so the queue advances and dead workers are
        reconciled while no page is open (browser timers stop with the tab). Idempotent: a second
        call returns the running thread. A failing poll is logged and retried, never dropped."""
        return self._background.start(interval_s)

    def stop_background(self, timeout: float | None = 10.0) -> bool:
        """Stop the background thread (no-op if none); True once it has ended. Workers keep running."""
        return self._background.stop(timeout)

    def _check_active(self, rec: JobRecord, now: float) -> bool:
        """Reconcile `rec` if its worker is gone, or move its stop along. True if job.json changed."""
        d = self.paths.jobs / rec.id
        child = self._children.get(rec.id)
        if child is not None and child.poll() is not None:
            alive = False
        elif rec.pid is None and rec.status == "starting":
            alive = now - (rec.started_at or rec.created_at) < SPAWN_GRACE_S
        else:
            alive = procs.is_alive(rec.pid, rec.pid_start_time)
        if not alive:
            reconcile(d, _returncode(child))
            return True
        if rec.status == "stopping":
            return escalate(d, rec, now, self.grace_s, self.signal_wait_s)
        return False

    def _reap(self) -> None:
        """Collect our finished children so they do not linger as zombies."""
        for jid, child in list(self._children.items()):
            if child.poll() is None:
                continue
            # Keep the exit status until the job is reconciled (a poll of the record comes next).
            try:
                still_active = load_job(self.paths.jobs / jid).status in ACTIVE
            except JobError:
                still_active = False
            if not still_active:
                del self._children[jid]

    def _running_slots(self, recs: list[JobRecord], now: float) -> int:
        """Slots in use: active jobs, and finished ones whose process has not exited yet (a worker
        tearing down, other ranks finishing) so the next job does not meet its GPU memory."""
        used = 0
        for r in recs:
            if r.kind in UNLIMITED_KINDS:
                continue
            if r.status in ACTIVE:
                used += 1
            elif r.ended_at and now - r.ended_at < LINGER_S and procs.is_alive(r.pid, r.pid_start_time):
                used += 1
        return used

    def _start_queued(self) -> bool:
        if not any(r.status == "queued" for r in self._index.list(copy=False)):
            return False  # the common case: no lock file to open
        with file_lock(self.paths.jobs / QUEUE_LOCK):
            recs = self._index.list(copy=False)
            used = self._running_slots(recs, time.time())
            started = False
            for rec in queue_order(recs):
                if rec.kind not in UNLIMITED_KINDS and used >= self.max_concurrent:
                    continue
                if self._spawn(rec.id):
                    started = True
                    used += rec.kind not in UNLIMITED_KINDS
            return started

    def _spawn(self, jid: str) -> bool:
        """Claim queued job `jid` and start its worker. False if someone else claimed it first."""
        d = self.paths.jobs / jid
        claimed: list[bool] = []

        def claim(rec: JobRecord) -> bool:
            if rec.status != "queued":
                return False
            claimed.append(True)
            rec.status, rec.queue_position = "starting", None
            rec.pid = rec.pid_start_time = rec.pgid = None
            rec.started_at, rec.ended_at, rec.exit_code, rec.error = time.time(), None, None, None
            rec.stop_requested_at = rec.signal_sent = rec.signal_at = rec.stop_grace_s = None
            rec.runs += 1
            return True

        rec = update_job(d, claim)
        if not claimed:
            return False
        argv = worker_argv(d, rec.num_processes)
        env = {**os.environ, **self._secret_env, "PYTHONUNBUFFERED": "1"}
        with open(d / LOG_FILE, "ab") as log:
            log.write(f"=== run {rec.runs}{' (resume)' if rec.resume else ''}: "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=env)
            except OSError as err:
                self._fail_spawn(d, f"cannot start the worker ({argv[0]}): {err}")
                return True
        self._children[jid] = child
        started = procs.start_time(child.pid)

        def record_pid(r: JobRecord) -> None:
            # The worker may have claimed itself already; the launcher's pid is the job's either way.
            r.pid, r.pid_start_time, r.pgid = child.pid, started, child.pid

        update_job(d, record_pid)
        return True

    def _fail_spawn(self, d: Path, message: str) -> None:
        def change(r: JobRecord) -> None:
            r.status, r.error, r.ended_at = "failed", message, time.time()

        update_job(d, change)
        events = EventWriter(d)
        events.emit("error", message=message, traceback="")
        events.emit("status", status="failed", error=message)

    # actions -----------------------------------------------------------------------------------
    def submit(self, kind: str, config: dict, name: str, *, group: str | None = None,
               start: bool = True) -> JobRecord:
        """Validate `config`, make the job folder (queued, last in the queue) and, with `start`,
        start it now if a slot is free. Invalid configs raise ConfigError; nothing is created."""
        resolved = validate_config(kind, config, self.paths)
        with self._lock, file_lock(self.paths.jobs / QUEUE_LOCK):
            queued = [r.queue_position or 0 for r in self._index.list() if r.status == "queued"]
            d = create_job(self.paths, kind, resolved, name, group=group,
                           num_processes=num_processes_of(resolved),
                           queue_position=max(queued, default=-1) + 1)
        EventWriter(d).emit("status", status="queued")
        if start:
            self.poll(force=True)
        return load_job(d)

    def stop(self, job_id: str, grace_s: float | None = None) -> JobRecord:
        """Ask job `job_id` to stop. Returns at once; later polls escalate to signals if needed.
        A queued job leaves the queue as stopped."""
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if rec.status == "queued":
            return self._set(d, "stopped", queue_position=None, ended_at=time.time())
        if rec.status not in ACTIVE:
            raise JobError(f"job {job_id} is {rec.status}, not running: nothing to stop")
        control.request(d, "stop")
        now = time.time()

        def change(r: JobRecord) -> bool:
            if r.status not in ACTIVE:
                return False
            r.status = "stopping"
            if r.stop_requested_at is None:
                r.stop_requested_at = now
            r.stop_grace_s = self.grace_s if grace_s is None else grace_s
            return True

        rec = update_job(d, change)
        if rec.status == "stopping":
            EventWriter(d).emit("status", status="stopping")
        self.poll(force=True)  # a zero grace sends SIGINT now
        return load_job(d)

    def save_now(self, job_id: str) -> dict:
        """Ask the running job to save its state now (the trainer does it between steps)."""
        return self._request(job_id, "save_now")

    def sample_now(self, job_id: str) -> dict:
        """Ask the running job to make samples now."""
        return self._request(job_id, "sample_now")

    def _request(self, job_id: str, action: str) -> dict:
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if rec.status not in ("starting", "running"):
            raise JobError(f"job {job_id} is {rec.status}: {action.replace('_', ' ')} needs a running job")
        return control.request(d, action)

    def resume(self, job_id: str) -> JobRecord:
        """Queue a stopped or interrupted job again; its worker resumes from the last saved state
        in the same folder, and its events continue the same file."""
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if rec.kind not in RESUMABLE_KINDS:
            raise JobError(f"job {job_id} is a {rec.kind} job: it cannot be resumed, start a new one")
        if rec.status not in RESUMABLE:
            raise JobError(f"job {job_id} is {rec.status}; only stopped or interrupted jobs can be resumed")
        control.clear(d)  # an old stop request must not stop the new run
        with self._lock, file_lock(self.paths.jobs / QUEUE_LOCK):
            queued = [r.queue_position or 0 for r in self._index.list() if r.status == "queued"]

            def change(r: JobRecord) -> bool:
                if r.status not in RESUMABLE:
                    return False
                r.status, r.resume = "queued", True
                r.queue_position = max(queued, default=-1) + 1
                r.ended_at = r.exit_code = r.error = None
                r.stop_requested_at = r.signal_sent = r.signal_at = r.stop_grace_s = None
                return True

            rec = update_job(d, change)
        if rec.status != "queued":
            raise JobError(f"job {job_id} changed to {rec.status} meanwhile; not resumed")
        EventWriter(d).emit("status", status="queued", resume=True)
        self.poll(force=True)
        return load_job(d)

    def delete(self, job_id: str) -> None:
        """Remove a job's folder. Refused while its worker may run (starting/running/stopping)."""
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if rec.status in ACTIVE:
            raise JobError(f"job {job_id} is {rec.status}: stop it before deleting it")
        if d.resolve().parent != self.paths.jobs.resolve():
            raise JobError(f"job folder {d} is not inside {self.paths.jobs}")
        shutil.rmtree(d)

    def remove_queued(self, job_id: str) -> None:
        """Take a queued job out of the queue (its folder is removed: it never ran)."""
        d = job_dir(self.paths, job_id)
        with file_lock(self.paths.jobs / QUEUE_LOCK):
            if load_job(d).status != "queued":
                raise JobError(f"job {job_id} is not queued")
            shutil.rmtree(d)

    def move(self, job_id: str, delta: int) -> list[str]:
        """Move a queued job `delta` places (negative: earlier). Returns the new queue order."""
        with file_lock(self.paths.jobs / QUEUE_LOCK):
            ids = [r.id for r in queue_order(self._index.list())]
            if job_id not in ids:
                raise JobError(f"job {job_id} is not queued")
            i = ids.index(job_id)
            ids.insert(max(0, min(len(ids) - 1, i + delta)), ids.pop(i))
            renumber(self.paths.jobs, ids)
        return ids

    def reorder(self, ids: list[str]) -> list[str]:
        """Put the queued jobs in `ids` first, in that order; the others keep their order after."""
        with file_lock(self.paths.jobs / QUEUE_LOCK):
            current = [r.id for r in queue_order(self._index.list())]
            unknown = [i for i in ids if i not in current]
            if unknown:
                raise JobError(f"not queued: {', '.join(unknown)}")
            order = list(dict.fromkeys(ids)) + [i for i in current if i not in ids]
            renumber(self.paths.jobs, order)
        return order

    def _set(self, d: Path, status: str, **fields: object) -> JobRecord:
        def change(r: JobRecord) -> None:
            r.status = status
            for key, value in fields.items():
                setattr(r, key, value)

        rec = update_job(d, change)
        EventWriter(d).emit("status", status=status)
        return rec


def _returncode(child: subprocess.Popen | None) -> int | None:
    """Exit status of our own child (negative: killed by that signal); None for adopted workers."""
    if child is None:
        return None
    try:
        return child.wait(timeout=1.0)  # it was seen dead: this only collects the status
    except subprocess.TimeoutExpired:
        return None
