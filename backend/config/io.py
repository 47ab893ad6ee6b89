"""Loading, merging, validating and writing configs: defaults ← preset ← user edits."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from backend.config.migrations import migrate
from backend.config.schema import SCHEMA_VERSION, TrainConfig
from backend.errors import ConfigError


def _loc_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _short(value: Any, limit: int = 80) -> str:
    """repr() of a value, cut to `limit` characters (a fuzzed 5000-digit number or a huge array)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def one_line(text: str, limit: int = 2000) -> str:
    """`text` with control characters escaped (a key or file name holding a newline stays on one line),
    cut to `limit` characters."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], str(text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Shown:
    """A value whose repr is short (`_short`), for messages built with {got!r}."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return _short(self.value)


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error → (dotted.path, what is allowed) in words a user can act on."""
    path = one_line(_loc_path(err["loc"]), 120)
    kind, ctx = err["type"], err.get("ctx") or {}
    got = _Shown(err.get("input"))
    if kind == "extra_forbidden":
        parent, _, key = path.rpartition(".")
        allowed = _allowed_keys(parent)
        return path, f"unknown option {key!r}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if kind == "literal_error":
        return path, f"{got!r} is not allowed; choose one of {ctx.get('expected', '')}"
    if kind == "missing":
        return path, "required, but missing"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return path, f"{got!r} is out of range: {err['msg'].lower()}"
    if kind == "value_error":
        return path, str(ctx.get("error", err["msg"]))
    raw = err.get("input")
    return path, f"{err['msg']} (got {got!r})" if raw is not None and not isinstance(raw, dict) else err["msg"]


def _allowed_keys(dotted_parent: str) -> list[str]:
    model: Any = TrainConfig
    for part in filter(None, dotted_parent.split(".")):
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = info.annotation
    return list(getattr(model, "model_fields", {}))


def validate_dict(data: dict[str, Any], source: str | None = None) -> TrainConfig:
    """A TrainConfig from a raw (possibly sparse) dict, or ConfigError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError([("", f"expected a table of sections, got {type(data).__name__}")], source)
    data = _empty_as_none(migrate(data))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err.errors()), source) from None


_SCALAR_MEMBERS = ("float", "int", "bool", "str")  # the union of an optimizer.extra_args value


