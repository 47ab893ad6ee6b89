"""The supervisor with real worker processes running the `selftest` job kind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from backend.errors import ConfigError, JobError
from backend.jobs import procs
from backend.jobs.registry import create_job, load_job, update_job
from backend.jobs.supervisor import Supervisor, worker_argv
from backend.paths import open_workspace
from tests._jobs_fixtures import (
    events_of,
    last_step,
    statuses,
    wait_finished,
    wait_for,
    wait_step,
)


@pytest.fixture
def paths(tmp_path):
    return open_workspace(tmp_path / "ws")


@pytest.fixture
def sup(paths):
    s = Supervisor(paths, min_poll_interval_s=0.0, grace_s=30.0, signal_wait_s=0.3)
    yield s
    _kill_leftovers(s)


def _kill_leftovers(s: Supervisor) -> None:
    """A failing test must not leave workers behind."""
    for rec in s.poll(force=True):
        if rec.active and procs.is_alive(rec.pid, rec.pid_start_time) and rec.pgid != os.getpgid(0):
            procs.signal_group(rec.pgid, rec.pid, signal.SIGKILL)


def test_start_progress_completed(sup):
    rec = sup.submit("selftest", {"steps": 8, "step_s": 0.02}, "happy path")
    assert rec.status == "starting" and rec.pid and rec.runs == 1
    rec = wait_finished(sup, rec.id)
    assert (rec.status, rec.exit_code, rec.error) == ("completed", 0, None)
    assert statuses(sup, rec.id) == ["queued", "starting", "running", "completed"]
    progress = events_of(sup, rec.id, "progress")
    assert [e["step"] for e in progress] == list(range(9))
    assert progress[-1]["total"] == 8 and progress[-1]["it_s"] > 0 and progress[-1]["eta_s"] == 0
    d = sup.job_dir(rec.id)
    assert json.loads((d / "output" / "result.json").read_text()) == {"steps": 8}
    assert "step 8/8" in (d / "job.log").read_text()
    assert rec.extra["result"] == {"step": 8}


def test_invalid_config_fails_before_anything_is_made(sup, paths):
    with pytest.raises(ConfigError, match="steps: must be int"):
        sup.submit("selftest", {"steps": "many"}, "bad")
    assert not [p for p in paths.jobs.iterdir() if p.is_dir()]


def test_stop_mid_run_gives_stopped_with_saved_state(sup):
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02}, "stop me")
    wait_step(sup, rec.id, 3)
    sup.stop(rec.id)
    rec = wait_finished(sup, rec.id)
    assert (rec.status, rec.exit_code, rec.signal_sent) == ("stopped", 0, None)  # no signal needed
    saved = json.loads((sup.job_dir(rec.id) / "checkpoints" / "state.json").read_text())["step"]
    assert 3 <= saved < 500 and saved == last_step(sup, rec.id)
    assert statuses(sup, rec.id)[-2:] == ["stopping", "stopped"]


def test_stop_escalates_to_sigint_after_the_grace_period(sup):
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02}, "sigint")
    wait_step(sup, rec.id, 2)
    sup.stop(rec.id, grace_s=0)  # SIGINT at once: the worker's handler asks the runner to stop
    rec = wait_finished(sup, rec.id)
    assert (rec.status, rec.signal_sent) == ("stopped", "SIGINT")


def test_stuck_worker_is_killed_and_reconciled(sup):
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02, "stuck": True}, "stuck")
    wait_step(sup, rec.id, 2)
    sup.stop(rec.id, grace_s=0)  # SIGINT, SIGTERM are blocked; SIGKILL after 2 × signal_wait_s
    rec = wait_finished(sup, rec.id)
    assert rec.status == "interrupted" and rec.signal_sent == "SIGKILL" and rec.exit_code == -9
    assert "signal 9" in rec.error and "last lines of job.log" in rec.error


def test_kill_9_is_reconciled_to_interrupted_then_resume_continues(sup):
    rec = sup.submit("selftest", {"steps": 40, "step_s": 0.02, "save_every": 5}, "crash")
    wait_step(sup, rec.id, 12)
    os.kill(rec.pid, signal.SIGKILL)
    rec = wait_finished(sup, rec.id)
    assert rec.status == "interrupted" and rec.exit_code == -9
    assert "ended without a clean exit" in rec.error and "--- last lines of job.log ---" in rec.error
    assert "INFO loradash.worker: step 1" in rec.error  # the log tail itself
    d = sup.job_dir(rec.id)
    saved = json.loads((d / "checkpoints" / "state.json").read_text())["step"]
    assert saved >= 10 and saved % 5 == 0

    rec = sup.resume(rec.id)
    assert rec.resume and rec.runs == 2 and rec.error is None
    rec = wait_finished(sup, rec.id)
    assert rec.status == "completed"
    events = events_of(sup, rec.id)
    resumed_at = max(i for i, e in enumerate(events) if e.get("status") == "queued")
    after = [e["step"] for e in events[resumed_at:] if e["type"] == "progress"]
    assert after[0] == saved and after[-1] == 40  # the step count continues from the saved state
    assert json.loads((d / "output" / "result.json").read_text()) == {"steps": 40}
    assert "=== run 2 (resume)" in (d / "job.log").read_text()


def test_queued_jobs_run_in_order_and_the_queue_survives_a_new_supervisor(paths):
    sup1 = Supervisor(paths, min_poll_interval_s=0.0)
    try:
        a = sup1.submit("selftest", {"steps": 10, "step_s": 0.05}, "a")
        b = sup1.submit("selftest", {"steps": 2, "step_s": 0.01}, "b")
        c = sup1.submit("selftest", {"steps": 2, "step_s": 0.01}, "c")
        assert [r.id for r in sup1.queue()] == [b.id, c.id]
        assert sup1.move(c.id, -1) == [c.id, b.id]
        assert sup1.get(a.id).status in ("starting", "running")
    finally:
        del sup1  # the UI goes away; the queue stays in the folders
    sup2 = Supervisor(paths, min_poll_interval_s=0.0)
    try:
        recs = {r.id: wait_finished(sup2, r.id) for r in (a, c, b)}
        assert all(r.status == "completed" for r in recs.values())
        assert recs[a.id].ended_at <= recs[c.id].started_at
        assert recs[c.id].ended_at <= recs[b.id].started_at
    finally:
        _kill_leftovers(sup2)


def test_new_supervisor_readopts_a_live_job(paths, sup):
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02}, "adopt")
    wait_step(sup, rec.id, 2)
    other = Supervisor(paths, min_poll_interval_s=0.0, signal_wait_s=0.3)
    again = other.get(rec.id)
    assert (again.status, again.pid, again.runs) == ("running", rec.pid, 1)
    assert [r.id for r in other.poll(force=True) if r.active] == [rec.id]  # not started twice
    other.stop(rec.id)
    assert wait_finished(other, rec.id).status == "stopped"


def test_a_reused_pid_is_not_taken_for_a_live_job(paths):
    me = os.getpid()
    mine = procs.start_time(me)
    d = create_job(paths, "selftest", {}, "reused pid", status="running")

    def pretend(rec):  # a job.json whose pid now belongs to another process (this test)
        rec.pid, rec.pid_start_time, rec.pgid = me, mine - 100, None

    update_job(d, pretend)
    sup = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    rec = load_job(d)
    assert rec.status == "interrupted" and "ended without a clean exit" in rec.error

    # The same pid with its true start time is ours: left running (the check can go both ways).
    d2 = create_job(paths, "selftest", {}, "live pid", status="running")

    def live(rec):
        rec.pid, rec.pid_start_time = me, mine

    update_job(d2, live)
    sup.poll(force=True)
    assert load_job(d2).status == "running"
    update_job(d2, lambda r: setattr(r, "status", "failed"))  # never signal the test process


def test_worker_that_raises_at_start_gives_a_failed_job(sup):
    rec = sup.submit("selftest", {"fail_at_start": "dataset folder is empty: add images"}, "boom")
    rec = wait_finished(sup, rec.id)
    assert (rec.status, rec.exit_code) == ("failed", 1)
    assert rec.error == "dataset folder is empty: add images"
    [err] = events_of(sup, rec.id, "error")
    assert err["message"] == rec.error and "TrainingError" in err["traceback"]
    assert statuses(sup, rec.id)[-1] == "failed"


def test_missing_package_at_import_gives_a_failed_job_with_the_cause(sup):
    rec = sup.submit("selftest", {"import_module": "no_such_package_xyz"}, "import")
    rec = wait_finished(sup, rec.id)
    assert rec.status == "failed" and "No module named 'no_such_package_xyz'" in rec.error


def test_save_now_and_sample_now_act_once(sup):
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02, "save_every": 0}, "ctl")
    wait_step(sup, rec.id, 1)
    sup.save_now(rec.id)
    sup.sample_now(rec.id)
    wait_for(lambda: events_of(sup, rec.id, "sample") and events_of(sup, rec.id, "checkpoint"))
    wait_step(sup, rec.id, last_step(sup, rec.id) + 3)
    sup.stop(rec.id)
    wait_finished(sup, rec.id)
    [sample] = events_of(sup, rec.id, "sample")
    assert os.path.isfile(sample["path"])
    assert len(events_of(sup, rec.id, "checkpoint")) == 2  # save_now, then the save on stop


def test_delete_refused_while_running_and_removes_only_that_folder(sup, paths):
    keep = create_job(paths, "selftest", {}, "keep", status="completed")
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.02}, "busy")
    with pytest.raises(JobError, match="stop it before deleting"):
        sup.delete(rec.id)
    sup.stop(rec.id)
    wait_finished(sup, rec.id)
    sup.delete(rec.id)
    assert not (paths.jobs / rec.id).exists() and keep.is_dir()
    with pytest.raises(JobError, match="only stopped, interrupted or failed"):
        sup.resume(keep.name)


def test_delete_of_a_queued_job_cannot_race_the_tick_that_starts_it(paths):
    """A background tick (another Supervisor, as in a second process) polls while delete checks the
    status: it must not claim and spawn the job whose folder delete is about to remove."""
    sup = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    ticker = Supervisor(paths, min_poll_interval_s=0.0)
    jid = sup.submit("selftest", {"steps": 200, "step_s": 0.05}, "queued").id
    ticks: list[list[str]] = []
    check = sup.record

    def record_then_tick(job_id):  # the status is read; now the tick comes
        rec = check(job_id)
        tick = threading.Thread(target=lambda: ticks.append(
            [r.status for r in ticker.poll(force=True) if r.id == jid]))
        tick.start()
        tick.join(3.0)  # it ends at once unless delete holds the queue lock
        threads.append(tick)
        return rec

    threads: list[threading.Thread] = []
    sup.record = record_then_tick
    try:
        sup.delete(jid)
        for t in threads:
            t.join(30)
        assert ticks == [[]]  # the tick came after the removal: nothing to start
        assert not (paths.jobs / jid).exists()
    finally:
        for pid in _processes_mentioning(jid):
            os.kill(pid, signal.SIGKILL)


def test_queue_reorder_and_remove(paths):
    sup = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    ids = [sup.submit("selftest", {}, n).id for n in ("q1", "q2", "q3")]
    assert [r.id for r in sup.queue()] == ids
    assert sup.reorder([ids[2]]) == [ids[2], ids[0], ids[1]]
    assert sup.move(ids[2], +5) == [ids[0], ids[1], ids[2]]
    sup.remove_queued(ids[1])
    assert [r.id for r in sup.queue()] == [ids[0], ids[2]]
    with pytest.raises(JobError, match="not queued"):
        sup.move(ids[1], 1)


def test_several_processes_launch_through_accelerate_and_only_rank_0_writes(sup):
    argv = worker_argv(sup.paths.jobs / "x", 2)
    assert argv[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert argv[-3:] == ["-m", "backend.worker", str(sup.paths.jobs / "x")]
    assert worker_argv(sup.paths.jobs / "x", 1)[1:] == ["-m", "backend.worker", str(sup.paths.jobs / "x")]
    # accelerate starts two ranks through torchrun (on the CPU here: the selftest needs no GPU).
    rec = sup.submit("selftest", {"steps": 3, "step_s": 0.05, "training": {"num_processes": 2}}, "ranks")
    assert rec.num_processes == 2
    rec = wait_finished(sup, rec.id)
    assert rec.status == "completed", rec.error
    # Rank 0 marks the job completed; the launcher exits once every rank has.
    wait_for(lambda: (sup.poll(force=True), not procs.is_alive(rec.pid, rec.pid_start_time))[1])
    log = (sup.job_dir(rec.id) / "job.log").read_text()
    assert "[rank 1]" in log and "rank 1 pid" in log  # both ranks ran …
    assert [e["step"] for e in events_of(sup, rec.id, "progress")] == [0, 1, 2, 3]  # … one wrote


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if text.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_killing_a_multi_process_job_leaves_no_rank_behind(sup):
    # torchrun starts each rank in a session of its own, beyond the launcher's process group.
    rec = sup.submit("selftest", {"steps": 500, "step_s": 0.05, "stuck": True,
                                  "training": {"num_processes": 2}}, "orphans")
    wait_step(sup, rec.id, 2)
    folder = str(sup.job_dir(rec.id))  # unique to this test's workspace
    wait_for(lambda: len(_processes_mentioning(folder)) == 3, what="launcher + 2 ranks")
    sup.stop(rec.id, grace_s=0)
    rec = wait_finished(sup, rec.id)
    assert rec.status == "interrupted" and rec.signal_sent == "SIGKILL"
    try:
        wait_for(lambda: not _processes_mentioning(folder), timeout=10,
                 what="the ranks to die with their launcher")
    finally:
        for pid in _processes_mentioning(folder):
            os.kill(pid, signal.SIGKILL)


def test_a_finished_job_whose_process_still_exits_keeps_its_slot(paths):
    me = os.getpid()
    done = create_job(paths, "selftest", {}, "tearing down", status="completed")

    def lingering(rec):  # completed, but its process (here: this test) has not exited yet
        rec.pid, rec.pid_start_time, rec.ended_at = me, procs.start_time(me), time.time()

    update_job(done, lingering)
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    nxt = sup.submit("selftest", {"steps": 1, "step_s": 0.01}, "next")
    assert sup.get(nxt.id).status == "queued"
    update_job(done, lambda r: setattr(r, "ended_at", r.ended_at - 3600))  # long gone: slot is free
    sup.poll(force=True)
    assert wait_finished(sup, nxt.id).status == "completed"



def test_secrets_reach_the_worker_environment_but_never_the_job_folder(tmp_path):
    """A token typed into the UI goes to the worker's environment only (read back from /proc)."""
    paths = open_workspace(tmp_path / "ws", {})
    sup = Supervisor(paths)
    sup.set_secret("CIVITAI_TOKEN", "s3cret-token")
    rec = sup.submit("selftest", {"steps": 200, "step_s": 0.05}, "secret")

    def in_status(*names: str):
        sup.poll(force=True)
        current = sup.get(rec.id)
        return current if current.status in names else None

    running = wait_for(lambda: in_status("running"), 30, "the worker to run")
    environ = open(f"/proc/{running.pid}/environ", "rb").read().split(b"\0")
    assert b"CIVITAI_TOKEN=s3cret-token" in environ
    sup.stop(rec.id)
    wait_for(lambda: in_status("stopped", "interrupted"), 30, "the worker to stop")
    for f in (paths.jobs / rec.id).rglob("*"):
        if f.is_file():
            assert b"s3cret-token" not in f.read_bytes(), f
