"""The config: one pydantic schema (schema.py) and everything derived from it."""

from backend.config.io import (
    apply_overrides,
    diff_configs,
    dumps_toml,
    load_config,
    sparse_dict,
    to_dict,
    validate_dict,
    write_toml,
)
from backend.config.presets import find_preset, list_presets, load_preset, resolve_paths, save_preset
from backend.config.schema import SCHEMA_VERSION, TrainConfig

__all__ = [
    "SCHEMA_VERSION", "TrainConfig", "apply_overrides", "diff_configs", "dumps_toml", "find_preset",
    "list_presets", "load_config", "load_preset", "resolve_paths", "save_preset", "sparse_dict", "to_dict",
    "validate_dict", "write_toml",
]
