"""Install what is missing, then start the dashboard or run the tests. Standard library only.

    python -m backend.setup start [launch.py flags]   # the README's first command (flags pass through,
                                                      # e.g. --allow-dir /data/sets, --lets-api)
    python -m backend.setup test [pytest args]        # the README's second command (and CI's)

A torch that is already installed (a server's CUDA build) is never replaced. Without one, a machine
with an NVIDIA GPU gets the CUDA build from PyPI and any other machine the CPU build.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CHROMIUM = "/usr/bin/chromium"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def ensure_torch() -> None:
    if _has("torch"):
        return
    if has_nvidia_gpu():
        _pip(f"torch=={TORCH_VERSION}")
        return
    # A CPU wheel already on this machine (pip's find-links) first; else PyTorch's CPU index.
    try:
        _pip("--no-index", f"torch=={TORCH_VERSION}+cpu")
    except subprocess.CalledProcessError:
        _pip(f"torch=={TORCH_VERSION}+cpu", "--extra-index-url", CPU_INDEX)


def _extras(name: str) -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"][name]


def ensure_runtime() -> None:
    ensure_torch()
    _pip("-q", "-r", str(ROOT / "requirements.txt"))
    if has_nvidia_gpu():
        _pip("-q", *_extras("cuda"))


def ensure_chromium() -> None:
    """Debian's Chromium for the browser tests (Playwright's own browser download needs the internet)."""
    if Path(CHROMIUM).exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"the browser tests need Chromium at {CHROMIUM}: install the 'chromium' package as root")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def start(argv: list[str]) -> int:
    ensure_runtime()
    return subprocess.call([sys.executable, str(ROOT / "launch.py"), "--demo", *argv], cwd=ROOT)


def test(argv: list[str]) -> int:
    ensure_runtime()
    _pip("-q", *_extras("test"))
    ensure_chromium()
    return subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("start", "test", "install"):
        print(__doc__)
        return 2
    if argv[0] == "install":
        ensure_runtime()
        return 0
    return start(argv[1:]) if argv[0] == "start" else test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
