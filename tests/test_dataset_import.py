import stat
import zipfile
from pathlib import Path

import pytest

from backend.dataset.importer import ZipLimits, import_folder, import_zip, validate_dataset_name
from backend.dataset.repeats import list_datasets
from backend.dataset.scan import scan_dataset
from backend.errors import DatasetError
from backend.paths import WorkspacePaths
from tests._dataset_fixtures import kohya_tree, png_bytes, snapshot, write_zip


@pytest.fixture
def ws(tmp_path: Path) -> WorkspacePaths:
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    (paths.datasets / "existing").mkdir()
    (paths.datasets / "existing" / "keep.png").write_bytes(png_bytes(0))
    return paths


def _link_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _bad_zips(tmp: Path) -> dict[str, Path]:
    good = ("ok/a.png", png_bytes(1))
    return {
        "'..'": write_zip(tmp / "dotdot.zip", [good, ("../evil.txt", b"evil")]),
        "absolute path": write_zip(tmp / "abs.zip", [good, ("/tmp/evil.txt", b"evil")]),
        "symbolic link": write_zip(tmp / "link.zip", [good, (_link_entry("ok/link.png"), b"/etc/passwd")]),
        "compression ratio": write_zip(tmp / "bomb.zip", [good, ("ok/zeros.bmp", b"\0" * (20 * 1024**2))]),
    }


@pytest.mark.parametrize("reason", ["'..'", "absolute path", "symbolic link", "compression ratio"])
def test_bad_zip_refused_and_workspace_unchanged(ws: WorkspacePaths, tmp_path: Path, reason: str):
    zpath = _bad_zips(tmp_path)[reason]
    before = snapshot(ws.root)
    with pytest.raises(DatasetError) as err:
        import_zip(ws, zpath, "new")
    assert reason in str(err.value) and "refused" in str(err.value)
    assert snapshot(ws.root) == before
    with pytest.raises(DatasetError):  # also when it would overwrite: the old dataset stays
        import_zip(ws, zpath, "existing", overwrite=True)
    assert snapshot(ws.root) == before
    assert not (tmp_path / "evil.txt").exists()


def test_limits_on_count_and_total_size(ws: WorkspacePaths, tmp_path: Path):
    z = write_zip(tmp_path / "many.zip", [(f"i{i}.png", png_bytes(i, (16, 16))) for i in range(5)])
    before = snapshot(ws.root)
    with pytest.raises(DatasetError, match="5 entries"):
        import_zip(ws, z, "new", limits=ZipLimits(max_files=4))
    with pytest.raises(DatasetError, match="uncompressed"):
        import_zip(ws, z, "new", limits=ZipLimits(max_total_bytes=100))
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="x.zip"):
        import_zip(ws, not_zip, "new")
    assert snapshot(ws.root) == before


def test_good_zip_imported(ws: WorkspacePaths, tmp_path: Path):
    z = write_zip(tmp_path / "good.zip", [
        ("myset/10_a/a.png", png_bytes(1)), ("myset/10_a/a.txt", b"trig, a\n"),
        ("myset/3_b/b.jpg", png_bytes(2)), ("myset/notes.docx", b"x"),
        ("__MACOSX/myset/._a.png", b"x"), ("myset/_quarantine/old.png", png_bytes(3)),
    ])
    result = import_zip(ws, z, "my set")
    assert result.path == ws.datasets / "my set" and result.images == 2 and result.captions == 1
    assert {f for f, _ in result.skipped} == {"myset/notes.docx", "__MACOSX/myset/._a.png",
                                              "myset/_quarantine/old.png"}
    scan = scan_dataset(result.path)  # the single top folder was stripped: kohya layout at the root
    assert [(s.name, s.repeats) for s in scan.subsets] == [("10_a", 10), ("3_b", 3)]
    assert scan.images[0].caption == "trig, a"
    assert not [p for p in ws.datasets.iterdir() if p.name.startswith(".")]  # no temp left
    assert {d.name: d.n_images for d in list_datasets(ws)} == {"existing": 1, "my set": 2}
    # an existing dataset is only replaced when asked to
    with pytest.raises(DatasetError, match="already exists"):
        import_zip(ws, z, "existing")
    assert (ws.datasets / "existing" / "keep.png").exists()
    import_zip(ws, z, "existing", overwrite=True)
    assert not (ws.datasets / "existing" / "keep.png").exists()
    assert (ws.datasets / "existing" / "10_a" / "a.png").exists()
    assert not [p for p in ws.datasets.iterdir() if p.name.startswith(".")]


