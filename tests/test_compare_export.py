"""Compare exports: the standalone HTML report, the grid PNG and the `compare` command line."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image

from backend.compare.report import render_html
from backend.compare.runs import load_runs
from backend.paths import PROJECT_ROOT, WorkspacePaths
from tests._compare_fixtures import make_run


@pytest.fixture
def ws(tmp_path):
    return WorkspacePaths(tmp_path / "ws").ensure()


class _Collector(HTMLParser):
    """Checks nesting of the elements that must close, and collects src/href values and scripts."""

    VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.urls, self.imgs, self.scripts = [], [], [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "script":
            self.scripts += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_html_report_is_valid_and_self_contained(ws):
    a = make_run(ws, "rank 8 <b>", {"network.rank": 8}, prompts=(("a cat & a hat", 1),))
    b = make_run(ws, "rank 16", {"network.rank": 16}, prompts=(("a cat & a hat", 1),))
    text = render_html(load_runs(ws, [a.name, b.name]), smoothing=0.5, x_axis="images")
    assert text.startswith("<!DOCTYPE html>")
    p = _Collector()
    p.feed(text)
    p.close()
    assert p.errors == [] and p.stack == []
    # Nothing is fetched: every src/href is a data URI; plotly.js is inline (it is megabytes).
    assert p.urls and all(u.startswith("data:image/png;base64,") for u in p.urls), p.urls[:3]
    assert len(text) > 1_000_000 and "Plotly.newPlot" in text
    assert not re.search(r"""<script[^>]+src=""", text)
    assert len(p.imgs) == 2
    Image.open(io.BytesIO(base64.b64decode(p.imgs[0].split(",", 1)[1]))).verify()
    # Job texts are escaped; the diff and outcome are there.
    assert "rank 8 &lt;b&gt;" in text and "<b>" not in text.split("<body>", 1)[1].split("<script>")[0]
    assert "network.rank" in text and "Images seen" in text and "4.1 kB" in text


def test_cli_compare_writes_html_png_and_json(ws, tmp_path):
    a = make_run(ws, "a", {"optimizer.lr": 1e-4})
    b = make_run(ws, "b", {"optimizer.lr": 5e-4})
    html_path, png_path = tmp_path / "out" / "cmp.html", tmp_path / "grid.png"
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-m", "backend", "compare", a.name, b.name, "--workspace",
                           str(ws.root), "--html", str(html_path), "--grid-png", str(png_path), "--json",
                           "--step", "11"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["id"] for r in data["runs"]] == [a.name, b.name]
    assert data["diff"] == [{"path": "optimizer.lr", "label": "Learning rate", "values": [1e-4, 5e-4]}]
    assert data["grid"]["step"] == 11 and [c["step"] for c in data["grid"]["rows"][0]["cells"]] == [10, 10]
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert Image.open(png_path).format == "PNG"


def test_cli_compare_names_a_bad_id_and_a_bad_group(ws):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "backend", "compare", *args, "--workspace", str(ws.root)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)

    proc = run("missing-job")
    assert proc.returncode == 2 and "no job 'missing-job'" in proc.stderr
    proc = run("--group", "nope")
    assert proc.returncode == 2 and "no group 'nope'" in proc.stderr
