"""The supervisor: starts workers, keeps the queue, stops jobs, and reconciles job.json with reality.

Everything lives in the job folders (status `queued` + `queue_position` is the queue), so a new
Supervisor, in this process or another, carries on where the last one stopped. Workers run in their
own process group with stdout/stderr going to job.log, so closing the UI orphans nothing. No method
blocks for long: a stop escalates (control request → SIGINT → SIGTERM → SIGKILL) on later poll()
calls, from timestamps kept in job.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from backend.errors import ConfigError, JobError
from backend.files import file_lock
from backend.jobs import control, procs
from backend.jobs.background import BackgroundPoller
from backend.jobs.events import LOG_FILE, EventWriter
from backend.jobs.kinds import KINDS, is_resumable, takes_slot
from backend.jobs.launch import worker_argv
from backend.jobs.lifecycle import escalate, queue_order, reconcile, remove_orphans, renumber
from backend.jobs.registry import (
    ACTIVE,
    RESUMABLE,
    DamagedJobError,
    JobIndex,
    JobRecord,
    create_job,
    job_dir,
    job_lock,
    load_config,
    load_job,
    load_or_damaged,
    update_job,
)
from backend.jobs.repair import repair_job
from backend.jobs.status import set_status
from backend.jobs.validation import num_processes_of, validate_config
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.roots import AllowedRoots, config_path_problems

log = logging.getLogger(__name__)
QUEUE_LOCK = ".queue.lock"
SPAWN_GRACE_S = 60.0                         # a "starting" job with no pid yet is being spawned
LINGER_S = 300.0                             # how long a finished job's process may hold its slot


class Supervisor:
    """Runs the jobs of one workspace; safe to share between threads (e.g. UI sessions)."""

    def __init__(self, paths: WorkspacePaths, max_concurrent: int = 1, *, grace_s: float = 30.0,
                 signal_wait_s: float = 10.0, min_poll_interval_s: float = 0.5, autostart: bool = True,
                 roots: AllowedRoots | None = None):
        self.paths = paths
        # Set where configs come from a browser or an API (the dashboard): every server path a job's
        # config names must lie inside these folders. None (CLI, notebook): the operator's own paths.
        self.roots = roots
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
        recs = self.poll(force=True)
        removed = remove_orphans(paths, recs)
        if removed:
            log.info("removed %d temp file(s) left by killed writes: %s", len(removed),
                     ", ".join(str(p) for p in removed[:5]) + (" …" if len(removed) > 5 else ""))

    # reading ---------------------------------------------------------------------------------
    def jobs(self) -> list[JobRecord]:
        """All jobs, oldest first, after a (throttled) poll."""
        return self.poll()

    def get(self, job_id: str) -> JobRecord:
        """The job's record; DamagedJobError (a JobError) when its job.json is damaged."""
        return load_job(job_dir(self.paths, job_id))

    def record(self, job_id: str) -> JobRecord:
        """The job's record as listed: a damaged job.json gives the `damaged` record, not an error."""
        return load_or_damaged(job_dir(self.paths, job_id))

    def job_dir(self, job_id: str) -> Path:
        return job_dir(self.paths, job_id)

    def queue(self) -> list[JobRecord]:
        """Queued jobs in the order they will start."""
        return queue_order(self._index.list())

    # the loop ----------------------------------------------------------------------------------
    def poll(self, force: bool = False) -> list[JobRecord]:
        """Reconcile dead workers, escalate stops, start queued jobs while slots are free.

        Called every second by every open page: within `min_poll_interval_s` of the last poll it
        returns the previous answer. Otherwise, under the queue lock (so two supervisors never fill
        the same slot), it lists the jobs folder once, re-reading only the job.json files that
        changed, and after a change of its own re-reads just those jobs. A damaged job.json is
        listed as `damaged` and left alone.
        """
        with self._lock:
            now = time.time()
            if not force and now - self._last_poll < self.min_poll_interval_s:
                return [r.copy() for r in self._last_list]
            self.paths.jobs.mkdir(parents=True, exist_ok=True)
            with file_lock(self.paths.jobs / QUEUE_LOCK):
                recs = self._index.list(copy=False)
                changed = [r for r in recs if r.status in ACTIVE and self._check_active(r, now)]
                recs = self._merge(recs, changed)
                self._reap(recs)
                if self.autostart and any(r.status == "queued" for r in recs):
                    recs = self._merge(recs, self._start_queued(recs))
            self._last_poll, self._last_list = time.time(), recs
            return [r.copy() for r in recs]

    def _merge(self, recs: list[JobRecord], changed: list[JobRecord]) -> list[JobRecord]:
        """`recs` with the `changed` ones re-read from their job.json (no new folder listing)."""
        if not changed:
            return recs
        ids = {r.id for r in changed}
        fresh = {r.id: r for r in self._index.refresh(changed)}
        return [fresh[r.id] if r.id in fresh else r for r in recs if r.id not in ids or r.id in fresh]

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

    def _reap(self, recs: list[JobRecord]) -> None:
        """Collect our finished children so they do not linger as zombies."""
        status = {r.id: r.status for r in recs}
        for jid, child in list(self._children.items()):
            # Keep the exit status until the job is reconciled (a poll of the record comes next).
            if child.poll() is not None and status.get(jid) not in ACTIVE:
                del self._children[jid]

    def _running_slots(self, recs: list[JobRecord], now: float) -> int:
        """Slots in use: active jobs, and finished ones whose process has not exited yet (a worker
        tearing down, other ranks finishing) so the next job does not meet its GPU memory."""
        used = 0
        for r in recs:
            if not takes_slot(r.kind):
                continue
            if r.status in ACTIVE:
                used += 1
            elif r.ended_at and now - r.ended_at < LINGER_S and procs.is_alive(r.pid, r.pid_start_time):
                used += 1
        return used

    def _start_queued(self, recs: list[JobRecord]) -> list[JobRecord]:
        """Start queued jobs while slots are free (the caller holds the queue lock); returns them."""
        used = self._running_slots(recs, time.time())
        started = []
        for rec in queue_order(recs):
            if takes_slot(rec.kind) and used >= self.max_concurrent:
                continue
            if self._spawn(rec.id):
                started.append(rec)
                used += takes_slot(rec.kind)
        return started

    def _spawn(self, jid: str) -> bool:
        """Claim queued job `jid` and start its worker. False if someone else claimed it first."""
        d = self.paths.jobs / jid

        def claim(rec: JobRecord) -> None:
            rec.queue_position = None
            rec.pid = rec.pid_start_time = rec.pgid = None
            rec.started_at, rec.ended_at, rec.exit_code, rec.error = time.time(), None, None, None
            rec.stop_requested_at = rec.signal_sent = rec.signal_at = rec.stop_grace_s = None
            rec.runs += 1

        try:
            rec, claimed = set_status(d, "starting", when=lambda r: r.status == "queued", change=claim,
                                      event=lambda r: {"resume": r.resume, "run": r.runs})
        except JobError:  # deleted or damaged meanwhile: not ours to start
            return False
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
        EventWriter(d).emit("error", message=message, traceback="")
        set_status(d, "failed", error=message, ended_at=time.time())

    # actions -----------------------------------------------------------------------------------
    def submit(self, kind: str, config: dict, name: str, *, group: str | None = None,
               start: bool = True) -> JobRecord:
        """Validate `config`, make the job folder (queued, last in the queue) and, with `start`,
        start it now if a slot is free. Invalid configs raise ConfigError; nothing is created."""
        resolved = validate_config(kind, config, self.paths)
        if self.roots is not None and kind in KINDS:
            outside = config_path_problems(resolved, KINDS[kind].path_options, self.roots)
            if outside:
                raise ConfigError(outside)
        with self._lock, file_lock(self.paths.jobs / QUEUE_LOCK):
            queued = [r.queue_position or 0 for r in self._index.list() if r.status == "queued"]
            d = create_job(self.paths, kind, resolved, name, group=group,
                           num_processes=num_processes_of(resolved),
                           queue_position=max(queued, default=-1) + 1, announce=True)
        if start:
            self.poll(force=True)
        return load_job(d)

    def stop(self, job_id: str, grace_s: float | None = None) -> JobRecord:
        """Ask job `job_id` to stop. Returns at once; later polls escalate to signals if needed.
        A queued job leaves the queue as stopped."""
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if rec.status == "queued":
            rec, done = set_status(d, "stopped", when=lambda r: r.status == "queued", queue_position=None,
                                   ended_at=time.time())
            if done:
                return rec
        if rec.status not in ACTIVE:
            raise JobError(f"job {job_id} is {rec.status}, not running: nothing to stop")
        control.request(d, "stop")
        now = time.time()

        def change(r: JobRecord) -> None:
            if r.stop_requested_at is None:
                r.stop_requested_at = now
            r.stop_grace_s = self.grace_s if grace_s is None else grace_s

        set_status(d, "stopping", when=lambda r: r.status in ACTIVE, change=change)
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
        """Queue a stopped, interrupted or failed job again; its worker resumes from the last saved
        state in the same folder, and its events continue the same file. Its config.toml is checked
        first: an edit that broke it is refused here (ConfigError, the job unchanged) rather than
        failing the run, so undoing the edit is all it takes to resume."""
        d = job_dir(self.paths, job_id)
        rec = load_job(d)
        if not is_resumable(rec.kind):
            raise JobError(f"job {job_id} is a {rec.kind} job: it cannot be resumed, start a new one")
        if rec.status not in RESUMABLE:
            raise JobError(f"job {job_id} is {rec.status}; only stopped, interrupted or failed jobs can be "
                           "resumed")
        validate_config(rec.kind, load_config(d), self.paths)
        control.clear(d)  # an old stop request must not stop the new run
        with self._lock, file_lock(self.paths.jobs / QUEUE_LOCK):
            queued = [r.queue_position or 0 for r in self._index.list() if r.status == "queued"]

            def change(r: JobRecord) -> None:
                r.resume, r.queue_position = True, max(queued, default=-1) + 1
                r.ended_at = r.exit_code = r.error = None
                r.stop_requested_at = r.signal_sent = r.signal_at = r.stop_grace_s = None

            rec, done = set_status(d, "queued", when=lambda r: r.status in RESUMABLE, change=change,
                                   event={"resume": True})
        if not done:
            raise JobError(f"job {job_id} changed to {rec.status} meanwhile; not resumed")
        self.poll(force=True)
        return load_job(d)

    def delete(self, job_id: str) -> None:
        """Remove a job's folder. Refused while its worker may run (starting/running/stopping, or a
        damaged job whose recorded worker process is still alive)."""
        d = job_dir(self.paths, job_id)
        if d.resolve().parent != self.paths.jobs.resolve():
            raise JobError(f"job folder {d} is not inside {self.paths.jobs}")
        # Checked and removed under the queue lock (no poll claims a queued job in between) and the
        # job's lock (no other status change does); queue, then job, the order everyone takes them.
        with file_lock(self.paths.jobs / QUEUE_LOCK), job_lock(d):
            rec = self.record(job_id)
            if rec.status in ACTIVE:
                raise JobError(f"job {job_id} is {rec.status}: stop it before deleting it")
            if rec.damaged and rec.pid and procs.is_alive(rec.pid, rec.pid_start_time):
                raise JobError(f"job {job_id} is damaged, but its worker (pid {rec.pid}) still runs: stop "
                               "that process before deleting the job")
            shutil.rmtree(d)

    def repair(self, job_id: str) -> JobRecord:
        """Rebuild a damaged job.json from the job's events.jsonl and config.toml (see repair_job)."""
        d = job_dir(self.paths, job_id)
        try:
            load_job(d)
        except DamagedJobError:
            rec = repair_job(d, self.paths)
            self.poll(force=True)
            return rec
        raise JobError(f"job {job_id} is not damaged: nothing to repair")

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



def _returncode(child: subprocess.Popen | None) -> int | None:
    """Exit status of our own child (negative: killed by that signal); None for adopted workers."""
    if child is None:
        return None
    try:
        return child.wait(timeout=1.0)  # it was seen dead: this only collects the status
    except subprocess.TimeoutExpired:
        return None
