"""Helpers for the jobs tests: a tmp workspace and waiting on real worker processes."""

from __future__ import annotations

from backend.jobs.events import EventReader
from backend.jobs.registry import FINISHED, JobRecord
from backend.jobs.supervisor import Supervisor
from tests.conftest import wait_for  # the one polling helper (jobs tests import it from here)

WAIT_S = 60.0  # generous: the test machine is shared and has two cores


def wait_finished(sup: Supervisor, job_id: str, timeout: float = WAIT_S) -> JobRecord:
    def done():
        sup.poll(force=True)
        rec = sup.get(job_id)
        return rec if rec.status in FINISHED else None

    return wait_for(done, timeout, what=f"job {job_id} to finish")


def events_of(sup: Supervisor, job_id: str, type: str | None = None) -> list[dict]:  # noqa: A002
    events = EventReader(sup.job_dir(job_id)).read_all()
    return [e for e in events if type is None or e["type"] == type]


def last_step(sup: Supervisor, job_id: str) -> int:
    progress = events_of(sup, job_id, "progress")
    return progress[-1]["step"] if progress else -1


def wait_step(sup: Supervisor, job_id: str, step: int, timeout: float = WAIT_S) -> None:
    wait_for(lambda: last_step(sup, job_id) >= step, timeout, what=f"job {job_id} to reach step {step}")


def statuses(sup: Supervisor, job_id: str) -> list[str]:
    return [e["status"] for e in events_of(sup, job_id, "status")]
