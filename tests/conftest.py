"""Shared fixtures. Keep them cheap: other areas use them too.

`wait_for(predicate, timeout, what)`: the one polling helper; it fails the test at its deadline.
`browser`: the one headless Chromium (Playwright, /usr/bin/chromium), one per test module; every
browser test opens its pages from it.
`demo_workspace`: a workspace holding the built demo model and dataset, built once per test session by
the real command (`python -m backend demo --workspace DIR`). Tests that write into a workspace should
copy what they need or make their own (`demo_copy`), not change this one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "", interval: float = 0.1):
    """Poll `predicate` until it returns something true and return that; fail the test (AssertionError)
    once `timeout` seconds have passed. The machine is shared: give generous timeouts."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the test module (Playwright's sync API); closed after its last test."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


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
