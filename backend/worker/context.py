"""WorkerContext: everything a job kind's runner receives from the worker entry.

A runner is `run_job(ctx) -> dict | None`. It checks `ctx.stop_requested` (or calls
`ctx.poll_control()`) between steps; when a stop is asked it finishes the step, saves resumable
state and returns. The worker entry owns job.json's status; the runner only emits events.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from backend.jobs.control import ControlReader
from backend.jobs.events import EventWriter, check_event
from backend.jobs.registry import JobRecord, update_job
from backend.paths import WorkspacePaths


class NullEventWriter(EventWriter):
    """Events on non-main ranks: built and returned, never written (rank 0 writes the file)."""

    def emit(self, type: str, **fields: Any) -> dict:  # noqa: A002
        check_event(type, fields)  # the same declaration as rank 0's writer, so no rank hides a bug
        return {"t": time.time(), "type": type, **fields}


class WorkerContext:
    """The job a runner works on. Only the main process (rank 0) writes events and files."""

    def __init__(self, job_dir: Path, paths: WorkspacePaths, record: JobRecord, config: dict,
                 log: logging.Logger, *, is_main_process: bool = True,
                 progress_interval_s: float = 0.25):
        self.job_dir = Path(job_dir)
        self.paths = paths
        self.record = record
        self.config = config
        self.log = log
        self.is_main_process = is_main_process
        self.events: EventWriter = EventWriter(job_dir) if is_main_process else NullEventWriter(job_dir)
        self.control = ControlReader(job_dir, record=is_main_process)
        self.resume = bool(record.resume)
        self.progress_interval_s = progress_interval_s
        self._stop = False
        self._stop_reason: str | None = None
        self._pending: set[str] = set()  # actions read while only peeking for a stop
        self._rate: deque[tuple[float, int]] = deque(maxlen=20)
        self._last_progress_t = 0.0

    # folders -------------------------------------------------------------------------------
    @property
    def samples_dir(self) -> Path:
        return self.job_dir / "samples"

    @property
    def checkpoints_dir(self) -> Path:
        return self.job_dir / "checkpoints"

    @property
    def output_dir(self) -> Path:
        return self.job_dir / "output"

    # stop and control ----------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """True once SIGINT/SIGTERM arrived or a "stop" control request was read."""
        if not self._stop:
            self.poll_control(_keep=True)
        return self._stop

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    def request_stop(self, reason: str) -> None:
        """Called by the signal handler (and by `poll_control` for a "stop" request)."""
        if not self._stop:
            self._stop, self._stop_reason = True, reason
            self.log.info("stop requested (%s): finishing the current step", reason)

    def poll_control(self, _keep: bool = False) -> set[str]:
        """Read new control requests; returns the actions other than "stop" (save_now,
        sample_now), each once. A "stop" request sets `stop_requested`."""
        actions = self.control.take()
        if "stop" in actions:
            self.request_stop("stop request")
            actions.discard("stop")
        if _keep:
            # stop_requested peeked: keep the other actions for the next poll_control().
            self._pending |= actions
            return set()
        pending, self._pending = self._pending, set()
        return pending | actions

    # events --------------------------------------------------------------------------------
    def emit(self, type: str, **fields: Any) -> dict:  # noqa: A002
        return self.events.emit(type, **fields)

    def progress(self, step: int, total: int | None, *, force: bool = False, **extra: Any) -> dict | None:
        """Emit a `progress` event {step, total, it_s, eta_s, **extra}; at most one per
        `progress_interval_s` unless `force` or the last step. Returns the event or None."""
        now = time.monotonic()
        self._rate.append((now, step))
        first_t, first_step = self._rate[0]
        it_s = (step - first_step) / (now - first_t) if now > first_t and step > first_step else None
        eta = (total - step) / it_s if (it_s and total is not None) else None
        last = total is not None and step >= total
        if not (force or last or now - self._last_progress_t >= self.progress_interval_s):
            return None
        self._last_progress_t = now
        return self.events.emit("progress", step=step, total=total,
                                it_s=round(it_s, 4) if it_s else None,
                                eta_s=round(eta, 1) if eta is not None else None, **extra)

    def update_record(self, **fields: Any) -> None:
        """Set fields of `record.extra` in job.json (main process only), e.g. last_step, output."""
        if not self.is_main_process:
            return
        self.record.extra.update(fields)

        def change(rec: JobRecord) -> None:
            rec.extra.update(fields)

        update_job(self.job_dir, change)
