"""The file paths and caption extensions in a LETS /validate body, checked before anything is read.

Every sd-scripts path option (model, VAE, image and regularization folders, output and logging
folders, sample prompts, network weights, …) must resolve inside the server's allowed roots
(`backend.roots`), and a caption extension must be an extension. LETS' front-end-only keys (where it
writes its own tag and TOML files, on the client's machine) are not server paths and are left out.
"""

from __future__ import annotations

from typing import Any

from backend.compat.lets_import import FRONTEND_ONLY
from backend.errors import ConfigError
from backend.jobs.kinds import KINDS
from backend.roots import AllowedRoots, check_extension
from backend.roots import config_path_problems as option_problems

# sd-scripts options naming a file or folder whose names do not end in _dir, _path or _file.
PATH_KEYS = frozenset({"pretrained_model_name_or_path", "vae", "sample_prompts", "network_weights", "resume",
                       "base_weights", "clip_l", "clip_g", "t5xxl", "ae", "in_json", "dataset_config",
                       "log_tracker_config", "tokenizer_cache_dir", "conditioning_data_dir"})
PATH_SUFFIXES = ("_dir", "_path", "_file")


def is_path_key(key: str) -> bool:
    return key not in FRONTEND_ONLY and (key in PATH_KEYS or key.endswith(PATH_SUFFIXES))


def _resolved(roots: AllowedRoots, key: str, value: Any, where: str, problems: list[str]) -> Any:
    """`value` (a path or a list of them) as absolute resolved paths; problems noted, value kept."""
    if value is None or value == "":
        return value
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        try:
            out.append(str(roots.check(item, key)))
        except ConfigError as err:
            problems += [f"{where}{p}: {m}" for p, m in err.problems]
            out.append(item)
    return out if isinstance(value, list | tuple) else out[0]


def _table(roots: AllowedRoots, table: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    out = dict(table)
    for key, value in table.items():
        if not isinstance(key, str):
            continue
        if key == "caption_extension" and value not in (None, ""):
            try:
                check_extension(value, key)
            except ConfigError as err:
                problems += [f"{where}{p}: {m}" for p, m in err.problems]
        elif is_path_key(key):
            out[key] = _resolved(roots, key, value, where, problems)
        elif isinstance(value, dict):  # the import lifts nested tables' keys to the top, as sd-scripts does
            out[key] = _table(roots, value, where, problems)
    return out


def resolve_body_paths(body: dict[str, Any], roots: AllowedRoots) -> tuple[dict[str, Any], list[str]]:
    """(the body with every path made absolute and resolved, as everything after reads it; one line per
    path outside the roots, or with a NUL byte, and per caption extension that is not one, naming the
    option and, for a subset, which one). Relative paths are taken from the workspace, never from the
    server's working folder."""
    problems: list[str] = []
    out: dict[str, Any] = dict(body)
    for part in ("args", "dataset"):
        sections = body.get(part)
        if not isinstance(sections, dict):
            continue
        new: dict[str, Any] = {}
        for section, values in sections.items():
            if section == "subsets" and part == "dataset" and isinstance(values, list):
                new[section] = [_table(roots, s, f"subset {s.get('name', f'#{i}')!r} ", problems)
                                if isinstance(s, dict) else s for i, s in enumerate(values, 1)]
            elif isinstance(values, dict):
                new[section] = _table(roots, values, "", problems)
            else:
                new[section] = values
        out[part] = new
    return out, problems


def config_path_problems(config: dict[str, Any], roots: AllowedRoots) -> list[str]:
    """The same rule on the imported LoRA Dash config (every path option of a training job), so a path
    that reached it under a name not listed above is caught too."""
    problems = [f"{p}: {m}" for p, m in option_problems(config, KINDS["train"].path_options, roots)]
    ext = (config.get("dataset") or {}).get("caption_extension")
    if ext:
        try:
            check_extension(ext, "dataset.caption_extension")
        except ConfigError as err:
            problems += [f"{p}: {m}" for p, m in err.problems]
    return problems
