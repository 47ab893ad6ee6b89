"""optimizer_type + optimizer_args → our optimizer section.

An absent optimizer argument means the optimizer class's own default in sd-scripts (Prodigy and
Lion default to weight_decay 0, not AdamW's 0.01), so those are applied where they differ from ours.
"""

from __future__ import annotations

from typing import Any

from backend.compat.context import ImportContext
from backend.compat.mapping import (
    KOHYA_OPTIMIZER_EXTRAS,
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    OUR_OPTIMIZER_EXTRAS,
    SGD_NESTEROV_MOMENTUM,
    arg,
)
from backend.compat.values import as_bool, parse_kv


def import_optimizer(ctx: ImportContext) -> None:
    raw = ctx.take("optimizer_type")
    legacy = [k for k in ("use_8bit_adam", "use_lion_optimizer") if as_bool(ctx.take(k), False)]
    if not raw and legacy:
        raw = "AdamW8bit" if legacy[0] == "use_8bit_adam" else "Lion"
        ctx.report.map(legacy[0], "optimizer.name", raw, "the old flag for this optimizer")
    key = str(raw or "AdamW").lower()
    label = "optimizer_type" if raw else "optimizer_type (not set)"
    known = OPTIMIZERS.get(key)
    if known is None:
        ctx.report.no_equivalent(label, raw, "optimizer not available in LoRA Dash (adamw, adamw8bit, prodigy, "
                                             "adafactor, lion, sgd): AdamW used — check the learning rate")
        known = ("adamw", {}, "")
    name, extra, how = known
    if raw:
        ctx.set("optimizer.name", name, label, how, changed=bool(how), source=raw)
    else:
        ctx.default("optimizer_type", "optimizer.name", arg("optimizer_type").default, name)
    opt_args, bad = parse_kv(ctx.take("optimizer_args"))
    for item in bad:
        ctx.report.no_equivalent("optimizer_args", item, "not a key=value pair")
    defaults = dict(OPTIMIZER_DEFAULTS[name])
    if key.startswith("sgdnesterov"):
        defaults["momentum"] = SGD_NESTEROV_MOMENTUM
    betas = opt_args.pop("betas", None)
    given: dict[str, Any] = {}
    if betas is not None:
        if isinstance(betas, (tuple, list)) and len(betas) >= 2:
            given["beta1"], given["beta2"] = betas[0], betas[1]
            if len(betas) > 2:
                ctx.report.no_equivalent("optimizer_args betas", list(betas[2:]), "only two betas are kept")
        else:
            ctx.report.no_equivalent("optimizer_args betas", betas, "betas=b1,b2 expected")
    for field in ("weight_decay", "eps", "momentum"):
        if field in opt_args:
            given[field] = opt_args.pop(field)
    for field, value in given.items():
        ctx.set(f"optimizer.{field}", value, f"optimizer_args {field if 'beta' not in field else 'betas'}")
    for field, value in defaults.items():
        if field not in given and ctx.specs[f"optimizer.{field}"].default != value:
            ctx.set(f"optimizer.{field}", value, f"optimizer_args {field} (not set)",
                    f"not set: {raw or 'AdamW'} defaults to {value}", changed=True)
    for key, kohya_value in KOHYA_OPTIMIZER_EXTRAS.get(name, {}).items():
        ours = OUR_OPTIMIZER_EXTRAS[name][key]
        if key in opt_args:
            if opt_args[key] == ours:  # LoRA Dash's engine does the same without being told
                ctx.report.map(f"optimizer_args {key}", "optimizer.extra_args", opt_args.pop(key),
                               "the same as LoRA Dash's default for this optimizer")
        elif kohya_value != ours:
            opt_args[key] = kohya_value
            ctx.report.change(f"optimizer_args {key} (not set)", "optimizer.extra_args", kohya_value,
                              f"not set: sd-scripts runs {raw or 'AdamW'} with {key}={kohya_value}")
    extra = {**extra, **opt_args}
    if extra:
        clean = {}
        for k, v in extra.items():
            if isinstance(v, (bool, int, float, str)):
                clean[k] = v
            else:
                ctx.report.no_equivalent(f"optimizer_args {k}", v, "only numbers, true/false and text are kept")
        ctx.set("optimizer.extra_args", clean, "optimizer_args", "passed to the optimizer as extra_args",
                changed=True)
