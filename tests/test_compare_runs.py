"""Compare: reading runs from hand-written job folders, smoothing, the settings diff and the grid."""

from __future__ import annotations

import json
import math
import tomllib

import pytest
import tomli_w
from PIL import Image

from backend.compare.diff import settings_diff
from backend.compare.grid import build_grid, nearest, render_grid, save_grid_png
from backend.compare.runs import RunCache, SampleRef, ema_smooth, load_run, load_runs
from backend.compare.summary import comparison_data, outcome_table
from backend.errors import JobError
from backend.jobs.registry import CONFIG_FILE
from backend.paths import WorkspacePaths
from tests._compare_fixtures import T0, make_run, write_events


@pytest.fixture
def ws(tmp_path):
    return WorkspacePaths(tmp_path / "ws").ensure()


def test_ema_smooth_matches_tensorboard_debiased_ema():
    values = [1.0, 0.0, 1.0, 0.0]
    w = 0.5
    # By hand: last = 0.5, 0.25, 0.625, 0.3125; debias 1-0.5^n = .5, .75, .875, .9375
    expected = [0.5 / 0.5, 0.25 / 0.75, 0.625 / 0.875, 0.3125 / 0.9375]
    assert ema_smooth(values, w) == pytest.approx(expected)
    assert ema_smooth(values, 0.0) == pytest.approx(values)
    assert ema_smooth([3.0, 3.0, 3.0], 0.9) == [3.0, 3.0, 3.0]      # constant: unchanged
    out = ema_smooth([1.0, float("nan"), 1.0, 3.0], 0.5)
    assert math.isnan(out[1]) and out[0] == 1.0 and out[3] > out[2]  # NaN passes through, not poisoning
    with pytest.raises(ValueError, match="smoothing"):
        ema_smooth(values, 1.0)


def test_load_run_reads_series_samples_and_outcome(ws):
    d = make_run(ws, "alpha", {"training.batch_size": 2, "training.gradient_accumulation_steps": 3},
                 steps=20, step_s=0.5, lora_bytes=5000)
    # A partial last line (the worker is mid-write) and a garbage line are ignored.
    write_events(d, [], partial_tail='{"t": 1, "type": "metric", "st')
    run = load_run(d)
    assert run.loss_series().steps == list(range(1, 21))
    assert list(run.lr_series()) == ["lr"]
    assert run.images_per_step == 6
    assert run.sample_steps() == [10, 20]
    assert all(s.path.is_file() and s.path.is_absolute() for s in run.samples)
    o = run.outcome(smoothing=0.6)
    assert o.status == "completed" and o.steps == 20 and o.total_steps == 20
    assert o.wall_time_s == pytest.approx(1 + 20 * 0.5 + 1)   # starting → completed
    assert o.it_s == pytest.approx(2.0)
    assert o.peak_memory_mb == pytest.approx(1500.0)
    assert o.lora_size_bytes == 5000 and o.lora_path.name == "lora.safetensors"
    assert o.final_loss == pytest.approx(ema_smooth(run.loss_series().values, 0.6)[-1])

    # Finishing the partial line and appending: refresh reads only what is new.
    with open(d / "events.jsonl", "a") as fh:
        fh.write('ep": 21}\n' + json.dumps({"t": T0 + 99, "type": "metric", "step": 21, "loss": 0.1}) + "\n")
    run.refresh()
    assert run.loss_series().steps[-1] == 21 and len(run.loss_series().steps) == 21


def test_run_cache_reads_config_toml_again_after_an_edit(ws):
    """config.toml is edited before a Resume: Compare must show the new settings without a restart."""
    d = make_run(ws, "edited", {"training.batch_size": 1, "saving.output_name": "old"})
    cache = RunCache(ws)
    assert cache.get([d.name])[0].images_per_step == 1
    config = tomllib.loads((d / CONFIG_FILE).read_text())
    config["training"]["batch_size"], config["saving"]["output_name"] = 4, "renamed"
    (d / CONFIG_FILE).write_text(tomli_w.dumps(config))
    run = cache.get([d.name])[0]
    assert run.images_per_step == 4 and run.config["saving"]["output_name"] == "renamed"
    (d / CONFIG_FILE).write_text("not = [toml")  # broken by the edit: an empty config, no error
    assert cache.get([d.name])[0].config == {}


def test_load_runs_names_an_unknown_job(ws):
    with pytest.raises(JobError, match="no job 'nope'"):
        load_runs(ws, ["nope"])


