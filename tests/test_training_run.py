"""The real command line and worker process: a demo run end to end, then stop and resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from backend.jobs import control
from backend.jobs.registry import load_job, update_job
from tests._training_fixtures import (
    FAST,
    PROJECT_ROOT,
    events,
    new_job,
    start_worker,
    wait_for_event,
    wait_worker,
)

# Shared by the reference run and the stopped-and-resumed one: they must match step for step.
RUN = ["training.max_steps=24", "schedule.lr_scheduler='linear'", "dataset.shuffle_caption=true",
       "dataset.flip_aug=true", "network.dropout=0.1", "saving.save_state=true"]


@pytest.fixture(scope="module")
def reference(demo_workspace, tmp_path_factory):
    """`python -m backend train demo …` in a subprocess: exit code, printed lines, the job folder."""
    import shutil

    ws = tmp_path_factory.mktemp("cli")
    (ws / "models").mkdir()
    (ws / "models" / "demo-sd15").symlink_to(demo_workspace / "models" / "demo-sd15")
    shutil.copytree(demo_workspace / "datasets", ws / "datasets")
    sets = [*FAST, *RUN, "saving.every_n_steps=12", "saving.keep_last_n=1", "sampling.every_n_steps=12",
            "sampling.prompts=[{prompt='dashdemo, red circle', width=64, height=64, steps=2, seed=3}]"]
    argv = [sys.executable, "-m", "backend", "train", "demo", "--workspace", str(ws)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_dir = next((ws / "jobs").iterdir())
    return ws, job_dir, proc


def test_cli_run_writes_lora_checkpoints_samples_and_events(reference, demo_workspace):
    ws, job_dir, proc = reference
    assert f"job folder: {job_dir}" in proc.stdout
    out = job_dir / "output" / "demo-lora.safetensors"
    assert f"output: {out}" in proc.stdout and out.is_file()
    assert load_job(job_dir).status == "completed"
    progress = events(job_dir, "progress")
    assert progress[0]["step"] == 1 and progress[-1]["step"] == 24 and progress[-1]["total"] == 24 and "eta_s" in progress[-1]
    metrics = events(job_dir, "metric")
    assert [m["step"] for m in metrics] == list(range(1, 25)) and all("loss" in m and "lr" in m for m in metrics)
    # keep_last_n = 1: only the newest periodic checkpoint is left, with its resumable state
    ckpts = sorted(p.name for p in (job_dir / "checkpoints").iterdir())
    assert ckpts == ["demo-lora-step00000012.safetensors", "demo-lora-step00000012.state.pt"]
    samples = events(job_dir, "sample")
    assert [s["step"] for s in samples] == [12, 24]
    assert all((job_dir / s["path"]).is_file() and s["seed"] == 3 and s["index"] == 0 for s in samples)
    kinds = [c["reason"] for c in events(job_dir, "checkpoint")]
    assert kinds == ["periodic", "final"]


def test_output_metadata_is_sd_scripts_style(reference):
    _, job_dir, _ = reference
    with safe_open(str(job_dir / "output" / "demo-lora.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_network_module"] == "lycoris.kohya"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert json.loads(meta["ss_network_args"])["algo"] == "lora"
    assert meta["ss_output_name"] == "demo-lora" and meta["ss_steps"] == "24"
    assert meta["ss_epoch"] == "1"  # 24 steps of the 45 in epoch 1: kohya writes the 1-based epoch
    assert json.loads(meta["ss_dataset_dirs"]) == {"5_demo": {"n_repeats": 5, "img_count": 18}}
    assert json.loads(meta["ss_tag_frequency"])["5_demo"]["dashdemo"] == 18
    assert json.loads(meta["ss_bucket_info"])["buckets"]["0"]["resolution"] == [64, 64]
    assert meta["ss_num_train_images"] == "90" and meta["ss_lr_scheduler"] == "linear"
    assert float(meta["ss_training_finished_at"]) >= float(meta["ss_training_started_at"])
    assert meta["modelspec.trigger_phrase"] == "dashdemo" and meta["modelspec.title"] == "LoRA Dash demo"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8


def test_output_loads_in_diffusers_and_changes_the_image(reference, demo_workspace):
    from diffusers import StableDiffusionPipeline

    _, job_dir, _ = reference
    pipe = StableDiffusionPipeline.from_pretrained(demo_workspace / "models" / "demo-sd15", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def draw():
        return pipe("dashdemo, red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images

    before = draw()
    pipe.load_lora_weights(str(job_dir / "output" / "demo-lora.safetensors"))
    assert (draw() - before).abs().max() > 1e-3


def test_stop_then_resume_continues_steps_schedule_and_data(reference, demo_copy):
    _, ref_dir, _ = reference
    job = new_job(demo_copy, RUN)
    proc = start_worker(job)
    wait_for_event(job, lambda e: e.get("type") == "progress" and e.get("step", 0) >= 2, proc)
    control.request(job, "stop")
    assert wait_worker(proc, job) == 0
    assert load_job(job).status == "stopped"
    stop_ckpt = [c for c in events(job, "checkpoint") if c["reason"] == "stop"]
    assert len(stop_ckpt) == 1 and (job / stop_ckpt[0]["state"]).is_file()
    stopped_at = stop_ckpt[0]["step"]
    assert 2 <= stopped_at < 24
    n_before = len(events(job))

    def mark_resume(rec):
        rec.resume, rec.status = True, "starting"

    update_job(job, mark_resume)
    control.clear(job)
    proc = start_worker(job)
    assert wait_worker(proc, job) == 0
    assert load_job(job).status == "completed"
    after = events(job)[n_before:]
    steps = [e["step"] for e in after if e["type"] == "progress"]  # throttled to 4 a second
    assert steps[0] == stopped_at + 1 and steps[-1] == 24 and steps == sorted(steps)
    assert [e["step"] for e in after if e["type"] == "metric"] == list(range(stopped_at + 1, 25))
    ref = {m["step"]: m for m in events(ref_dir, "metric")}
    got = {m["step"]: m for m in events(job, "metric")}
    assert sorted(got) == list(range(1, 25))
    for step in range(1, 25):  # same data order, noise, dropout and learning-rate schedule
        assert got[step]["lr"] == pytest.approx(ref[step]["lr"], rel=1e-9)
        assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-4, abs=1e-6), step
