"""The schema as a flat list of leaf options, for forms, docs, the CLI and the kohya mapping."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from backend.config.schema import TrainConfig


@dataclass(frozen=True)
class FieldSpec:
    path: str            # dotted, e.g. "network.rank"
    section: str
    name: str
    kind: str            # bool | int | float | str | choice | list[str] | prompts | dict
    default: Any
    help: str
    label: str
    basic: bool
    widget: str | None
    choices: tuple[str, ...] = ()
    optional: bool = False    # None is allowed ("empty")
    ge: float | None = None
    le: float | None = None
    accepts: str | None = None     # path options: "file", "folder" or "file or folder" on disk
    required: bool = False         # path options training cannot do without


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    if get_origin(annotation) is Literal:
        return "choice", tuple(str(a) for a in get_args(annotation))
    if annotation in (bool, int, float, str):
        return annotation.__name__, ()
    origin = get_origin(annotation)
    if origin is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "prompts", ()
        return "list[str]", ()
    if origin is dict:
        return "dict", ()
    raise TypeError(f"unsupported schema type {annotation!r}")


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    ge = le = None
    for m in info.metadata:
        ge = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else ge
        ge = getattr(m, "gt", None) if getattr(m, "gt", None) is not None and ge is None else ge
        le = getattr(m, "le", None) if getattr(m, "le", None) is not None else le
        le = getattr(m, "lt", None) if getattr(m, "lt", None) is not None and le is None else le
    return ge, le


def leaf_fields(model: type[BaseModel] = TrainConfig) -> list[FieldSpec]:
    """Every leaf option of the config, section by section, in declaration order."""
    return list(_leaf_fields(model))


@lru_cache(maxsize=8)
def _leaf_fields(model: type[BaseModel]) -> tuple[FieldSpec, ...]:
    # The schema never changes while the process runs; reading it costs milliseconds per call.
    specs = []
    for section, sinfo in model.model_fields.items():
        sub = sinfo.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            continue
        for name, info in sub.model_fields.items():
            ann, optional = _unwrap_optional(info.annotation)
            kind, choices = _kind(ann)
            ui = (info.json_schema_extra or {}).get("ui", {})
            ge, le = _bounds(info)
            default = info.get_default(call_default_factory=True)
            path_hint = ui.get("path") or {}
            specs.append(FieldSpec(
                path=f"{section}.{name}", section=section, name=name, kind=kind, default=default,
                help=info.description or "", label=ui.get("label") or name.replace("_", " "),
                basic=bool(ui.get("basic")), widget=ui.get("widget"), choices=choices,
                optional=optional, ge=ge, le=le, accepts=path_hint.get("accepts"),
                required=bool(path_hint.get("required"))))
    return tuple(specs)


def field_map() -> dict[str, FieldSpec]:
    return {f.path: f for f in leaf_fields()}


def path_fields() -> list[FieldSpec]:
    """The options that name a file or folder (widget "path"), in declaration order."""
    return [f for f in leaf_fields() if f.widget == "path"]


def server_path_options() -> tuple[str, ...]:
    """Every option naming a server file or folder: read (widget "path") or written (widget "output_dir")."""
    return tuple(f.path for f in leaf_fields() if f.widget in ("path", "output_dir"))
