from pathlib import Path

import pytest
from PIL import Image

from backend.dataset.fixes import convert_modes, create_missing_captions, quarantine, rename_caption_extension
from backend.dataset.scan import scan_dataset
from backend.dataset.validate import validate_dataset
from backend.errors import DatasetError
from tests._dataset_fixtures import kohya_tree, save, textured


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_quarantine_moves_never_deletes(tmp_path: Path):
    root = kohya_tree(tmp_path / "set")
    before = _all_files(root)
    bad = root / "10_a" / "a1.png"
    (root / "10_a" / "a1.caption").write_text("old caption\n")
    changes = quarantine(root, [bad])
    assert {c.action for c in changes} == {"moved"}
    q = root / "_quarantine" / "10_a"
    assert (q / "a1.png").read_bytes() == before["10_a/a1.png"]
    assert (q / "a1.txt").read_text() == "trig, a1\n" and (q / "a1.caption").exists()
    assert not bad.exists()
    assert len(_all_files(root)) == len(before) + 1  # the extra .caption; nothing vanished
    assert scan_dataset(root).num_images == 4
    # a second file of the same name does not overwrite the first one in quarantine
    save(textured(9), bad)
    quarantine(root, [bad])
    assert (q / "a1 (1).png").exists() and (q / "a1.png").read_bytes() == before["10_a/a1.png"]
    with pytest.raises(DatasetError, match="not inside"):
        quarantine(root, [tmp_path / "elsewhere.png"])


def test_fix_report_problems_by_quarantine(tmp_path: Path):
    d = tmp_path / "d"
    save(textured(1), d / "a.png", caption="t")
    (d / "b.png").write_bytes(b"broken")
    report = validate_dataset(d)
    quarantine(d, report.files("unreadable"))
    assert (d / "_quarantine" / "b.png").read_bytes() == b"broken"
    assert validate_dataset(d).counts["unreadable"] == 0


def test_convert_modes_keeps_original(tmp_path: Path):
    d = tmp_path / "d"
    rgba = textured(1, mode="RGBA")
    rgba.putalpha(0)  # fully transparent: must become white, not black
    save(rgba, d / "a.png", caption="t")
    save(textured(2).convert("P"), d / "p.png")
    save(textured(3).convert("CMYK"), d / "c.jpg")
    save(Image.new("I;16", (64, 64), 40000), d / "g16.png")
    save(textured(4), d / "rgb.png")
    original = (d / "a.png").read_bytes()
    changes = convert_modes([d / "a.png", d / "p.png", d / "c.jpg", d / "g16.png", d / "rgb.png"], d)
    assert [c.action for c in changes] == ["converted"] * 4 + ["skipped"]
    for name in ("a.png", "p.png", "c.jpg", "g16.png"):
        with Image.open(d / name) as img:
            assert img.mode == "RGB", name
        assert (d / "_quarantine" / name).exists()
    assert (d / "_quarantine" / "a.png").read_bytes() == original
    with Image.open(d / "a.png") as img:
        assert img.getpixel((5, 5)) == (255, 255, 255)
    with Image.open(d / "g16.png") as img:
        assert img.getpixel((0, 0))[0] == 40000 // 256  # scaled to 8 bits, not clipped to white
    assert validate_dataset(d).counts["mode"] == 0


def test_create_missing_captions(tmp_path: Path):
    root = kohya_tree(tmp_path / "set")
    save(textured(5), root / "3_b" / "b2.png")
    (root / "3_b" / "b2.txt").write_text("\n")  # empty: kohya would stop with an assertion
    save(textured(6), root / "3_b" / "b3.png", caption="other", ext=".caption")
    changes = create_missing_captions(scan_dataset(root), "mytrigger")
    created = {c.path.name for c in changes if c.action == "created"}
    assert created == {"b1.JPG", "b2.png"}
    assert [c.path.name for c in changes if c.action == "skipped"] == ["b3.png"]
    assert (root / "3_b" / "b1.txt").read_text() == "mytrigger\n"
    assert (root / "10_a" / "a0.txt").read_text() == "trig, a0\n"  # untouched
    # blank trigger: the folder's class tokens
    save(textured(7), root / "3_b" / "b4.png")
    create_missing_captions(scan_dataset(root), "  ")
    assert (root / "3_b" / "b4.txt").read_text() == "b\n"
    # a caption that is not UTF-8 is left alone, named, and the other images still get theirs
    save(textured(8), root / "3_b" / "b5.png")
    (root / "3_b" / "b5.txt").write_bytes(b"caf\xe9, latin-1")
    save(textured(9), root / "3_b" / "b6.png")
    changes = create_missing_captions(scan_dataset(root), "mytrigger")
    bad = [c for c in changes if c.path.name == "b5.png"]
    assert bad and bad[0].action == "skipped" and "UTF-8" in bad[0].detail
    assert (root / "3_b" / "b5.txt").read_bytes() == b"caf\xe9, latin-1"
    assert (root / "3_b" / "b6.txt").read_text() == "mytrigger\n"


def test_rename_caption_extension_refuses_overwrite(tmp_path: Path):
    d = tmp_path / "d"
    save(textured(1), d / "a.png", caption="from caption", ext=".caption")
    save(textured(2), d / "b.png", caption="b caption", ext=".caption")
    (d / "b.txt").write_text("existing txt\n")
    (d / "readme.caption").write_text("not a sidecar\n")
    changes = rename_caption_extension(d, ".caption", ".txt")
    assert {(c.path.name, c.action) for c in changes} == {("a.caption", "renamed"), ("b.caption", "skipped")}
    assert (d / "a.txt").read_text() == "from caption\n"
    assert (d / "b.txt").read_text() == "existing txt\n" and (d / "b.caption").exists()
    assert (d / "readme.caption").exists()
    with pytest.raises(DatasetError):
        rename_caption_extension(d, "txt", ".txt")


def test_quarantine_refuses_a_path_that_climbs_out_of_the_dataset(tmp_path):
    from backend.dataset.fixes import quarantine
    from backend.errors import DatasetError

    root = tmp_path / "ds"
    root.mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not in the dataset")
    with pytest.raises(DatasetError):
        quarantine(root, [root / ".." / "outside.png"])
    assert outside.exists() and not (root / "_quarantine").exists()