def test_diff_lists_exactly_the_changed_fields(ws):
    a = make_run(ws, "a", {"network.rank": 8, "optimizer.lr": 1e-4, "dataset.path": "/data/x"})
    b = make_run(ws, "b", {"network.rank": 16, "optimizer.lr": 1e-4, "dataset.path": "/data/y",
                           "schedule.lr_scheduler": "cosine"})
    rows = settings_diff([load_run(a).config, load_run(b).config])
    assert [r.path for r in rows] == ["dataset.path", "network.rank", "schedule.lr_scheduler"]
    assert rows[1].values == (8, 16) and rows[1].label == "Rank (dim)"
    # 1 and 1.0 (TOML may write either) are the same value; a key a file leaves out counts as its default.
    assert settings_diff([{"network": {"alpha": 4}}, {"network": {"alpha": 4.0}}]) == []
    assert settings_diff([{}, {"network": {"rank": 8}}]) == []


def test_grid_rows_columns_and_nearest_step(ws):
    prompts = (("a cat", 1), ("a dog", 2))
    a = make_run(ws, "a", steps=30, sample_steps=(10, 20, 30), prompts=prompts)
    b = make_run(ws, "b", steps=24, sample_steps=(12, 24), prompts=prompts + (("only b", 3),))
    runs = load_runs(ws, [a.name, b.name])
    grid = build_grid(runs, step=21)
    assert grid.rows == [("a cat", 1), ("a dog", 2)]          # "only b" is in one run: no row
    assert grid.labels == ["a", "b"] and grid.run_ids == [a.name, b.name]
    assert [[c.step for c in row] for row in grid.cells] == [[20, 24], [20, 24]]
    assert all(c.prompt == p and c.seed == s for (p, s), row in zip(grid.rows, grid.cells, strict=True) for c in row)
    assert grid.steps == [10, 12, 20, 24, 30]
    assert build_grid(runs).step == 30                         # default: the last sampled step
    assert [c.step for c in build_grid(runs, 16).cells[0]] == [20, 12]  # 16 is nearer 20 (a) and 12 (b)
    assert [c.step for c in build_grid(runs, 15).cells[0]] == [10, 12]  # tie at 5 either side → the earlier


def test_nearest_prefers_the_earlier_step_on_a_tie_and_the_last_draw_at_one_step(tmp_path):
    refs = [SampleRef(10, "p", 1, tmp_path / "a"), SampleRef(20, "p", 1, tmp_path / "b"),
            SampleRef(20, "p", 1, tmp_path / "c")]
    assert nearest(refs, 15).path.name == "a"
    assert nearest(refs, 19).path.name == "c"
    assert nearest([], 5) is None


def test_runs_without_common_prompts_still_compare_and_say_why(ws, tmp_path):
    a = make_run(ws, "a", prompts=(("a cat", 1),))
    b = make_run(ws, "b", prompts=(("a cat", 2),))              # same prompt, other seed
    c = make_run(ws, "c", sample_steps=())
    runs = load_runs(ws, [a.name, b.name, c.name])
    grid = build_grid(runs)
    assert grid.empty
    assert "No sample prompt and seed is common" in grid.reason
    assert "'a cat' seed 1" in grid.reason and "'a cat' seed 2" in grid.reason
    assert "c: no sample prompts in its settings" in grid.reason
    headers, rows = outcome_table(runs)
    assert len(rows) == 3 and all(r[6] != "—" for r in rows)   # losses still there
    data = comparison_data(runs)
    assert data["grid"]["rows"] == [] and data["grid"]["reason"] == grid.reason
    out = save_grid_png(grid, tmp_path / "empty.png")
    assert Image.open(out).size[0] > 200


def test_grid_png_has_one_cell_per_row_and_run(ws, tmp_path):
    a = make_run(ws, "a", prompts=(("a cat", 1), ("a dog", 2)), color=(250, 0, 0))
    b = make_run(ws, "b", prompts=(("a cat", 1), ("a dog", 2)), color=(0, 0, 250))
    grid = build_grid(load_runs(ws, [a.name, b.name]), 20)
    img = render_grid(grid, cell=64)
    assert img.size == (240 + 2 * (64 + 8) + 8, 44 + 2 * (64 + 22 + 8) + 8)
    path = save_grid_png(grid, tmp_path / "grid.png", cell=64)
    png = Image.open(path).convert("RGB")
    # The centre of each cell is its run's colour (red column, then blue column), in both rows.
    for r in range(2):
        y = 44 + r * (64 + 22 + 8) + 32
        red, blue = png.getpixel((240 + 32, y)), png.getpixel((240 + 72 + 32, y))
        assert red[0] > 200 and red[2] < 60, red
        assert blue[2] > 200 and blue[0] < 60, blue
