"""Compare tab pieces without Gradio: gallery cells, pickers, form parsing, the shared run cache."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from backend.compare import view
from backend.compare.grid import build_grid
from backend.compare.runs import RunCache, load_runs
from backend.errors import ConfigError, JobError
from backend.paths import WorkspacePaths
from tests._compare_fixtures import make_run


@pytest.fixture
def ws(tmp_path):
    return WorkspacePaths(tmp_path / "ws").ensure()


def test_gallery_items_row_by_row_with_placeholders(ws):
    a = make_run(ws, "a", prompts=(("cat", 1), ("dog", 2)))
    b = make_run(ws, "b", prompts=(("cat", 1),))
    c = make_run(ws, "c", prompts=(("dog", 2),))
    (c / "samples" / "step000020_0.png").unlink()               # a sample whose file is gone
    grid = build_grid(load_runs(ws, [a.name, b.name, c.name]), 20)
    items = view.gallery_items(grid)
    assert len(items) == 2 * 3
    captions = [cap for _, cap in items]
    assert captions[0] == "a · seed 1 · cat · step 20" and captions[1] == "b · seed 1 · cat · step 20"
    assert captions[2].endswith("no sample") and isinstance(items[2][0], Image.Image)
    assert captions[5].endswith("file missing") and isinstance(items[5][0], Image.Image)
    assert items[0][0].endswith("step000020_0.png")


def test_pickers_list_train_jobs_and_groups(ws):
    solo = make_run(ws, "solo", t0=1_790_000_000.0)
    g1 = make_run(ws, "g-a", group="ab-1", t0=1_790_000_100.0)
    g2 = make_run(ws, "g-b", group="ab-1", t0=1_790_000_200.0)
    assert [v for _, v in view.run_choices(ws)] == [g2.name, g1.name, solo.name]
    assert view.group_choices(ws) == [("ab-1 (2 runs)", "ab-1")]
    assert ("network.rank — Rank (dim)", "network.rank") in view.sweepable_fields()
    assert all(p not in ("sampling.prompts", "model.path") for _, p in view.sweepable_fields())


def test_form_parsing():
    assert view.overrides_from_text("training.max_steps=40\n# note\n\ndataset.resolution = 64") == {
        "training.max_steps": 40, "dataset.resolution": 64}
    with pytest.raises(ConfigError, match="section.option=value"):
        view.overrides_from_text("max_steps 40")
    assert view.seed_from_text(None) is None and view.seed_from_text("") is None
    assert view.seed_from_text(7.0) == 7 and view.seed_from_text("12") == 12
    with pytest.raises(ConfigError, match="training.seed"):
        view.seed_from_text(1.5)
    assert view.lines(" a \n\n b ") == ["a", "b"]


def test_run_cache_follows_appended_events_and_forgets_deleted_jobs(ws):
    d = make_run(ws, "live", steps=5, status="running")
    cache = RunCache(ws)
    (run,) = cache.get([d.name])
    assert run.loss_series().steps == [1, 2, 3, 4, 5]
    with open(d / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"t": 1.0, "type": "metric", "step": 6, "loss": 0.1}) + "\n")
    (again,) = cache.get([d.name])
    assert again is run and run.loss_series().steps[-1] == 6
    before = view.signature([run])
    cache.get([d.name])
    assert view.signature([run]) == before                       # nothing new: same signature
    shutil.rmtree(d)
    with pytest.raises(JobError):
        cache.get([d.name])


def test_step_slider_is_fixed_when_the_runs_sampled_at_one_step():
    """Gradio refuses a slider whose minimum is not below its maximum (issue 17 bug 1)."""
    assert view.step_slider([10, 20, 30]) == (10, 30, True)
    assert view.step_slider([10]) == (9, 10, False)
    assert view.step_slider([0]) == (-1, 0, False)
    assert view.step_slider([]) == (0, 1, False)
    for steps in ([10], [0], [], [5, 6]):
        low, high, _ = view.step_slider(steps)
        assert low < high
