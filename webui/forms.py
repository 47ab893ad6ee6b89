"""The training form, generated from the schema: one component per leaf option, wired by dotted path.

Components are kept in `Form.components` ({"network.rank": gr.Number, …}). Handlers take the form as
a *set* of inputs, so Gradio hands them {component: value}; `Form.values()` turns that into
{path: value} and `values_to_config` into a validated TrainConfig. Nothing depends on the order of
components. The conversions (`to_ui`, `from_ui`) are plain functions, tested without a browser.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from typing import Any

import gradio as gr

from backend.config import TrainConfig, validate_dict
from backend.config.fields import FieldSpec, leaf_fields
from backend.config.schema import SamplePrompt
from backend.errors import ConfigError

PROMPT_COLUMNS: tuple[str, ...] = tuple(SamplePrompt.model_fields)
_PROMPT_DEFAULTS = {k: f.get_default() for k, f in SamplePrompt.model_fields.items() if k != "prompt"}
INVALID_CLASS = "ld-invalid"


# --- values: schema value <-> component value ---------------------------------------------------
def to_ui(spec: FieldSpec, value: Any) -> Any:
    """The value a component of `spec` shows for the config value `value`."""
    if value is None:
        return ""  # an empty box (optional numbers use a text box: gr.Number shows None as 0)
    if spec.kind == "list[str]":
        return ", ".join(value)
    if spec.kind == "dict":
        return json.dumps(value) if value else "{}"
    if spec.kind == "prompts":
        rows = [[p.get(c, _PROMPT_DEFAULTS.get(c, "")) for c in PROMPT_COLUMNS] for p in value]
        return rows or [blank_prompt_row()]
    if spec.kind in ("int", "float"):
        number = int(value) if spec.kind == "int" else float(value)
        return str(number) if spec.optional else number
    return value


def blank_prompt_row() -> list[Any]:
    return ["" if c == "prompt" else _PROMPT_DEFAULTS[c] for c in PROMPT_COLUMNS]


def from_ui(spec: FieldSpec, value: Any) -> Any:
    """The config value for a component value; ValueError with a message naming what is accepted."""
    kind = spec.kind
    if kind in ("int", "float"):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if kind == "int":
            if number != int(number):
                raise ValueError(f"{value!r} is not a whole number")
            return int(number)
        return number
    if kind == "bool":
        return bool(value)
    if kind == "list[str]":
        return [item.strip() for item in str(value or "").split(",") if item.strip()]
    if kind == "dict":
        return _parse_table(str(value or "").strip())
    if kind == "prompts":
        return _prompts_from_rows(value)
    return "" if value is None else str(value)


def _parse_table(text: str) -> dict:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:  # also accept a TOML inline table, as the help text shows it
            data = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ValueError('write a JSON object such as {"d_coef": 2} (or a TOML inline table)') from None
    if not isinstance(data, dict):
        raise ValueError('write a JSON object such as {"d_coef": 2}')
    return data


def _rows(value: Any) -> list[list[Any]]:
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):  # a pandas DataFrame
        return value.values.tolist()
    if isinstance(value, dict) and "data" in value:
        return list(value["data"])
    return [list(r) for r in value]


def _prompts_from_rows(value: Any) -> list[dict]:
    prompts = []
    for n, row in enumerate(_rows(value), start=1):
        cells = dict(zip(PROMPT_COLUMNS, list(row) + [None] * len(PROMPT_COLUMNS), strict=False))
        if not str(cells["prompt"] or "").strip():
            continue  # an empty row is no prompt
        item: dict[str, Any] = {"prompt": str(cells["prompt"]).strip()}
        for col in PROMPT_COLUMNS[1:]:
            cell = cells[col]
            default = _PROMPT_DEFAULTS[col]
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                item[col] = default
            elif isinstance(default, str):
                item[col] = str(cell)
            else:
                try:
                    number = float(cell)
                except (TypeError, ValueError):
                    raise ValueError(f"row {n}, column {col}: {cell!r} is not a number") from None
                item[col] = int(number) if isinstance(default, int) and number == int(number) else number
        prompts.append(item)
    return prompts


def config_to_values(cfg: TrainConfig, specs: Iterable[FieldSpec] | None = None) -> dict[str, Any]:
    """{dotted path: component value} for every leaf option of `cfg`."""
    dumped = cfg.model_dump(mode="json")
    return {s.path: to_ui(s, dumped[s.section][s.name]) for s in (specs or leaf_fields())}


def values_to_dict(values: dict[str, Any], specs: Iterable[FieldSpec] | None = None
                   ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(nested config dict, problems) from {path: component value}; options missing from `values`
    keep their defaults. A value that cannot be read is a problem and is left out of the dict."""
    data: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for spec in specs or leaf_fields():
        if spec.path not in values:
            continue
        try:
            value = from_ui(spec, values[spec.path])
        except ValueError as err:
            problems.append((spec.path, str(err)))
            continue
        if value is None and not spec.optional:
            problems.append((spec.path, "required: enter a value"))
            continue
        data.setdefault(spec.section, {})[spec.name] = "" if value is None else value
    return data, problems


