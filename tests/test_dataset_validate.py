import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from backend.dataset.validate import validate_dataset
from tests._dataset_fixtures import save, textured


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    d = tmp_path / "messy"
    save(textured(1), d / "good.png", caption="trig, good")
    full = save(textured(2), d / "full.png")
    data = full.read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    (d / "trunc.txt").write_text("trig\n")
    full.unlink()
    save(textured(3, (32, 32)), d / "small.png", caption="trig")
    save(textured(4, mode="RGBA"), d / "rgba.png", caption="trig")
    save(textured(5), d / "wrongext.png", caption="trig", ext=".caption")
    save(textured(6), d / "dup1.png", caption="trig")
    shutil.copy(d / "dup1.png", d / "dup2.png")
    (d / "dup2.txt").write_text("trig\n")
    save(textured(6, (400, 400)), d / "near.jpg", caption="trig", quality=90)
    save(textured(7, (1800, 300)), d / "wide.png", caption="trig")
    save(textured(8), d / "empty.png")
    (d / "empty.txt").write_text("  \n")
    (d / "readme.pdf").write_bytes(b"%PDF")
    (d / "notimage.jpg").write_bytes(b"this is not a jpeg")
    (d / "notimage.txt").write_text("x\n")
    return d


EXPECTED = {
    ("trunc.png", "truncated"), ("small.png", "too_small"), ("rgba.png", "mode"),
    ("wrongext.png", "caption_extension"), ("dup2.png", "duplicate"), ("near.jpg", "near_duplicate"),
    ("wide.png", "extreme_aspect"), ("empty.png", "empty_caption"), ("readme.pdf", "not_used"),
    ("notimage.jpg", "unreadable"),
}


def test_report_lists_each_problem_once(messy: Path, tmp_path: Path):
    report = validate_dataset(messy, cache_dir=tmp_path / "cache")
    found = [(p.file.name, p.kind) for p in report.problems]
    assert Counter(found).most_common(1)[0][1] == 1, "a file+kind listed twice"
    assert set(found) == EXPECTED
    counts = report.counts
    assert counts["images"] == 11 and counts["duplicate"] == 1 and counts["near_duplicate"] == 1
    assert counts["missing_caption"] == 0 and counts["problems"] == len(EXPECTED)
    fixes = {p.kind: p.fix for p in report.problems}
    assert fixes["mode"] == "convert_mode" and fixes["caption_extension"] == "rename_caption_extension"
    assert fixes["truncated"] == "quarantine" and fixes["empty_caption"] == "create_caption"
    assert "dup1.png" in next(p.detail for p in report.problems if p.kind == "duplicate")


def test_report_serialises(messy: Path):
    report = validate_dataset(messy)
    data = json.loads(report.to_json())
    assert {"file", "kind", "detail", "fix", "severity"} <= set(data["problems"][0])
    assert data["counts"]["truncated"] == 1
    df = report.to_dataframe()
    assert list(df.columns) == ["file", "kind", "severity", "detail", "fix"] and len(df) == len(EXPECTED)
    subsets = report.subsets_dataframe()
    assert subsets.loc[0, "images"] == 11 and subsets.loc[0, "images_per_epoch"] == 11


def test_kohya_totals_and_missing_captions(tmp_path: Path):
    from tests._dataset_fixtures import kohya_tree
    report = validate_dataset(kohya_tree(tmp_path / "set"))
    assert [(s.name, s.images, s.repeats, s.images_per_epoch, s.captioned) for s in report.subsets] == [
        ("10_a", 3, 10, 30, 3), ("3_b", 2, 3, 6, 1)]
    assert [(p.file.name, p.kind) for p in report.problems] == [("b1.JPG", "missing_caption")]


def test_cache_makes_recheck_skip_decoding(messy: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = validate_dataset(messy, cache_dir=cache)
    assert first.cache_misses == 11 and first.cache_hits == 0
    second = validate_dataset(messy, cache_dir=cache)
    assert second.cache_hits == 11 and second.cache_misses == 0
    assert [p.to_dict() for p in second.problems] == [p.to_dict() for p in first.problems]
    # an edited file is re-analysed: the RGBA image becomes RGB
    Image.open(messy / "rgba.png").convert("RGB").save(messy / "rgba.png")
    third = validate_dataset(messy, cache_dir=cache)
    assert third.cache_misses == 1 and "mode" not in {p.kind for p in third.problems}


def test_no_upscale_and_aspect_options(messy: Path):
    report = validate_dataset(messy, no_upscale=True, max_aspect=10)
    kinds = {(p.file.name, p.kind) for p in report.problems}
    assert ("small.png", "too_small") in kinds  # 32 px < one 64 px step
    assert ("wide.png", "extreme_aspect") not in kinds


def test_non_utf8_caption_is_an_error_not_a_crash(tmp_path: Path):
    d = tmp_path / "d"
    save(textured(1), d / "a.png")
    (d / "a.txt").write_bytes("caf\xe9, tag".encode("latin-1"))
    report = validate_dataset(d)
    assert [(p.file.name, p.kind) for p in report.problems] == [("a.png", "caption_unreadable")]


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_exif_orientation_swaps_size(tmp_path: Path, fmt: str):
    from backend.dataset.images import image_size, load_rgb
    img = textured(1, (600, 300))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90°: shown 300 wide, 600 high
    path = save(img, tmp_path / "d" / f"r.{fmt}", caption="t", exif=exif)
    assert image_size(path) == (300, 600) == load_rgb(path).size
    report = validate_dataset(tmp_path / "d")
    assert report.sizes()[path] == (300, 600)
