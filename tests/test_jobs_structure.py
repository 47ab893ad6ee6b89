"""The jobs machinery's single points: set_status (its order), the JobKind registry, one folder listing
per poll, orphan temp files cleaned at start, and a full disk named with its folder and free space."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from backend.errors import ConfigError, DiskFullError, JobError
from backend.files import atomic_write_json, file_lock, is_orphan_temp_name, temp_path
from backend.jobs import procs
from backend.jobs.events import EventReader
from backend.jobs.kinds import KINDS, guess_kind, job_kind, load_function
from backend.jobs.registry import create_job, load_job, update_job
from backend.jobs.status import set_status
from backend.jobs.supervisor import Supervisor
from backend.paths import PROJECT_ROOT, open_workspace
from tests._jobs_fixtures import wait_finished


@pytest.fixture
def paths(tmp_path):
    return open_workspace(tmp_path / "ws")


def _statuses(d):
    return [e["status"] for e in EventReader(d).read_all() if e["type"] == "status"]


def test_set_status_writes_the_event_first_then_job_json(paths, monkeypatch):
    d = create_job(paths, "selftest", {}, "order", status="running")
    rec, changed = set_status(d, "stopping", stop_grace_s=5.0, event={"resume": False})
    assert changed and load_job(d).status == "stopping" and load_job(d).stop_grace_s == 5.0
    assert EventReader(d).read_all()[-1] | {"t": 0} == {"t": 0, "type": "status", "status": "stopping", "resume": False}
    # job.json cannot be written (disk full): the event is there, job.json still says stopping.
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(DiskFullError, match="no space left"):
        set_status(d, "stopped")
    monkeypatch.undo()
    assert _statuses(d)[-1] == "stopped" and load_job(d).status == "stopping"


def test_set_status_writes_nothing_when_refused_and_no_event_for_the_same_status(paths):
    d = create_job(paths, "selftest", {}, "guarded", status="completed")
    rec, changed = set_status(d, "stopping", when=lambda r: r.status in ("running",))
    assert not changed and rec.status == "completed" and _statuses(d) == []
    set_status(d, "completed", exit_code=0)
    assert _statuses(d) == [] and load_job(d).exit_code == 0
    with pytest.raises(ValueError, match="invalid status"):
        set_status(d, "exploded")


def test_job_kinds_are_declared_once_and_resolve():
    for kind in KINDS.values():
        assert callable(load_function(kind.runner, kind.name))
        if kind.validator:
            assert callable(load_function(kind.validator, kind.name))
    assert [k for k in KINDS.values() if not k.takes_slot] == [KINDS["download"], KINDS["download_url"]]
    assert {k.name for k in KINDS.values() if k.resumable} == {"train", "selftest"}
    assert guess_kind({"model": {}, "dataset": {}, "network": {}, "training": {}}) == "train"
    assert guess_kind({"steps": 3}) == "selftest" and guess_kind({"what": 1}) is None
    with pytest.raises(JobError, match="known kinds: caption, download"):
        job_kind("nope")


def test_poll_lists_the_jobs_folder_once(paths, monkeypatch):
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    done = create_job(paths, "selftest", {}, "old", status="completed")
    rec = sup.submit("selftest", {"steps": 1, "step_s": 0.01}, "one", start=False)
    listed = []
    real = os.scandir

    def counting(path="."):
        if os.fspath(path) == os.fspath(paths.jobs):
            listed.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    recs = sup.poll(force=True)  # starts the queued job and reports it started
    assert len(listed) == 1
    assert {r.id: r.status for r in recs} == {done.name: "completed", rec.id: "starting"}
    monkeypatch.undo()
    wait_finished(sup, rec.id)


def test_orphan_temp_files_are_removed_at_start_only_when_safe(paths):
    old = time.time() - 3600
    done = create_job(paths, "selftest", {}, "killed while saving", status="stopped")
    busy = create_job(paths, "selftest", {}, "still running", status="running")
    me = os.getpid()  # a live worker: this test process stands in for it (never signalled: no stop)
    update_job(busy, lambda r: setattr(r, "pid", me) or setattr(r, "pid_start_time", procs.start_time(me)))
    (paths.root / "cache" / "latents" / "ab").mkdir(parents=True)
    orphans = [temp_path(done / "checkpoints" / "lora-step00000010.safetensors", "write"),
               temp_path(done / "job.json"),
               temp_path(paths.root / "cache" / "latents" / "ab" / "0123.safetensors")]
    kept = [temp_path(busy / "checkpoints" / "state.pt", "write"),  # its worker may be writing it
            temp_path(done / "job.json"),                            # just made: a write in progress
            done / "checkpoints" / "notes.tmp"]                      # not one of ours
    kept[-1].write_text("mine")
    for p in orphans + kept[:1]:
        os.utime(p, (old, old))
    Supervisor(paths, autostart=False)
    assert [p.exists() for p in orphans] == [False, False, False]
    assert [p.exists() for p in kept] == [True, True, True]
    update_job(busy, lambda r: setattr(r, "status", "failed"))
    assert is_orphan_temp_name(".job.json.abcd_123.tmp") and not is_orphan_temp_name("job.json")


def test_the_worker_removes_its_own_temp_files_when_it_starts(paths):
    d = create_job(paths, "selftest", {"steps": 1, "step_s": 0.01}, "by hand")
    left = temp_path(d / "checkpoints" / "state.json", "write")
    done = subprocess.run([sys.executable, "-m", "backend.worker", str(d)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not left.exists()
    assert "removed 1 temp file(s) left by an earlier run" in done.stdout


def test_disk_full_names_the_folder_and_its_free_space(paths, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError) as err:
        create_job(paths, "selftest", {}, "no room")
    msg = str(err.value)
    assert msg.startswith(f"no space left on the device holding {paths.jobs}") and " free)" in msg
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert list(paths.jobs.iterdir()) == []  # no half-made job


def test_disk_full_during_a_checkpoint_save_keeps_the_old_file(tmp_path, monkeypatch):
    import torch

    from backend.training import saving

    target = tmp_path / "checkpoints" / "run.state.pt"
    saving.atomic_torch_save({"step": 1}, target)

    def half_then_full(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a state")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(DiskFullError, match=f"no space left on the device holding {target.parent} "
                                            r"while writing run.state.pt \(.* free\)"):
        saving.atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["run.state.pt"]


def test_disk_full_during_a_dataset_import_is_named(paths, tmp_path, monkeypatch):
    import shutil

    from PIL import Image

    from backend.dataset import importer

    src = tmp_path / "set"
    src.mkdir()
    Image.new("RGB", (32, 32)).save(src / "a.png")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(DiskFullError, match=f"no space left on the device holding {paths.datasets} while "
                                            f"copying {src}; nothing was changed"):
        importer.import_folder(paths, src, "copy", copy=True)
    assert not (paths.datasets / "copy").exists()


def test_one_file_lock_serializes_processes(tmp_path):
    lock = tmp_path / ".lock"
    code = ("import sys, time; from backend.files import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('in', flush=True); time.sleep(0.5)\n")
    with file_lock(lock):
        child = subprocess.Popen([sys.executable, "-c", code, str(lock)], cwd=PROJECT_ROOT,
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert child.poll() is None  # waiting for our lock
    assert child.communicate(timeout=30)[0] == "in\n"
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_expected_errors_are_one_line_in_job_log_unexpected_keep_their_traceback(paths):
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    known = wait_finished(sup, sup.submit("selftest", {"fail_at_start": "dataset folder is empty"}, "known").id)
    odd = wait_finished(sup, sup.submit("selftest", {"steps": 2, "step_s": -1.0}, "odd").id)
    log = (paths.jobs / known.id / "job.log").read_text()
    assert f"job {known.id} failed: dataset folder is empty" in log and "Traceback" not in log
    assert known.error == "dataset folder is empty"
    log = (paths.jobs / odd.id / "job.log").read_text()
    assert "Traceback (most recent call last)" in log and "ValueError" in log
    assert odd.status == "failed" and odd.error.startswith("ValueError")


def test_a_job_whose_config_was_broken_then_reverted_resumes(paths):
    sup = Supervisor(paths, min_poll_interval_s=0.0)
    rec = sup.submit("selftest", {"steps": 8, "step_s": 0.01, "save_every": 2}, "edited")
    d = paths.jobs / rec.id
    assert wait_finished(sup, rec.id).status == "completed"
    good = (d / "config.toml").read_text()
    set_status(d, "stopped")  # as if stopped midway: resumable
    # A broken edit is refused at resume, naming the option; the job stays resumable.
    (d / "config.toml").write_text(good.replace("steps = 8", 'steps = "many"'))
    with pytest.raises(ConfigError, match="steps: must be int"):
        sup.resume(rec.id)
    assert load_job(d).status == "stopped"
    # A run that failed on a broken config (edited after it was queued) resumes once it is undone.
    idle = Supervisor(paths, min_poll_interval_s=0.0, autostart=False)
    (d / "config.toml").write_text(good)
    idle.resume(rec.id)
    (d / "config.toml").write_text("steps = [")
    assert wait_finished(sup, rec.id).status == "failed"
    (d / "config.toml").write_text(good)
    assert sup.resume(rec.id).status in ("queued", "starting", "running")
    assert wait_finished(sup, rec.id).status == "completed"
