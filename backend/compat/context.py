"""The state of one import: the kohya arguments still unread, the values set so far, the report.

Every read goes through `take`, so whatever is left at the end is reported as unknown or without
equivalent; every write goes through `set`, which reads the value as the schema's type and records
where it came from (so a value the schema rejects can be named by its kohya key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.compat.mapping import ANY_VALUE, NO_DEFAULT, UNSUPPORTED, arg
from backend.compat.report import ImportReport
from backend.compat.values import as_bool, path_kind, shown
from backend.config.fields import FieldSpec, field_map
from backend.errors import ConfigError
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots


class ImportContext:
    def __init__(self, args: dict[str, Any], report: ImportReport, *, base_dir: Path | None = None,
                 paths: WorkspacePaths | None = None, roots: AllowedRoots | None = None):
        self.args = dict(args)
        self.report = report
        self.base_dir = base_dir
        self.paths = paths
        self.roots = roots  # the dashboard's allowed folders: nothing outside them is looked at
        self.values: dict[str, Any] = {}
        self.prompt_text: str | None = None   # prompts given inline (kohya_ss) instead of a file
        self.origin: dict[str, str] = {}
        self.specs: dict[str, FieldSpec] = field_map()

    # reading -------------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.args and self.args[key] is not None

    def take(self, key: str, default: Any = None) -> Any:
        """The value of kohya `key` (None when absent), marking it read."""
        value = self.args.pop(key, None)
        return default if value is None else value

    def peek(self, key: str, default: Any = None) -> Any:
        value = self.args.get(key)
        return default if value is None else value

    # writing -------------------------------------------------------------------------------------
    def set(self, path: str, value: Any, key: str, how: str = "", *, changed: bool = False,
            source: Any = NO_DEFAULT) -> bool:
        """Set our option `path` from kohya `key` (whose own value was `source`, when it differs from
        `value`); False, and a report line, when the schema's type cannot hold it."""
        try:
            converted = coerce(self.specs[path], value)
        except ValueError as err:
            self.report.no_equivalent(key, value if source is NO_DEFAULT else source, f"{path}: {err}")
            return False
        self.values[path] = converted
        self.origin[path] = key
        shown = value if source is NO_DEFAULT else source
        result = None if _same_value(shown, converted) else converted
        if changed:
            self.report.change(key, path, shown, how, result)
        else:
            self.report.map(key, path, shown, how, result)
        return True

    def simple(self, key: str, path: str | None = None) -> None:
        """A 1:1 option: its value when given, else sd-scripts' default where it differs from ours."""
        entry = arg(key, path)
        if self.has(key):
            self.set(entry.path, self.take(key), key)
        else:
            self.args.pop(key, None)
            self.default(key, entry.path, entry.default)

    def default(self, key: str, path: str, kohya_value: Any, ours: Any = NO_DEFAULT, why: str = "") -> None:
        """`key` is absent: apply sd-scripts' value `ours` (converted) when it differs from our default."""
        if kohya_value is NO_DEFAULT:
            return
        value = kohya_value if ours is NO_DEFAULT else ours
        spec = self.specs[path]
        if coerce(spec, value) == spec.default:
            return
        note = why or f"not set: sd-scripts' default used (LoRA Dash's default is {spec.default!r})"
        self.set(path, value, f"{key} (not set)", note, changed=True, source=kohya_value)

    def check_file(self, key: str, value: str, option: str, what: str = "file") -> None:
        """Report `value` (kohya `key`, our `option`) as a problem when it is not on this machine."""
        if "\x00" in value:
            self.report.problem(key, value, "contains a NUL byte: not a path")
            return
        p = self.local(key, value)
        if p is None:
            return
        if not p.is_absolute() and self.paths:
            p = self.paths.resolve(p)
        if path_kind(p) is None:
            self.report.problem(key, value, f"not found on this machine (LoRA Dash needs a local {what}): set {option}")

    def local(self, key: str, value: str) -> Path | None:
        """`value` as a path to look at, or None (and a problem line) when it is outside the roots."""
        if self.roots is None:
            return Path(value).expanduser()
        try:
            return self.roots.check(value, key)
        except ConfigError as err:
            self.report.problem(key, value, "; ".join(m for _, m in err.problems))
            return None

    # the rest ------------------------------------------------------------------------------------
    def leftovers(self, where: str = "") -> None:
        """Report every argument nobody read: no equivalent (with why) or, when harmless, mapped."""
        for key in sorted(self.args):
            value = self.args.pop(key)
            report_unsupported(self.report, f"{where}{key}", key, value)


def report_unsupported(report: ImportReport, label: str, key: str, value: Any) -> None:
    if value is None:
        report.map(label, "", None, "empty: not set")
        return
    known = UNSUPPORTED.get(key)
    if known is None:
        report.no_equivalent(label, value, "unknown option: not an sd-scripts argument LoRA Dash knows")
        return
    why, neutral = known
    if neutral == ANY_VALUE or any(_same(value, n) for n in neutral):
        report.map(label, "", value, f"no effect here: {why}")
    else:
        report.no_equivalent(label, value, why)


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and not isinstance(a, bool)
                                             and isinstance(b, (int, float)) and a == b)


def _same(a: Any, b: Any) -> bool:
    """Does value `a` (as a file gave it: kohya_ss writes numbers as text) equal `b`?"""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, str) and a.lower() == str(b).lower())
    if isinstance(a, str) and isinstance(b, (int, float)):
        try:
            return float(a) == b
        except ValueError:
            return False
    return a == b


def coerce(spec: FieldSpec, value: Any) -> Any:
    """`value` as the schema type of `spec` (kohya_ss writes numbers as strings); ValueError if it cannot be."""
    if value is None:
        if spec.optional:
            return None
        raise ValueError("needs a value")
    kind = spec.kind
    if spec.optional and value == "" and kind != "str":
        return None
    if kind == "bool":
        return as_bool(value)
    if kind == "int":
        return _as_int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{shown(value)} is not a number") from None
    if kind == "choice":
        text = str(value)
        if text not in spec.choices:
            raise ValueError(f"{value!r} is not available; LoRA Dash has {', '.join(spec.choices)}")
        return text
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ValueError(f"{value!r} is not text")
        return str(value)
    if kind == "list[str]":
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(v).strip() for v in items if str(v).strip()]
    if kind == "dict":
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not a table")
        return value
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)
