import json
import subprocess
import sys
from pathlib import Path

from tests._dataset_fixtures import kohya_tree, png_bytes, save, textured, write_zip

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_check_json_shape_and_exit_codes(tmp_path: Path):
    ws = tmp_path / "ws"
    clean = kohya_tree(tmp_path / "clean")
    save(textured(9), clean / "3_b" / "b1.txt.png", caption="x")  # odd name, still fine
    (clean / "3_b" / "b1.txt").write_text("trig\n")
    out = _run("dataset", "check", str(clean), "--json", "--workspace", str(ws))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert data["problems"] == [] and data["counts"]["images"] == 6

    bad = tmp_path / "bad"
    save(textured(1), bad / "a.png", caption="t")
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    save(textured(2), bad / "c.png", caption="t", ext=".caption")
    out = _run("dataset", "check", str(bad), "--json", "--workspace", str(ws))
    assert out.returncode == 1, out.stderr  # an error-level problem
    problems = json.loads(out.stdout)["problems"]
    assert {(Path(p["file"]).name, p["kind"]) for p in problems} == {
        ("broken.png", "unreadable"), ("broken.png", "missing_caption"), ("c.png", "caption_extension")}
    out = _run("dataset", "check", str(bad), "--caption-extension", ".caption", "--json",
               "--workspace", str(ws))
    kinds = {(Path(p["file"]).name, p["kind"]) for p in json.loads(out.stdout)["problems"]}
    assert ("c.png", "caption_extension") not in kinds and ("a.png", "caption_extension") in kinds

    out = _run("dataset", "check", str(tmp_path / "missing"), "--json", "--workspace", str(ws))
    assert out.returncode == 2 and "does not exist" in json.loads(out.stdout)["error"]
    out = _run("dataset", "check", str(bad), "--workspace", str(ws))
    assert out.returncode == 1 and "unreadable" in out.stdout


def test_import_zip_cli(tmp_path: Path):
    ws = tmp_path / "ws"
    z = write_zip(tmp_path / "d.zip", [("5_x/a.png", png_bytes(1)), ("5_x/a.txt", b"t\n")])
    out = _run("dataset", "import", str(z), "--name", "d", "--json", "--workspace", str(ws))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 1 and (ws / "datasets" / "d" / "5_x" / "a.png").exists()
    out = _run("dataset", "import", str(z), "--name", "d", "--workspace", str(ws))
    assert out.returncode == 2 and "already exists" in out.stderr
    evil = write_zip(tmp_path / "e.zip", [("a.png", png_bytes(1)), ("../evil.txt", b"x")])
    out = _run("dataset", "import", str(evil), "--name", "e", "--workspace", str(ws))
    assert out.returncode == 2 and "../evil.txt" in out.stderr and not (ws / "datasets" / "e").exists()
