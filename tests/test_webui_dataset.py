"""The Dataset tab's handlers, called as Gradio calls them (one {component: value} dict), on real files:
import (zip and server folder), check, each one-click fix, repeats, buckets, pages, use for training."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from backend.config.fields import leaf_fields
from backend.dataset.validate import validate_dataset
from tests._dataset_fixtures import kohya_tree, png_bytes, save, textured, write_zip
from tests._webui_fixtures import build_tab
from webui import dataset_view as view
from webui.context import AppContext, SharedUI, make_context
from webui.tabs import dataset


@pytest.fixture
def tab(tmp_path):
    ctx = make_context(str(tmp_path / "ws"), allow_dirs=[str(tmp_path)])  # the test's server folders
    _, t = build_tab(ctx, dataset)
    return t


def _data(tab, **kw) -> dict:
    """The inputs of every handler, with the schema's defaults; keywords name tab attributes or settings."""
    data = {comp: tab.specs[path].default for path, comp in tab.settings.items()}
    data.update({tab.dataset: None, tab.reg: None, tab.reg_repeats: 1, tab.per_page: 48, tab.page: 1,
                 tab.q_files: [], tab.q_kinds: [], tab.trigger: "", tab.rename_from: None, tab.sub_pick: None,
                 tab.sub_repeats: 1, tab.concept: "", tab.concept_repeats: 10, tab.nest: False, tab.checked: None,
                 tab.zip_file: None, tab.import_name: "", tab.overwrite: False, tab.server_folder: "",
                 tab.folder_mode: "Use in place"})
    for key, value in kw.items():
        comp = tab.settings.get(key.replace("__", ".")) or getattr(tab, key)
        data[comp] = value
    return data


def _kinds(out, tab) -> list[str]:
    return list(out[tab.problems]["kind"])


def _messy(root: Path) -> Path:
    """One of each problem the fixes handle, plus two clean images."""
    save(textured(1), root / "ok1.png", caption="trig, one")
    save(textured(2), root / "ok2.jpg", caption="trig, two")
    (root / "broken.png").write_bytes(png_bytes(3, (320, 320))[:300])  # truncated
    (root / "broken.txt").write_text("trig, broken")
    save(textured(4, mode="RGBA"), root / "alpha.png", caption="trig, alpha")
    save(textured(5), root / "nocap.png")
    save(textured(6), root / "other.png", caption="trig, other", ext=".caption")
    return root


def test_check_shows_counts_problems_buckets_and_first_page(tab, tmp_path):
    root = _messy(tmp_path / "messy")
    out = tab.check(_data(tab, dataset=str(root), training__batch_size=2))
    c = out[tab.checked]
    assert c.root == root and c.settings.batch_size == 2
    kinds = _kinds(out, tab)
    assert {"truncated", "mode", "missing_caption", "caption_extension"} <= set(kinds)
    assert kinds.count("missing_caption") == 1 and kinds.count("truncated") == 1
    assert "6 images" in out[tab.counts] and "error" in out[tab.counts]
    assert f"{view.steps(c)} steps per epoch" in out[tab.counts]
    assert view.steps(c) == c.buckets.steps_per_epoch == 3  # 6 images of 320² (headers), one bucket, batch 2
    assert list(out[tab.subsets]["images per epoch"]) == [6]
    assert sorted(out[tab.bucket_table]["file"]) == ["alpha.png", "broken.png", "nocap.png", "ok1.png",
                                                  "ok2.jpg", "other.png"]
    assert "broken.png" in out[tab.q_files].choices[0] or ("broken.png", "broken.png") in out[tab.q_files].choices
    assert out[tab.rename_from].value == ".caption"
    gallery = out[tab.gallery]
    assert len(gallery) == 6 and out[tab.page] == 1 and "6 images" in out[tab.page_label]
    captions = dict(zip((Path(p).name for p, _ in gallery), (cap for _, cap in gallery), strict=True))
    assert "trig, one" in captions.values() and "⚠ no caption: nocap.png" in captions.values()
    assert captions["_unreadable.png"] == "⚠ cannot be read: broken.png"
    thumbs = tab.ctx.paths.root / "cache" / "thumbs"  # served from the cache only, never the dataset
    assert all(Path(p).is_file() and Path(p).is_relative_to(thumbs) for p, _ in gallery)
    assert list(out[tab.bucket_plot].data[0].y) == [6]