def _problems(errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """One line per problem: pydantic reports a value that fits no member of the extra_args union once
    per member (…a.float, …a.int, …a.bool, …a.str); those become one line naming the value's key."""
    out, unions = [], set()
    for e in errors:
        loc = tuple(e["loc"])
        if loc[:2] == ("optimizer", "extra_args") and len(loc) == 4 and loc[3] in _SCALAR_MEMBERS:
            if loc[:3] not in unions:
                unions.add(loc[:3])
                out.append((one_line(_loc_path(loc[:3]), 120),
                            f"a number, true/false or a string (got {_Shown(e.get('input'))!r})"))
            continue
        out.append(_problem(e))
    return out


MAX_TOML_BYTES = 16 * 1024 * 1024  # a config is a few KB; anything this large is not one


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; ConfigError naming `what` and the path when it is missing, unreadable,
    not UTF-8 text or not TOML (a UTF-8 byte-order mark, as Windows editors write, is allowed)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([("", f"{what} not found: {path}")]) from None
    except IsADirectoryError:
        raise ConfigError([("", f"the {what} is a folder, not a TOML file")], str(path)) from None
    except OSError as err:
        raise ConfigError([("", f"cannot read {what} {path}: {err.strerror or err}")]) from None
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError([("", f"larger than {MAX_TOML_BYTES // 2**20} MiB: not a config file")], str(path))
    return loads_toml(raw, str(path))


def loads_toml(raw: bytes | str, source: str | None = None) -> dict[str, Any]:
    """TOML text (bytes are read as UTF-8) as a dict, or one ConfigError line naming `source`."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ConfigError([("", f"not UTF-8 text (byte {err.start} is {raw[err.start:err.start + 1]!r}); "
                                    "save it as UTF-8")], source) from None
    text = raw.removeprefix("\ufeff")
    try:
        return _guarded_loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML ({err})")], source) from None
    except _Unusable as err:
        raise ConfigError([("", f"not usable as a config: {err}")], source) from None


class _Unusable(Exception):
    """TOML that parses (or would) but is no config: keys or nesting too deep, a number too long."""


def _guarded_loads(text: str) -> dict[str, Any]:
    """tomllib.loads with the guards a config from anyone needs; TOMLDecodeError for text that is not
    TOML, _Unusable for the rest."""
    deep = _deepest_key(text)
    if deep > MAX_DEPTH:
        raise _Unusable(f"a key {deep} levels deep (a config has a few)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise _Unusable("arrays or tables nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise _Unusable(str(err)) from None
    if _depth(data) > MAX_DEPTH:
        raise _Unusable(f"tables or arrays nested more than {MAX_DEPTH} deep")
    return data


MAX_DEPTH = 16  # sections, options, sample prompts and extra_args nest 3 deep; kohya/LETS files 4


_KEY_LIKE = re.compile(r"[\w\-.\s\"']+")  # bare, quoted and dotted keys (quoted ones may hold more: safe side)


def _deepest_key(text: str) -> int:
    """Parts of the longest dotted key or table header (`a.b.c = 1`, `[a.b.c]`), counted before parsing:
    tomllib's time and memory grow with the square of a key's depth (100 000 parts take minutes and
    gigabytes). Comments and lines that cannot be a key (no `=`, or text before it that no key has, as
    in a multi-line string) are not counted; dots inside quoted keys are, which only errs on the safe
    side."""
    deepest = 0
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("["):
            key = stripped.lstrip("[").split("]", 1)[0]
        elif "=" in stripped and not stripped.startswith("#"):
            key = stripped.split("=", 1)[0]
        else:
            continue
        if _KEY_LIKE.fullmatch(key):
            deepest = max(deepest, key.count(".") + 1)
    return deepest


def _depth(data: Any) -> int:
    """Nesting depth of parsed data, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_override(item: str, require_section: bool = True) -> tuple[list[str], Any]:
    """`network.rank=16` → (["network", "rank"], 16); the value is read as TOML, else as a plain string.
    Other job kinds' configs (`require_section=False`) may also have top-level keys: `steps=4`."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or (require_section and "." not in key):
        raise ConfigError([(key or item, "overrides look like section.option=value, e.g. network.rank=16")])
    try:
        value = _guarded_loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:  # not a TOML value: the text itself (`saving.output_name=my lora`)
        value = raw.strip()
    except _Unusable as err:
        raise ConfigError([(one_line(key, 120), f"the value is not usable ({err}); quote it to pass it as text")]) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None,
                    require_section: bool = True) -> dict[str, Any]:
    """A copy of `data` with dotted overrides set: {"a.b": 1} or ["a.b=1"]."""
    out = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else (
        parse_override(o, require_section) for o in overrides or [])
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([(".".join(parts), "is not inside a section")])
        node[parts[-1]] = value
    return out


def load_config(source: TrainConfig | dict | str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← source (dict, TOML path or TrainConfig) ← overrides (`a.b=c` strings or {"a.b": v})."""
    label = None
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, TrainConfig):
        data = to_dict(source)
    elif isinstance(source, dict):
        data = source
    else:
        label = str(source)
        data = read_toml(source)
    return validate_dict(apply_overrides(data, overrides), label)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The full config as plain data (None values dropped: TOML has no null, absent means default None)."""
    return _drop_none(cfg.model_dump(mode="json"))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def sparse_dict(cfg: TrainConfig, base: TrainConfig | None = None) -> dict[str, Any]:
    """Only what differs from `base` (the defaults), plus schema_version: what a preset stores.

    An optional option cleared to None where the default has a value is stored as "" (TOML has no null).
    """
    full = cfg.model_dump(mode="json")
    ref = (base or TrainConfig()).model_dump(mode="json")
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for section, values in full.items():
        if not isinstance(values, dict):
            continue
        diff = {k: v for k, v in values.items() if v != ref[section].get(k)}
        if diff:
            out[section] = diff
    return out


def dumps_toml(data: dict[str, Any]) -> str:
    return tomli_w.dumps(_none_as_empty(data))


def _none_as_empty(data: dict[str, Any]) -> dict[str, Any]:
    # TOML cannot hold None: an optional option that was cleared is written as "", read back as None.
    return {k: _none_as_empty(v) if isinstance(v, dict) else ("" if v is None else v) for k, v in data.items()}


def _empty_as_none(data: dict[str, Any]) -> dict[str, Any]:
    """"" means "empty" for the optional options (forms and TOML have no null)."""
    from backend.config.fields import field_map

    optional = {p for p, f in field_map().items() if f.optional}
    out = {}
    for section, values in data.items():
        if isinstance(values, dict):
            values = {k: (None if v == "" and f"{section}.{k}" in optional else v) for k, v in values.items()}
        out[section] = values
    return out


def write_toml(path: str | Path, data: dict[str, Any], header: str = "") -> Path:
    from backend.files import atomic_write_text

    path = Path(path)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    atomic_write_text(path, comment + dumps_toml(data))
    return path


def diff_configs(a: TrainConfig, b: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(dotted.path, a value, b value) for every leaf option that differs."""
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    out = []
    for section in da:
        if not isinstance(da[section], dict):
            continue
        for key in da[section]:
            if da[section][key] != db[section].get(key):
                out.append((f"{section}.{key}", da[section][key], db[section][key]))
    return out
