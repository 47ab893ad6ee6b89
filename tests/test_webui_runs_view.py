"""What the Runs tab shows, from real job folders: events by offset, chart, gallery, table, files."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from backend.compare.runs import load_run
from backend.jobs.events import EventWriter
from backend.jobs.registry import create_job, load_job, update_job
from backend.paths import WorkspacePaths
from webui import runs_view as rv


@pytest.fixture
def job(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    return paths, create_job(paths, "train", {"network": {"rank": 4}}, "my run", status="queued")


def _png(path, colour):
    Image.new("RGB", (32, 32), colour).save(path)


def test_events_are_read_by_offset_and_fold_into_the_view(job):
    _, d = job
    w = EventWriter(d)
    w.emit("status", status="running")
    for step in (1, 2, 3):
        w.emit("metric", step=step, loss=1.0 / step, lr=1e-4 * step)
        w.emit("progress", step=step, total=10, epoch=1, it_s=2.5, eta_s=(10 - step) / 2.5)
    run = load_run(d)
    view = rv.new_view(d.name)
    assert rv.read_new(view, run) >= {"metrics", "progress", "status"}
    assert run.loss_series().steps == [1, 2, 3] and run.lr_series()["lr"].values == pytest.approx([1e-4, 2e-4, 3e-4])
    assert rv.read_new(view, run.refresh()) == set()  # nothing new: nothing changed
    # A half-written line waits for its end.
    with open(d / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"t": 1, "type": "metric", "step": 4, "loss": 0.2})[:20])
    assert rv.read_new(view, run.refresh()) == set() and run.loss_series().steps == [1, 2, 3]
    with open(d / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"t": 1, "type": "metric", "step": 4, "loss": 0.2})[20:] + "\n")
    assert rv.read_new(view, run.refresh()) == {"metrics"} and run.loss_series().steps[-1] == 4


def test_loss_chart_has_raw_smoothed_and_lr_on_a_second_axis(job):
    _, d = job
    w = EventWriter(d)
    for s in range(1, 50):
        w.emit("metric", step=s, loss=1.0 + (-1) ** s * 0.5, lr=1e-4)
    fig = rv.run_figure(load_run(d))
    names = [t.name for t in fig.data]
    assert names == ["loss", "loss (smoothed)", "learning rate"]
    assert fig.data[2].yaxis == "y2" and fig.layout.yaxis2.overlaying == "y"
    smooth = fig.data[1].y
    assert max(smooth[10:]) - min(smooth[10:]) < 0.5  # smoothed swings far less than the raw ±0.5


def test_gallery_groups_by_step_and_refuses_paths_outside_the_job(job, tmp_path):
    _, d = job
    _png(d / "samples" / "s10_0.png", (255, 0, 0))
    _png(d / "samples" / "s10_1.png", (0, 255, 0))
    _png(d / "samples" / "s20_0.png", (0, 0, 255))
    _png(tmp_path / "outside.png", (1, 1, 1))
    w = EventWriter(d)
    w.emit("sample", path="samples/s10_0.png", prompt="a cat", seed=1, step=10)
    w.emit("sample", path=str(d / "samples" / "s10_1.png"), prompt="a dog", seed=2, step=10)
    w.emit("sample", path="samples/s20_0.png", prompt="a cat", seed=1, step=20)
    w.emit("sample", path="../../../outside.png", prompt="x", seed=0, step=30)
    w.emit("sample", path=str(tmp_path / "outside.png"), prompt="x", seed=0, step=30)
    w.emit("sample", path="samples/missing.png", prompt="x", seed=0, step=30)
    items = rv.gallery_items(load_run(d))
    assert [caption for _, caption in items] == [
        "step 20 · seed 1 · a cat", "step 10 · seed 1 · a cat", "step 10 · seed 2 · a dog"]


def test_table_rows_progress_and_duration(job):
    paths, d = job

    def change(rec):
        rec.status, rec.started_at = "running", time.time() - 75

    update_job(d, change)
    EventWriter(d).emit("progress", step=7, total=20, it_s=0.5, eta_s=26)
    cache = rv.ProgressCache()
    rows = rv.jobs_rows([cache.run(paths.jobs / d.name)])
    name, kind, status, progress, _, duration, jid = rows[0]
    assert (name, kind, status, progress, jid) == ("my run", "train", "running", "7/20", d.name)
    assert duration.startswith("1:1")
    html = rv.progress_html(load_job(d), cache.get(d))
    assert "step 7/20" in html and "2.0 s/it" in html and "ETA 0:26" in html and "width:35.0%" in html


def test_times_that_cannot_be_shown_are_blank():
    for bad in (1e20, -1e20, float("inf"), float("-inf"), float("nan")):
        assert rv.fmt_time(bad) == ""
    assert rv.fmt_duration(float("inf")) == rv.fmt_duration(float("nan")) == ""
    assert rv.fmt_duration(75) == "1:15" and rv.fmt_time(0) == ""


def test_files_are_the_output_lora_and_the_checkpoints(job):
    _, d = job
    assert rv.files_of(d) == (None, [])
    (d / "checkpoints" / "my-000010.safetensors").write_bytes(b"1")
    (d / "checkpoints" / "state-000010").mkdir()
    (d / "output" / "my.safetensors").write_bytes(b"2")
    lora, ckpts = rv.files_of(d)
    assert lora.name == "my.safetensors" and [p.name for p in ckpts] == ["my-000010.safetensors"]


def test_preparation_phases_show_before_the_first_step(job):
    paths, d = job

    def change(rec):
        rec.status, rec.started_at = "running", time.time()

    update_job(d, change)
    EventWriter(d).emit("phase", phase="cache_latents", done=3, total=10)
    run = load_run(d)
    assert "cache latents 3/10" in rv.progress_html(load_job(d), rv.progress_state(run))
    EventWriter(d).emit("progress", step=1, total=10, peak_memory_mb=2048)
    html = rv.progress_html(load_job(d), rv.progress_state(run.refresh()))
    assert "step 1/10" in html and "cache latents" not in html and "peak memory 2.0 GB" in html
