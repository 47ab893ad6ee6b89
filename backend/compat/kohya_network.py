"""network_module + network_args (+ network_dropout, text-encoder flags) → our network section.

networks.lora adapts the Transformer2D blocks (attention, feed-forward, projections: our target
"attn-mlp"), and with conv_dim also the ResNet/down/up-sample 3×3 convs (kohya's LoCon: our "locon",
target "attn-mlp", conv_rank > 0 — the engine adds exactly those conv blocks when conv_rank > 0).
lycoris.kohya names the algorithm in algo= and the layers in preset= (LyCORIS kohya.py, config.py:
absent conv_dim or 0 means network_dim; absent preset means full, our "all").
networks.lora_flux (flux_train_network.py) adapts every linear layer of the double and single blocks:
our "attn-mlp" on Flux.
"""

from __future__ import annotations

from typing import Any

from backend.compat.context import ImportContext
from backend.compat.mapping import (
    KOHYA_DYLORA_MODULE,
    KOHYA_FLUX_LORA_MODULE,
    KOHYA_LORA_ARGS,
    KOHYA_LORA_MODULE,
    LYCORIS_ALGOS,
    LYCORIS_ARGS,
    LYCORIS_MODULE,
    PRESET_TO_TARGET,
)
from backend.compat.values import as_bool, number, parse_kv, shown, whole

# network_args LoRA Dash does not read: why, and the values that change nothing.
WHY_UNSUPPORTED_ARG: dict[str, tuple[str, tuple[Any, ...]]] = {
    "down_lr_weight": ("block-wise learning rates are not supported", ("",)),
    "mid_lr_weight": ("block-wise learning rates are not supported", ("",)),
    "up_lr_weight": ("block-wise learning rates are not supported", ("",)),
    "block_lr_zero_threshold": ("block-wise learning rates are not supported", ("", 0, 0.0)),
    "block_dims": ("block-wise ranks are not supported", ("",)),
    "block_alphas": ("block-wise alphas are not supported", ("",)),
    "conv_block_dims": ("block-wise ranks are not supported", ("",)),
    "conv_block_alphas": ("block-wise alphas are not supported", ("",)),
    "loraplus_lr_ratio": ("LoRA+ is not supported", ()),
    "loraplus_unet_lr_ratio": ("LoRA+ is not supported", ()),
    "loraplus_text_encoder_lr_ratio": ("LoRA+ is not supported", ()),
    "bypass_mode": ("bypass mode (for quantized bases) is not supported", (False,)),
    "rank_dropout_scale": ("not supported", (False,)),
    "train_on_input": ("IA³ option not exposed", (True,)),
    "wd_on_output": ("not exposed", (True,)),
    "full_matrix": ("not exposed", (False,)),
    "rs_lora": ("rank-stabilized scaling is not supported", (False,)),
    "unbalanced_factorization": ("not exposed", (False,)),
}


def import_network(ctx: ImportContext) -> None:
    module = ctx.take("network_module")
    args, bad = parse_kv(ctx.take("network_args"))
    for item in bad:
        ctx.report.no_equivalent("network_args", item, "not a key=value pair")
    if module is None:
        ctx.report.change("network_module (not set)", "network.algo", "lora",
                          "not set: networks.lora assumed (LETS' default)")
        module = KOHYA_LORA_MODULE
    module = str(module)
    if module == LYCORIS_MODULE:
        ctx.report.map("network_module", "network.algo", module, "LyCORIS: the algorithm is network_args algo")
        _lycoris(ctx, args)
    elif module == KOHYA_DYLORA_MODULE:
        _dylora(ctx, args)
    elif module == KOHYA_FLUX_LORA_MODULE and ctx.values.get("model.family") == "flux":
        _flux_lora(ctx, args)
    else:
        if module != KOHYA_LORA_MODULE:
            why = ("LoRA-FA is not supported: plain LoRA used" if module == "networks.lora_fa"
                   else "network module not available: LoRA used")
            ctx.report.no_equivalent("network_module", module, why)
        _kohya_lora(ctx, args, mapped=module == KOHYA_LORA_MODULE)
    for key in sorted(args):
        value = args.pop(key)
        why, neutral = WHY_UNSUPPORTED_ARG.get(key, ("unknown network argument for this module", ()))
        if any(value == n and type(value) is type(n) for n in neutral):
            ctx.report.map(f"network_args {key}", "", value, f"no effect here: {why}")
        else:
            ctx.report.no_equivalent(f"network_args {key}", value, why)
    _text_encoder(ctx)


