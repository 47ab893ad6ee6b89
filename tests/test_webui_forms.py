"""The training form against the schema: every option has a component, values survive the round trip
config → form values → (through each real Gradio component) → config, and problems land on fields."""

from __future__ import annotations

from typing import Any, get_args

import gradio as gr
import pytest

from backend.config import TrainConfig, list_presets, load_preset
from backend.config.fields import leaf_fields
from backend.config.schema import SamplePrompt
from backend.errors import ConfigError
from tests._webui_fixtures import build_tab
from webui import forms
from webui.context import make_context
from webui.tabs import training


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    ctx = make_context(str(tmp_path_factory.mktemp("ws")))
    _, tab = build_tab(ctx, training)
    return tab


def _changed_value(spec) -> Any:
    """A valid value different from the default, for every kind of option."""
    if spec.kind == "bool":
        return not spec.default
    if spec.kind == "choice":
        return next(c for c in spec.choices if c != spec.default)
    if spec.kind == "int":
        base = spec.default if spec.default is not None else int(spec.ge or 0)
        up = base + 8  # + 8 keeps multiples of 8 (resolution, bucket steps) valid
        return up if spec.le is None or up <= spec.le else base - 8
    if spec.kind == "float":
        hi = spec.le if spec.le is not None else 10.0
        return min(hi * 0.5, 0.5) if spec.default != min(hi * 0.5, 0.5) else min(hi * 0.25, 0.25)
    if spec.kind == "list[str]":
        return ["alpha", "beta gamma"]
    if spec.kind == "dict":
        return {"d_coef": 2, "use_bias_correction": True}
    if spec.kind == "prompts":
        return [{"prompt": "a cat, best quality", "negative": "blurry", "seed": 7, "width": 512, "height": 768,
                 "steps": 12, "guidance": 6.5}, {"prompt": "a dog"}]
    if spec.path == "saving.output_name":
        return "my_lora"
    if spec.path == "dataset.caption_extension":
        return ".caption"
    return "some/path"


def _everything_changed() -> TrainConfig:
    data: dict[str, dict] = {}
    for spec in leaf_fields():
        # Pairs the schema refuses together: warmup_ratio with warmup_steps; DoRA with fp8_base.
        if spec.path in ("schedule.warmup_ratio", "network.dora"):
            continue
        data.setdefault(spec.section, {})[spec.name] = _changed_value(spec)
    return TrainConfig.model_validate(data)


def test_every_leaf_option_has_one_component_of_a_fitting_type(tab):
    specs = leaf_fields()
    assert set(tab.form.components) == {s.path for s in specs}
    expected = {"bool": gr.Checkbox, "choice": gr.Dropdown, "prompts": gr.Dataframe, "list[str]": gr.Textbox,
                "dict": gr.Textbox, "str": (gr.Textbox, gr.Dropdown)}
    for spec in specs:
        comp = tab.form.components[spec.path]
        want = (gr.Textbox if spec.optional else gr.Number) if spec.kind in ("int", "float") \
            else expected[spec.kind]
        assert isinstance(comp, want), spec.path
        assert comp.label == spec.label
        if spec.kind == "choice":
            assert [c[1] for c in comp.choices] == list(spec.choices)
        if spec.help and not isinstance(comp, gr.Dataframe):
            assert spec.help in comp.info
    basic_hidden = [p for p in tab.basic if p in {q for qs in tab.advanced.values() for q in qs}]
    assert basic_hidden == []


def test_prompt_table_columns_are_the_schema_fields(tab):
    assert list(tab.form.components["sampling.prompts"].headers) == list(SamplePrompt.model_fields)


@pytest.mark.parametrize("source", ["defaults", "everything changed", *[p.name for p in list_presets()]])
def test_values_round_trip_through_the_real_components(tab, source):
    cfg = {"defaults": TrainConfig(), "everything changed": None}.get(source, None)
    if source == "everything changed":
        cfg = _everything_changed()
    elif cfg is None:
        cfg = load_preset(source)
    values = forms.config_to_values(cfg)
    # What the browser sends back: each value through the component's postprocess → preprocess.
    back = {}
    for path, comp in tab.form.components.items():
        back[path] = comp.preprocess(comp.postprocess(values[path]))
    assert back == values
    again = forms.values_to_config(back)
    assert again == cfg
    assert forms.config_to_values(again) == values


def test_form_reads_inputs_by_component_not_position(tab):
    values = forms.config_to_values(TrainConfig())
    values["network.rank"] = 32
    values["optimizer.lr"] = 3e-4
    data = {comp: values[path] for path, comp in reversed(list(tab.form.components.items()))}
    cfg = tab.form.config(data)
    assert (cfg.network.rank, cfg.optimizer.lr) == (32, 3e-4)


def test_every_problem_is_named_and_marked_on_its_field(tab):
    values = forms.config_to_values(TrainConfig())
    values.update({"network.rank": 0, "optimizer.extra_args": "{not json", "training.max_steps": "ten",
                   "sampling.prompts": [["a cat", "", 1, 512, 500, "x", 7]], "dataset.resolution": 1024,
                   "dataset.min_bucket_reso": 768, "dataset.max_bucket_reso": 512})
    with pytest.raises(ConfigError) as info:
        forms.values_to_config(values)
    paths = [p for p, _ in info.value.problems]
    assert {"network.rank", "optimizer.extra_args", "training.max_steps", "sampling.prompts"} <= set(paths)
    assert any(p == "dataset" for p in paths)  # a section-level rule: listed, no single field to mark
    updates, marked = tab.form.marks(info.value.problems)
    assert set(marked) == {"network.rank", "optimizer.extra_args", "training.max_steps", "sampling.prompts"}
    rank_update = updates[tab.form.components["network.rank"]]
    assert rank_update["info"].startswith("⚠") and forms.INVALID_CLASS in rank_update["elem_classes"]
    # Fixing them clears the marks (and only the marked fields are touched).
    cleared, now = tab.form.marks([], marked)
    assert now == [] and set(cleared) == {tab.form.components[p] for p in marked}
    assert all(u["elem_classes"] == [] for u in cleared.values())


def test_problem_paths_map_to_the_closest_field():
    known = [s.path for s in leaf_fields()]
    assert forms.field_for("sampling.prompts.0.seed", known) == "sampling.prompts"
    assert forms.field_for("network.rank", known) == "network.rank"
    assert forms.field_for("training", known) is None


def test_empty_optional_numbers_mean_unset_and_text_is_refused():
    spec = next(s for s in leaf_fields() if s.path == "training.max_steps")
    assert forms.from_ui(spec, "") is None and forms.from_ui(spec, " 20 ") == 20
    with pytest.raises(ValueError, match="not a number"):
        forms.from_ui(spec, "twenty")
    with pytest.raises(ValueError, match="whole number"):
        forms.from_ui(spec, "2.5")
    lst = next(s for s in leaf_fields() if get_args(s.kind) == () and s.kind == "list[str]")
    assert forms.from_ui(lst, " a, b ,, c ") == ["a", "b", "c"]
