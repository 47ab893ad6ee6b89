"""benchmarks/gpu_check.py --smoke: the GPU proof script's own code on the CPU, with tiny models."""

from __future__ import annotations

import json
import subprocess
import sys

from tests._training_fixtures import PROJECT_ROOT

CALIBRATION_KEYS = {"family", "resolution", "batch_size", "mixed_precision", "gradient_checkpointing", "fp8_base",
                    "optimizer", "rank", "algo", "peak_bytes", "device_name"}


def test_gpu_check_smoke_trains_each_case_through_the_worker_and_reloads_the_files(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    cases = {c["case"]: c for c in report["cases"]}
    assert set(cases) == {"demo-fp32", "sd15-bf16-ckpt-fp8", "sdxl-bf16"}
    for c in cases.values():
        assert c["status"] == "completed" and c["steps"] == 4, c
        assert c["s_per_step"] > 0 and c["peak_mib"] > 0 and c["lora_reloads"] is True
        assert c["attention"] == ["AttnProcessor2_0"]
        assert c["estimate_mib"] is not None or c["estimate"]  # a figure, or why there is none
    assert cases["sd15-bf16-ckpt-fp8"]["fp8_layers"] > 0
    calibration = json.loads((out / "calibration.json").read_text())
    assert len(calibration) == 3 and all(set(e) == CALIBRATION_KEYS for e in calibration)
    fp8 = next(e for e in calibration if e["fp8_base"])
    assert (fp8["family"], fp8["mixed_precision"], fp8["gradient_checkpointing"]) == ("sd15", "bf16", True)
    assert fp8["peak_bytes"] > 2**20 and fp8["device_name"] == "cpu"
    table = (out / "table.txt").read_text()
    assert "sdxl-bf16" in table and "s/step" in table and table in proc.stdout
