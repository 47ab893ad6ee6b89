"""The dataset half of a kohya import: a --dataset_config TOML, or train_data_dir/reg_data_dir.

sd-scripts resolves each subset option from the subset, then its [[datasets]], then [general], then
the training arguments (docs/config_README-en.md). LoRA Dash trains one dataset folder whose N_name
subfolders are its subsets, with one value of each caption option for all of them; where a kohya
dataset says more than that, the report says what was kept.
"""

from __future__ import annotations

import os
from typing import Any

from backend.compat.context import ImportContext, coerce, report_unsupported
from backend.compat.mapping import arg
from backend.compat.values import as_bool, number, path_kind, shown, side_of_area
from backend.dataset.scan import parse_repeats

# Subset options we carry (one value for the whole dataset) and dataset-level ones.
SUBSET_KEYS = ("shuffle_caption", "keep_tokens", "caption_extension", "caption_prefix", "caption_dropout_rate",
               "caption_tag_dropout_rate", "flip_aug")
DATASET_KEYS = ("resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                "bucket_reso_steps", "bucket_no_upscale")
# Training-argument names sd-scripts falls back to for a dataset option.
ARG_NAME = {"batch_size": "train_batch_size"}
DATASET_PATH = {"batch_size": "training.batch_size"}
IGNORED_WITH_TOML = ("train_data_dir", "reg_data_dir")


def import_dataset(ctx: ImportContext, dataset: dict[str, Any] | None) -> None:
    if dataset is None:
        _from_args(ctx)
    else:
        _from_toml(ctx, dataset)


def _path_of(key: str) -> str:
    return DATASET_PATH.get(key) or arg(key).path


def parse_resolution(value: Any) -> tuple[int, int] | None:
    """512, "512", "512,768", [512, 768] → (w, h); None when it is none of these."""
    if isinstance(value, str):
        value = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    if len(value) not in (1, 2):
        return None
    try:
        return int(number(value[0])), int(number(value[-1]))
    except ValueError:
        return None


def set_resolution(ctx: ImportContext, key: str, value: Any) -> None:
    wh = parse_resolution(value)
    if wh is None:
        ctx.report.no_equivalent(key, value, "resolution must be a number or [width, height]")
    elif wh[0] == wh[1]:
        ctx.set("dataset.resolution", wh[0], key)
    else:
        side = side_of_area(*wh)
        ctx.set("dataset.resolution", side, key, f"{wh[0]}×{wh[1]} → {side}: LoRA Dash takes one side and "
                                                  "buckets keep the same pixel area", changed=True)


def _set_option(ctx: ImportContext, key: str, value: Any, label: str) -> None:
    if key == "resolution":
        set_resolution(ctx, label, value)
    else:
        ctx.set(_path_of(key), value, label)


def _default_option(ctx: ImportContext, key: str) -> None:
    name = ARG_NAME.get(key, key)
    entry = arg(name)
    if key == "resolution":
        ctx.report.change("resolution (not set)", "dataset.resolution", ctx.specs["dataset.resolution"].default,
                          "not set: sd-scripts requires one; LoRA Dash's default kept")
        return
    ctx.default(name, _path_of(key), entry.default)


# --- without a dataset TOML: the DreamBooth folders ---------------------------------------------------
def _from_args(ctx: ImportContext) -> None:
    for key, path in (("train_data_dir", "dataset.path"), ("reg_data_dir", "dataset.reg_path")):
        if ctx.peek(key) == "":
            ctx.report.map(key, path, ctx.take(key), "empty: not set")
        elif ctx.has(key):
            folder = str(ctx.take(key))
            ctx.set(path, folder, key, "its N_name subfolders are the subsets, as in sd-scripts")
            check_folder(ctx, key, folder)
    if "dataset.path" not in ctx.values:
        ctx.report.problem("train_data_dir", None, "no dataset given (no train_data_dir and no dataset TOML): "
                                                   "set dataset.path before training")
    for key in DATASET_KEYS + SUBSET_KEYS:
        name = ARG_NAME.get(key, key)
        if ctx.has(name):
            _set_option(ctx, key, ctx.take(name), name)
        else:
            ctx.args.pop(name, None)
            _default_option(ctx, key)


# --- a dataset TOML -------------------------------------------------------------------------------------
def _from_toml(ctx: ImportContext, ds: dict[str, Any]) -> None:
    for key in IGNORED_WITH_TOML:
        if ctx.has(key):
            ctx.report.map(key, "", ctx.take(key), "ignored by sd-scripts when a dataset config is given")
    general = ds.get("general") if isinstance(ds.get("general"), dict) else {}
    datasets = [d for d in ds.get("datasets", []) if isinstance(d, dict)] if isinstance(ds.get("datasets"), list) else []
    for key, value in ds.items():
        if key in ("general", "datasets") and not isinstance(value, dict if key == "general" else list):
            ctx.report.no_equivalent(f"dataset TOML {key}", shown(value), f"not a {'table' if key == 'general' else 'list of tables'}: ignored")
        elif key not in ("general", "datasets"):
            ctx.report.no_equivalent(f"dataset TOML {key}", value, "not a dataset config table "
                                                                   "(expected [general] and [[datasets]])")
    if not datasets:
        ctx.report.problem("[[datasets]]", None, "the dataset config has no [[datasets]]: set dataset.path")
    first = datasets[0] if datasets else {}
    for i, extra in enumerate(datasets[1:], start=2):
        ctx.report.no_equivalent(f"[[datasets]] #{i}", _dirs(extra), "LoRA Dash trains one dataset: only the "
                                                                     "first [[datasets]] was imported")
    raw_subsets = first.get("subsets", [])
    if not isinstance(raw_subsets, list):
        ctx.report.no_equivalent("[[datasets.subsets]]", shown(raw_subsets), "not a list of tables: ignored")
        raw_subsets = []
    subsets = [s for s in raw_subsets if isinstance(s, dict)]
    levels = [("[[datasets]]", first), ("[general]", general)]

    def lookup(key: str, subset: dict | None, label: str) -> tuple[Any, str] | None:
        if subset is not None and key in subset:
            return subset[key], f"{label} {key}"
        for name, table in levels:
            if key in table:
                return table[key], f"{name} {key}"
        arg_name = ARG_NAME.get(key, key)
        if ctx.has(arg_name):
            return ctx.take(arg_name), arg_name
        return None

    # dataset-level options: [[datasets]] > [general] > training arguments
    for key in DATASET_KEYS:
        found = lookup(key, None, "")
        if found is None:
            _default_option(ctx, key)
        else:
            _set_option(ctx, key, found[0], found[1])

    train = [(i, s) for i, s in enumerate(subsets, 1) if not as_bool(s.get("is_reg"), False)]
    reg = [(i, s) for i, s in enumerate(subsets, 1) if as_bool(s.get("is_reg"), False)]
    chosen: dict[str, Any] = {}
    for key in SUBSET_KEYS:
        found = [(i, lookup(key, s, f"subset #{i}")) for i, s in train]
        given = [(i, f) for i, f in found if f is not None]
        if not given:
            _default_option(ctx, key)
            chosen[key] = ctx.values.get(_path_of(key), ctx.specs[_path_of(key)].default)
            continue
        value, label = given[0][1]
        _set_option(ctx, key, value, label)
        chosen[key] = ctx.values.get(_path_of(key))
        for i, (other, other_label) in given[1:]:
            if other != value:
                ctx.report.change(other_label, _path_of(key), value, f"subsets differ ({other!r} in subset #{i}): "
                                                                    "LoRA Dash applies one value to all")
    for i, s in reg:
        for key in SUBSET_KEYS:
            if key not in s:
                continue
            if coerce_same(ctx, key, s[key], chosen.get(key)):
                ctx.report.map(f"subset #{i} {key}", _path_of(key), s[key], "same as the training subsets")
            else:
                ctx.report.change(f"subset #{i} {key}", _path_of(key), chosen.get(key),
                                  f"regularization subset has {s[key]!r}: LoRA Dash applies the training "
                                  "subsets' value to regularization images too")
    _folders(ctx, train, "dataset.path", "dataset.default_repeats", lookup)
    if reg:
        _folders(ctx, reg, "dataset.reg_path", "dataset.reg_repeats", lookup)
    # everything else written in the TOML: harmless, or without equivalent
    reported = ctx.report.keys()
    for label, table in [(f"subset #{i}", s) for i, s in enumerate(subsets, 1)] + levels:
        for key, value in table.items():
            name = f"{label} {key}"
            if key in ("subsets", "image_dir") or name in reported:
                continue
            if key == "is_reg":
                ctx.report.map(name, "dataset.reg_path" if as_bool(value, False) else "dataset.path", value,
                               "a regularization subset" if as_bool(value, False) else "a training subset")
            elif key == "class_tokens" and _class_of(table) == value:
                ctx.report.map(name, "", value, "no effect here: the same as the N_name folder's name")
            elif key in SUBSET_KEYS or key in DATASET_KEYS or key == "num_repeats":
                ctx.report.map(name, _path_of(key) if key != "num_repeats" else "dataset.default_repeats", value,
                               "overridden by a more specific table (sd-scripts' precedence)")
            else:
                report_unsupported(ctx.report, name, key, value)


def _folders(ctx: ImportContext, subsets: list[tuple[int, dict]], path: str, repeats_path: str, lookup) -> None:
    """The image_dir of the (training or regularization) subsets → one dataset folder."""
    kind = "regularization" if path == "dataset.reg_path" else "training"
    if not subsets:
        ctx.report.problem("[[datasets.subsets]]", None, f"no {kind} subset with an image_dir: set {path}")
        return
    items = []
    for i, s in subsets:
        found = lookup("num_repeats", s, f"subset #{i}")
        repeats = found[0] if found else 1
        items.append((i, str(s.get("image_dir", "")), repeats, found[1] if found else f"subset #{i} num_repeats"))
    for i, folder, _, _ in items:
        check_folder(ctx, f"subset #{i} image_dir", folder)
    if len(items) > 1:
        parents = {os.path.dirname(f.rstrip("/\\")) for _, f, _, _ in items}
        named = [parse_repeats(os.path.basename(f.rstrip("/\\"))) for _, f, _, _ in items]
        if len(parents) == 1 and all(n and n[0] == r for n, (_, _, r, _) in zip(named, items, strict=True)):
            parent = parents.pop()
            ctx.set(path, parent, f"subsets #{', #'.join(str(i) for i, *_ in items)} image_dir",
                    "the N_name subset folders share this parent: LoRA Dash reads each as a subset "
                    "with the repeats of its name", changed=True)
            for _i, folder, r, label in items:
                ctx.report.map(label, repeats_path, r, f"= the N_ prefix of {os.path.basename(folder)}")
            return
        for i, folder, r, label in items[1:]:
            ctx.report.no_equivalent(f"subset #{i} image_dir", folder,
                                     f"LoRA Dash trains one {kind} folder: put the subsets as N_name "
                                     "subfolders of one parent (N = repeats); only the first was imported")
            ctx.report.no_equivalent(label, r, f"subset #{i} was not imported")
    i, folder, repeats, label = items[0]
    ctx.set(path, folder, f"subset #{i} image_dir")
    named = parse_repeats(os.path.basename(folder.rstrip("/\\")))
    if named is None:
        ctx.set(repeats_path, repeats, label)
    elif named[0] == repeats:
        ctx.report.map(label, repeats_path, repeats, f"= the N_ prefix of {os.path.basename(folder)}")
    else:
        ctx.report.change(label, path, repeats, f"LoRA Dash takes the repeats from the folder name "
                                                f"({named[0]}); rename the folder to {repeats}_{named[1]} "
                                                f"to keep {repeats}")


def coerce_same(ctx: ImportContext, key: str, a: Any, b: Any) -> bool:
    try:
        return coerce(ctx.specs[_path_of(key)], a) == b
    except ValueError:
        return False


def check_folder(ctx: ImportContext, key: str, folder: str) -> None:
    if not folder:
        ctx.report.problem(key, folder, "empty folder path: set it before training")
        return
    if "\x00" in folder:
        ctx.report.problem(key, folder, "contains a NUL byte: not a path")
        return
    p = ctx.local(key, folder)
    if p is None:
        return
    if not p.is_absolute():
        ctx.report.problem(key, folder, "relative path: LoRA Dash takes it from the workspace folder; "
                                        "check it points at the images")
        p = ctx.paths.resolve(p) if ctx.paths else p
    if path_kind(p) != "folder":
        ctx.report.problem(key, folder, f"folder does not exist ({shown(str(p), 200)})")


def _class_of(subset: dict) -> str | None:
    named = parse_repeats(os.path.basename(str(subset.get("image_dir", "")).rstrip("/\\")))
    return named[1] if named else None


def _dirs(dataset: dict) -> list[str]:
    subsets = dataset.get("subsets", [])
    return [str(s.get("image_dir", "")) for s in subsets if isinstance(s, dict)] if isinstance(subsets, list) else []

