"""The Captioning tab's model list and its check before a job starts (issue 17, bug 6): the parts of a
diffusers model (demo-sd15/unet, …/text_encoder) were offered as captioners, and picking one failed in
the worker after 18 s with a long transformers error."""

from __future__ import annotations

import gradio as gr
import pytest

from backend.jobs.registry import list_jobs
from backend.paths import WorkspacePaths
from tests._caption_fixtures import make_tagger, make_tiny_blip
from tests._webui_fixtures import build_tab
from webui import captioning_view as cv
from webui.context import make_context
from webui.tabs import captioning


@pytest.fixture
def paths(demo_copy) -> WorkspacePaths:
    paths = WorkspacePaths(demo_copy)
    make_tagger(paths.models / "tiny-wd14")
    make_tiny_blip(paths.models / "captioners" / "tiny-blip")
    return paths


def test_only_models_a_captioner_can_load_are_listed(paths):
    assert cv.model_choices(paths, "captioner") == [("captioners/tiny-blip", "models/captioners/tiny-blip")]
    assert cv.model_choices(paths, "tagger") == [("tiny-wd14", "models/tiny-wd14")]


@pytest.mark.parametrize("part", ["unet", "text_encoder", ""])
def test_a_diffusion_models_part_is_refused_before_any_job_starts(paths, part):
    # the demo model is a link to a folder outside the workspace: allowed as an operator would (--allow-dir)
    linked = (paths.models / "demo-sd15").resolve().parent
    ctx = make_context(str(paths.root), allow_dirs=[str(linked)])
    _, tab = build_tab(ctx, captioning)
    chosen = f"models/demo-sd15/{part}".rstrip("/")
    data = {comp: tab.specs[p].default for p, comp in tab.fields.items()}
    data.update({tab.fields["dataset.path"]: "datasets/demo", tab.fields["model.mode"]: "captioner",
                 tab.fields["model.path"]: chosen})
    with pytest.raises(gr.Error, match="diffusers model demo-sd15") as err:
        tab.run(data)
    assert "not a captioner" in str(err.value) and "processor" in str(err.value)
    assert list_jobs(paths) == []
