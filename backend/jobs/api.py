"""The notebook API: `from backend import Workspace`.

    ws = Workspace("/content/workspace")
    job = ws.start("sd15-character-lora", {"dataset.path": "datasets/me", "training.max_steps": 500})
    for event in ws.follow(job.id):
        print(event)
    ws.wait(job.id)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.errors import JobError
from backend.jobs.events import LOG_FILE, EventReader, read_log_tail
from backend.jobs.registry import FINISHED, JobRecord
from backend.jobs.supervisor import Supervisor
from backend.paths import open_workspace


class Workspace:
    """One workspace's jobs, for notebooks and scripts. Starting runs the job in a worker process;
    this object only watches its folder."""

    def __init__(self, path: str | os.PathLike | None = None, *, max_concurrent: int = 1,
                 grace_s: float = 30.0):
        self.paths = open_workspace(path)
        self.supervisor = Supervisor(self.paths, max_concurrent, grace_s=grace_s, min_poll_interval_s=0.2)

    def __repr__(self) -> str:
        return f"Workspace({str(self.paths.root)!r})"

    def jobs(self) -> list[JobRecord]:
        return self.supervisor.poll(force=True)

    def job(self, job_id: str) -> JobRecord:
        self.supervisor.poll(force=True)
        return self.supervisor.get(job_id)

    def start(self, config_or_preset: dict | str | os.PathLike, overrides: dict | list[str] | None = None,
              name: str | None = None, kind: str = "train", *, group: str | None = None) -> JobRecord:
        """Queue a job (started at once if nothing else runs). A training job takes a config dict,
        a preset name or a TOML file, with `overrides` such as {"training.max_steps": 100} or
        ["training.max_steps=100"]. Invalid configs raise ConfigError before anything is made."""
        label = None if isinstance(config_or_preset, dict) else Path(config_or_preset).stem
        if kind == "train":
            from backend import config as cfg_module  # pydantic schema: only when training

            source: Any = config_or_preset
            if not isinstance(source, dict):
                source = cfg_module.find_preset(source, self.paths)
            cfg = cfg_module.load_config(source, overrides)
            data = cfg_module.to_dict(cfg)
            name = name or label or cfg.saving.output_name
        else:
            from backend.config.io import apply_overrides, read_toml

            data = config_or_preset if isinstance(config_or_preset, dict) else read_toml(config_or_preset, "config")
            data = apply_overrides(data, overrides, require_section=False)
            name = name or label or kind
        return self.supervisor.submit(kind, data, name, group=group)

    def events(self, job_id: str, offset: int = 0) -> tuple[list[dict], int]:
        """The job's events after byte `offset`, and the next offset."""
        return EventReader(self.supervisor.job_dir(job_id)).read(offset)

    def log(self, job_id: str, offset: int = 0) -> tuple[str, int]:
        """job.log text after `offset` (the tail for offset 0), and the next offset."""
        return read_log_tail(self.supervisor.job_dir(job_id) / LOG_FILE, offset)

    def follow(self, job_id: str, poll_s: float = 0.5, timeout: float | None = None) -> Iterator[dict]:
        """Yield the job's events (from the first) as they come, until the job has ended."""
        reader = EventReader(self.supervisor.job_dir(job_id))
        deadline = None if timeout is None else time.monotonic() + timeout
        offset = 0
        while True:
            self.supervisor.poll()
            done = self.supervisor.get(job_id).status in FINISHED
            events, offset = reader.read(offset)
            yield from events
            if done:
                # The final events were written before the status: one more read catches them all.
                events, offset = reader.read(offset)
                yield from events
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {self.supervisor.get(job_id).status}")
            time.sleep(poll_s)

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 0.5) -> JobRecord:
        """Block until the job has ended (any way); its final record. TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.supervisor.poll()
            rec = self.supervisor.get(job_id)
            if rec.status in FINISHED:
                return rec
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {rec.status} after {timeout} s")
            time.sleep(poll_s)

    def stop(self, job_id: str, grace_s: float | None = None) -> JobRecord:
        return self.supervisor.stop(job_id, grace_s)

    def resume(self, job_id: str) -> JobRecord:
        return self.supervisor.resume(job_id)

    def save_now(self, job_id: str) -> dict:
        return self.supervisor.save_now(job_id)

    def sample_now(self, job_id: str) -> dict:
        return self.supervisor.sample_now(job_id)

    def delete(self, job_id: str) -> None:
        if self.supervisor.get(job_id).status not in FINISHED | {"queued"}:
            raise JobError(f"job {job_id} is running: stop it before deleting it")
        self.supervisor.delete(job_id)
