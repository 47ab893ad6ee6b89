from pathlib import Path

import pytest

from backend.dataset.bucket_report import bucket_report
from backend.dataset.buckets import assign_bucket, make_buckets
from backend.dataset.repeats import (
    add_subfolder,
    list_subfolders,
    nest_flat_dataset,
    prefix_subfolder,
    set_repeats,
)
from backend.dataset.scan import scan_dataset
from backend.dataset.thumbnails import page, thumbnail
from backend.errors import DatasetError
from tests._dataset_fixtures import kohya_tree, save, textured


def test_set_repeats_and_add_subfolder(tmp_path: Path):
    root = kohya_tree(tmp_path / "set")
    new = set_repeats(root / "3_b", 7)
    assert new == root / "7_b" and scan_dataset(root).images_per_epoch == 30 + 14
    (root / "5_a").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        set_repeats(root / "10_a", 5)
    assert (root / "10_a").is_dir()
    with pytest.raises(DatasetError, match="repeats"):
        set_repeats(root / "10_a", 0)
    add_subfolder(root, "my concept", 2)
    with pytest.raises(DatasetError, match="already exists"):
        add_subfolder(root, "my concept", 2)
    with pytest.raises(DatasetError, match="concept name"):
        add_subfolder(root, "../x", 2)
    assert [(s.name, s.repeats, s.n_images) for s in list_subfolders(root)] == [
        ("10_a", 10, 3), ("2_my concept", 2, 0), ("5_a", 5, 0), ("7_b", 7, 2)]
    save(textured(1), root / "plain" / "p.png")
    assert prefix_subfolder(root / "plain", 4) == root / "4_plain"


def test_nest_flat_dataset(tmp_path: Path):
    save(textured(1), tmp_path / "flat" / "a.png", caption="t")
    with pytest.raises(DatasetError, match="not an N_name"):
        set_repeats(tmp_path / "flat", 3)
    nest_flat_dataset(tmp_path / "flat", "cat", 3)
    scan = scan_dataset(tmp_path / "flat")
    assert scan.images_per_epoch == 3 and scan.images[0].caption == "t"


def test_thumbnails_cached_and_paged(tmp_path: Path):
    d = tmp_path / "d"
    for i in range(7):
        img = textured(i, (600, 400))
        if i == 0:
            img.putalpha(0)  # transparent: the thumbnail must show white, not black
        save(img, d / f"{i}.png", caption=f"c{i}")
    (d / "bad.png").write_bytes(b"nope")
    scan = scan_dataset(d)
    cache = tmp_path / "thumbs"
    p = page(scan, 3, per_page=3, cache_dir=cache)
    assert (p.page, p.pages, p.total) == (3, 3, 8) and [i.image.name for i in p.items] == ["6.png", "bad.png"]
    assert p.items[1].thumb is None and p.gallery_value()[1][0].endswith("bad.png")
    first = page(scan, 1, per_page=3, cache_dir=cache)
    t = first.items[0].thumb
    assert t is not None and t.is_relative_to(cache)
    from PIL import Image
    with Image.open(t) as im:
        assert max(im.size) == 256 and im.getpixel((1, 1)) == (255, 255, 255)  # alpha on white
    mtime = t.stat().st_mtime_ns
    assert thumbnail(first.items[0].image, cache) == t and t.stat().st_mtime_ns == mtime  # reused
    assert page(scan, 99, per_page=3, cache_dir=cache).page == 3


def test_bucket_report_uses_assign_bucket(tmp_path: Path):
    root = tmp_path / "set"
    save(textured(1, (1000, 700)), root / "2_a" / "wide.png")
    save(textured(2, (700, 1000)), root / "2_a" / "tall.png")
    save(textured(3, (100, 100)), root / "1_b" / "tiny.png")
    save(textured(4, (1000, 700)), root / "1_b" / "wide2.png")
    scan = scan_dataset(root)
    rep = bucket_report(scan, resolution=512, batch_size=2)
    buckets = make_buckets(512, 256, 1024, 64)
    for _, row in rep.per_image.iterrows():
        w, h = row["width"], row["height"]
        expect = assign_bucket(w, h, resolution=512, buckets=buckets).bucket
        assert row["bucket"] == f"{expect[0]}x{expect[1]}"
    wide = rep.per_bucket.set_index("bucket").loc["576x448"]
    assert wide["images"] == 2 and wide["with_repeats"] == 3 and wide["batches"] == 2
    # 576x448: 3 → 2 batches; 448x576: 2 → 1; 512x512: 1 → 1
    assert rep.steps_per_epoch == 4
    assert [p.name for p in rep.upscaled] == ["tiny.png"]
