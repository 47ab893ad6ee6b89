"""Several processes through `accelerate launch`: two ranks on the CPU (gloo) train the demo model
through the supervisor; multi-machine settings reach accelerate and sd-scripts' command line."""

from __future__ import annotations

import re

import pytest

from backend.compat.detect import import_text
from backend.config import load_config
from backend.errors import ConfigError
from backend.jobs.launch import accelerate_flags, worker_argv
from backend.jobs.registry import create_job, load_job
from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths
from tests._jobs_fixtures import events_of, last_step, wait_finished, wait_for

# The demo made small (64 px, batch 2), two ranks on the CPU, the disk cache, state saved on stop.
TWO_RANKS = {"dataset": {"resolution": 64}, "sampling": {"every_n_steps": 0, "prompts": []},
             "saving": {"every_n_steps": 0, "every_n_epochs": 0, "save_state": True},
             "training": {"batch_size": 2, "num_processes": 2, "device": "cpu", "cache_latents": "disk"}}


def _config(ws, steps: int) -> dict:
    from backend.config import find_preset, load_config, resolve_paths, to_dict

    paths = WorkspacePaths(ws)
    cfg = load_config(find_preset("demo", paths))
    data = to_dict(resolve_paths(cfg, paths))
    for section, values in TWO_RANKS.items():
        data[section].update(values)
    data["training"]["max_steps"] = steps
    return data


def _local_losses(job_dir) -> dict[int, float]:
    text = (job_dir / "job.log").read_text()
    return {int(r): float(v) for v, r in re.findall(r"step 1: loss ([0-9.]+) on rank (\d) of 2", text)}


@pytest.fixture
def sup(demo_copy):
    s = Supervisor(WorkspacePaths(demo_copy), min_poll_interval_s=0.0, grace_s=120.0)
    yield s
    for rec in s.poll(force=True):
        if rec.status in ("running", "starting", "stopping"):
            s.stop(rec.id, grace_s=0)


def test_two_ranks_average_losses_and_gradients_and_only_rank_0_writes(sup, demo_copy):
    rec = sup.submit("train", _config(demo_copy, 6), "two-ranks")
    assert rec.num_processes == 2
    rec = wait_finished(sup, rec.id, timeout=600)
    d = sup.job_dir(rec.id)
    log = (d / "job.log").read_text()
    assert rec.status == "completed", rec.error or log[-3000:]
    assert "[rank 1]" in log and "rank 1 pid" in log  # both ranks ran
    result = rec.extra["result"]
    assert result["ranks_in_sync"] is True  # each rank trained on its own batches: gradients were averaged
    # One writer: each step's metric once, one output file, one ready event.
    metrics = events_of(sup, rec.id, "metric")
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert [e["phase"] for e in events_of(sup, rec.id, "phase")].count("ready") == 1
    assert next(e for e in events_of(sup, rec.id, "phase") if e["phase"] == "ready")["num_processes"] == 2
    assert sorted(p.name for p in (d / "output").iterdir()) == ["demo-lora.safetensors"]
    # The metric is the mean of the two ranks' losses (each rank logs its own at step 1).
    local = _local_losses(d)
    assert set(local) == {0, 1} and local[0] != local[1]
    assert metrics[0]["loss"] == pytest.approx((local[0] + local[1]) / 2, rel=1e-5)
    # The disk cache was filled by one rank and read by the other.
    cached = re.findall(r"\[rank (\d)\].*latents: (\d+) encoded, (\d+) reused", log)
    assert sorted(cached) == [("0", "18", "0"), ("1", "0", "18")], cached


def test_two_ranks_stop_together_and_resume_where_they_stopped(sup, demo_copy):
    reference = wait_finished(sup, sup.submit("train", _config(demo_copy, 16), "reference").id, timeout=600)
    assert reference.status == "completed", reference.error
    rec = sup.submit("train", _config(demo_copy, 16), "stopped")
    # Polling starts it once the reference's launcher has exited (until then it holds the one slot).
    wait_for(lambda: (sup.poll(force=True), last_step(sup, rec.id) >= 2)[1], timeout=300, what="step 2")
    sup.stop(rec.id)
    rec = wait_finished(sup, rec.id, timeout=300)
    assert rec.status == "stopped", rec.error
    stops = [c for c in events_of(sup, rec.id, "checkpoint") if c["reason"] == "stop"]
    assert len(stops) == 1 and stops[0]["state"]  # both ranks stopped at one step; rank 0 saved
    stopped_at = stops[0]["step"]
    assert stopped_at < 16
    rec = wait_finished(sup, sup.resume(rec.id).id, timeout=600)
    assert rec.status == "completed", rec.error
    got = {m["step"]: m["loss"] for m in events_of(sup, rec.id, "metric")}
    ref = {m["step"]: m["loss"] for m in events_of(sup, reference.id, "metric")}
    assert sorted(got) == list(range(1, 17))
    for step in range(1, 17):  # the same batches, noise and averaged gradients after the resume
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-6), step
    assert rec.extra["result"]["ranks_in_sync"] is True


