"""A damaged job.json (wrongly typed, empty, truncated, garbage, missing) is listed as `damaged`
with what is wrong and its folder, everywhere jobs are listed; the other jobs keep working; the
user can repair it (rebuilt from events.jsonl and config.toml) or delete it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from backend.errors import JobError
from backend.jobs import procs
from backend.jobs.events import EventReader, EventWriter
from backend.jobs.registry import create_job, list_jobs, load_job
from backend.jobs.supervisor import Supervisor
from backend.paths import PROJECT_ROOT, open_workspace
from tests._jobs_fixtures import wait_finished, wait_for
from webui.context import AppContext, SharedUI
from webui.tabs import runs


def _rewrite(key, value):
    def damage(path):
        data = json.loads(path.read_text())
        data[key] = value
        path.write_text(json.dumps(data))
    return damage


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _missing(path):
    path.unlink()
    old = time.time() - 3600  # not a folder create_job is still filling
    os.utime(path.parent, (old, old))


DAMAGES = {
    "created_at yesterday": (_rewrite("created_at", "yesterday"), "created_at must be a number"),
    "pid abc": (_rewrite("pid", "abc"), "pid must be a whole number or null"),
    "extra list": (_rewrite("extra", [1]), "extra must be an object"),
    "status unknown": (_rewrite("status", "exploded"), "status 'exploded' is not one of"),
    "empty": (lambda p: p.write_bytes(b""), "job.json is empty"),
    "whitespace": (lambda p: p.write_bytes(b"  \n"), "job.json is empty"),
    "truncated": (_truncate, "job.json is not valid JSON"),
    "garbage": (lambda p: p.write_bytes(b"\x00\x9f\xff garbage"), "job.json is not UTF-8"),
    "not an object": (lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    "missing": (_missing, "job.json is missing"),
}


@pytest.fixture
def paths(tmp_path):
    return open_workspace(tmp_path / "ws")


def _finished_job(paths, name="broken one"):
    """A selftest job that ran to the end (its events tell its history), then damage comes."""
    d = create_job(paths, "selftest", {"steps": 2}, name, status="queued")
    w = EventWriter(d)
    w.emit("status", status="queued")
    w.emit("status", status="starting", pid=1, resume=False)
    w.emit("status", status="running")
    w.emit("progress", step=2, total=2)
    w.emit("status", status="completed")
    return d


@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_job_is_listed_not_skipped_and_the_others_work(paths, case):
    damage, problem = DAMAGES[case]
    good = create_job(paths, "selftest", {"steps": 1}, "good one")
    bad = _finished_job(paths)
    damage(bad / "job.json")
    recs = {r.id: r for r in list_jobs(paths)}
    assert set(recs) == {good.name, bad.name}
    rec = recs[bad.name]
    assert rec.status == "damaged" and problem in rec.error and str(bad) in rec.error
    with pytest.raises(JobError, match=problem):
        load_job(bad)
    # The supervisor starts (the dashboard's first poll) and runs the good job beside it.
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    assert wait_finished(sup, good.name).status == "completed"
    assert {r.id: r.status for r in sup.poll(force=True)}[bad.name] == "damaged"


def _cli(paths, *args):
    return subprocess.run([sys.executable, "-m", "backend", *args, "--workspace", str(paths.root)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_jobs_lists_damaged_jobs_with_the_problem_and_folder(paths):
    create_job(paths, "selftest", {"steps": 1}, "good one", status="completed")
    bad = _finished_job(paths)
    _rewrite("created_at", "yesterday")(bad / "job.json")
    out = _cli(paths, "jobs")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith(bad.name))
    assert "damaged" in line and str(bad) in line
    assert 'created_at must be a number (found "yesterday")' in out.stdout
    assert f"python -m backend repair {bad.name}" in out.stdout
    rows = {r["id"]: r for r in json.loads(_cli(paths, "jobs", "--json").stdout)}
    assert rows[bad.name]["status"] == "damaged" and rows[bad.name]["folder"] == str(bad)
    assert rows[bad.name]["problems"] == ['created_at must be a number (found "yesterday")']
    out = _cli(paths, "repair", bad.name)
    assert out.returncode == 0 and "completed" in out.stdout, out.stdout + out.stderr
    out = _cli(paths, "resume", bad.name)
    assert out.returncode == 2 and "completed" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("case", list(DAMAGES))
def test_repair_rebuilds_job_json_from_events_and_config(paths, case):
    bad = _finished_job(paths, "my lora")
    before = load_job(bad)
    DAMAGES[case][0](bad / "job.json")
    sup = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    rec = sup.repair(bad.name)
    again = load_job(bad)
    assert again == rec and rec.status == "completed" and rec.kind == "selftest" and rec.runs == 1
    assert rec.created_at == pytest.approx(before.created_at, abs=5)
    assert rec.extra["repaired"]["problems"] and "job.json rebuilt" in (bad / "job.log").read_text()
    if case not in ("missing", "empty", "whitespace", "truncated", "garbage", "not an object"):
        assert rec.name == "my lora"  # what was still readable is kept
    with pytest.raises(JobError, match="not damaged"):
        sup.repair(bad.name)


def test_repair_of_a_run_that_was_going_marks_it_interrupted_and_resumable(paths):
    d = create_job(paths, "selftest", {"steps": 50}, "was running", announce=True)
    EventWriter(d).emit("status", status="starting", pid=999999, resume=False)
    EventWriter(d).emit("status", status="running")
    (d / "job.json").write_text("{\"id\": ")
    sup = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    rec = sup.repair(d.name)
    assert rec.status == "interrupted" and rec.pid is None
    assert [e["status"] for e in EventReader(d).read_all() if e["type"] == "status"][-1] == "interrupted"
    assert sup.resume(d.name).status == "queued"


@pytest.mark.parametrize("saving", ["x", {"output_name": ["a"]}])
def test_repair_takes_no_name_from_a_config_section_of_the_wrong_type(paths, saving):
    d = create_job(paths, "train", {"model": {}, "dataset": {}, "network": {}, "saving": saving}, "t",
                   status="completed")
    (d / "job.json").write_text("{broken")
    rec = Supervisor(paths, autostart=False).repair(d.name)
    assert (rec.kind, rec.name) == ("train", d.name.split("-", 2)[-1]) and load_job(d) == rec


def test_repair_skips_a_status_event_of_no_known_status(paths):
    """A last status event "paused" must not go into job.json (it would be damaged again)."""
    d = _finished_job(paths)
    with open(d / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"t": time.time(), "type": "status", "status": "paused"}) + "\n")
    (d / "job.json").write_text("{broken")
    rec = Supervisor(paths, autostart=False).repair(d.name)
    assert rec.status == "completed" and load_job(d) == rec


def test_repair_without_a_readable_config_or_kind_says_delete(paths):
    d = _finished_job(paths)
    (d / "job.json").write_text("garbage")
    (d / "config.toml").write_text("not = [toml")
    with pytest.raises(JobError, match="delete the job instead"):
        Supervisor(paths, autostart=False).repair(d.name)


def _runs_tab(paths) -> runs.RunsTab:
    """The Runs tab built as create_app builds it (in its own gr.Tab)."""
    import gradio as gr

    with gr.Blocks() as demo, gr.Tabs() as tabs, gr.Tab("Runs", id=runs.TAB_ID) as item:
        ui = SharedUI(blocks=demo, tabs=tabs, timer=gr.Timer(), job_id=gr.State(), tab_items={runs.TAB_ID: item})
        ctx = AppContext(paths=paths, supervisor=Supervisor(paths, min_poll_interval_s=0.0, autostart=False), ui=ui)
        return runs.build(ctx)


def test_times_no_date_can_show_never_break_the_runs_tab(paths):
    """started_at 1e20 is finite but no date: job.json is damaged; a huge `t` in events.jsonl
    (a file anyone may edit) shows as a blank time. Every tick of the Runs tab still works."""
    good = create_job(paths, "selftest", {"steps": 1}, "good one", status="completed")
    with open(good / "events.jsonl", "a") as fh:
        fh.write('{"t": 1e300, "type": "status", "status": "running"}\n'
                 '{"t": -Infinity, "type": "status", "status": "starting"}\n')
    bad = create_job(paths, "selftest", {"steps": 1}, "bad one", status="completed")
    _rewrite("started_at", 1e20)(bad / "job.json")
    with pytest.raises(JobError, match="started_at must be a time in unix seconds"):
        load_job(bad)
    tab = _runs_tab(paths)
    for selected in (good.name, bad.name):
        table = tab.tick(selected, None, None)[0]
        assert {row[-1]: row[2] for row in table} == {good.name: "completed", bad.name: "damaged"}
    assert Supervisor(paths, autostart=False).repair(bad.name).started_at is None


def test_runs_tab_lists_a_damaged_job_offers_repair_and_delete(paths):
    good = create_job(paths, "selftest", {"steps": 1}, "good one", status="completed")
    bad = _finished_job(paths)
    _rewrite("pid", "abc")(bad / "job.json")
    tab = _runs_tab(paths)
    out = tab.tick(bad.name, None, None)  # the whole tick, as the page timer runs it: no error
    table = out[0]
    statuses = {row[-1]: row[2] for row in table}
    assert statuses == {good.name: "completed", bad.name: "damaged"}
    header = out[2]
    assert "damaged job.json" in header and "pid must be a whole number" in header
    row, text = tab.damaged.show(bad.name)
    assert row.visible is True and str(bad) in text and "pid must be a whole number or null" in text
    assert tab.damaged.show(good.name)[0].visible is False
    tab.damaged.repair(bad.name)
    assert load_job(bad).status == "completed"
    # Damaged again: Delete… asks, then removes it.
    (bad / "job.json").write_text("")
    confirm = tab.ask_delete(bad.name)
    assert confirm[0].visible is True and bad.name in confirm[1]
    tab.delete(bad.name)
    assert not bad.exists() and good.is_dir()


def test_repair_while_the_worker_runs_keeps_it_running_and_not_resumable(paths):
    """job.json damaged under a live worker: the `running` event names the worker, so the rebuilt job
    is running with that pid (not interrupted: a Resume would start a second worker in the folder)."""
    sup = Supervisor(paths, min_poll_interval_s=0.0, grace_s=0.0, signal_wait_s=0.3)
    rec = sup.submit("selftest", {"steps": 400, "step_s": 0.05}, "long")
    d = sup.job_dir(rec.id)
    running = wait_for(lambda: sup.poll(force=True) and load_job(d).status == "running" and load_job(d),
                       60, what="the worker to run")
    try:
        (d / "job.json").write_text("{")
        rebuilt = sup.repair(rec.id)
        assert (rebuilt.status, rebuilt.pid, rebuilt.pid_start_time, rebuilt.pgid) == (
            "running", running.pid, running.pid_start_time, running.pgid)
        with pytest.raises(JobError, match="only stopped, interrupted or failed"):
            sup.resume(rec.id)
        with pytest.raises(JobError, match="stop it before deleting"):
            sup.delete(rec.id)
        sup.stop(rec.id)  # the rebuilt record still reaches the worker
        assert wait_finished(sup, rec.id).status == "stopped"
    finally:  # a failing test leaves no worker behind
        if procs.is_alive(running.pid, running.pid_start_time):
            procs.signal_group(running.pgid, running.pid, signal.SIGKILL)
