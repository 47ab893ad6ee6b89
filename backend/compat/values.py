"""Value conversions shared by import and export: kohya `key=value` lists and resolutions."""

from __future__ import annotations

import ast
import math
import shlex
from pathlib import Path
from typing import Any

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_RAISE = object()


def as_bool(value: Any, default: Any = _RAISE) -> bool:
    """A boolean as configs and front ends write one: True/False, 1/0, or the words true/yes/on and
    false/no/off in any case ("True" from LETS and kohya_ss, "true" from TOML-minded tools). Anything
    else is `default`, or a ValueError naming the value when no default is given."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if default is _RAISE:
        raise ValueError(f"{value!r} is not true or false")
    return default


def parse_literal(text: str) -> Any:
    """A `key=value` value as sd-scripts reads it: a Python literal (1, 0.5, True, (0.9, 0.99)) or the text."""
    text = text.strip()
    if text.lower() in ("true", "false"):  # Python spells them True/False; accept any case
        return as_bool(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text.strip("\"'")


def number(value: Any) -> float:
    """A finite number from a kohya value (kohya_ss writes numbers as text); ValueError for anything else:
    text, lists, true/false, NaN, infinity, or an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{shown(value)} is not a number")
    try:
        out = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{shown(value)} is not a usable number") from None
    if not math.isfinite(out):
        raise ValueError(f"{shown(value)} is not a finite number")
    return out


def whole(value: Any) -> int:
    """`number(value)` as a whole number; ValueError when it has a fraction."""
    out = number(value)
    if not out.is_integer():
        raise ValueError(f"{shown(value)} is not a whole number")
    return int(out)


def shown(value: Any, limit: int = 60) -> str:
    """A short repr for messages (str() of a 5000-digit integer raises; a huge list floods the report)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def path_kind(path: Path) -> str | None:
    """"file", "folder", "other" or None (nothing there, or a name the OS refuses: too long, a NUL byte)."""
    try:
        if path.is_dir():
            return "folder"
        return "file" if path.is_file() else ("other" if path.exists() else None)
    except (OSError, ValueError):
        return None


def parse_kv(items: Any) -> tuple[dict[str, Any], list[str]]:
    """network_args / optimizer_args (a list of `k=v`, one string of them, or a LETS dict) → (dict, bad items)."""
    if items is None or items == "":
        return {}, []
    if isinstance(items, dict):
        return {str(k): parse_literal(v) if isinstance(v, str) else v for k, v in items.items()}, []
    if isinstance(items, str):
        items = [part for part in _split_args(items) if part]
    elif not isinstance(items, (list, tuple)):
        return {}, [shown(items)]
    out: dict[str, Any] = {}
    bad: list[str] = []
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            bad.append(str(item))
            continue
        out[key.strip()] = parse_literal(value)
    return out, bad


def _split_args(text: str) -> list[str]:
    """kohya_ss writes `a=1 b="x y"`; split on spaces outside quotes."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def format_value(value: Any) -> str:
    """A value for a `key=value` string that sd-scripts' ast.literal_eval reads back the same."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_kv(values: dict[str, Any]) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in values.items()]


def side_of_area(width: int, height: int, step: int = 8) -> int:
    """The square side with the same pixel area as width × height, rounded to a multiple of `step`."""
    return max(step, int(round(math.sqrt(width * height) / step)) * step)
