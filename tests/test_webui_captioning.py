"""The Captioning tab's handlers, called as Gradio calls them, on real files: a tiny WD14 tagger run as a
caption job by the real Supervisor and worker, the editor, bulk edits with preview and undo, tag
frequency, and a download job that fails cleanly without a network."""

from __future__ import annotations

import gradio as gr
import pytest

from backend.jobs.registry import list_jobs, load_config
from tests._caption_fixtures import make_tagger, solid
from tests._webui_fixtures import build_tab
from tests.conftest import wait_for
from webui import captioning_view as cv
from webui import forms
from webui.context import make_context
from webui.tabs import captioning


@pytest.fixture
def setup(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    make_tagger(ctx.paths.models / "tiny-wd14")
    (ctx.paths.models / "blip").mkdir()  # what a captioner folder holds (its weights are not read here)
    (ctx.paths.models / "blip" / "config.json").write_text('{"model_type": "blip"}')
    (ctx.paths.models / "blip" / "processor_config.json").write_text("{}")
    (ctx.paths.models / "half.partial").mkdir()
    ds = ctx.paths.datasets / "chars"
    solid(ds / "10_red" / "a.png", (255, 0, 0))
    solid(ds / "10_red" / "b.png", (0, 255, 0))
    solid(ds / "5_blue" / "d.png", (0, 0, 255))
    (ds / "5_blue" / "d.txt").write_bytes(b"old tag, Solo\n")
    _, tab = build_tab(ctx, captioning)
    yield ctx, tab, ds
    for rec in list_jobs(ctx.paths):  # no worker outlives the test
        if rec.active:
            ctx.supervisor.stop(rec.id, grace_s=0)


def data_of(tab, **values) -> dict:
    """Every input of the tab at its default, then `values` by dotted path or attribute name."""
    data = {comp: forms.to_ui(tab.specs[path], tab.specs[path].default) for path, comp in tab.fields.items()}
    data.update({tab.query: "", tab.query_mode: "tags", tab.missing_only: False, tab.view: None,
                 tab.follow: None, tab.undo: None, tab.op: "add_trigger", tab.scope: "dataset",
                 tab.pending: None, tab.freq_by: "overall"})
    data.update({comp: None for comp in tab.args.values()})
    for key, value in values.items():
        comp = tab.fields.get(key.replace("__", ".")) or tab.args.get(key) or getattr(tab, key)
        data[comp] = value
    return data


def follow_to_end(tab, data: dict, timeout_s: float = 120) -> dict:
    def summary() -> dict | None:
        out = tab.tick(data)
        data[tab.follow] = out.get(tab.follow, data[tab.follow])
        return out if tab.summary in out else None

    return wait_for(summary, timeout_s, "the caption job to finish", 0.3)


def gallery_labels(out, tab) -> list[str]:
    return [label for _, label in out[tab.gallery]]


def test_model_pickers_list_local_taggers_and_captioners(setup):
    _, tab, _ = setup
    out = tab.rescan_choices("tagger")
    assert out[tab.model].choices == [("tiny-wd14", "models/tiny-wd14")]
    assert [v for _, v in out[tab.ds].choices] == ["datasets/chars"]
    out = tab.mode_changed("captioner")
    assert out[tab.model].choices == [("blip", "models/blip")]  # the .partial download is not offered
    assert out[tab.captioner_box].visible is True and out[tab.tagger_box].visible is False


def test_run_checks_the_form_then_tags_in_a_worker_and_undo_restores(setup):
    ctx, tab, ds = setup
    with pytest.raises(gr.Error, match=r"dataset\.path"):
        tab.run(data_of(tab, model__path="models/tiny-wd14"))
    with pytest.raises(gr.Error, match=r"tagger\.general_threshold"):
        tab.run(data_of(tab, dataset__path="datasets/chars", model__path="models/tiny-wd14",
                        tagger__general_threshold=1.5))
    with pytest.raises(gr.Error, match="not a tagger folder"):
        tab.run(data_of(tab, dataset__path="datasets/chars", model__path="models/blip"))
    assert list_jobs(ctx.paths) == []

    data = data_of(tab, dataset__path="datasets/chars", model__path="models/tiny-wd14", model__batch_size=2,
                   tagger__trigger_words="sks", tagger__replacements="solo -> alone\n1girl -> woman")
    out = tab.run(data)
    (rec,) = list_jobs(ctx.paths)
    cfg = load_config(ctx.paths.jobs / rec.id)
    assert rec.kind == "caption" and cfg["dataset"]["path"] == str(ds)
    assert cfg["tagger"]["replacements"] == ["solo -> alone", "1girl -> woman"]
    assert out[tab.timer].active is True
    data[tab.follow] = out[tab.follow]
    assert tab.on_load("tagger")[tab.follow]["job"] == rec.id  # a reloaded page follows it again

    out = follow_to_end(tab, data)
    assert "wrote **3** of 3" in out[tab.summary], out[tab.summary]
    assert out[tab.timer].active is False and "completed" in out[tab.progress]
    a = (ds / "10_red" / "a.txt").read_text()
    assert a.startswith("sks, red theme") and "alone" in a and "solo" not in a
    assert all(not label.startswith("⚠") for label in gallery_labels(out, tab))
    (undo_id,) = [v for _, v in out[tab.undo].choices]

    restored = tab.restore({**data, tab.undo: undo_id})
    assert not (ds / "10_red" / "a.txt").exists() and (ds / "5_blue" / "d.txt").read_bytes() == b"old tag, Solo\n"
    assert sum(label.startswith("⚠") for label in gallery_labels(restored, tab)) == 2


def test_editor_filters_shows_saves_and_moves(setup):
    _, tab, ds = setup
    (ds / "10_red" / "a.txt").write_text("sks, red theme, long hair\n")
    data = data_of(tab, dataset__path="datasets/chars")
    out = tab.refresh(data)
    assert "3 images" in out[tab.ds_info] and "1 without a caption" in out[tab.ds_info]
    assert gallery_labels(out, tab)[1] == "⚠ 10_red/b.png: no caption"

    out = tab.refresh({**data, tab.query: "Long_Hair, sks"})  # tags match like the tagger's
    assert [lbl.split(":")[0] for lbl in gallery_labels(out, tab)] == ["10_red/a.png"]
    out = tab.refresh({**data, tab.missing_only: True})
    view = out[tab.view]
    assert [lbl.split(":")[0] for lbl in gallery_labels(out, tab)] == ["⚠ 10_red/b.png"]

    shown = tab.select(view, gr.SelectData(None, {"index": 0, "value": None}))
    assert shown[tab.image].endswith("b.png") and shown[tab.caption] == "" and "no caption yet" in shown[tab.image_info]
    saved = tab.save({tab.view: shown[tab.view], tab.caption: "green theme,\nsolo "})
    assert (ds / "10_red" / "b.txt").read_text() == "green theme, solo\n"
    assert gallery_labels(saved, tab) == ["10_red/b.png: green theme, solo"]  # the filtered list stays
    assert "all captioned" in saved[tab.ds_info]

    view = tab.refresh(data)[tab.view]
    nxt = tab.step(view, delta=1)  # nothing selected yet: the first image
    assert nxt[tab.image].endswith("a.png") and nxt[tab.caption] == "sks, red theme, long hair"
    assert tab.step(nxt[tab.view], delta=-1)[tab.image].endswith("d.png")  # wraps around
    with pytest.raises(gr.Error, match="Click an image"):
        tab.save({tab.view: view | {"index": None}, tab.caption: "x"})


def test_pages_of_a_large_dataset(setup):
    ctx, tab, _ = setup
    for i in range(cv.PER_PAGE + 2):
        solid(ctx.paths.datasets / "many" / f"{i:02d}.png", (i * 9, 0, 0), size=(8, 8))
    out = tab.refresh(data_of(tab, dataset__path="datasets/many"))
    assert len(out[tab.gallery]) == cv.PER_PAGE and out[tab.page_info].startswith("page 1/2")
    page2 = tab.turn(out[tab.view], delta=1)
    assert len(page2[tab.gallery]) == 2 and page2[tab.page_info].startswith("page 2/2")
    last = tab.step(page2[tab.view] | {"index": 0}, delta=-1)  # back from the first image: the last one
    assert last[tab.image].endswith(f"{cv.PER_PAGE + 1}.png") and last[tab.view]["page"] == 2
    assert all(path.startswith(str(ctx.paths.root / "cache" / "thumbs")) for path, _ in page2[tab.gallery])


def test_bulk_edit_previews_then_applies_and_undoes(setup):
    ctx, tab, ds = setup
    (ds / "10_red" / "a.txt").write_text("sks, red theme, solo\n")
    (ds / "10_red" / "b.txt").write_text("green theme, Solo, solo\n")
    before = {p: p.read_bytes() for p in ds.rglob("*.txt")}
    data = data_of(tab, dataset__path="datasets/chars", op="remove_tags", tags="solo")
    with pytest.raises(gr.Error, match="enter the tag"):
        tab.preview({**data, tab.args["tags"]: ""})
    out = tab.preview(data)
    assert "remove tags: 3 of 3 caption files change" in out[tab.bulk_info]
    table = out[tab.bulk_table]
    assert list(table["image"]) == ["10_red/a.png", "10_red/b.png", "5_blue/d.png"]
    assert list(table["after"]) == ["sks, red theme", "green theme", "old tag"]
    assert {p: p.read_bytes() for p in ds.rglob("*.txt")} == before  # a preview writes nothing
    assert out[tab.apply_btn].interactive is True

    done = tab.apply({**data, tab.pending: out[tab.pending]})
    assert "Wrote 3 caption file(s)" in done[tab.bulk_info] and done[tab.pending] is None
    assert (ds / "10_red" / "b.txt").read_text() == "green theme\n"
    (undo_id,) = [v for _, v in done[tab.undo].choices]
    tab.restore({**data, tab.undo: undo_id})
    assert {p: p.read_bytes() for p in ds.rglob("*.txt")} == before

    # Only the filtered images; a trigger word added twice changes nothing the second time.
    view = tab.refresh({**data, tab.query: "red theme"})[tab.view]
    trig = data_of(tab, dataset__path="datasets/chars", op="add_trigger", tags="mystyle", scope="filtered", view=view)
    cs = tab.preview(trig)[tab.pending]
    assert [c.image.name for c in cs.changes] == ["a.png"]
    tab.apply({**trig, tab.pending: cs})
    assert tab.preview(trig)[tab.pending] is None
    with pytest.raises(gr.Error, match="not a valid regular expression"):
        tab.preview(data_of(tab, dataset__path="datasets/chars", op="search_replace", find="(", regex=True))


def test_tag_frequency_table_chart_and_click_to_filter(setup):
    _, tab, ds = setup
    (ds / "10_red" / "a.txt").write_text("sks, red theme\n")
    (ds / "10_red" / "b.txt").write_text("sks, green theme\n")
    data = data_of(tab, dataset__path="datasets/chars")
    out = tab.frequency(data)
    df = out[tab.freq_table]
    assert list(df.columns) == ["tag", "count", "percent"] and df.iloc[0].tolist() == ["sks", 2, 66.7]
    assert list(out[tab.freq_plot].data[0].x)[:1] == ["sks"]
    per = tab.frequency({**data, tab.freq_by: "subset"})
    assert {t.name for t in per[tab.freq_plot].data} == {"10_red", "5_blue"}
    row = per[tab.freq_table].iloc[0].tolist()
    picked = tab.pick_tag(data, gr.SelectData(None, {"index": [0, 1], "value": row[1], "row_value": row}))
    assert picked[tab.query] == "sks" and len(picked[tab.gallery]) == 2


def test_download_job_without_network_fails_with_a_clear_message(setup, monkeypatch):
    ctx, tab, _ = setup
    with pytest.raises(gr.Error, match="repo_id"):
        tab.download({tab.repo: "not a repo", tab.repo_name: "", tab.patterns: ""})
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    out = tab.download({tab.repo: "SmilingWolf/wd-vit-tagger-v3", tab.repo_name: "wd", tab.patterns: "*.onnx, *.csv"})
    (rec,) = list_jobs(ctx.paths)
    assert rec.kind == "download" and load_config(ctx.paths.jobs / rec.id)["allow_patterns"] == ["*.onnx", "*.csv"]
    data = data_of(tab, follow=out[tab.follow])
    done = follow_to_end(tab, data, timeout_s=90)
    assert "failed" in done[tab.summary] and "cannot reach the Hugging Face Hub" in done[tab.summary]
    assert not (ctx.paths.models / "wd").exists()


def test_every_bulk_operation_of_the_form_previews(setup):
    _, tab, ds = setup
    (ds / "10_red" / "a.txt").write_text("b tag, sks, a tag, a tag\n")
    (ds / "10_red" / "b.txt").write_text("sks, c tag\n")
    args = {"tags": "sks", "find": "tag", "replace": "label", "sort_by": "alpha", "keep_first": 0, "min_count": 2}
    afters = {}
    for _, op in cv.op_choices():
        data = data_of(tab, dataset__path="datasets/chars", op=op, **args)
        cs = tab.preview(data)[tab.pending]
        afters[op] = {c.image.name: c.after for c in cs.changes} if cs else {}
    assert afters["add_trigger"]["a.png"] == "sks, b tag, a tag, a tag" and "b.png" not in afters["add_trigger"]
    assert afters["remove_tags"] == {"a.png": "b tag, a tag, a tag", "b.png": "c tag"}
    assert afters["replace_tag"] == {}  # no caption has the tag "tag"
    assert afters["search_replace"]["b.png"] == "sks, c label"
    assert afters["dedupe"] == {"a.png": "b tag, sks, a tag"}
    assert afters["sort"]["a.png"] == "a tag, a tag, b tag, sks"
    assert afters["prune_rare"] == {"a.png": "sks", "b.png": "sks", "d.png": ""}  # sks kept: in the Tags box
    assert afters["move_to_front"]["a.png"] == "sks, b tag, a tag, a tag"
    hidden = tab.op_changed("dedupe")
    assert all(update["visible"] is False for comp, update in hidden.items() if comp in tab.args.values())
