"""control.json: requests from the UI to a running worker (stop, save_now, sample_now).

The UI side appends requests (each with an id) to control.json; the worker side reads them between
steps and records the ids it has acted on in control_done.json, so each request acts exactly once,
also across a resume in a new process. Each file has one writer kind: UI → control.json,
worker → control_done.json.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from backend.errors import JobError
from backend.files import atomic_write_json, file_lock, read_json

CONTROL_FILE = "control.json"
DONE_FILE = "control_done.json"
LOCK_FILE = ".control.lock"
ACTIONS = ("stop", "save_now", "sample_now")


def _requests(job_dir: Path) -> list[dict]:
    data = read_json(job_dir / CONTROL_FILE, default={})
    reqs = data.get("requests") if isinstance(data, dict) else None
    return [r for r in reqs if isinstance(r, dict)] if isinstance(reqs, list) else []


def request(job_dir: str | os.PathLike, action: str) -> dict:
    """Append a request for `action` to control.json and return it ({"id", "action", "t"})."""
    if action not in ACTIONS:
        raise JobError(f"unknown control action {action!r}; accepted: {', '.join(ACTIONS)}")
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise JobError(f"job folder {job_dir} does not exist")
    req = {"id": uuid.uuid4().hex[:12], "action": action, "t": time.time()}
    # Several UI sessions may click at once: serialize the read-modify-write with a lock file.
    with file_lock(job_dir / LOCK_FILE):
        reqs = _requests(job_dir)
        reqs.append(req)
        atomic_write_json(job_dir / CONTROL_FILE, {"requests": reqs})
    return req


def pending(job_dir: str | os.PathLike) -> list[dict]:
    """Requests the worker has not acted on yet (for the UI: "stop requested …")."""
    job_dir = Path(job_dir)
    done = set(read_json(job_dir / DONE_FILE, default=[]) or [])
    return [r for r in _requests(job_dir) if r.get("id") not in done]


def clear(job_dir: str | os.PathLike) -> None:
    """Forget all requests (before a resume, so an old stop does not stop the new run)."""
    job_dir = Path(job_dir)
    for name in (CONTROL_FILE, DONE_FILE):
        try:
            os.unlink(job_dir / name)
        except FileNotFoundError:
            pass


class ControlReader:
    """The worker's side: `take()` returns the actions of requests not consumed before."""

    def __init__(self, job_dir: str | os.PathLike, record: bool = True):
        self.job_dir = Path(job_dir)
        # Non-main ranks under accelerate read but must not write control_done.json.
        self.record = record
        done = read_json(self.job_dir / DONE_FILE, default=[])
        self._done: set[str] = set(done) if isinstance(done, list) else set()

    def take(self) -> set[str]:
        """Actions of the new requests, each returned once."""
        # Always re-read: the file is tiny, and mtime can miss two writes within one clock tick.
        new = [r for r in _requests(self.job_dir)
               if r.get("id") not in self._done and r.get("action") in ACTIONS]
        if not new:
            return set()
        self._done.update(str(r["id"]) for r in new)
        if self.record:
            atomic_write_json(self.job_dir / DONE_FILE, sorted(self._done))
        return {str(r["action"]) for r in new}
