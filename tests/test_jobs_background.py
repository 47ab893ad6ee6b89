"""The supervisor's background poller: the queue advances with no page (and no test) calling poll()."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from backend.jobs import procs
from backend.jobs.background import BackgroundPoller
from backend.jobs.registry import FINISHED
from backend.jobs.supervisor import Supervisor
from backend.paths import open_workspace
from tests._jobs_fixtures import wait_for


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(open_workspace(tmp_path / "ws"), max_concurrent=1, min_poll_interval_s=0.0)
    yield s
    s.stop_background()
    for rec in s.poll(force=True):  # a failing test must not leave workers behind
        if rec.active and procs.is_alive(rec.pid, rec.pid_start_time) and rec.pgid != os.getpgid(0):
            procs.signal_group(rec.pgid, rec.pid, signal.SIGKILL)


def test_queued_job_starts_after_the_first_ends_without_poll_calls(sup):
    first = sup.submit("selftest", {"steps": 4, "step_s": 0.05}, "first")
    second = sup.submit("selftest", {"steps": 2, "step_s": 0.01}, "second")
    assert (first.status, second.status) == ("starting", "queued")
    thread = sup.start_background(interval_s=0.1)
    assert thread.daemon and thread.is_alive()
    # Only job.json is read from here on (sup.get does not poll): the background thread does the rest.
    done = wait_for(lambda: sup.get(second.id).status in FINISHED and sup.get(second.id),
                    what="the queued job to run to its end")
    assert (done.status, done.runs) == ("completed", 1)
    assert sup.get(first.id).status == "completed"
    assert done.started_at >= sup.get(first.id).ended_at
    assert sup.stop_background() and not thread.is_alive()


def test_start_is_idempotent_and_restartable(sup):
    t1 = sup.start_background(interval_s=0.05)
    assert sup.start_background(interval_s=0.05) is t1
    assert sum(t.name == t1.name for t in threading.enumerate()) == 1
    assert sup.stop_background(timeout=5) and not t1.is_alive()
    assert sup.stop_background()  # stopping twice is fine
    t2 = sup.start_background(interval_s=0.05)
    assert t2 is not t1 and t2.is_alive()
    with pytest.raises(ValueError, match="interval_s"):
        BackgroundPoller(lambda: None).start(0)


def test_a_failing_poll_is_logged_and_retried(caplog):
    calls: list[int] = []
    recovered = threading.Event()

    def poll() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise OSError(f"disk full ({len(calls) > 1})")
        recovered.set()

    poller = BackgroundPoller(poll, name="test-poller")
    with caplog.at_level(logging.INFO, logger="loradash.jobs"):
        poller.start(0.02)
        assert recovered.wait(10), "the loop died after the first error"
        assert poller.stop(timeout=5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # Two distinct messages → two tracebacks; the repeat of the second is not logged again at once.
    assert [r.exc_info[0] for r in errors] == [OSError, OSError]
    assert "disk full (False)" in caplog.text and "disk full (True)" in caplog.text
    assert "works again" in caplog.text
