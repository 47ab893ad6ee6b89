"""The Training tab's handlers, called as Gradio calls them (one {component: value} dict), on a real
workspace: presets, validation marks, queueing a job, saving, exporting and importing presets."""

from __future__ import annotations

import tomllib

import gradio as gr
import pytest
from PIL import Image

from backend.config import TrainConfig
from backend.jobs.registry import list_jobs, load_config
from tests._webui_fixtures import build_tab, sd15_configs
from webui import forms
from webui.context import make_context
from webui.tabs import training

# gr.Warning outside a browser session is a Python warning: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:.*need attention:UserWarning")


@pytest.fixture
def setup(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    sd15_configs(ctx.paths.models / "tiny")
    (ctx.paths.models / "single.safetensors").write_bytes(b"x" * 10)
    (ctx.paths.datasets / "cats" / "3_cat").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 120, 40)).save(ctx.paths.datasets / "cats" / "3_cat" / "a.png")
    _, tab = build_tab(ctx, training)
    return ctx, tab


def _data(tab, cfg: TrainConfig | None = None, **extra) -> dict:
    values = forms.config_to_values(cfg or TrainConfig())
    data = {comp: values[path] for path, comp in tab.form.components.items()}
    data.update({tab.marked: [], tab.run_name: "", tab.preset_name: "", tab.overwrite: False, tab.preset: None})
    for key, value in extra.items():
        data[tab.form.components.get(key.replace("__", "."), None) or getattr(tab, key)] = value
    return data


def test_pickers_list_models_and_datasets(setup):
    ctx, tab = setup
    out = tab.rescan()
    model_dd = out[tab.form.components["model.path"]]
    assert [v for _, v in model_dd.choices] == ["models/single.safetensors", "models/tiny"]
    assert [v for _, v in out[tab.form.components["dataset.path"]].choices] == ["datasets/cats"]
    assert "sd15-character-lora" in [v for _, v in out[tab.preset].choices]


def test_a_preset_fills_the_form_and_keeps_the_picks(setup):
    _, tab = setup
    data = _data(tab, preset="sd15-character-lora", model__path="models/tiny", dataset__path="datasets/cats")
    out = tab.load_preset(data)
    comps = tab.form.components
    assert out[comps["network.rank"]] == 16 and out[comps["dataset.shuffle_caption"]] is True
    assert out[comps["model.path"]] == "models/tiny" and out[comps["dataset.path"]] == "datasets/cats"
    with pytest.raises(gr.Error, match="no preset"):
        tab.load_preset(_data(tab, preset="nope"))


def test_validate_lists_every_problem_and_marks_fields(setup):
    _, tab = setup
    data = _data(tab, network__rank=0, model__path="models/missing")
    out = tab.validate(data)
    status = out[tab.status]
    assert "network.rank" in status and "model.path" in status and "dataset.path" in status
    assert set(out[tab.marked]) == {"network.rank", "model.path", "dataset.path"}
    assert out[tab.form.components["network.rank"]]["elem_classes"] == [forms.INVALID_CLASS]
    # Fixed: the marks go, the resolved TOML shows absolute paths.
    fixed = _data(tab, model__path="models/tiny", dataset__path="datasets/cats", marked=out[tab.marked])
    out = tab.validate(fixed)
    assert out[tab.marked] == [] and "valid" in out[tab.status]
    resolved = tomllib.loads(out[tab.toml])
    assert resolved["model"]["path"].endswith("/models/tiny") and resolved["model"]["path"].startswith("/")


def test_the_picked_model_sets_the_family_and_a_mismatch_is_named(setup):
    _, tab = setup
    family = tab.form.components["model.family"]
    out = tab.on_model("models/tiny")
    assert out[family] == "sd15" and "SD 1.x" in out[tab.model_note]
    assert "⚠" in tab.on_model("models/nothing")[tab.model_note]
    out = tab.validate(_data(tab, model__path="models/tiny", model__family="sdxl", dataset__path="datasets/cats"))
    assert out[tab.marked] == ["model.family"] and "model.family" in out[tab.status]


def test_add_to_queue_creates_the_job_with_the_resolved_config(setup):
    ctx, tab = setup
    data = _data(tab, model__path="models/tiny", dataset__path="datasets/cats", network__rank=12,
                 run_name="queued run")
    out = tab.submit(data, start=False)
    (rec,) = list_jobs(ctx.paths)
    assert (rec.name, rec.kind, rec.status) == ("queued run", "train", "queued")
    assert out[ctx_ui(tab).job_id] == rec.id and "queued" in out[tab.status]
    stored = load_config(ctx.paths.jobs / rec.id)
    assert stored["network"]["rank"] == 12 and stored["dataset"]["path"] == str(ctx.paths.datasets / "cats")
    # An invalid form creates nothing.
    tab.submit(_data(tab, network__rank=0), start=False)
    assert len(list_jobs(ctx.paths)) == 1


def ctx_ui(tab):
    return tab.ctx.ui


def test_save_export_and_import_presets(setup, tmp_path):
    ctx, tab = setup
    cfg = TrainConfig.model_validate({"network": {"rank": 24}, "optimizer": {"lr": 2e-4}})
    out = tab.save_preset(_data(tab, cfg, preset_name="my style"))
    saved = ctx.paths.presets / "my style.toml"
    assert tomllib.loads(saved.read_text()) == {"schema_version": 1, "network": {"rank": 24},
                                                "optimizer": {"lr": 2e-4}}
    assert "my style" in [v for _, v in out[tab.preset].choices]
    with pytest.raises(gr.Error, match="exists already"):
        tab.save_preset(_data(tab, cfg, preset_name="my style"))
    tab.save_preset(_data(tab, cfg, preset_name="my style", overwrite=True))

    exported = tab.export(_data(tab, cfg, preset_name="shared"))
    path = exported.value if isinstance(exported.value, str) else exported.value["path"]
    assert path.endswith("shared.toml") and tomllib.loads(open(path).read())["network"] == {"rank": 24}

    incoming = tmp_path / "from-a-friend.toml"
    incoming.write_text('schema_version = 1\n[network]\nrank = 40\nalgo = "locon"\n')
    out = tab.import_preset(str(incoming))
    assert out[tab.form.components["network.rank"]] == 40
    assert (ctx.paths.presets / "from-a-friend.toml").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text("[network]\nrank = -3\nwhat = 1\n")
    with pytest.raises(gr.Error) as info:
        tab.import_preset(str(bad))
    assert "bad.toml" in str(info.value) and "network.rank" in str(info.value) and "network.what" in str(info.value)
