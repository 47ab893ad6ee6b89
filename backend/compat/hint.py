"""Pointing kohya users at `import-config` when `train` or `validate` is given a config of theirs.

A kohya sd-scripts TOML, a LETS TOML or a kohya_ss JSON fails LoRA Dash's schema with one "unknown option"
per key; the line printed after them says which command turns the file into a preset.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from backend.compat.detect import parse_text
from backend.compat.kohya_import import flatten_config
from backend.compat.kohya_ss_import import is_kohya_ss
from backend.compat.lets_import import is_lets_body, is_lets_toml
from backend.compat.mapping import MAPPING, UNSUPPORTED
from backend.config.io import MAX_TOML_BYTES
from backend.config.schema import TrainConfig
from backend.errors import ConfigError

KOHYA_KEYS = frozenset({a.key for a in MAPPING} | set(UNSUPPORTED) | {"dataset_config", "train_data_dir"})


def _read(path: Path) -> dict[str, Any] | None:
    """The file as TOML or JSON, with import-config's own guards (size, nesting, huge numbers); None
    when it is neither: the hint is a courtesy and must not cost more than the error it follows."""
    try:
        if path.stat().st_size > MAX_TOML_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
        return parse_text(text, path.suffix.lower(), str(path))
    except (OSError, UnicodeDecodeError, ConfigError):
        return None


def looks_like_kohya(data: dict[str, Any]) -> bool:
    """A config of sd-scripts, LETS or kohya_ss rather than LoRA Dash's own."""
    if set(data) & set(TrainConfig.model_fields):
        return False  # one of our sections: a LoRA Dash config with mistakes, not someone else's
    if is_kohya_ss(data) or is_lets_body(data) or is_lets_toml(data):
        return True
    return bool(set(flatten_config(data)) & KOHYA_KEYS)


def import_hint(config_arg: str) -> str | None:
    """The command that imports `config_arg` as a preset, when it is a kohya/LETS/kohya_ss file."""
    path = Path(config_arg).expanduser()
    data = _read(path) if path.is_file() else None
    if data is None or not looks_like_kohya(data):
        return None
    preset = shlex.quote(str(path.with_name(path.stem + "-loradash.toml")))
    return (f"{path} looks like a kohya sd-scripts / LETS / kohya_ss config, which LoRA Dash reads through "
            f"import-config:\n  python -m backend import-config {shlex.quote(str(path))} "
            f"[--dataset DATASET.toml] -o {preset}\nthen train the preset it writes:\n"
            f"  python -m backend train {preset}")
