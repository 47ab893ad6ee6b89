"""Presets: sparse TOML files over the schema's defaults, shipped in presets/ or saved by the user."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from backend.config.fields import leaf_fields
from backend.config.io import load_config, sparse_dict, write_toml
from backend.config.schema import TrainConfig
from backend.errors import ConfigError
from backend.paths import SHIPPED_PRESETS, WorkspacePaths

# Path options, from the schema's widgets: "path" names a file or folder that must exist, "output_dir" a
# folder written to. Both are taken from the workspace when relative (README: "Relative paths in a
# config are taken from the workspace").
INPUT_PATH_FIELDS = tuple((s.section, s.name) for s in leaf_fields() if s.widget == "path")
OUTPUT_PATH_FIELDS = tuple((s.section, s.name) for s in leaf_fields() if s.widget == "output_dir")
PATH_FIELDS = INPUT_PATH_FIELDS + OUTPUT_PATH_FIELDS


@dataclass(frozen=True)
class PresetInfo:
    name: str
    path: Path
    shipped: bool
    summary: str      # the comment block at the top: who the preset is for (and what it needs)


def _summary(path: Path) -> str:
    """The comment lines at the top of the file, joined into one paragraph."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.strip("# ").strip():
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def list_presets(paths: WorkspacePaths | None = None) -> list[PresetInfo]:
    """Shipped presets, then the user's own (a user preset with a shipped name shadows it)."""
    found: dict[str, PresetInfo] = {}
    dirs = [(SHIPPED_PRESETS, True)] + ([(paths.presets, False)] if paths else [])
    for folder, shipped in dirs:
        for p in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found[p.stem] = PresetInfo(p.stem, p, shipped, _summary(p))
    return list(found.values())


def find_preset(name_or_path: str | Path, paths: WorkspacePaths | None = None) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate.resolve()
    if candidate.exists() and not candidate.is_file():
        raise ConfigError([("", f"{'a folder' if candidate.is_dir() else 'not a regular file'}, not a config file")],
                          str(candidate))
    by_name = {p.name: p.path for p in list_presets(paths)}
    stem = candidate.stem if candidate.suffix == ".toml" else str(name_or_path)
    if stem in by_name:
        return by_name[stem]
    raise ConfigError([("", f"no preset or config file {str(name_or_path)!r}; presets: "
                            f"{', '.join(sorted(by_name)) or 'none'}")])


def load_preset(name_or_path: str | Path, paths: WorkspacePaths | None = None,
                overrides: list[str] | dict | None = None) -> TrainConfig:
    return load_config(find_preset(name_or_path, paths), overrides)


def preset_name_ok(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_. -]{0,79}", name or ""):
        raise ConfigError([("preset name", "use 1–80 letters, digits, spaces, '.', '_' or '-', "
                                           "starting with a letter or digit")])
    return name.strip()


def save_preset(cfg: TrainConfig, paths: WorkspacePaths, name: str, comment: str = "",
                overwrite: bool = False) -> Path:
    """Write the user's preset (sparse) into workspace/presets/NAME.toml."""
    target = paths.presets / f"{preset_name_ok(name)}.toml"
    if target.exists() and not overwrite:
        raise ConfigError([("preset name", f"a preset named {name!r} exists already; choose another name "
                                           "or allow overwriting")])
    return write_toml(target, sparse_dict(cfg), comment or f"User preset {name}")


def resolve_paths(cfg: TrainConfig, paths: WorkspacePaths) -> TrainConfig:
    """A copy whose file paths are absolute (relative ones are taken from the workspace)."""
    out = cfg.model_copy(deep=True)
    for section, key in PATH_FIELDS:
        value = getattr(getattr(out, section), key)
        if value:
            setattr(getattr(out, section), key, str(paths.resolve(value)))
    return out