def test_each_fix_reports_what_changed_and_rechecks(tab, tmp_path):
    root = _messy(tmp_path / "messy")
    c = tab.check(_data(tab, dataset=str(root)))[tab.checked]
    # clicking a row of the problems table selects its file
    pick = tab.select_problem(_data(tab), gr.SelectData(None, {"index": [0, 0], "value": "broken.png",
                                                               "row_value": ["broken.png", "truncated"]}))
    assert pick[tab.q_files]["value"] == ["broken.png"]

    out = tab.quarantine(_data(tab, checked=c, q_files=["broken.png"]))
    assert "Moved to _quarantine: 2 change(s)" in out[tab.fix_log]  # the image and its caption
    assert "`_quarantine/broken.txt`" in out[tab.fix_log]
    assert (root / "_quarantine" / "broken.png").is_file() and "truncated" not in _kinds(out, tab)

    out = tab.convert(_data(tab, checked=out[tab.checked]))
    assert "Converted to RGB: 1 change" in out[tab.fix_log] and "mode" not in _kinds(out, tab)
    assert Image.open(root / "alpha.png").mode == "RGB" and (root / "_quarantine" / "alpha.png").is_file()

    out = tab.create_captions(_data(tab, checked=out[tab.checked], trigger="mytrigger"))
    assert (root / "nocap.txt").read_text().strip() == "mytrigger" and "missing_caption" not in _kinds(out, tab)
    assert "skipped" in out[tab.fix_log]  # other.png has a .caption: it is renamed, not given a second caption

    out = tab.rename_captions(_data(tab, checked=out[tab.checked], rename_from=".caption"))
    assert "renamed" in out[tab.fix_log] and (root / "other.txt").read_text().strip() == "trig, other"
    assert "caption_extension" not in _kinds(out, tab)
    assert out[tab.checked].report.counts["problems"] == 0
    with pytest.raises(gr.Error, match="No image needs"):
        tab.convert(_data(tab, checked=out[tab.checked]))


def test_quarantine_by_kind_and_nothing_selected(tab, tmp_path):
    root = tmp_path / "dups"
    img = textured(7)
    save(img, root / "a.png", caption="t")
    save(img, root / "b.png", caption="t")  # same bytes
    c = tab.check(_data(tab, dataset=str(root)))[tab.checked]
    with pytest.raises(gr.Error, match="Nothing to move"):
        tab.quarantine(_data(tab, checked=c))
    (tmp_path / "outside.png").write_bytes(b"x")
    with pytest.raises(gr.Error, match="not an image or a flagged file"):
        tab.quarantine(_data(tab, checked=c, q_files=["../outside.png"]))
    assert (tmp_path / "outside.png").is_file() and not (root / "outside.png").exists()
    out = tab.quarantine(_data(tab, checked=c, q_kinds=["duplicate"]))
    assert (root / "_quarantine" / "b.png").is_file() and (root / "_quarantine" / "b.txt").is_file()
    assert out[tab.checked].report.counts["duplicate"] == 0


def test_import_zip_refuses_to_overwrite_without_the_box(tab, tmp_path):
    z = write_zip(tmp_path / "cats.zip", [("cats/c1.png", png_bytes(1)), ("cats/c1.txt", b"cat"),
                                          ("cats/c2.png", png_bytes(2)), ("cats/notes.doc", b"x")])
    out = tab.import_zip(_data(tab, zip_file=str(z)))
    assert out[tab.dataset].value == "datasets/cats"
    assert "2 images" in out[tab.import_status] and "notes.doc" in out[tab.import_status]
    assert ("cats (2 images)", "datasets/cats") in out[tab.reg].choices
    checked = tab.check(_data(tab, dataset="datasets/cats"))
    assert checked[tab.checked].scan.num_images == 2
    with pytest.raises(gr.Error, match="already exists"):
        tab.import_zip(_data(tab, zip_file=str(z)))
    z2 = write_zip(tmp_path / "more.zip", [(f"m{i}.png", png_bytes(10 + i)) for i in range(3)])
    out = tab.import_zip(_data(tab, zip_file=str(z2), import_name="cats", overwrite=True))
    assert "3 images" in out[tab.import_status]
    with pytest.raises(gr.Error, match="Upload a .zip"):
        tab.import_zip(_data(tab))
    bad = write_zip(tmp_path / "evil.zip", [("../evil.png", png_bytes(1))])
    with pytest.raises(gr.Error, match=r"\.\."):
        tab.import_zip(_data(tab, zip_file=str(bad), import_name="evil"))
    assert not (tab.ctx.paths.datasets / "evil").exists()


