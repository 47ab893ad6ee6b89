"""The training benchmarks on the demos: the scripts that measure the SD 1.5 bar and the SDXL engine keep
working (each was once broken by a refactor without any test noticing)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests._training_fixtures import PROJECT_ROOT


def test_train_speed_reports_the_demo_run(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--only", "demo", "--workspace",
                           str(tmp_path / "ws")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    [run] = report["runs"]["demo"]["each"]
    assert run["steps"] > 2 and run["seconds_per_step"] > 0 and run["peak_rss_mib"] > 100
    split = run["split_s"]
    assert 0 < split["launch_to_worker"] < run["launch_to_first_step_s"] < run["total_wall_s"]
    assert report["runs"]["demo"]["median"]["seconds_per_step"] == run["seconds_per_step"]


def test_sdxl_engine_speed_runs_on_the_demo():
    """benchmarks/train_speed_sdxl.py broke when the text encoders became a TextEncoders record."""
    proc = subprocess.run([sys.executable, "benchmarks/train_speed_sdxl.py", "--case", "demo", "--steps", "3",
                           "--warmup", "1"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])  # LyCORIS logs to stdout before it
    [shape] = report["shapes"]
    assert report["adapter_modules"] > 0 and shape["median_step_s"] > 0 and shape["final_loss"] > 0
