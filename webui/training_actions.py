"""What the Training tab's buttons do, apart from the components: check, start, presets, export.

Plain functions over (AppContext, TrainConfig); the tab module turns their results into updates.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

from backend.config import (
    TrainConfig,
    dumps_toml,
    load_preset,
    resolve_paths,
    save_preset,
    sparse_dict,
    to_dict,
    validate_dict,
)
from backend.config.presets import INPUT_PATH_FIELDS, OUTPUT_PATH_FIELDS, preset_name_ok
from backend.errors import ConfigError, ModelError
from backend.jobs.registry import JobRecord
from backend.models.detect import TRAINABLE, check_prediction, detect, require_trainable
from backend.preflight import path_problems as preflight_paths
from backend.preflight import preflight
from backend.roots import config_path_problems
from webui.context import AppContext

PICKED_PATHS = ("model.path", "dataset.path")
PATH_OPTIONS = tuple(f"{s}.{k}" for s, k in (*INPUT_PATH_FIELDS, *OUTPUT_PATH_FIELDS))


def input_problems(cfg: TrainConfig, ctx: AppContext) -> list[tuple[str, str]]:
    """Everything the job's start would refuse beyond the schema (backend.preflight: files, model,
    dataset, machine, adapter shapes), as (dotted.path, what to do). Nothing outside the allowed folders
    is looked at, not even whether it exists."""
    dumped = cfg.model_dump()
    values = {p: dumped[p.partition(".")[0]][p.partition(".")[2]] for p in PATH_OPTIONS}
    outside = outside_roots(values, ctx)
    if outside:
        return outside
    resolved = resolve_paths(cfg, ctx.paths)
    return preflight(resolved, ctx.paths) + output_folder_problems(values, ctx)


def path_problems(values: dict[str, Any], ctx: AppContext) -> list[tuple[str, str]]:
    """The file checks on raw form values {dotted.path: text}, so they run even when other options
    are invalid (Validate then lists every problem at once)."""
    problems = outside_roots(values, ctx)
    if problems:
        return problems
    problems = preflight_paths(values, ctx.paths) + output_folder_problems(values, ctx)
    model = str(values.get("model.path") or "").strip()
    if model and "\x00" not in model and not any(p == "model.path" for p, _ in problems):
        problems += model_problems(ctx.paths.resolve(model), values.get("model.family"),
                                   bool(values.get("model.v_prediction")))
    return problems


def output_folder_problems(values: dict[str, Any], ctx: AppContext) -> list[tuple[str, str]]:
    """Folders written to (saving.output_dir): made when missing, but never over a file."""
    problems = []
    for section, key in OUTPUT_PATH_FIELDS:
        value = str(values.get(f"{section}.{key}") or "").strip()
        target = ctx.paths.resolve(value) if value else None
        if target is not None and target.exists() and not target.is_dir():
            problems.append((f"{section}.{key}", f"{target} is not a folder: give a folder (it is created if "
                                                 "missing) or clear it"))
    return problems


def outside_roots(values: dict[str, Any], ctx: AppContext) -> list[tuple[str, str]]:
    """Path options naming a server folder outside the workspace and the --allow-dir folders."""
    nested: dict[str, Any] = {}
    for option in PATH_OPTIONS:
        section, _, key = option.partition(".")
        nested.setdefault(section, {})[key] = str(values.get(option) or "").strip()
    return config_path_problems(nested, PATH_OPTIONS, ctx.allowed)


def model_problems(path: Path, family: str | None, v_prediction: bool) -> list[tuple[str, str]]:
    """What the model's own files say against the settings (read from headers and configs, no torch):
    a LoRA or VAE picked as base model, the wrong family, v-prediction not set."""
    try:
        det = require_trainable(detect(path), path, family or None)
        check_prediction(det, path, v_prediction)
    except ModelError as err:
        msg = str(err)
        field = next((f for f in ("model.family", "model.v_prediction") if f"set {f}" in msg), "model.path")
        return [(field, msg)]
    return []


def describe_model(path: Path) -> tuple[str | None, str]:
    """(family, one line) for a picked model, e.g. ("sd15", "SD 1.x diffusers; found … configs")."""
    try:
        det = detect(path)
    except ModelError as err:
        return None, str(err)
    return (det.family if det.family in TRAINABLE else None), det.describe()


def check(cfg: TrainConfig, ctx: AppContext) -> TrainConfig:
    """`cfg` with absolute paths, or ConfigError naming every missing file."""
    problems = input_problems(cfg, ctx)
    if problems:
        raise ConfigError(problems)
    return resolve_paths(cfg, ctx.paths)


def resolved_toml(cfg: TrainConfig, ctx: AppContext) -> str:
    """The full config as the job would store it (paths made absolute)."""
    return dumps_toml(to_dict(resolve_paths(cfg, ctx.paths)))


def submit(cfg: TrainConfig, ctx: AppContext, name: str, *, start: bool) -> JobRecord:
    """Create the training job (queued; started now when `start` and a slot is free)."""
    cfg = check(cfg, ctx)
    return ctx.supervisor.submit("train", to_dict(cfg), (name or "").strip() or cfg.saving.output_name,
                                 start=start)


def submit_toml(ctx: AppContext, config_toml: str, name: str = "", start: bool = True) -> dict[str, Any]:
    """API: start a training job from a (sparse or full) TOML config."""
    try:
        data = tomllib.loads(config_toml or "")
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML ({err})")], "config_toml") from None
    rec = submit(validate_dict(data, "config_toml"), ctx, name, start=start)
    return {"id": rec.id, "status": rec.status, "job_dir": str(ctx.paths.jobs / rec.id)}


def preset_config(ctx: AppContext, name: str) -> TrainConfig:
    if not name:
        raise ConfigError([("preset", "choose a preset first")])
    return load_preset(name, ctx.paths)


def keep_picks(cfg: TrainConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The current model/dataset picks, for the ones the preset leaves empty."""
    dumped = cfg.model_dump()
    keep = {}
    for path in PICKED_PATHS:
        section, key = path.split(".")
        if not dumped[section][key] and values.get(path):
            keep[path] = values[path]
    return keep


