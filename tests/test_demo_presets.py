"""The shipped demo presets and what builds their models (issue 17, bug 4): each description is whole
and says how its model is made, and `python -m backend demo --family all` (what `launch.py --demo` and
`setup start` run) builds every model a shipped demo preset names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from backend.config import list_presets, load_config
from backend.models import demos
from backend.paths import PROJECT_ROOT, WorkspacePaths
from webui.context import AppContext
from webui.training_actions import path_problems

DEMO_PRESETS = [p for p in list_presets() if p.shipped and load_config(p.path).model.path.startswith("models/demo")]


def test_every_shipped_preset_description_is_whole():
    for preset in list_presets():
        assert preset.summary, f"{preset.name} has no description"
        assert preset.summary.rstrip().endswith((".", ")", "`")), f"{preset.name}: {preset.summary!r} stops mid-sentence"


@pytest.mark.parametrize("preset", DEMO_PRESETS, ids=lambda p: p.name)
def test_a_demo_preset_says_how_its_model_is_built(preset):
    assert "launch.py --demo" in preset.summary, preset.summary
    cfg = load_config(preset.path)
    assert cfg.model.family in demos.families(), f"no demo builder for {preset.name}'s family {cfg.model.family}"
    assert demos.demo_for(cfg.model.family).model == cfg.model.path


@pytest.mark.slow
def test_demo_all_builds_what_every_shipped_demo_preset_needs(tmp_path):
    assert {load_config(p.path).model.family for p in DEMO_PRESETS} >= {"sd15", "sdxl"}
    root = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "backend", "demo", "--family", "all", "--workspace", str(root),
                           "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = json.loads(proc.stdout)["demos"]
    assert set(built) == set(demos.families())
    paths = WorkspacePaths(root)
    assert demos.missing(paths) == []
    ctx = AppContext(paths=paths, supervisor=None)
    for preset in DEMO_PRESETS:
        cfg = load_config(preset.path)
        values = {"model.path": cfg.model.path, "dataset.path": cfg.dataset.path, "model.family": cfg.model.family}
        assert path_problems(values, ctx) == [], preset.name
