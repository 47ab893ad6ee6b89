"""Helpers for the training tests: job folders from the demo preset, the real worker, events."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from backend.jobs.events import EventReader
from backend.jobs.registry import load_config, load_job
from backend.paths import WorkspacePaths
from tests.conftest import wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The demo preset made smaller still: 64 px (8×8 latents), batch 2, no samples or checkpoints.
FAST = ["dataset.resolution=64", "training.batch_size=2", "training.max_steps=3", "sampling.every_n_steps=0",
        "saving.every_n_steps=0", "saving.every_n_epochs=0", "sampling.prompts=[]"]


def new_job(ws: Path, overrides: list[str], name: str = "t") -> Path:
    from backend.training.cli import prepare_job

    return prepare_job("demo", FAST + list(overrides), str(ws), name)


def unchecked_job(ws: Path, overrides: list[str], name: str = "t") -> Path:
    """A job folder made without the checks before the start (backend.preflight), as a config edited or
    gone stale after them would be: what the worker's own checks are for."""
    from backend.config import find_preset, load_config, resolve_paths, to_dict
    from backend.jobs.registry import create_job

    paths = WorkspacePaths(Path(ws))
    cfg = resolve_paths(load_config(find_preset("demo", paths), FAST + list(overrides)), paths)
    return create_job(paths, "train", to_dict(cfg), name, status="starting")


def context(job_dir: Path):
    from backend.worker.context import WorkerContext

    rec = load_job(job_dir)
    return WorkerContext(job_dir, WorkspacePaths(Path(rec.workspace) if rec.workspace else job_dir.parents[1]),
                         rec, load_config(job_dir), logging.getLogger("test.training"))


def run_in_process(job_dir: Path) -> dict:
    """The real runner (backend.training.run.run_job) in this process: much cheaper than a worker."""
    from backend.training.run import run_job

    return run_job(context(job_dir))


def start_worker(job_dir: Path) -> subprocess.Popen:
    log = open(job_dir / "job.log", "ab")  # noqa: SIM115 - closed by the caller through proc.stdout
    return subprocess.Popen([sys.executable, "-m", "backend.worker", str(job_dir)], cwd=PROJECT_ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_worker(proc: subprocess.Popen, job_dir: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("worker timed out:\n" + (job_dir / "job.log").read_text()[-3000:]) from None


def events(job_dir: Path, kind: str | None = None) -> list[dict]:
    evs = EventReader(job_dir).read_all()
    return [e for e in evs if kind is None or e.get("type") == kind]


def wait_for_event(job_dir: Path, pred, proc: subprocess.Popen, timeout: float = 300) -> dict:
    def seen() -> dict | None:
        found = next((e for e in events(job_dir) if pred(e)), None)
        if found is None and proc.poll() is not None:
            raise AssertionError("worker ended first:\n" + (job_dir / "job.log").read_text()[-3000:])
        return found

    return wait_for(seen, timeout, "the event")
