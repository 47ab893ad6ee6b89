"""list_datasets: image counts as the scan finds them, from folder listings only, kept until a folder changes."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from backend.dataset import counts, scan
from backend.dataset.repeats import list_datasets
from backend.errors import DatasetError
from backend.paths import WorkspacePaths


def _img(path, caption: str | None = "a tag"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)


def _age(folder, seconds: float = 60) -> None:
    """Date the folders back, as if they had been left alone for a while."""
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        st = d.stat()
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


@pytest.fixture
def ws(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    d = paths.datasets
    _img(d / "kohya" / "10_cat" / "a.png")
    _img(d / "kohya" / "10_cat" / "b.jpg", caption=None)
    _img(d / "kohya" / "2_dog" / "c.webp")
    _img(d / "kohya" / "stray.png")                      # beside N_name folders: not used
    _img(d / "kohya" / "_quarantine" / "bad.png")        # ignored folder
    _img(d / "kohya" / "0_off" / "x.png")                # repeats 0: not used
    (d / "kohya" / "10_cat" / "notes.md").write_text("x")
    _img(d / "flat" / "one.png")
    _img(d / "flat" / "two.png")
    _img(d / "flat" / "deeper" / "three.png")            # not recursive
    _img(d / "3_named" / "p.png")
    (d / "empty").mkdir()
    (d / "unreadable.txt").write_text("not a folder")
    return paths


def _scan_count(folder) -> int:
    try:
        return scan.scan_dataset(folder).num_images
    except DatasetError:
        return 0


def test_counts_are_the_scans_and_no_caption_is_read(ws, monkeypatch):
    expected = {d.name: _scan_count(d) for d in ws.datasets.iterdir() if d.is_dir()}
    assert expected == {"kohya": 3, "flat": 2, "3_named": 1, "empty": 0}

    def no_caption(path):
        raise AssertionError(f"caption read: {path}")

    monkeypatch.setattr(scan, "read_caption", no_caption)
    assert {e.name: e.n_images for e in list_datasets(ws)} == expected
    assert [e.name for e in list_datasets(ws)] == sorted(expected)


def test_counts_are_kept_until_a_folder_changes(ws):
    _age(ws.datasets)
    first = {e.name: e.n_images for e in list_datasets(ws)}
    cache = counts.cache_file(ws)
    data = json.loads(cache.read_text())
    # Unchanged folders: the kept count is used (proved by a count no listing could give).
    data["datasets"]["kohya"]["n"] = 99
    cache.write_text(json.dumps(data))
    assert {e.name: e.n_images for e in list_datasets(ws)}["kohya"] == 99
    # An image added to a subfolder changes that folder's mtime: counted again.
    _img(ws.datasets / "kohya" / "2_dog" / "d.png")
    assert {e.name: e.n_images for e in list_datasets(ws)}["kohya"] == first["kohya"] + 1
    # A folder just counted is counted again next time (its clock tick may not be over).
    _img(ws.datasets / "flat" / "four.png")
    assert {e.name: e.n_images for e in list_datasets(ws)}["flat"] == 3
    data = json.loads(cache.read_text())
    data["datasets"]["flat"]["n"] = 42
    cache.write_text(json.dumps(data))
    assert {e.name: e.n_images for e in list_datasets(ws)}["flat"] == 3
    # A damaged cache file is only a slower listing.
    cache.write_text("{not json")
    assert {e.name: e.n_images for e in list_datasets(ws)}["flat"] == 3
