"""WD14 tagger: preprocessing (BGR, white padding, alpha on white), CSV parsing, batch handling, tag rules."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.captioning.tagrules import (
    KAOMOJI,
    TagRules,
    format_tag,
    mcut_threshold,
    merge_caption,
    prediction_tags,
    select,
)
from backend.captioning.wd14 import CHARACTER, GENERAL, RATING, WD14Tagger, preprocess, read_tag_table
from backend.errors import ModelError
from tests._caption_fixtures import RED_DEFAULT, SIZE, TAGS, make_tagger, solid, write_tags_csv


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return make_tagger(tmp_path_factory.mktemp("wd14") / "dynamic")


@pytest.fixture(scope="module")
def tagger(tagger_dir):
    return WD14Tagger(tagger_dir, device="cpu")


def tags_of(tagger, path, rules=TagRules()):
    return tagger.tag_arrays([tagger.load(path)], rules)[0][0]


def test_session_facts_come_from_the_model(tagger, tmp_path):
    assert (tagger.input_name, tagger.output_name) == ("input_1:0", "predictions_sigmoid")
    assert (tagger.height, tagger.width, tagger.fixed_batch) == (SIZE, SIZE, None)
    assert tagger.provider == "CPUExecutionProvider"
    fixed = WD14Tagger(make_tagger(tmp_path / "fixed", fixed_batch=1))
    assert fixed.fixed_batch == 1 and fixed.batch_size(8) == 1 and tagger.batch_size(8) == 8


def test_red_is_fed_as_bgr(tagger, tmp_path):
    red = solid(tmp_path / "red.png", (255, 0, 0))
    assert tags_of(tagger, red) == RED_DEFAULT
    arr = tagger.load(red)
    assert arr.dtype == np.float32 and arr.shape == (SIZE, SIZE, 3) and arr.flags.c_contiguous
    assert arr[0, 0].tolist() == [0.0, 0.0, 255.0]  # B, G, R
    # The same image fed in RGB order would read as blue: the fixture really distinguishes the two.
    rgb = np.ascontiguousarray(arr[:, :, ::-1])[None]
    probs = tagger.session.run(None, {tagger.input_name: rgb})[0][0]
    names = [t[0] for t in TAGS]
    assert probs[names.index("blue_theme")] > 0.99 and probs[names.index("red_theme")] < 0.01


def test_padding_is_white_and_centred(tagger, tmp_path):
    tall = solid(tmp_path / "tall.png", (255, 0, 0), size=(16, 32))
    img = Image.open(tall).convert("RGB")
    arr = preprocess(img, SIZE, SIZE)
    assert arr[SIZE // 2, 0].tolist() == [255.0, 255.0, 255.0]  # left pad
    assert arr[SIZE // 2, -1].tolist() == [255.0, 255.0, 255.0]  # right pad
    assert arr[SIZE // 2, SIZE // 2].tolist() == [0.0, 0.0, 255.0]  # red in the middle
    tags = tags_of(tagger, tall)
    assert "white background" in tags and "dark" not in tags and "red theme" not in tags


def test_transparency_is_composited_on_white(tagger, tmp_path):
    clear = solid(tmp_path / "clear.png", (0, 0, 0, 0), mode="RGBA")  # how PNGs store clear pixels
    assert "white background" in tags_of(tagger, clear)
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert "white background" in tags_of(tagger, tmp_path / "pal.png")
    # Without compositing (PIL's plain convert) the same pixels are black: the model would say dark.
    black = preprocess(Image.open(clear).convert("RGB"), SIZE, SIZE)[None]
    probs = tagger.session.run(None, {tagger.input_name: black})[0][0]
    assert probs[[t[0] for t in TAGS].index("dark")] > 0.9


def test_fixed_and_dynamic_batches_agree_and_bad_images_are_listed(tagger, tmp_path):
    fixed = WD14Tagger(make_tagger(tmp_path / "fixed", fixed_batch=1))
    paths = [solid(tmp_path / "a.png", (255, 0, 0)), tmp_path / "broken.jpg",
             solid(tmp_path / "b.png", (0, 255, 0)), solid(tmp_path / "c.png", (0, 0, 255))]
    paths[1].write_bytes(b"\xff\xd8 not a jpeg")
    for tg in (fixed, tagger):
        tagged, failed = [], []
        for t, f in tg.tag_images(paths, TagRules(), batch_size=3, workers=2):
            tagged += t
            failed += f
        assert [t.path.name for t in tagged] == ["a.png", "b.png", "c.png"]
        assert [f.path.name for f in failed] == ["broken.jpg"] and "UnidentifiedImageError" in failed[0].error
        assert tagged[0].tags[0] == "red theme" and tagged[1].tags[0] == "green theme"
        assert tagged[2].tags[0] == "blue theme" and "hatsune miku" in tagged[1].tags


def test_lookup_is_by_category_not_position(tmp_path):
    mixed = WD14Tagger(make_tagger(tmp_path / "mixed", mixed_order=True))
    red = solid(tmp_path / "red.png", (255, 0, 0))
    assert tags_of(mixed, red) == RED_DEFAULT
    assert tags_of(mixed, red, TagRules(include_rating=True))[0] == "general"


def test_csv_lenient_numbers_and_header_check(tmp_path):
    table = read_tag_table(write_tags_csv(tmp_path / "f.csv", variant="float_ids"))
    assert table.names[0] == "general" and table.categories.tolist() == [t[1] for t in TAGS]
    assert table.indices(RATING).tolist() == [0, 1, 2, 3] and table.indices(CHARACTER).tolist() == [14, 15, 16]
    assert len(table.indices(GENERAL)) == 10
    bad = write_tags_csv(tmp_path / "bad.csv", variant="bad_header")
    with pytest.raises(ModelError, match=r"bad\.csv.*header.*tag_id,name,category,count"):
        read_tag_table(bad)


def test_missing_model_files_are_named(tmp_path):
    folder = make_tagger(tmp_path / "m")
    (folder / "selected_tags.csv").unlink()
    with pytest.raises(ModelError, match=r"selected_tags\.csv is missing"):
        WD14Tagger(folder)
    write_tags_csv(folder / "selected_tags.csv")
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx is missing"):
        WD14Tagger(folder)
    with pytest.raises(ModelError, match="does not exist"):
        WD14Tagger(tmp_path / "nowhere")
    (folder / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match=r"onnxruntime cannot load .*model\.onnx"):
        WD14Tagger(folder)


def test_thresholds_are_inclusive_and_separate(tagger, tmp_path):
    red = solid(tmp_path / "red.png", (255, 0, 0))
    tags = tags_of(tagger, red, TagRules(general_threshold=0.34, character_threshold=0.5))
    assert "1girl" in tags and "hakurei reimu" in tags  # p = 0.34 and 0.5 exactly at the thresholds
    tags = tags_of(tagger, red, TagRules(general_threshold=0.55, character_threshold=0.95))
    assert tags == ["red theme", "^_^"]


def test_mcut(tagger, tmp_path):
    assert mcut_threshold(np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(0.5)
    red = solid(tmp_path / "red.png", (255, 0, 0))
    # general: the biggest gap is red_theme (~1.0) → ^_^ (0.6); characters: 0.5 → ~0, floor 0.15.
    assert tags_of(tagger, red, TagRules(use_mcut=True)) == [
        "red theme", "kirisame marisa (touhou)", "hakurei reimu"]


def test_rules_undesired_underscores_kaomoji_replacements(tagger, tmp_path):
    red = solid(tmp_path / "red.png", (255, 0, 0))
    rules = TagRules(undesired=("long hair", "star_(symbol)"), include_rating=True, character_first=True,
                     replacements=(("red_theme", "crimson"), ("solo", "")))
    assert tags_of(tagger, red, rules) == ["general", "kirisame marisa (touhou)", "crimson", "^_^"]
    raw = tags_of(tagger, red, TagRules(replace_underscores=False))
    assert raw == ["red_theme", "^_^", "long_hair", "star_(symbol)", "solo", "kirisame_marisa_(touhou)"]
    assert all(format_tag(k, True) == k for k in KAOMOJI)
    assert format_tag("long_hair", True) == "long hair"


def test_trigger_words_and_append():
    new = ["red theme", "solo"]
    assert merge_caption(new, None, False, ["sks"]) == ["sks", "red theme", "solo"]
    assert merge_caption(["solo", "sks"], None, False, ["sks", "mystyle"]) == ["sks", "mystyle", "solo"]
    existing = "old tag, Solo, sks"
    assert merge_caption(new, existing, True, ["sks"]) == ["sks", "old tag", "Solo", "red theme"]
    assert merge_caption(new, existing, False, []) == new


def test_select_reports_rating_and_probabilities():
    names = ("general", "explicit", "a_tag", "b_tag", "char_x")
    cats = np.array([9, 9, 0, 0, 4])
    probs = np.array([0.2, 0.7, 0.5, 0.3, 0.9], dtype=np.float32)
    pred = select(probs, names, np.flatnonzero(cats == 9), np.flatnonzero(cats == 0),
                  np.flatnonzero(cats == 4), TagRules())
    assert pred.rating == "explicit" and [n for n, _ in pred.general] == ["a_tag"]
    assert prediction_tags(pred, TagRules(include_rating=True)) == ["explicit", "a tag", "char x"]
