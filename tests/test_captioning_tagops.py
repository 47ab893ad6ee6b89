"""Bulk tag operations: each op on a fixture dataset, preview before apply, commit with undo, frequency."""

from __future__ import annotations

import pytest

from backend.captioning.tagops import (
    AddTrigger,
    Deduplicate,
    MoveToFront,
    PruneRare,
    RemoveTags,
    ReplaceTag,
    SearchReplace,
    SortTags,
    apply_ops,
    commit,
    op_from_dict,
    tag_frequency,
)
from backend.captioning.undo import get_snapshot, restore
from backend.errors import DatasetError
from backend.paths import WorkspacePaths
from tests._caption_fixtures import solid

CAPTIONS = {
    "10_a/1.png": "1girl, long_hair, smile, smile",
    "10_a/2.png": "sks, 1girl, Long hair, red eyes",
    "10_a/3.png": None,  # no caption file
    "5_b/4.png": "landscape, tree, 1girl",
}


@pytest.fixture
def ds(tmp_path):
    root = tmp_path / "ds"
    for rel, cap in CAPTIONS.items():
        img = solid(root / rel, (10, 20, 30), size=(8, 8))
        if cap is not None:
            img.with_suffix(".txt").write_text(cap + "\n", encoding="utf-8")
    return root


def after(cs):
    return {c.image.relative_to(cs.dataset).as_posix(): c.after for c in cs.changes}


