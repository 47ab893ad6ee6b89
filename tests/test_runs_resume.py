"""Issue 17 bug 5, through the real worker: a run stopped and resumed. The Runs table starts it at its
first start and counts both runs, as Compare does; `ss_epoch` is the 1-based epoch the Runs tab shows."""

from __future__ import annotations

import time

import pytest
from safetensors import safe_open

from backend.compare.runs import load_run
from backend.jobs import control
from backend.jobs.events import EventReader
from backend.jobs.registry import load_job
from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths
from tests._jobs_fixtures import wait_finished
from tests._training_fixtures import new_job, start_worker, wait_for_event, wait_worker
from webui import runs_view as rv

STEPS_PER_EPOCH = 9   # the demo's 18 images, 1 repeat, batch 2
STEPS = 18            # the run ends in epoch 2, and a loaded machine still stops it well before


def _meta(path):
    with safe_open(str(path), "pt") as fh:
        return fh.metadata()


@pytest.fixture(scope="module")
def resumed(demo_workspace, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("resume") / "ws"
    (root / "models").mkdir(parents=True)
    (root / "models" / "demo-sd15").symlink_to(demo_workspace / "models" / "demo-sd15")
    shutil.copytree(demo_workspace / "datasets", root / "datasets")
    (root / "datasets" / "demo" / "5_demo").rename(root / "datasets" / "demo" / "1_demo")
    job = new_job(root, [f"training.max_steps={STEPS}", "saving.save_state=true"])
    proc = start_worker(job)
    wait_for_event(job, lambda e: e.get("type") == "progress" and e.get("step", 0) >= 1, proc)
    control.request(job, "stop")
    assert wait_worker(proc, job) == 0 and load_job(job).status == "stopped"
    time.sleep(2.0)  # the resume starts clearly later than the first run ended
    sup = Supervisor(WorkspacePaths(root), min_poll_interval_s=0.0)
    sup.resume(job.name)
    rec = wait_finished(sup, job.name, timeout=300)
    assert rec.status == "completed", rec.error
    return job


def test_runs_table_counts_from_the_first_start_over_both_runs(resumed):
    job = resumed
    statuses = [(e["t"], e["status"]) for e in EventReader(job).read_all() if e["type"] == "status"]
    # A run starts at its first "starting" or "running" event (a job made by `train` is created as
    # starting, so its worker's first status event is "running").
    starts = [t for i, (t, s) in enumerate(statuses)
              if s in ("starting", "running") and (i == 0 or statuses[i - 1][1] not in ("starting", "running"))]
    ends = [t for t, s in statuses if s in ("stopped", "completed")]
    assert len(starts) == 2 and len(ends) == 2, statuses
    running = (ends[0] - starts[0]) + (ends[1] - starts[1])
    rec = load_job(job)
    assert rec.started_at == pytest.approx(starts[1])     # job.json keeps the latest start: the resume

    [row] = rv.jobs_rows([rv.ProgressCache().run(job)])
    name, kind, status, progress, started, duration, jid = row
    assert (status, progress) == ("completed", f"{STEPS}/{STEPS}")
    assert started == rv.fmt_time(starts[0])
    assert duration == rv.fmt_duration(running)          # both runs, not only the resumed one
    run = load_run(job)
    assert run.started_at == starts[0]
    assert run.outcome().wall_time_s == pytest.approx(running)   # what Compare shows


def test_ss_epoch_is_the_1_based_epoch_the_runs_tab_shows(resumed):
    job = resumed
    run = load_run(job)
    assert run.epoch == 2 and run.last_step == STEPS
    assert _meta(job / "output" / "demo-lora.safetensors")["ss_epoch"] == "2" == str(run.epoch)
    [stop] = [e for e in EventReader(job).read_all() if e["type"] == "checkpoint" and e["reason"] == "stop"]
    expected = (stop["step"] - 1) // STEPS_PER_EPOCH + 1
    assert stop["epoch"] == expected
    assert _meta(job / stop["path"])["ss_epoch"] == str(expected)