def values_to_config(values: dict[str, Any]) -> TrainConfig:
    """A validated TrainConfig, or one ConfigError listing every problem by dotted path."""
    data, problems = values_to_dict(values)
    try:
        cfg = validate_dict(data)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def field_for(problem_path: str, known: Iterable[str]) -> str | None:
    """The form field a problem belongs to: `sampling.prompts.0.seed` → `sampling.prompts`."""
    known = set(known)
    parts = problem_path.split(".")
    for n in range(len(parts), 1, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


# --- components ---------------------------------------------------------------------------------
def _info(spec: FieldSpec) -> str:
    if spec.kind in ("int", "float") and (spec.ge is not None or spec.le is not None):
        lo = "" if spec.ge is None else f"{spec.ge:g}"
        hi = "" if spec.le is None else f"{spec.le:g}"
        bounds = f" Range {lo}…{hi}." if lo and hi else (f" At least {lo}." if lo else f" At most {hi}.")
    else:
        bounds = ""
    empty = " Empty means unset." if spec.optional else ""
    return f"{spec.help}{bounds}{empty}"


def make_component(spec: FieldSpec, choices: list | None = None) -> gr.components.Component:
    """Render the component for one option in the current layout context."""
    value = to_ui(spec, spec.default)
    common = {"label": spec.label, "elem_id": "opt-" + spec.path.replace(".", "-")}
    if choices is not None:
        return gr.Dropdown(choices=choices, value=value or None, allow_custom_value=True,
                           info=_info(spec) + " Pick one or type a path.", **common)
    if spec.kind == "bool":
        return gr.Checkbox(value=value, info=spec.help, **common)
    if spec.kind in ("int", "float") and spec.optional:
        return gr.Textbox(value=value, info=_info(spec), placeholder="empty", **common)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, info=_info(spec),
                         **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=value, info=spec.help, **common)
    if spec.kind == "prompts":
        datatype = ["str" if isinstance(_PROMPT_DEFAULTS.get(c, ""), str) else "number" for c in PROMPT_COLUMNS]
        return gr.Dataframe(value=value, headers=list(PROMPT_COLUMNS), datatype=datatype, type="array",
                            interactive=True, **common)
    if spec.kind == "list[str]":
        return gr.Textbox(value=value, info=spec.help + " Comma-separated.", **common)
    if spec.kind == "dict":
        return gr.Textbox(value=value, info=spec.help + " As JSON.", lines=1, **common)
    return gr.Textbox(value=value, info=spec.help, lines=3 if spec.widget == "textarea" else 1, **common)


class Form:
    """The components of the training form by dotted path, and conversions to and from them."""

    def __init__(self) -> None:
        self.specs: dict[str, FieldSpec] = {s.path: s for s in leaf_fields()}
        self.components: dict[str, gr.components.Component] = {}

    def add(self, path: str, choices: list | None = None) -> gr.components.Component:
        comp = make_component(self.specs[path], choices)
        self.components[path] = comp
        return comp

    def render(self, paths: Iterable[str], per_row: int = 3) -> None:
        """Render options in rows of `per_row` (wide ones — prompts, text areas — on their own)."""
        row: list[str] = []
        for path in paths:
            spec = self.specs[path]
            if spec.kind == "prompts" or spec.widget == "textarea":
                self._row(row)
                row = []
                self.add(path)
                continue
            row.append(path)
            if len(row) == per_row:
                self._row(row)
                row = []
        self._row(row)

    def _row(self, paths: list[str]) -> None:
        if paths:
            with gr.Row(equal_height=True):
                for path in paths:
                    self.add(path)

    @property
    def inputs(self) -> set[gr.components.Component]:
        return set(self.components.values())

    def values(self, data: dict) -> dict[str, Any]:
        """{path: value} from the {component: value} dict Gradio passes for a set of inputs."""
        return {path: data[comp] for path, comp in self.components.items() if comp in data}

    def config(self, data: dict) -> TrainConfig:
        return values_to_config(self.values(data))

    def updates(self, cfg: TrainConfig, keep: dict[str, Any] | None = None) -> dict:
        """{component: value} showing `cfg`; paths in `keep` show the given value instead."""
        values = {**config_to_values(cfg), **(keep or {})}
        return {comp: values[path] for path, comp in self.components.items()}

    def marks(self, problems: list[tuple[str, str]], previous: Iterable[str] = ()) -> tuple[dict, list[str]]:
        """Updates that put each problem under its field (and clear fields fixed since), and the
        paths now marked."""
        messages: dict[str, list[str]] = {}
        for path, msg in problems:
            target = field_for(path, self.components)
            if target:
                messages.setdefault(target, []).append(msg)
        updates = {}
        for path in set(previous) | set(messages):
            comp, spec = self.components.get(path), self.specs.get(path)
            if comp is None or spec is None:
                continue
            bad = messages.get(path)
            classes = [INVALID_CLASS] if bad else []
            if isinstance(comp, gr.Dataframe):
                label = f"⚠ {spec.label}: {'; '.join(bad)}" if bad else spec.label
                updates[comp] = gr.update(label=label, elem_classes=classes)
            else:
                info = f"⚠ {'; '.join(bad)}" if bad else getattr(comp, "info", None)
                updates[comp] = gr.update(info=info, elem_classes=classes)
        return updates, sorted(messages)