def _rank(ctx: ImportContext) -> int:
    return int(ctx.values.get("network.rank", ctx.specs["network.rank"].default))


def _alpha(ctx: ImportContext) -> float:
    return float(ctx.values.get("network.alpha", ctx.specs["network.alpha"].default))


def _given(value: Any) -> bool:
    return value not in (None, "", 0, "0", 0.0)


def _kohya_lora(ctx: ImportContext, args: dict[str, Any], mapped: bool = True) -> None:
    conv_dim, conv_alpha = args.pop("conv_dim", None), args.pop("conv_alpha", None)
    label = "network_module"
    if _given(conv_dim):
        ctx.set("network.algo", "locon", label, "networks.lora with conv_dim is kohya's LoCon", changed=True,
                source=KOHYA_LORA_MODULE)
        ctx.set("network.target", "attn-mlp", label, "Transformer2D blocks; conv_rank adds the ResNet convs",
                source=KOHYA_LORA_MODULE)
        ctx.set("network.conv_rank", conv_dim, "network_args conv_dim")
    else:
        if mapped:
            ctx.set("network.algo", "lora", label, source=KOHYA_LORA_MODULE)
        ctx.set("network.target", "attn-mlp", label, "networks.lora adapts attention, feed-forward and projections",
                source=KOHYA_LORA_MODULE)
        if conv_dim is not None:
            ctx.set("network.conv_rank", 0, "network_args conv_dim", "0: no conv layers")
    _kohya_lora_args(ctx, args, conv_alpha)


def _kohya_lora_args(ctx: ImportContext, args: dict[str, Any], conv_alpha: Any) -> None:
    """What networks.lora and networks.dylora read alike: conv_alpha, the dropouts, network_dropout."""
    if conv_alpha is not None:
        ctx.set("network.conv_alpha", conv_alpha, "network_args conv_alpha")
    for key, (path, _) in KOHYA_LORA_ARGS.items():
        if key in args:
            ctx.set(path, args.pop(key), f"network_args {key}")
    ctx.simple("network_dropout")


def _flux_lora(ctx: ImportContext, args: dict[str, Any]) -> None:
    ctx.set("network.algo", "lora", "network_module", source=KOHYA_FLUX_LORA_MODULE)
    ctx.set("network.target", "attn-mlp", "network_module", "networks.lora_flux adapts every linear layer of the "
            "double and single blocks", source=KOHYA_FLUX_LORA_MODULE)
    given = "split_qkv" in args
    split = args.pop("split_qkv", False)
    if split in (True, "True", "true"):
        ctx.report.map("network_args split_qkv", "network.algo", split, "LoRA Dash also trains q, k and v (and "
                                                                       "proj_mlp) apart, and fuses them exactly on save")
    else:
        ctx.report.change("network_args split_qkv" + ("" if given else " (not set)"),
                          "network.algo", split, "sd-scripts trains one LoRA on each fused q/k/v projection (one "
                          "lora_down for all three); LoRA Dash trains q, k and v apart, as split_qkv=True does: "
                          "more parameters, the same file layout")
    if "train_blocks" in args:
        blocks = args.pop("train_blocks")
        if blocks == "all":
            ctx.report.map("network_args train_blocks", "network.target", blocks, "double and single blocks")
        else:
            ctx.report.no_equivalent("network_args train_blocks", blocks, "LoRA Dash adapts double and single "
                                                                          "blocks alike: all used")
    t5 = args.pop("train_t5xxl", False)
    if t5 not in (False, "False", "false"):
        ctx.report.no_equivalent("network_args train_t5xxl", t5, "LoRA Dash never trains T5-XXL")
    if "verbose" in args:
        ctx.report.map("network_args verbose", "", args.pop("verbose"), "logging only")
    for key in [k for k in args if k.endswith("_dim") or k.endswith("_dims")]:
        ctx.report.no_equivalent(f"network_args {key}", args.pop(key), "per-layer ranks are not supported: "
                                                                       "network.rank for every layer")
    _kohya_lora_args(ctx, args, args.pop("conv_alpha", None))


