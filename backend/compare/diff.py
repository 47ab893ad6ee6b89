"""The settings that differ between runs, by dotted field path, with each run's value.

Each run's resolved config.toml is laid over the schema's defaults first, so an option a run's file
leaves out counts as its default (an older job folder compares fairly with a newer one). The base
model and the dataset come first when they differ: they explain a difference before any option does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PINNED = ("model.path", "model.family", "dataset.path")


@dataclass(frozen=True)
class DiffRow:
    path: str            # dotted field path, e.g. "network.rank"
    label: str           # the schema's label, e.g. "Rank (dim)"
    values: tuple[Any, ...]  # one per run, in the runs' order; None where a run has no value


def _defaults() -> dict[str, Any]:
    from backend.config.schema import TrainConfig

    return TrainConfig().model_dump(mode="json")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"network": {"rank": 8}} → {"network.rank": 8}. Lists and `extra_args` tables stay whole."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "extra_args":
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _with_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(defaults)
    flat.update(flatten(config))
    flat.pop("schema_version", None)
    return flat


def _order_and_labels() -> tuple[dict[str, int], dict[str, str]]:
    from backend.config.fields import leaf_fields

    specs = leaf_fields()
    return {s.path: i for i, s in enumerate(specs)}, {s.path: s.label for s in specs}


def settings_diff(configs: list[dict[str, Any]]) -> list[DiffRow]:
    """Rows for every option whose value is not the same in all `configs` (resolved config dicts,
    one per run). Base model and dataset first, then the schema's order, then unknown keys A–Z."""
    if len(configs) < 2:
        return []
    defaults = _defaults()
    flats = [_with_defaults(c or {}, defaults) for c in configs]
    order, labels = _order_and_labels()
    paths = {p for f in flats for p in f}
    rows = []
    for path in paths:
        values = tuple(f.get(path) for f in flats)
        if any(_canon(v) != _canon(values[0]) for v in values[1:]):
            rows.append(DiffRow(path, labels.get(path, path), values))

    def rank(row: DiffRow) -> tuple[int, int, str]:
        if row.path in PINNED:
            return (0, PINNED.index(row.path), row.path)
        return (1, order.get(row.path, len(order)), row.path)

    return sorted(rows, key=rank)


def _canon(value: Any) -> str:
    """A comparable form: 1 and 1.0 are equal (TOML may write either), key order does not matter."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    """A value as the table shows it: numbers in short form, prompts one per line, None as "—"."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "\n".join(_prompt_text(v) for v in value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value) if value != "" else '""'


def _prompt_text(p: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("prompt",))
    return f"{p.get('prompt', '')} ({extra})" if extra else str(p.get("prompt", ""))
