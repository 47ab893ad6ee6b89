"""Shared fixtures. Keep them cheap: other areas use them too.

`demo_workspace`: a workspace holding the built demo model and dataset, built once per test session by
the real command (`python -m backend demo --workspace DIR`). Tests that write into a workspace should
copy what they need or make their own (`demo_copy`), not change this one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """The root of a workspace with models/demo-sd15 and datasets/demo (read-only by convention)."""
    root = tmp_path_factory.mktemp("demo-ws")
    proc = subprocess.run([sys.executable, "-m", "backend", "demo", "--workspace", str(root)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "models" / "demo-sd15" / "model_index.json").is_file()
    return root


@pytest.fixture
def demo_copy(demo_workspace, tmp_path) -> Path:
    """A fresh workspace of one's own: the demo model linked in, the demo dataset copied (writable)."""
    root = tmp_path / "ws"
    (root / "models").mkdir(parents=True)
    (root / "models" / "demo-sd15").symlink_to(demo_workspace / "models" / "demo-sd15")
    shutil.copytree(demo_workspace / "datasets", root / "datasets")
    for sub in ("jobs", "presets"):
        (root / sub).mkdir()
    return root