def save_user_preset(ctx: AppContext, cfg: TrainConfig, name: str, overwrite: bool) -> Path:
    return save_preset(cfg, ctx.paths, (name or "").strip(), overwrite=overwrite)


def export_preset(cfg: TrainConfig, name: str) -> str:
    """A sparse TOML file of `cfg` in a fresh temp folder (Gradio serves it from there)."""
    stem = preset_name_ok((name or "").strip() or "lora-dash-preset")
    folder = Path(tempfile.mkdtemp(prefix="loradash-export-"))
    path = folder / f"{stem}.toml"
    path.write_text(f"# LoRA Dash preset {stem}\n" + dumps_toml(sparse_dict(cfg)), encoding="utf-8")
    return str(path)


def import_preset(ctx: AppContext, file_path: str) -> tuple[TrainConfig, str]:
    """Read an uploaded preset; keep a copy among the user's presets unless the name is taken.
    Returns the config and a sentence saying what happened."""
    path = Path(file_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError([("", f"not a valid TOML file ({err})")], path.name) from None
    cfg = validate_dict(data, path.name)
    stem = path.stem
    if (ctx.paths.presets / f"{stem}.toml").exists():
        return cfg, (f"Loaded {path.name} into the form. A preset named {stem!r} exists already, so it "
                     "was not saved: use “Save as preset” with another name to keep it.")
    try:
        save_preset(cfg, ctx.paths, stem)
    except ConfigError:
        return cfg, f"Loaded {path.name} into the form (its name cannot be a preset name, so it was not saved)."
    return cfg, f"Imported {path.name} as your preset {stem!r} and loaded it into the form."