def _dylora(ctx: ImportContext, args: dict[str, Any]) -> None:
    ctx.set("network.algo", "dylora", "network_module", source=KOHYA_DYLORA_MODULE)
    unit = args.pop("unit", None)
    if unit is None:
        ctx.set("network.block_size", 1, "network_args unit (not set)", "not set: networks.dylora's default 1",
                changed=True)
    else:
        ctx.set("network.block_size", unit, "network_args unit")
    conv_dim, conv_alpha = args.pop("conv_dim", None), args.pop("conv_alpha", None)
    ctx.set("network.target", "attn-mlp", "network_module",
            "kohya's DyLoRA layers (conv_rank adds the ResNet convs)", source=KOHYA_DYLORA_MODULE)
    if conv_dim is not None:
        ctx.set("network.conv_rank", conv_dim if _given(conv_dim) else 0, "network_args conv_dim")
    _kohya_lora_args(ctx, args, conv_alpha)


def _lycoris(ctx: ImportContext, args: dict[str, Any]) -> None:
    raw_algo = args.pop("algo", None)
    algo = LYCORIS_ALGOS.get(str(raw_algo or "lora").lower())
    if algo is None:
        ctx.report.no_equivalent("network_args algo", raw_algo, "LyCORIS algorithm not available: LoRA used")
        algo = "locon"
    raw_preset = args.pop("preset", None)
    preset = str(raw_preset or "full")
    target, conv_on = PRESET_TO_TARGET.get(preset, (None, True))
    if target is None:
        ctx.report.no_equivalent("network_args preset", raw_preset, "LyCORIS preset files are not supported: "
                                                                    "target 'all' used")
        target = "all"
    conv_dim, conv_alpha = args.pop("conv_dim", None), args.pop("conv_alpha", None)
    if algo in ("ia3", "full"):
        conv_on = False
    if algo == "locon" and not conv_on:
        algo = "lora"
    algo_label = "network_args algo" if raw_algo is not None else "network_args algo (not set)"
    ctx.set("network.algo", algo, algo_label,
            "" if raw_algo is not None and str(raw_algo).lower() == algo
            else f"LyCORIS {raw_algo or 'lora'} with preset {preset} → {algo}",
            changed=raw_algo is None or str(raw_algo).lower() != algo, source=raw_algo or "lora")
    ctx.set("network.target", target, "network_args preset" if raw_preset is not None
            else "network_args preset (not set)", "" if raw_preset is not None else "LyCORIS' default preset",
            changed=raw_preset is None, source=preset)
    if conv_on:
        try:
            rank = whole(conv_dim) if _given(conv_dim) else _rank(ctx)
            alpha = number(conv_alpha) if _given(conv_alpha) else _alpha(ctx)
        except ValueError as err:
            ctx.report.no_equivalent("network_args conv_dim/conv_alpha", f"{shown(conv_dim)}/{shown(conv_alpha)}",
                                     f"{err}: network_dim and network_alpha used for conv layers")
            conv_dim = conv_alpha = None
            rank, alpha = _rank(ctx), _alpha(ctx)
        ctx.set("network.conv_rank", rank, "network_args conv_dim" if _given(conv_dim)
                else "network_args conv_dim (not set)",
                "" if _given(conv_dim) else "LyCORIS uses network_dim for conv layers when conv_dim is absent or 0",
                changed=not _given(conv_dim))
        ctx.set("network.conv_alpha", alpha, "network_args conv_alpha" if _given(conv_alpha)
                else "network_args conv_alpha (not set)",
                "" if _given(conv_alpha) else "LyCORIS uses network_alpha for conv layers when conv_alpha is absent",
                changed=not _given(conv_alpha))
    else:
        ctx.values["network.conv_rank"] = 0
        if conv_dim is not None:
            ctx.report.map("network_args conv_dim", "network.conv_rank", conv_dim,
                           f"no effect: {algo} with preset {preset} adapts no conv layers")
        if conv_alpha is not None:
            ctx.set("network.conv_alpha", conv_alpha, "network_args conv_alpha", "no effect without conv layers")
    for key in list(args):
        if key in LYCORIS_ARGS:
            path, _ = LYCORIS_ARGS[key]
            note = {"use_cp": "the older name of use_tucker", "constrain": "kohya_ss/LETS spelling of constraint"}
            ctx.set(path, args.pop(key), f"network_args {key}", note.get(key, ""))
    if ctx.has("network_dropout"):
        value = ctx.take("network_dropout")
        if _given(value):
            ctx.report.no_equivalent("network_dropout", value, "lycoris.kohya ignores network_dropout; LyCORIS "
                                                               "reads dropout= in network_args")
        else:
            ctx.report.map("network_dropout", "network.dropout", value, "no effect with lycoris.kohya")
    else:
        ctx.args.pop("network_dropout", None)


