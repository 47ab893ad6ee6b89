"""Everything about a training config that can be known wrong before its job starts, torch-free.

`python -m backend validate`, the dashboard's Validate and Start, the LETS API and `train` all pass
through `backend.jobs.validation.validate_train`, which runs the schema and then these checks against
the workspace. The rule they keep: what passes here does not fail for a config reason once the worker
runs. Each check returns (dotted.path, what to do) pairs; checks that need a readable model or
dataset are skipped while that input itself has a problem (one cause, one message).

Families extend this in two registries, both "module:function" so nothing heavy is imported here:
backend.models.layers.FAMILY_MODULES (the layers LyCORIS will adapt) and FAMILY_CHECKS below (model
files and family options: SD's clip_skip, Flux's text-encoder files, …).
"""

from __future__ import annotations

import importlib
from typing import Any

from backend.paths import WorkspacePaths
from backend.preflight.dataset import dataset_problems
from backend.preflight.device import device_problems
from backend.preflight.inputs import (
    Problem,
    lora_file_problems,
    output_dir_problems,
    path_problems,
    vae_problems,
    values_of,
)
from backend.preflight.model import model_problems
from backend.preflight.network import network_problems
from backend.preflight.optimizer import optimizer_problems

# family → "module:function"s (cfg) -> list[Problem]: the family's own checks of its model files and options.
# Flux's also run for SD 1.5 and SDXL, where they refuse Flux's own files and options.
FAMILY_CHECKS: dict[str, tuple[str, ...]] = {
    "sd15": ("backend.preflight.sd:sd_checks", "backend.models.config_checks:flux_problems"),
    "sdxl": ("backend.preflight.sd:sd_checks", "backend.models.config_checks:flux_problems"),
    "flux": ("backend.preflight.sd:folder_checks", "backend.models.config_checks:flux_problems"),
}

__all__ = ["FAMILY_CHECKS", "Problem", "path_problems", "preflight"]


def _family_checks(cfg: Any) -> list[Problem]:
    problems: list[Problem] = []
    for spec in FAMILY_CHECKS.get(cfg.model.family, ()):
        module_name, _, func = spec.partition(":")
        problems += getattr(importlib.import_module(module_name), func)(cfg)
    return problems


def preflight(cfg: Any, paths: WorkspacePaths | None = None) -> list[Problem]:
    """Every problem of a schema-valid TrainConfig whose paths are resolved (absolute)."""
    problems = path_problems(values_of(cfg), paths)
    bad = {p for p, _ in problems}
    model_ok = "model.path" not in bad
    if model_ok:
        found = model_problems(cfg)
        model_ok = not found
        problems += found
        if model_ok:
            problems += _family_checks(cfg)
    # (Flux's own file checks may have named it already: one cause, one message)
    if cfg.model.vae_path and "model.vae_path" not in bad | {p for p, _ in problems}:
        problems += vae_problems(cfg.model.vae_path, cfg.model.family)
    if cfg.network.network_weights and "network.network_weights" not in bad:
        problems += lora_file_problems(cfg)
    problems += output_dir_problems(cfg.saving.output_dir)
    if "dataset.path" not in bad and "dataset.reg_path" not in bad:
        problems += dataset_problems(cfg)
    problems += device_problems(cfg)
    problems += optimizer_problems(cfg)
    if model_ok:
        problems += network_problems(cfg)
    return problems