def test_import_server_folder_in_place_or_copied(tab, tmp_path):
    src = kohya_tree(tmp_path / "server" / "chars")
    out = tab.import_folder(_data(tab, server_folder=str(src)))
    assert out[tab.dataset].value == str(src) and "used in place" in out[tab.import_status]
    out = tab.import_folder(_data(tab, server_folder=str(src), folder_mode="Copy into the workspace",
                                  import_name="copied"))
    assert out[tab.dataset].value == "datasets/copied"
    assert (tab.ctx.paths.datasets / "copied" / "10_a" / "a0.png").is_file()
    with pytest.raises(gr.Error, match="server folder"):
        tab.import_folder(_data(tab))


def test_kohya_tree_totals_and_repeats(tab, tmp_path):
    root = kohya_tree(tmp_path / "k")
    out = tab.check(_data(tab, dataset=str(root)))
    subsets = out[tab.subsets].set_index("subfolder")
    assert subsets.loc["10_a", "images per epoch"] == 30 and subsets.loc["3_b", "images per epoch"] == 6
    assert list(out[tab.subfolders]["subfolder"]) == ["10_a", "3_b"]
    out = tab.set_repeats(_data(tab, checked=out[tab.checked], sub_pick="3_b", sub_repeats=5))
    assert (root / "5_b").is_dir() and not (root / "3_b").exists() and "5_b" in out[tab.repeats_status]
    assert out[tab.checked].report.counts["images_per_epoch"] == 30 + 10
    out = tab.add_subfolder(_data(tab, checked=out[tab.checked], concept="style", concept_repeats=2))
    assert (root / "2_style").is_dir() and "2_style" in out[tab.repeats_status]
    with pytest.raises(gr.Error, match="already exists"):
        tab.add_subfolder(_data(tab, checked=out[tab.checked], concept="style", concept_repeats=2))
    # the N_name folder picked itself: renaming it moves the dataset's path too
    out = tab.check(_data(tab, dataset=str(root / "10_a")))
    out = tab.set_repeats(_data(tab, checked=out[tab.checked], sub_pick="10_a", sub_repeats=4))
    assert out[tab.checked].root == root / "4_a" and out[tab.dataset]["value"] == str(root / "4_a")


def test_flat_dataset_nested_into_a_concept(tab, tmp_path):
    root = tmp_path / "flat"
    for i in range(2):
        save(textured(20 + i), root / f"f{i}.png", caption="x")
    out = tab.check(_data(tab, dataset=str(root)))
    assert "flat dataset" in out[tab.repeats_status].lower() and out[tab.sub_pick].value is None
    out = tab.add_subfolder(_data(tab, checked=out[tab.checked], concept="me", concept_repeats=8, nest=True))
    assert (root / "8_me" / "f0.png").is_file() and (root / "8_me" / "f0.txt").is_file()
    assert out[tab.checked].report.counts["images_per_epoch"] == 16


def test_buckets_recompute_and_regularization(tab, tmp_path):
    root = tmp_path / "shapes"
    save(textured(30, (640, 384)), root / "wide.png", caption="x")
    save(textured(31, (384, 640)), root / "tall.png", caption="x")
    save(textured(32, (200, 200)), root / "small.png", caption="x")
    save(textured(33, (1600, 200)), root / "strip.png", caption="x")
    reg = tmp_path / "reg"
    for i in range(3):
        save(textured(40 + i), reg / f"r{i}.png", caption="person")
    out = tab.check(_data(tab, dataset=str(root), reg=str(reg), reg_repeats=2))
    c = out[tab.checked]
    table = out[tab.bucket_table].set_index("file")
    assert table.loc["small.png", "upscaled"] == "yes" and table.loc["strip.png", "cropped %"] > 30
    assert "Upscaled (2): `small.png`, `strip.png`" in out[tab.bucket_md]
    assert "Heavily cropped, over 30% cut away (1): `strip.png`" in out[tab.bucket_md]
    assert "Regularization set `reg`: 3 images" in out[tab.bucket_md]
    assert view.steps(c) == c.buckets.steps_per_epoch + 6  # 3 reg images × 2 repeats, batch 1
    assert list(out[tab.subsets]["regularization"]) == ["no", "yes"]
    out = tab.update_buckets(_data(tab, checked=c, training__batch_size=4, dataset__resolution=256))
    c2 = out[tab.checked]
    assert c2.settings.batch_size == 4 and c2.reg[1].steps_per_epoch == 2  # ceil(6 / 4)
    assert "batch size 4" in out[tab.counts]
    with pytest.raises(gr.Error, match="dataset.resolution"):
        tab.check(_data(tab, dataset=str(root), dataset__resolution=100))
    with pytest.raises(gr.Error, match="is the dataset itself"):
        tab.check(_data(tab, dataset=str(root), reg=str(root)))


