"""The torchvision fallback warning of transformers ("… Install torchvision to use the default backend")
is silenced where it is harmless: the demo builder and every job log (issue 17, bug 9). Exactly that
message: the same logger's other warnings still show."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend.paths import PROJECT_ROOT
from tests._training_fixtures import FAST

MESSAGE = "Install torchvision to use the default backend"


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_only_the_torchvision_fallback_message_is_dropped():
    code = ("import logging; from backend.known_warnings import silence_known_warnings; silence_known_warnings();"
            "import transformers; transformers.CLIPImageProcessor;"
            "logging.getLogger('transformers.utils.import_utils').warning('another warning')")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert MESSAGE not in proc.stderr and "another warning" in proc.stderr


def test_the_message_is_there_without_the_filter():
    """The control: this transformers still prints it (else the other tests prove nothing)."""
    proc = _run("-c", "import transformers; transformers.CLIPImageProcessor")
    assert MESSAGE in proc.stderr


@pytest.mark.slow
def test_the_demo_builder_and_a_training_job_log_are_free_of_it(tmp_path):
    ws = tmp_path / "ws"
    built = _run("-m", "backend", "demo", "--workspace", str(ws))
    assert built.returncode == 0, built.stdout + built.stderr
    assert MESSAGE not in built.stdout + built.stderr
    sets = [arg for item in FAST if not item.startswith("sampling.") for arg in ("--set", item)]
    trained = _run("-m", "backend", "train", "demo", "--workspace", str(ws), "--quiet", *sets,
                   "--set", "sampling.every_n_steps=2")  # sampling loads diffusers' pipeline modules
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (log,) = (ws / "jobs").glob("*/job.log")
    text = log.read_text()
    assert any((log.parent / "samples").glob("*.png")), text[-2000:]  # the pipeline modules were loaded
    assert MESSAGE not in text, text[-3000:]
