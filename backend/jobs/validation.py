"""Config validation per job kind, run before a job folder is made or a process is spawned.

Each kind's validator is declared in `backend.jobs.kinds`: it takes (config dict, workspace paths or
None) and returns the resolved config dict to store in config.toml, or raises ConfigError naming the
dotted field path. Imported lazily so the UI never imports torch through here.
"""

from __future__ import annotations

import importlib

from backend.errors import ConfigError
from backend.jobs.kinds import KINDS, load_function
from backend.paths import WorkspacePaths


def validate_config(kind: str, config: dict, paths: WorkspacePaths | None = None) -> dict:
    """The resolved config to store in config.toml; ConfigError if `config` is invalid.
    Kinds without a validator (and kinds this version does not know) keep the config as given."""
    declared = KINDS.get(kind)
    spec = declared.validator if declared is not None else None
    if spec is None:
        return dict(config)
    resolved = load_function(spec, f"{kind!r} config validator")(config, paths)
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