def _text_encoder(ctx: ImportContext) -> None:
    unet_only = ctx.take("network_train_unet_only")
    raw_lr = ctx.take("text_encoder_lr")
    lrs = raw_lr if isinstance(raw_lr, list) else ([] if raw_lr in (None, "") else [raw_lr])
    try:
        lrs = [number(x) for x in lrs]
    except ValueError:
        ctx.report.no_equivalent("text_encoder_lr", raw_lr, "not a number or a list of numbers")
        lrs = []
    family = ctx.values.get("model.family")
    sdxl = family == "sdxl"
    train = not as_bool(unet_only, False)
    label, how = "network_train_unet_only", "inverted"
    if unet_only is None:
        label, how = "network_train_unet_only (not set)", "not set: sd-scripts trains the text encoder too"
    if train and lrs and lrs[0] == 0:
        train, label, how = False, "text_encoder_lr", "0: the text encoder learns nothing, so it is not trained"
    if train and family in ("sdxl", "flux") and ctx.values.get("training.cache_text_encoder_outputs"):
        train, label = False, "cache_text_encoder_outputs"
        how = "sd-scripts does not train the text encoders while their outputs are cached"
    changed = how != "inverted"
    source = {"text_encoder_lr": lrs[0] if lrs else None, "cache_text_encoder_outputs": True}.get(
        label, unet_only if unet_only is not None else False)
    if changed and train == ctx.specs["network.train_text_encoder"].default:
        ctx.report.map(label, "network.train_text_encoder", source, how, train)
    else:
        ctx.set("network.train_text_encoder", train, label, how, changed=changed, source=source)
    if lrs and lrs[0] > 0:
        ctx.set("network.text_encoder_lr", lrs[0], "text_encoder_lr")
    elif lrs:
        ctx.report.map("text_encoder_lr", "network.train_text_encoder", lrs[0], "0: text encoder not trained")
    if len(lrs) > 1:
        if sdxl:
            ctx.set("network.text_encoder_2_lr", lrs[1], "text_encoder_lr (second value)")
        elif family == "flux":
            ctx.report.no_equivalent("text_encoder_lr (second value)", lrs[1], "T5-XXL's rate: LoRA Dash never "
                                                                               "trains T5-XXL")
        else:
            ctx.report.no_equivalent("text_encoder_lr (second value)", lrs[1], "SD 1.5 has one text encoder")
    if len(lrs) > 2:
        ctx.report.no_equivalent("text_encoder_lr (further values)", lrs[2:], "at most two text encoders")