def test_zip_single_kohya_folder_is_kept(ws: WorkspacePaths, tmp_path: Path):
    z = write_zip(tmp_path / "k.zip", [("5_cat/a.png", png_bytes(1))])
    result = import_zip(ws, z, "cat")
    assert scan_dataset(result.path).images_per_epoch == 5


def test_folder_in_place_and_copied(ws: WorkspacePaths, tmp_path: Path):
    src = kohya_tree(tmp_path / "server" / "set")
    (src / "big.psd").write_bytes(b"x")
    result = import_folder(ws, src)
    assert result.in_place and result.path == src and result.images == 5
    copied = import_folder(ws, src, "copy", copy=True)
    assert copied.path == ws.datasets / "copy" and copied.images == 5 and not copied.in_place
    assert not (copied.path / "_quarantine").exists() and not (copied.path / "big.psd").exists()
    assert ("big.psd" in " ".join(f for f, _ in copied.skipped))
    with pytest.raises(DatasetError, match="already exists"):
        import_folder(ws, src, "copy", copy=True)
    with pytest.raises(DatasetError, match="no images"):
        import_folder(ws, tmp_path / "server")


def test_dataset_names():
    assert validate_dataset_name("  my set_1 ") == "my set_1"
    for bad in ["", "../x", "a/b", ".hidden", "x.", "a" * 101]:
        with pytest.raises(DatasetError, match="dataset name"):
            validate_dataset_name(bad)


def test_failure_during_extraction_leaves_nothing(ws: WorkspacePaths, tmp_path: Path):
    z = tmp_path / "crc.zip"
    second = png_bytes(2)
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.png", png_bytes(1))
        zf.writestr("b.png", second)
    raw = bytearray(z.read_bytes())
    at = raw.find(second) + len(second) // 2
    raw[at] ^= 0xFF  # corrupt the second entry's data: its CRC no longer matches
    z.write_bytes(bytes(raw))
    before = snapshot(ws.root)
    with pytest.raises(DatasetError, match="nothing was changed"):
        import_zip(ws, z, "existing", overwrite=True)
    assert snapshot(ws.root) == before


def test_a_zip_with_broken_images_says_so_in_its_report(ws: WorkspacePaths, tmp_path: Path):
    """Issue 14: broken images were accepted without a word. They are kept (nothing the user made is
    lost; the check flags them and "Move to _quarantine" takes them out) and the report names each."""
    z = write_zip(tmp_path / "mixed.zip", [
        ("set/good.png", png_bytes(1)), ("set/good.txt", b"trig\n"),
        ("set/garbage.png", b"this is not a png at all"),
        ("set/cut.png", png_bytes(2)[:200]),  # truncated in the middle of its data
    ])
    result = import_zip(ws, z, "mixed")
    assert result.images == 3 and (result.path / "garbage.png").is_file()
    broken = dict(result.broken)
    assert set(broken) == {"garbage.png", "cut.png"}
    assert all("object at 0x" not in why and why for why in broken.values()), broken
    assert "not an image" in broken["garbage.png"]

    from webui.dataset_view import import_markdown

    report = import_markdown(result)
    assert "2 image(s) cannot be read" in report and "garbage.png" in report and "cut.png" in report


def test_the_dataset_import_command_reports_broken_images(ws: WorkspacePaths, tmp_path: Path):
    import json
    import subprocess
    import sys

    from backend.paths import PROJECT_ROOT

    z = write_zip(tmp_path / "one.zip", [("ok.png", png_bytes(1)), ("bad.jpg", b"\xff\xd8 broken")])
    proc = subprocess.run([sys.executable, "-m", "backend", "dataset", "import", str(z), "--name", "one",
                           "--workspace", str(ws.root), "--json"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [b["file"] for b in out["broken"]] == ["bad.jpg"] and out["broken"][0]["reason"]
