"""Config validation per job kind, run before a job folder is made or a process is spawned.

kind → "module:function"; the function takes (config dict, workspace paths or None) and returns
the resolved config dict to store in config.toml, or raises ConfigError naming the dotted field
path. Imported lazily so the UI never imports torch through here.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from backend.errors import ConfigError
from backend.paths import WorkspacePaths

VALIDATORS: MappingProxyType[str, str] = MappingProxyType({
    "train": "backend.jobs.validation:validate_train",
    "selftest": "backend.worker.selftest:validate",
})


def validate_config(kind: str, config: dict, paths: WorkspacePaths | None = None) -> dict:
    """The resolved config to store in config.toml; ConfigError if `config` is invalid.
    Kinds without a validator keep the config as given."""
    spec = VALIDATORS.get(kind)
    if spec is None:
        return dict(config)
    module_name, _, func_name = spec.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    resolved = func(config, paths)
    if not isinstance(resolved, dict):
        raise TypeError(f"validator {spec} returned {type(resolved).__name__}, not a dict")
    return resolved


def validate_train(config: dict, paths: WorkspacePaths | None = None) -> dict:
    """A training config: defaults ← config, checked by the schema, file paths made absolute
    against the workspace, as the full dict the worker runs (DESIGN.md §3: a job stores the fully
    resolved config). With a workspace, also everything backend.preflight can know wrong before the
    worker starts (files, model, dataset, device, optimizer, adapter shapes): the whole gate."""
    cfg_module = importlib.import_module("backend.config")
    cfg = cfg_module.load_config(config)
    if paths is not None:
        cfg = cfg_module.resolve_paths(cfg, paths)
        problems = importlib.import_module("backend.preflight").preflight(cfg, paths)
        if problems:
            raise ConfigError(problems)
    return cfg_module.to_dict(cfg)


def num_processes_of(config: dict) -> int:
    """`training.num_processes` of a resolved config (1 when absent): >1 launches through accelerate."""
    training = config.get("training")
    value = training.get("num_processes", 1) if isinstance(training, dict) else 1
    return value if isinstance(value, int) and value > 0 else 1
