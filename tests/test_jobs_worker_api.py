"""The worker entry run directly, the notebook API and the jobs commands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from backend.errors import JobError
from backend.jobs import cli
from backend.jobs.events import EventReader
from backend.jobs.kinds import load_function, resolve_runner
from backend.jobs.registry import create_job, load_job
from backend.paths import PROJECT_ROOT, open_workspace


@pytest.fixture
def paths(tmp_path):
    return open_workspace(tmp_path / "ws")


def _run_worker(d):
    return subprocess.run([sys.executable, "-m", "backend.worker", str(d)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_worker_run_by_hand_claims_the_job_and_completes(paths):
    d = create_job(paths, "selftest", {"steps": 3, "step_s": 0.01}, "by hand")
    done = _run_worker(d)
    assert done.returncode == 0, done.stdout + done.stderr
    rec = load_job(d)
    assert rec.status == "completed" and rec.pid and rec.pid_start_time and rec.exit_code == 0
    assert [e["status"] for e in EventReader(d).read_all() if e["type"] == "status"] == [
        "starting", "running", "completed"]


def test_unknown_kind_fails_with_the_known_kinds(paths):
    d = create_job(paths, "no-such-kind", {}, "odd")
    done = _run_worker(d)
    assert done.returncode == 1
    rec = load_job(d)
    assert rec.status == "failed" and "unknown job kind 'no-such-kind'" in rec.error and "selftest" in rec.error


def test_runner_whose_module_cannot_be_imported_names_the_cause():
    with pytest.raises(JobError, match="cannot load the 'x' job runner .no_such_module_xyz.: "
                                       "No module named 'no_such_module_xyz'"):
        load_function("no_such_module_xyz:run_job", "'x' job runner")
    with pytest.raises(JobError, match="does not exist"):
        load_function("backend.worker.selftest:no_such_function", "'x' job runner")
    assert resolve_runner("selftest").__name__ == "run_job"


def test_worker_refuses_a_folder_without_job_json(tmp_path):
    done = _run_worker(tmp_path)
    assert done.returncode == 2 and "not a job folder" in done.stderr


def test_workspace_api_start_follow_wait(tmp_path):
    from backend import Workspace

    ws = Workspace(tmp_path / "ws")
    rec = ws.start({"steps": 2, "step_s": 0.01}, ["steps=4"], name="notebook", kind="selftest")
    events = list(ws.follow(rec.id, poll_s=0.05, timeout=60))
    assert [e["step"] for e in events if e["type"] == "progress"] == [0, 1, 2, 3, 4]
    assert events[-1] == {**events[-1], "type": "status", "status": "completed"}
    assert ws.wait(rec.id, timeout=5).status == "completed"
    assert [j.id for j in ws.jobs()] == [rec.id]
    text, _ = ws.log(rec.id)
    assert "step 4/4" in text
    with pytest.raises(JobError, match="only stopped, interrupted or failed"):
        ws.resume(rec.id)


def test_workspace_start_training_config_is_validated_with_the_field_path(tmp_path):
    from backend import Workspace
    from backend.errors import ConfigError

    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ConfigError, match="training.max_steps"):
        ws.start({"training": {"max_steps": -1}})
    assert ws.jobs() == []


def _cli(args_list):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.common = common
    cli.add_parsers(sub)
    args = parser.parse_args(args_list)
    return args.func(args)


def test_cli_jobs_logs_stop_resume(tmp_path, capsys):
    from backend.jobs.supervisor import Supervisor

    paths = open_workspace(tmp_path / "ws")
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    rec = sup.submit("selftest", {"steps": 3, "step_s": 0.01}, "cli")
    ws = ["--workspace", str(paths.root)]
    assert _cli(["logs", rec.id, "--follow", *ws]) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert _cli(["jobs", "--json", *ws]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row == {**row, "id": rec.id, "kind": "selftest", "status": "completed", "step": 3,
                   "folder": str(paths.jobs / rec.id)}
    assert _cli(["jobs", *ws]) == 0
    assert rec.id in capsys.readouterr().out
    with pytest.raises(JobError, match="nothing to stop"):
        _cli(["stop", rec.id, *ws])
    with pytest.raises(JobError, match="only stopped, interrupted or failed"):
        _cli(["resume", rec.id, *ws])