def test_multi_machine_settings_reach_accelerate_launch(tmp_path):
    one = accelerate_flags(4, {"num_machines": 1})
    assert one[:4] == ["--multi_gpu", "--num_processes", "4", "--num_machines"]
    assert one[-2:] == ["--main_process_port", "0"]  # one machine: accelerate picks a free port
    training = {"num_processes": 4, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.1.2.3",
                "main_process_port": 29600}
    flags = accelerate_flags(4, training)
    assert flags == ["--multi_gpu", "--num_processes", "4", "--num_machines", "2", "--dynamo_backend", "no",
                     "--machine_rank", "1", "--main_process_ip", "10.1.2.3", "--main_process_port", "29600"]
    paths = WorkspacePaths(tmp_path / "ws")
    paths.jobs.mkdir(parents=True)
    d = create_job(paths, "train", {"training": training}, "nodes", num_processes=4)
    argv = worker_argv(d, load_job(d).num_processes)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"] and argv[3:-3] == flags
    assert argv[-3:] == ["-m", "backend.worker", str(d)]


@pytest.mark.parametrize("training, message", [
    ({"num_machines": 2, "num_processes": 3, "main_process_ip": "10.0.0.1"}, "multiple of num_machines"),
    ({"num_machines": 2, "num_processes": 2, "machine_rank": 2, "main_process_ip": "10.0.0.1"}, "below num_machines"),
    ({"num_machines": 2, "num_processes": 2}, "main_process_ip"),
])
def test_multi_machine_settings_are_checked(training, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"training": training})


def test_accelerate_multi_machine_flags_are_imported_and_exported(tmp_path):
    from backend.compat.export import export_config

    launch = ("accelerate launch --multi_gpu --num_processes 8 --num_machines 2 --machine_rank 1 "
              "--main_process_ip 10.0.0.5 --main_process_port 29555")
    cfg = import_text(f"{launch} train_network.py --network_dim 4 --max_train_steps 10").config
    t = cfg.training
    assert (t.num_processes, t.num_machines, t.machine_rank, t.main_process_ip, t.main_process_port) == \
        (8, 2, 1, "10.0.0.5", 29555)
    out = export_config(cfg, tmp_path / "kohya")
    assert out.command.startswith(launch + " train_network.py ")
    assert "training" not in out.extras  # sd-scripts' launcher carries all four


def test_two_machines_on_one_host_train_one_run(demo_workspace, tmp_path):
    """num_machines = 2 on localhost, one rank each, started as a user would on two machines (the
    command line, one workspace each): machine 0 writes the LoRA; machine 1's job records its own end."""
    import shutil
    import socket
    import subprocess
    import sys

    from tests._training_fixtures import FAST, PROJECT_ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for machine in (0, 1):
        ws = tmp_path / f"machine{machine}"
        (ws / "models").mkdir(parents=True)
        (ws / "models" / "demo-sd15").symlink_to(demo_workspace / "models" / "demo-sd15")
        shutil.copytree(demo_workspace / "datasets", ws / "datasets")
        sets = [*FAST, "training.max_steps=3", "training.num_processes=2", "training.num_machines=2",
                f"training.machine_rank={machine}", "training.device='cpu'",
                "training.main_process_ip='127.0.0.1'", f"training.main_process_port={port}"]
        argv = [sys.executable, "-m", "backend", "train", "demo", "--workspace", str(ws), "--quiet"]
        procs.append(subprocess.Popen(argv + [a for s in sets for a in ("--set", s)], cwd=PROJECT_ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    jobs = [next((tmp_path / f"machine{m}" / "jobs").iterdir()) for m in (0, 1)]
    main, other = (load_job(j) for j in jobs)
    assert main.status == other.status == "completed"
    assert main.extra["output"] and (jobs[0] / main.extra["output"]).is_file()
    assert "output" not in other.extra and not any((jobs[1] / "output").iterdir())
    assert main.extra["result"]["ranks_in_sync"] and other.extra["result"]["ranks_in_sync"]
    assert main.extra["result"]["final_loss"] == other.extra["result"]["final_loss"]  # one averaged loss
