from pathlib import Path

import pytest

from backend.dataset.scan import parse_repeats, scan_dataset
from backend.errors import DatasetError
from tests._dataset_fixtures import kohya_tree, save, textured


def test_parse_repeats():
    assert parse_repeats("10_my concept") == (10, "my concept")
    assert parse_repeats("3_b_c") == (3, "b_c")
    assert parse_repeats("0_x") is None
    assert parse_repeats("x_10") is None
    assert parse_repeats("10x_a") is None


def test_kohya_tree_selected_at_parent(tmp_path: Path):
    scan = scan_dataset(kohya_tree(tmp_path / "set"))
    assert [(s.name, s.repeats, s.num_images, s.class_tokens) for s in scan.subsets] == [
        ("10_a", 10, 3, "a"), ("3_b", 3, 2, "b")]
    assert scan.num_images == 5
    assert scan.images_per_epoch == 3 * 10 + 2 * 3
    b1 = next(i for i in scan.images if i.path.name == "b1.JPG")  # upper-case extension is an image
    assert b1.caption is None and b1.repeats == 3 and b1.subset == "3_b"
    a0 = next(i for i in scan.images if i.path.name == "a0.png")
    assert a0.caption == "trig, a0" and a0.caption_path == a0.path.with_suffix(".txt")
    assert not any("_quarantine" in str(i.path) for i in scan.images)


def test_kohya_tree_selected_at_subfolder(tmp_path: Path):
    root = kohya_tree(tmp_path / "set")
    scan = scan_dataset(root / "10_a")
    assert [(s.name, s.repeats, s.num_images) for s in scan.subsets] == [("10_a", 10, 3)]
    assert scan.images_per_epoch == 30
    scan_b = scan_dataset(root / "3_b", is_reg=True)
    assert scan_b.images_per_epoch == 6 and all(i.is_reg for i in scan_b.images)


def test_flat_folder_uses_default_repeats_and_caption_extension(tmp_path: Path):
    save(textured(1), tmp_path / "x.webp", caption="cap", ext=".caption")
    save(textured(2), tmp_path / "y.bmp")
    (tmp_path / "notes.md").write_text("hi")
    scan = scan_dataset(tmp_path, caption_extension="caption", default_repeats=4)
    assert scan.images_per_epoch == 8
    assert {i.path.name: i.caption for i in scan.images} == {"x.webp": "cap", "y.bmp": None}
    assert [(p.name, "not an image" in why) for p, why in scan.skipped] == [("notes.md", True)]


def test_no_images_error_names_folder_and_hints_parent(tmp_path: Path):
    save(textured(1), tmp_path / "set" / "concept" / "a.png")
    with pytest.raises(DatasetError) as err:
        scan_dataset(tmp_path / "set")
    msg = str(err.value)
    assert str(tmp_path / "set") in msg and ".png" in msg
    assert "10_concept" in msg and "parent folder" in msg
    # picked one level too high: the N_name folders are inside "set"
    kohya_tree(tmp_path / "top" / "set")
    with pytest.raises(DatasetError, match="holds N_name subfolders: pick that folder"):
        scan_dataset(tmp_path / "top")


def test_recursive_reads_nested_folders(tmp_path: Path):
    save(textured(1), tmp_path / "5_x" / "deep" / "a.png")
    with pytest.raises(DatasetError):
        scan_dataset(tmp_path)
    assert scan_dataset(tmp_path, recursive=True).images_per_epoch == 5
