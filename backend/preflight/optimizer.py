"""optimizer.name, optimizer.extra_args and the schedule: the package is installed, every extra argument
is one the optimizer's constructor takes, with a value of its type, and the scheduler can start.

The constructors' parameters are read from their source with `ast` (no import: torch stays out of the UI
process). OPTIMIZER_CLASSES names the class backend.training.optim.build_optimizer builds for each
name; tests/test_preflight.py checks that they agree.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.preflight.inputs import Problem

OPTIMIZER_CLASSES = {
    "adamw": ("torch.optim.adamw", "AdamW", "torch"),
    "adamw8bit": ("bitsandbytes.optim.adamw", "AdamW8bit", "bitsandbytes"),
    "prodigy": ("prodigyopt.prodigy", "Prodigy", "prodigyopt"),
    "adafactor": ("transformers.optimization", "Adafactor", "transformers"),
    "lion": ("backend.training.optim", "Lion", "torch"),
    "sgd": ("torch.optim.sgd", "SGD", "torch"),
}
POLYNOMIAL_LR_END = 1e-7  # diffusers get_polynomial_decay_schedule_with_warmup's default lr_end


def _source_file(module: str) -> Path | None:
    """The .py file of a dotted module, found without importing it or its parents (find_spec on a dotted
    name would import the parent package: torch)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=16)
def constructor_parameters(module: str, cls: str) -> dict[str, Any] | None:
    """{parameter: default} of `cls.__init__` in `module`'s source (a parameter without a default maps to
    ...), or None when the source cannot be read."""
    source = _source_file(module)
    if source is None:
        return None
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            if init is None or init.args.vararg or init.args.kwarg:
                return None
            args = init.args.args + init.args.kwonlyargs
            defaults = [None] * (len(init.args.args) - len(init.args.defaults)) + list(init.args.defaults)
            defaults += list(init.args.kw_defaults)
            out = {}
            for arg, default in zip(args, defaults, strict=True):
                try:
                    out[arg.arg] = ... if default is None else ast.literal_eval(default)
                except ValueError:
                    out[arg.arg] = ...  # not a literal: any value
            out.pop("self", None)
            return out
    return None


# What build_optimizer passes from the schema for each optimizer: the same key in extra_args would
# override it past the schema's bounds (a negative lr trains; the polynomial check reads optimizer.lr).
_SCHEMA_OWNED = {"lr": "optimizer.lr", "betas": "optimizer.beta1 and optimizer.beta2", "eps": "optimizer.eps",
                 "weight_decay": "optimizer.weight_decay", "momentum": "optimizer.momentum"}
OWNED_BY_SCHEMA = {
    "adamw": ("lr", "betas", "eps", "weight_decay"),
    "adamw8bit": ("lr", "betas", "eps", "weight_decay"),
    "prodigy": ("lr", "betas", "weight_decay"),
    "adafactor": ("lr", "weight_decay"),
    "lion": ("lr", "betas", "weight_decay"),
    "sgd": ("lr", "momentum", "weight_decay"),
}


def _number(lo: float, lo_open: bool, hi: float | None, what: str):
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (v > lo if lo_open else v >= lo) and (hi is None or v < hi)
    return check, what


# Parameters whose source default says nothing of their type (None, or an int where a float is wrong the
# other way round): a wrong one passed the constructor and failed at the first step.
KNOWN_PARAMETERS = {
    "beta1": _number(0.0, False, 1.0, "a number from 0 up to (not including) 1"),
    "beta3": _number(0.0, False, 1.0, "a number from 0 up to (not including) 1"),
    "slice_p": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number, 1 or more"),
    "growth_rate": _number(0.0, True, None, "a number above 0"),
    "d0": _number(0.0, True, None, "a number above 0"),
    "foreach": (lambda v: isinstance(v, bool), "true or false"),
    "fused": (lambda v: isinstance(v, bool), "true or false"),
}


def _type_ok(value: Any, default: Any) -> str | None:
    """None if `value` suits a parameter whose default is `default`; else the kind it should be."""
    if default is ... or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, tuple):
        return f"a tuple of {len(default)}, which extra_args cannot hold"
    return None


def extra_args_problems(name: str, extra: dict[str, Any]) -> list[Problem]:
    out = []
    for key in extra:
        if key in OWNED_BY_SCHEMA[name]:
            out.append((f"optimizer.extra_args.{key}", f"{name} takes {key} from {_SCHEMA_OWNED[key]}, which "
                                                       "checks its range: set it there, not in extra_args"))
    module, cls, _ = OPTIMIZER_CLASSES[name]
    found = constructor_parameters(module, cls)
    if found is None or not extra:
        return out
    params = {k: v for k, v in found.items() if k != "params"}
    for key, value in extra.items():
        if key in OWNED_BY_SCHEMA[name]:
            continue
        if key not in params:
            out.append((f"optimizer.extra_args.{key}", f"{cls} ({name}) has no argument {key!r}; it takes "
                                                       + ", ".join(k for k in params
                                                                   if k not in OWNED_BY_SCHEMA[name])))
            continue
        if key in KNOWN_PARAMETERS:
            check, what = KNOWN_PARAMETERS[key]
            want = None if check(value) else what
        else:
            want = _type_ok(value, params[key])
        if want:
            out.append((f"optimizer.extra_args.{key}", f"{value!r} is not {want}"))
    return out


def optimizer_problems(cfg: Any) -> list[Problem]:
    o, s = cfg.optimizer, cfg.schedule
    out: list[Problem] = []
    package = OPTIMIZER_CLASSES[o.name][2]
    if importlib.util.find_spec(package) is None:
        if o.name != "adamw8bit":  # preflight.device names bitsandbytes with the GPU it needs
            out.append(("optimizer.name", f"{o.name} needs the {package} package: pip install {package}, or "
                                          "choose adamw"))
        return out
    out += extra_args_problems(o.name, dict(o.extra_args))
    if s.lr_scheduler == "polynomial":
        if o.name == "adafactor" and o.extra_args.get("relative_step"):
            out.append(("schedule.lr_scheduler", "polynomial needs a fixed learning rate; Adafactor with "
                                                 "relative_step has none: choose constant, or turn relative_step off"))
        elif o.lr <= POLYNOMIAL_LR_END:
            out.append(("optimizer.lr", f"{o.lr:g} is at or below where the polynomial schedule ends "
                                        f"({POLYNOMIAL_LR_END:g}): raise it or choose another lr_scheduler"))
    return out
