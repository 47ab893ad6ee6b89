"""The VRAM estimate against peaks measured on CUDA (tests/fixtures/vram_calibration.json).

No entry exists until a GPU run records some (benchmarks/gpu_check.py, with
backend.training.cost.calibration.make_entry): until then the comparison is skipped, saying so.
"""

from __future__ import annotations

import pytest

from backend.config import TrainConfig
from backend.training.cost.calibration import FIXTURE, check_entry, compare, load_entries, make_entry
from backend.training.cost.estimate import EXPECTED_ERROR, Estimator

ENTRIES = load_entries()


def test_the_fixture_is_well_formed():
    assert FIXTURE.is_file()
    for entry in ENTRIES:
        assert check_entry(entry) == [], entry.get("name")
        TrainConfig.model_validate(entry["config"])       # a config the schema accepts
    entry = make_entry("x", {"model": {"family": "sdxl", "path": "/m"}}, gpu="g", steps=3,
                       max_memory_allocated=10, max_memory_reserved=12)
    assert "path" not in entry["config"]["model"] and check_entry(entry) == []
    assert check_entry({"name": "x"})                     # incomplete entries are named


@pytest.mark.parametrize("entry", ENTRIES or [pytest.param(None, marks=pytest.mark.skip(
    reason="no CUDA peaks measured yet (benchmarks/gpu_check.py adds them to the fixture)"))],
    ids=lambda e: e["name"] if e else "none")
def test_estimate_matches_the_measured_cuda_peak(entry, tmp_path):
    cfg = TrainConfig.model_validate(entry["config"])
    report = Estimator(cfg, cache_dir=tmp_path, configs_root=tmp_path / "configs").report()
    errors = compare(entry, report)
    tolerance = entry.get("tolerance", EXPECTED_ERROR)
    assert abs(errors["tensors"]) <= tolerance, errors
    if "device" in errors:
        assert abs(errors["device"]) <= tolerance, errors
