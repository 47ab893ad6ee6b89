"""Compare two real tiny-model runs: an A/B launch of two presets on the demo model, trained by the
real worker in real subprocesses, then diffed, gridded and exported."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from backend.compare.ab import launch_ab, plan_ab
from backend.compare.diff import settings_diff
from backend.compare.grid import build_grid, save_grid_png
from backend.compare.report import render_html
from backend.compare.runs import load_runs
from backend.config import load_preset, save_preset
from backend.jobs.registry import FINISHED
from backend.jobs.supervisor import Supervisor
from backend.models import demo
from backend.paths import WorkspacePaths
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

STEPS = 3
SAMPLE_EVERY = 2          # samples at step 2 and at the end (step 3)
TINY = {"training.max_steps": STEPS, "sampling.every_n_steps": SAMPLE_EVERY, "training.batch_size": 1,
        "dataset.resolution": 64, "saving.every_n_steps": 0}


def _wait(sup: Supervisor, ids: list[str], timeout: float) -> None:
    def finished() -> bool:
        recs = {r.id: r for r in sup.poll(force=True)}
        return all(recs[i].status in FINISHED for i in ids)

    wait_for(finished, timeout, f"runs {ids} to finish", 0.5)


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    ws = WorkspacePaths(tmp_path_factory.mktemp("engine") / "ws").ensure()
    model, dataset = demo.build_demo(ws)
    # A second preset: the demo preset with another rank, alpha and learning rate.
    other = load_preset("demo", ws, {"network.rank": 2, "network.alpha": 1.0, "optimizer.lr": 3e-4})
    save_preset(other, ws, "demo-small")
    sup = Supervisor(ws, max_concurrent=1)
    plan = plan_ab(ws, presets=["demo", "demo-small"], model_path=str(model), dataset_path=str(dataset),
                   overrides=TINY, seed=5,
                   prompts=[{"prompt": f"{demo.TRIGGER}, {what}", "width": 64, "height": 64, "steps": 2}
                            for what in ("a red circle", "a blue square")])
    group, recs = launch_ab(sup, plan, "demo ab")
    ids = [r.id for r in recs]
    _wait(sup, ids, timeout=300)
    return ws, group, ids


def test_ab_runs_complete_with_equal_seeds_in_one_group(ab):
    ws, group, ids = ab
    runs = load_runs(ws, ids)
    assert [r.record.status for r in runs] == ["completed", "completed"], [r.record.error for r in runs]
    assert {r.record.group for r in runs} == {group}
    assert {r.config["training"]["seed"] for r in runs} == {5}
    assert all(r.loss_series().values and r.lr_series() for r in runs)
    assert all(r.outcome().lora_size_bytes for r in runs)


def test_diff_lists_exactly_the_changed_preset_fields(ab):
    ws, _, ids = ab
    rows = settings_diff([r.config for r in load_runs(ws, ids)])
    assert {r.path for r in rows} == {"network.rank", "network.alpha", "optimizer.lr"}


def test_grid_rows_columns_and_nearest_step(ab, tmp_path):
    ws, _, ids = ab
    runs = load_runs(ws, ids)
    assert [r.sample_steps() for r in runs] == [[SAMPLE_EVERY, STEPS]] * 2
    grid = build_grid(runs, step=0)                     # before the first sample: the nearest is step 2
    assert grid.run_ids == ids and len(grid.labels) == 2
    assert [p for p, _ in grid.rows] == [f"{demo.TRIGGER}, a red circle", f"{demo.TRIGGER}, a blue square"]
    assert {c.step for row in grid.cells for c in row} == {SAMPLE_EVERY}
    assert all(c.path.is_file() for row in grid.cells for c in row)
    late = build_grid(runs, step=99)
    assert late.step == 99 and {c.step for row in late.cells for c in row} == {STEPS}
    assert build_grid(runs).step == STEPS
    save_grid_png(grid, tmp_path / "grid.png")


def test_html_export_is_valid_and_self_contained(ab):
    ws, _, ids = ab
    text = render_html(load_runs(ws, ids))
    srcs: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            srcs.extend(v for k, v in attrs if k in ("src", "href") and v)

    P().feed(text)
    assert len(srcs) == 4 and all(s.startswith("data:image/") for s in srcs)
