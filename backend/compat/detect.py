"""One entry for every import: a file or pasted text, whatever it is.

    kohya --config_file TOML (+ --dataset_config TOML)   sd-scripts flags, flat or in tables
    sd-scripts command line (.sh/.bat/.txt or pasted)    accelerate launch … train_network.py --…
    LETS saved TOML / LETS /validate JSON                {section: {args, dataset_args}, subsets}
    kohya_ss GUI JSON                                    {"LoRA_type": …, "epoch": …}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.compat.command import looks_like_command, parse_command
from backend.compat.kohya_import import EXTRAS_FILE, flatten_config, import_kohya
from backend.compat.kohya_ss_import import import_kohya_ss, is_kohya_ss
from backend.compat.lets_import import import_lets, is_lets_body, is_lets_toml
from backend.compat.report import ImportResult
from backend.config.io import loads_toml, read_toml
from backend.errors import ConfigError
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots

COMMAND_SUFFIXES = (".sh", ".bat", ".cmd", ".ps1", ".txt")


def import_file(path: str | Path, dataset: str | Path | None = None, *, family: str | None = None,
                paths: WorkspacePaths | None = None, roots: AllowedRoots | None = None) -> ImportResult:
    """Import `path` (and a dataset TOML) in whichever of the supported formats it is. With `roots` (the
    dashboard), files the config names are read only inside them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError([("", f"file not found: {path}")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([("", "not a text file (expected TOML, JSON or a command line)")], str(path)) from None
    return import_text(text, path.suffix.lower(), dataset=dataset, family=family, paths=paths,
                       source=str(path), base_dir=path.parent, roots=roots)


def import_text(text: str, suffix: str = "", *, dataset: str | Path | None = None, family: str | None = None,
                paths: WorkspacePaths | None = None, source: str = "pasted text",
                base_dir: Path | None = None, roots: AllowedRoots | None = None) -> ImportResult:
    """Import pasted or read text; `suffix` (".toml", ".json", ".sh"…) helps tell the format. `dataset`
    is a file the user gave alongside (an upload); with `roots`, files the text names (dataset config,
    config file, sample prompts) are read only inside them, relative ones taken from the workspace."""
    dataset_toml = read_toml(dataset, "dataset config") if dataset else None
    if suffix in COMMAND_SUFFIXES or (suffix not in (".toml", ".json") and looks_like_command(text)):
        return _command(text, source, base_dir, paths, dataset_toml, family, roots)
    data = parse_text(text, suffix, source)
    named = data.get("dataset_config") if is_kohya_ss(data) else flatten_config(data).get("dataset_config")
    if dataset_toml is None and isinstance(named, str) and named.strip():
        # the config names its dataset TOML (sd-scripts and kohya_ss both allow it)
        dataset = _near(named, base_dir or Path.cwd(), "", roots, "dataset_config")
        dataset_toml = read_toml(dataset, "dataset config (named by dataset_config)")
    if is_kohya_ss(data):
        return import_kohya_ss(data, source=source, paths=paths, dataset=dataset_toml, roots=roots)
    if is_lets_body(data) or (suffix != ".json" and is_lets_toml(data)):
        return import_lets(data, source=source, paths=paths, roots=roots)
    if "datasets" in data and dataset_toml is None and not _has_training_args(data):
        raise ConfigError([("", "this is a dataset config (--dataset_config): import the training config file "
                                "and pass this one as its dataset")], source)
    extras = None
    if base_dir is not None and (base_dir / EXTRAS_FILE).is_file():
        extras = read_toml(base_dir / EXTRAS_FILE, EXTRAS_FILE)
    return import_kohya(data, dataset_toml, family=family, base_dir=base_dir, paths=paths,
                        source=source + (f" + {dataset}" if dataset else ""), extras=extras, roots=roots)


def parse_text(text: str, suffix: str, source: str) -> dict[str, Any]:
    """TOML or JSON text as a table of settings (the guarded TOML reader; deep or huge JSON refused), or one
    ConfigError line naming `source`."""
    errors = []
    for kind in ((".json", ".toml") if suffix == ".json" or text.lstrip().startswith("{") else (".toml", ".json")):
        try:
            data = json.loads(text) if kind == ".json" else loads_toml(text, source)
        except json.JSONDecodeError as err:
            errors.append(f"{kind[1:].upper()}: {err}")
            continue
        except ConfigError as err:  # TOML, with the reason (not TOML, nested too deep, a huge number)
            errors.append(f"TOML: {err.problems[0][1]}")
            continue
        except RecursionError:
            raise ConfigError([("", "not usable: JSON nested too deeply")], source) from None
        except ValueError as err:  # a JSON integer of more than 4300 digits
            raise ConfigError([("", f"not usable: {err}")], source) from None
        if not isinstance(data, dict):
            raise ConfigError([("", "expected a table of settings")], source)
        return data
    raise ConfigError([("", "not TOML, JSON or an sd-scripts command line (" + "; ".join(errors) + ")")], source)


def _has_training_args(data: dict[str, Any]) -> bool:
    return any(k not in ("general", "datasets") for k in data)


def _command(text: str, source: str, base_dir: Path | None, paths: WorkspacePaths | None,
             dataset_toml: dict | None, family: str | None, roots: AllowedRoots | None) -> ImportResult:
    cmd = parse_command(text)
    base = base_dir or Path.cwd()
    config: dict[str, Any] = {}
    extras = None
    config_file = cmd.flags.pop("config_file", None)
    if config_file:
        cfg_path = _near(str(config_file), base, ".toml", roots, "config_file")
        config = dict(read_toml(cfg_path, "config file"))
        if (cfg_path.parent / EXTRAS_FILE).is_file():
            extras = read_toml(cfg_path.parent / EXTRAS_FILE, EXTRAS_FILE)
        base = cfg_path.parent  # what the config names is near it (as when the config file is imported)
    config = {**flatten_config(config), **cmd.flags}   # command-line flags win, as in sd-scripts
    dataset_file = config.pop("dataset_config", None)
    if dataset_toml is None and dataset_file:
        dataset_toml = read_toml(_near(str(dataset_file), base, "", roots, "dataset_config"), "dataset config")
    return import_kohya(config, dataset_toml, family=family or cmd.family, base_dir=base, paths=paths,
                        source=source, launcher=cmd.launcher, extras=extras, roots=roots)


def _near(name: str, base: Path, suffix: str, roots: AllowedRoots | None, what: str) -> Path:
    """The file a config names: absolute, else beside the config (or in the working folder); with
    `roots`, only inside them and relative to the workspace (ConfigError naming `what` otherwise)."""
    if roots is not None:
        p = roots.check(name, what)
        if suffix and not p.exists():
            p = roots.check(p.with_suffix(suffix), what)
        return p
    p = Path(name).expanduser()
    if not p.is_absolute() and not p.exists():
        p = base / p
    if suffix and not p.exists() and p.with_suffix(suffix).exists():
        p = p.with_suffix(suffix)  # sd-scripts adds .toml to a config_file given without it
    return p
