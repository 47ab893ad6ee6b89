"""flux_train_network.py's own options → our model and flow sections.

The text-encoder and autoencoder files (--clip_l, --t5xxl, --ae), the T5 settings, and flow matching
(--timestep_sampling, --sigmoid_scale, --discrete_flow_shift, --model_prediction_type,
--weighting_scheme, --guidance_scale). sd-scripts' defaults for them (flux_train_utils.
add_flux_train_arguments: sigma sampling, shift 3.0, sigma_scaled, guidance 3.5) apply to Flux runs
only; an SD 1.5 or SDXL import reports them as options its script does not read.
"""

from __future__ import annotations

from backend.compat.context import ImportContext
from backend.compat.mapping import FLUX_KEYS, TIMESTEP_SAMPLING, WEIGHTING_SCHEMES, arg

FILES = (("clip_l", "model.clip_l_path", "CLIP-L file"), ("t5xxl", "model.t5_path", "T5-XXL file"),
         ("ae", "model.vae_path", "autoencoder file"))
NUMBERS = ("sigmoid_scale", "discrete_flow_shift", "model_prediction_type", "guidance_scale",
           "t5xxl_max_token_length", "apply_t5_attn_mask")


def import_flux(ctx: ImportContext) -> None:
    family = ctx.values.get("model.family")
    if family != "flux":
        if ctx.has("vae"):
            ctx.simple("vae")
        for key in FLUX_KEYS:
            if ctx.has(key):
                ctx.report.no_equivalent(key, ctx.take(key), f"a flux_train_network.py option: not read when "
                                                             f"training {family}")
        return
    if ctx.has("vae"):
        ctx.report.map("vae", "", ctx.take("vae"), "not read by flux_train_network.py, which reads ae")
    for key, path, what in FILES:
        if ctx.has(key):
            value = ctx.take(key)
            if ctx.set(path, value, key) and str(value):
                ctx.check_file(key, str(value), path, what)
    for key in NUMBERS:
        ctx.simple(key)
    _choice(ctx, "timestep_sampling", "flow.timestep_sampling", TIMESTEP_SAMPLING)
    _choice(ctx, "weighting_scheme", "flow.weighting_scheme", WEIGHTING_SCHEMES)


def _choice(ctx: ImportContext, key: str, path: str, table: dict[str, tuple[str, str]]) -> None:
    """A choice whose sd-scripts names differ from ours; sd-scripts' default when absent."""
    given = ctx.has(key)
    raw = ctx.take(key) if given else arg(key).default
    label = key if given else f"{key} (not set)"
    ours, how = table.get(str(raw).lower(), (None, ""))
    if ours is None:
        choices = ", ".join(sorted({v for v, _ in table.values()}))
        ctx.report.no_equivalent(label, raw, f"not available (LoRA Dash has {choices}): "
                                             f"{ctx.specs[path].default} used")
    elif how or not given:
        note = how or f"not set: sd-scripts' default {raw}"
        if ours != ctx.specs[path].default or how:
            ctx.set(path, ours, label, note, changed=True, source=raw)
    else:
        ctx.set(path, ours, key, source=raw)