def test_add_trigger_is_idempotent_and_creates_missing_captions(ds, tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    cs = apply_ops(ds, ".txt", [AddTrigger(("sks",))])
    assert after(cs) == {"10_a/1.png": "sks, 1girl, long_hair, smile, smile", "10_a/3.png": "sks",
                         "5_b/4.png": "sks, landscape, tree, 1girl"}
    assert (ds / "10_a" / "1.txt").read_text() == CAPTIONS["10_a/1.png"] + "\n"  # a preview writes nothing
    assert cs.summary() == "add trigger word: 3 of 4 caption files change"
    commit(cs, paths)
    assert cs.written == 3 and cs.undo_id
    assert apply_ops(ds, ".txt", [AddTrigger(("sks",))]).num_changed == 0  # twice changes nothing
    restore(get_snapshot(paths, cs.undo_id))
    assert (ds / "10_a" / "1.txt").read_text() == CAPTIONS["10_a/1.png"] + "\n"
    assert not (ds / "10_a" / "3.txt").exists()


def test_remove_replace_move_dedupe(ds):
    assert after(apply_ops(ds, ".txt", [RemoveTags(("long hair", "tree"))])) == {
        "10_a/1.png": "1girl, smile, smile", "10_a/2.png": "sks, 1girl, red eyes", "5_b/4.png": "landscape, 1girl"}
    assert after(apply_ops(ds, ".txt", [ReplaceTag("long hair", "very long hair")])) == {
        "10_a/1.png": "1girl, very long hair, smile, smile", "10_a/2.png": "sks, 1girl, very long hair, red eyes"}
    assert after(apply_ops(ds, ".txt", [ReplaceTag("smile", "")])) == {"10_a/1.png": "1girl, long_hair"}
    assert after(apply_ops(ds, ".txt", [ReplaceTag("smile", "1girl")])) == {"10_a/1.png": "1girl, long_hair"}
    assert after(apply_ops(ds, ".txt", [MoveToFront(("red eyes", "landscape_x", "1girl"))])) == {
        "10_a/2.png": "red eyes, 1girl, sks, Long hair", "5_b/4.png": "1girl, landscape, tree"}
    assert after(apply_ops(ds, ".txt", [Deduplicate()])) == {"10_a/1.png": "1girl, long_hair, smile"}


def test_search_replace_sort_prune(ds):
    assert after(apply_ops(ds, ".txt", [SearchReplace("1girl", "1woman")])) == {
        "10_a/1.png": "1woman, long_hair, smile, smile", "10_a/2.png": "sks, 1woman, Long hair, red eyes",
        "5_b/4.png": "landscape, tree, 1woman"}
    assert after(apply_ops(ds, ".txt", [SearchReplace(r"_(\w)", r" \1", regex=True)])) == {
        "10_a/1.png": "1girl, long hair, smile, smile"}
    assert apply_ops(ds, ".txt", [SearchReplace("LONG", "x", case_sensitive=True)]).num_changed == 0
    assert apply_ops(ds, ".txt", [SearchReplace("LONG", "x", case_sensitive=False)]).num_changed == 2
    with pytest.raises(DatasetError, match="not a valid regular expression"):
        apply_ops(ds, ".txt", [SearchReplace("(", "", regex=True)])
    assert after(apply_ops(ds, ".txt", [SortTags(keep_first=1)])) == {"5_b/4.png": "landscape, 1girl, tree"}
    sorted_alpha = after(apply_ops(ds, ".txt", [SortTags()]))
    assert sorted_alpha == {"10_a/2.png": "1girl, Long hair, red eyes, sks", "5_b/4.png": "1girl, landscape, tree"}
    by_freq = after(apply_ops(ds, ".txt", [SortTags(by="frequency")]))
    assert by_freq["5_b/4.png"] == "1girl, landscape, tree"  # 1girl in 3 captions first
    assert by_freq["10_a/2.png"] == "1girl, Long hair, red eyes, sks"
    # Prune: tags in fewer than 2 captions go (long hair counts once per caption, spelled either way).
    assert after(apply_ops(ds, ".txt", [PruneRare(2, keep=("sks",))])) == {
        "10_a/1.png": "1girl, long_hair", "10_a/2.png": "sks, 1girl, Long hair", "5_b/4.png": "1girl"}


def test_ops_chain_and_selection(ds, tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    ops = [{"op": "dedupe"}, {"op": "add_trigger", "words": ["sks"]}, {"op": "sort", "keep_first": 1}]
    cs = apply_ops(ds, ".txt", ops, selection=[ds / "10_a" / "1.png", ds / "5_b" / "4.png"], dry_run=False,
                   paths=paths)
    assert cs.considered == 2 and cs.written == 2
    assert (ds / "10_a" / "1.txt").read_text() == "sks, 1girl, long_hair, smile\n"
    assert (ds / "10_a" / "2.txt").read_text() == CAPTIONS["10_a/2.png"] + "\n"
    assert list(cs.to_dataframe().columns) == ["image", "before", "after"]
    with pytest.raises(DatasetError, match="unknown tag operation 'nope'"):
        op_from_dict({"op": "nope"})


def test_commit_skips_files_changed_since_the_preview(ds, tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    cs = apply_ops(ds, ".txt", [RemoveTags(("1girl",))])
    (ds / "5_b" / "4.txt").write_text("edited meanwhile\n")
    commit(cs, paths)
    assert cs.conflicts == [ds / "5_b" / "4.txt"] and cs.written == 2
    assert (ds / "5_b" / "4.txt").read_text() == "edited meanwhile\n"


def test_tag_frequency(ds):
    overall = tag_frequency(ds, ".txt")
    assert list(overall.columns) == ["tag", "count", "percent"]
    top = overall.iloc[0]
    assert (top["tag"], top["count"], top["percent"]) == ("1girl", 3, 100.0)
    assert overall.set_index("tag").loc["smile", "count"] == 1  # counted once per caption
    per = tag_frequency(ds, ".txt", by_subset=True)
    assert list(per.columns) == ["subset", "tag", "count", "percent"]
    b = per[per["subset"] == "5_b"].set_index("tag")
    assert b.loc["tree", "count"] == 1 and b.loc["tree", "percent"] == 100.0
    a = per[per["subset"] == "10_a"].set_index("tag")
    assert a.loc["1girl", "percent"] == 100.0 and "tree" not in a.index  # of the 2 captioned images
