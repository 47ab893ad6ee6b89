"""The app's shared pieces: the background poll (the supervisor's own), the folders it serves, and the
Dataset → Training hook that create_app provides."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from backend.dataset.filecache import dataset_cache_dir, thumbs_cache_dir
from tests._jobs_fixtures import wait_finished
from tests._webui_fixtures import build_tab
from webui.app import create_app
from webui.context import AppContext, SharedUI, make_context
from webui.launching import served_paths
from webui.tabs import training


def test_polling_starts_queued_jobs_with_no_page_open(tmp_path):
    """start_polling runs the supervisor's background poller (which logs and retries every error):
    a job queued while nothing polls starts on its own; stop_polling ends the thread."""
    ctx = make_context(str(tmp_path / "ws"))
    rec = ctx.supervisor.submit("selftest", {"steps": 2, "step_s": 0.01}, "queued", start=False)
    assert rec.status == "queued"
    ctx.start_polling(0.1)
    try:
        ctx.start_polling(0.1)  # idempotent: still one thread
        assert sum(t.name == "loradash-supervisor" and t.is_alive() for t in threading.enumerate()) >= 1
        assert wait_finished(ctx.supervisor, rec.id).status == "completed"
    finally:
        assert ctx.stop_polling() is True
    assert not hasattr(ctx, "_poll_loop")


def test_served_paths_add_only_the_thumbnail_cache(tmp_path):
    paths = make_context(str(tmp_path / "ws")).paths
    served = [Path(p) for p in served_paths(paths)]
    assert served == [paths.jobs, paths.datasets, thumbs_cache_dir(paths)]
    assert dataset_cache_dir(paths) not in served and paths.root / "cache" not in served
    assert paths.models not in served and paths.presets not in served


def test_create_app_gives_the_tabs_a_dataset_pick_state(tmp_path, monkeypatch):
    ctx = make_context(str(tmp_path / "ws"))
    seen = {}
    original = training.build

    def spy(tab_ctx: AppContext):  # records what the Training tab is given, then builds it as usual
        seen["pick"] = tab_ctx.ui.dataset_pick
        return original(tab_ctx)

    monkeypatch.setattr(training, "build", spy)
    create_app(ctx)
    assert isinstance(seen["pick"], gr.State) and seen["pick"].value == {}


def test_training_tab_fills_its_fields_from_the_dataset_pick(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    (ctx.paths.datasets / "pets" / "2_pet").mkdir(parents=True)
    with gr.Blocks() as demo:
        ui = SharedUI(blocks=demo, tabs=gr.Tabs(), timer=gr.Timer(), job_id=gr.State(),
                      dataset_pick=gr.State({}))
        tab = training.build(AppContext(paths=ctx.paths, supervisor=ctx.supervisor, ui=ui))
    assert any(dep.get("targets") and ui.dataset_pick._id in [t[0] for t in dep["targets"]]
               for dep in demo.config["dependencies"])  # the Training tab listens to the hook
    pick = {"dataset.path": "datasets/pets", "dataset.resolution": 768, "dataset.enable_bucket": False,
            "dataset.reg_path": "", "dataset.reg_repeats": 3}
    out = tab.apply_dataset_pick(pick)
    comps = tab.form.components
    assert out[comps["dataset.path"]] == "datasets/pets"
    assert out[comps["dataset.resolution"]] == 768 and out[comps["dataset.enable_bucket"]] is False
    assert out[comps["dataset.reg_repeats"]] == 3 and comps["network.rank"] not in out  # others untouched
    assert "datasets/pets" in out[tab.status]
    assert tab.apply_dataset_pick({}) == {}
    _, plain = build_tab(ctx, training)  # without the hook (tests, older apps) the tab still builds
    assert plain.ctx.ui.dataset_pick is None