def test_pages_of_the_gallery(tab, tmp_path):
    root = tmp_path / "many"
    for i in range(30):
        save(textured(100 + i, (64, 64)), root / f"i{i:02d}.png", caption=f"cap {i}")
    out = tab.check(_data(tab, dataset=str(root), per_page=24))
    c = out[tab.checked]
    assert len(out[tab.gallery]) == 24 and "Page 1 of 2" in out[tab.page_label]
    nxt = tab.show_page(_data(tab, checked=c, page=1, per_page=24), 1)
    assert nxt[tab.page] == 2 and [cap for _, cap in nxt[tab.gallery]] == [f"cap {i}" for i in range(24, 30)]
    assert tab.show_page(_data(tab, checked=c, page=2, per_page=24), 1)[tab.page] == 2  # clamped
    assert tab.show_page(_data(tab, checked=c, page=1, per_page=24), -1)[tab.page] == 1
    with pytest.raises(gr.Error, match="Check a dataset first"):
        tab.show_page(_data(tab), 1)


def test_use_for_training_gives_the_path_and_settings(tab, tmp_path):
    z = write_zip(tmp_path / "set.zip", [("a.png", png_bytes(1)), ("a.txt", b"t")])
    tab.import_zip(_data(tab, zip_file=str(z), import_name="mine"))
    c = tab.check(_data(tab, dataset="datasets/mine", dataset__resolution=768))[tab.checked]
    out = tab.use_for_training(_data(tab, checked=c))
    assert out[tab.use_path].value == "datasets/mine" and out[tab.use_path].visible
    pick = view.pick_for_training(tab.ctx.paths, c, "", 1)
    assert pick["dataset.path"] == "datasets/mine" and pick["dataset.resolution"] == 768
    assert pick["dataset.reg_path"] == ""
    with pytest.raises(gr.Error, match="Check a dataset first"):
        tab.use_for_training(_data(tab))


def test_check_refuses_a_missing_or_empty_pick(tab, tmp_path):
    with pytest.raises(gr.Error, match="Choose the dataset"):
        tab.check(_data(tab))
    with pytest.raises(gr.Error, match="does not exist"):
        tab.check(_data(tab, dataset=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(gr.Error, match="no images"):
        tab.check(_data(tab, dataset=str(tmp_path / "empty")))


def test_report_matches_the_backend(tab, tmp_path):
    """The tab shows the backend's report, each problem once, with files relative to the dataset."""
    root = _messy(tmp_path / "m")
    out = tab.check(_data(tab, dataset=str(root)))
    report = validate_dataset(root)
    assert list(out[tab.problems]["kind"]) == [p.kind for p in report.problems]
    assert list(out[tab.problems]["file"]) == [str(p.file.relative_to(root)) for p in report.problems]


def test_use_for_training_fills_the_training_hook(tmp_path):
    """With the Training tab's hook (a shared gr.State of {dotted path: value}), the pick goes there and the
    page switches to the Training tab."""
    ctx = make_context(str(tmp_path / "ws"), allow_dirs=[str(tmp_path)])
    with gr.Blocks() as demo:
        ui = SharedUI(blocks=demo, tabs=gr.Tabs(), timer=gr.Timer(), job_id=gr.State())
        ui.dataset_pick = gr.State({})  # what create_app provides once the hook exists (see REQUESTS.md)
        tab = dataset.build(AppContext(paths=ctx.paths, supervisor=ctx.supervisor, ui=ui, roots=ctx.roots))
    root = kohya_tree(tmp_path / "k")
    reg = tmp_path / "reg"
    save(textured(50), reg / "r.png", caption="person")
    c = tab.check(_data(tab, dataset=str(root), reg=str(reg), reg_repeats=3))[tab.checked]
    out = tab.use_for_training(_data(tab, checked=c, reg=str(reg), reg_repeats=3))
    assert out[ui.dataset_pick] == {**view.pick_for_training(ctx.paths, c, str(reg), 3),
                                    "dataset.path": str(root), "dataset.reg_path": str(reg)}
    assert out[ui.dataset_pick]["dataset.reg_repeats"] == 3 and out[ui.tabs].selected == "training"
    assert set(out[ui.dataset_pick]) <= {s.path for s in leaf_fields()}  # every key is a schema option
