"""The built-in demos, one entry per model family: what each builds and where.

`python -m backend demo --family F` builds one; `--family all` (what `python launch.py --demo` and
`python -m backend.setup start` run) builds every entry, so each shipped demo preset finds its model.
A new family's demo is one more `Demo` here (tests/test_demo_presets.py checks that every shipped
preset whose model is a demo model has its entry). Builders are named as "module:function" so that
listing the demos imports nothing heavy (the web UI never imports torch).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from backend.errors import ModelError
from backend.paths import WorkspacePaths

DATASET = "datasets/demo"  # the generated dataset every demo trains on


@dataclass(frozen=True)
class Demo:
    family: str
    builder: str  # "module:function"; function(paths) -> (model path, dataset dir), idempotent
    model: str    # the model it builds, relative to the workspace (what the demo preset's model.path says)


DEMOS: tuple[Demo, ...] = (
    Demo("sd15", "backend.models.demo:build_demo", "models/demo-sd15"),
    Demo("sdxl", "backend.models.sdxl_demo:build_sdxl_demo", "models/demo-sdxl.safetensors"),
    Demo("flux", "backend.models.flux_demo:build_flux_demo", "models/demo-flux"),
)


def families() -> list[str]:
    return [d.family for d in DEMOS]


def demo_for(family: str) -> Demo:
    for d in DEMOS:
        if d.family == family:
            return d
    raise ModelError(f"no demo model for family {family!r}; available: {', '.join(families())}")


def build(family: str, paths: WorkspacePaths) -> tuple[Path, Path]:
    """Build (once) the demo of `family`: returns (model path, dataset dir)."""
    module_name, _, func = demo_for(family).builder.partition(":")
    return getattr(importlib.import_module(module_name), func)(paths)


def missing(paths: WorkspacePaths) -> list[Demo]:
    """The demos whose model or dataset is not in the workspace yet."""
    if not (paths.root / DATASET).is_dir():
        return list(DEMOS)
    return [d for d in DEMOS if not (paths.root / d.model).exists()]


def is_demo_model(path: Path, paths: WorkspacePaths) -> Demo | None:
    """The demo that builds `path` (an absolute model path), if any."""
    for d in DEMOS:
        if paths.resolve(d.model) == path:
            return d
    return None
