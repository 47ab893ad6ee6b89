"""Import a kohya sd-scripts run: the --config_file TOML (or flags), the --dataset_config TOML.

`import_kohya(config, dataset)` maps every argument through mapping.py, applies sd-scripts' defaults
where they differ from ours (an absent key means sd-scripts' value, not LoRA Dash's), and returns
a sparse preset with a report. Values the schema rejects are dropped and reported; a result that
still does not validate raises ConfigError naming the kohya keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.compat import kohya_network
from backend.compat.context import ImportContext
from backend.compat.kohya_dataset import check_folder, import_dataset, parse_resolution
from backend.compat.kohya_flux import import_flux
from backend.compat.kohya_optimizer import import_optimizer
from backend.compat.mapping import (
    FLUX_KEYS,
    KOHYA_FLUX_LORA_MODULE,
    LAUNCH_KEYS,
    SAMPLERS,
    SAVE_PRECISION,
    SCHEDULERS,
    arg,
)
from backend.compat.prompts import read_prompt_file, read_prompts
from backend.compat.report import ImportReport, ImportResult
from backend.compat.values import as_bool, number, path_kind, whole
from backend.config.io import read_toml, sparse_dict, validate_dict
from backend.errors import ConfigError
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots

EXTRAS_FILE = "loradash_extras.toml"
SIMPLE_KEYS = (
    "pretrained_model_name_or_path", "v_parameterization", "clip_skip", "prior_loss_weight",
    "max_data_loader_n_workers", "network_dim", "network_alpha", "unet_lr", "network_weights", "learning_rate",
    "gradient_accumulation_steps", "max_grad_norm", "mixed_precision", "gradient_checkpointing",
    "lr_scheduler_num_cycles", "lr_scheduler_power", "min_snr_gamma", "noise_offset", "multires_noise_iterations",
    "multires_noise_discount", "zero_terminal_snr", "sample_every_n_steps", "sample_every_n_epochs",
    "sample_at_first", "output_name", "save_every_n_steps", "save_every_n_epochs", "save_state",
    "metadata_title", "metadata_author", "cache_text_encoder_outputs", "fp8_base",
)


def flatten_config(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads a config file's tables as if their keys were at the top (train_util)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def import_kohya_files(config_path: str | Path, dataset_path: str | Path | None = None, *,
                       family: str | None = None, paths: WorkspacePaths | None = None,
                       launcher: dict[str, Any] | None = None) -> ImportResult:
    """Import sd-scripts files. A loradash_extras.toml beside the config (written by our export) is
    applied last, restoring what sd-scripts cannot say."""
    config_path = Path(config_path)
    config = read_toml(config_path, "config file")
    dataset = read_toml(dataset_path, "dataset config") if dataset_path else None
    source = str(config_path) + (f" + {dataset_path}" if dataset_path else "")
    extras_path = config_path.parent / EXTRAS_FILE
    extras = read_toml(extras_path, EXTRAS_FILE) if extras_path.is_file() else None
    return import_kohya(config, dataset, family=family, base_dir=config_path.parent, paths=paths,
                        source=source, launcher=launcher, extras=extras)


def import_kohya(config: dict[str, Any], dataset: dict[str, Any] | None = None, *, family: str | None = None,
                 base_dir: Path | None = None, paths: WorkspacePaths | None = None, source: str = "",
                 launcher: dict[str, Any] | None = None, extras: dict[str, Any] | None = None,
                 report: ImportReport | None = None, prompt_text: str | None = None,
                 roots: AllowedRoots | None = None) -> ImportResult:
    """A LoRA Dash preset from sd-scripts arguments (`config`, flat or in tables) and a dataset TOML."""
    report = report or ImportReport(source=source)
    ctx = ImportContext(flatten_config(config), report, base_dir=base_dir, paths=paths, roots=roots)
    ctx.prompt_text = prompt_text
    _family(ctx, family, dataset)
    for key in SIMPLE_KEYS:
        ctx.simple(key)
    import_flux(ctx)
    if ctx.values.get("model.path"):
        _check_model(ctx, str(ctx.values["model.path"]))
    _seed(ctx)
    kohya_network.import_network(ctx)
    import_optimizer(ctx)
    _schedule(ctx)
    _length(ctx)
    _caching(ctx)
    _saving(ctx)
    _sampling(ctx)
    import_dataset(ctx, dataset)
    for key, value in (launcher or {}).items():
        if key in LAUNCH_KEYS:
            ctx.set(f"training.{key}", value, f"accelerate --{key}")
        elif key == "cpu" and value is True:
            ctx.set("training.device", "cpu", "accelerate --cpu")
        else:
            ctx.report.map(f"accelerate --{key}", "", value, "LoRA Dash launches accelerate itself")
    for key in ("dataset_config", "config_file"):
        if ctx.has(key):
            note = ("the dataset TOML it names was read" if key == "dataset_config" and dataset is not None
                    else "not read here: import that file itself (or give it as the dataset)")
            ctx.report.map(key, "", ctx.take(key), note)
    ctx.leftovers()
    if extras:
        _apply_extras(ctx, extras)
    return assemble(ctx)


def assemble(ctx: ImportContext) -> ImportResult:
    """Validate the collected values; drop (and report) the ones the schema rejects, then retry."""
    values = dict(ctx.values)
    for _ in range(len(values) + 1):
        data: dict[str, Any] = {}
        for path, value in values.items():
            section, key = path.split(".", 1)
            data.setdefault(section, {})[key] = value
        try:
            cfg = validate_dict(data, ctx.report.source or None)
        except ConfigError as err:
            rejected = [(p, m) for p, m in err.problems if p in values]
            if not rejected:
                raise ConfigError([(ctx.origin.get(p, p), m) for p, m in err.problems], err.source) from None
            for p, message in rejected:
                ctx.report.no_equivalent(ctx.origin.get(p, p), values.pop(p),
                                         f"{p}: {message}; LoRA Dash's default kept")
            continue
        return ImportResult(preset=sparse_dict(cfg), config=cfg, report=ctx.report)
    raise ConfigError([("", "the imported values do not validate")], ctx.report.source or None)


# --- the parts -------------------------------------------------------------------------------------------
def _family(ctx: ImportContext, family: str | None, dataset: dict | None) -> None:
    if family:
        ctx.set("model.family", family, "training script")
        return
    if ctx.has("sdxl"):  # a flag some front ends write
        flag = ctx.take("sdxl")
        ctx.set("model.family", "sdxl" if as_bool(flag, False) else "sd15", "sdxl", source=flag)
        return
    flux = [f"{k} is a flux_train_network.py option" for k in FLUX_KEYS if ctx.has(k)]
    if str(ctx.peek("network_module", "")) == KOHYA_FLUX_LORA_MODULE:
        flux.append(f"network_module is {KOHYA_FLUX_LORA_MODULE}")
    if "flux" in Path(str(ctx.peek("pretrained_model_name_or_path", ""))).name.lower():
        flux.append("the model's name says Flux")
    if flux:
        ctx.set("model.family", "flux", "training script (not given)", "guessed flux: " + "; ".join(flux[:3]) +
                ". Import the command line, or pass --family, to say it", changed=True)
        return
    reasons = []
    if as_bool(ctx.peek("cache_text_encoder_outputs"), False):
        reasons.append("cache_text_encoder_outputs is an SDXL option")
    te_lr = ctx.peek("text_encoder_lr")
    if isinstance(te_lr, list) and len(te_lr) == 2:
        reasons.append("text_encoder_lr has two values")
    model = str(ctx.peek("pretrained_model_name_or_path", "")).lower()
    if "xl" in Path(model).name or "pony" in model or "illustrious" in model or "noobai" in model:
        reasons.append("the model's name says SDXL")
    res = [parse_resolution(v) for v in _resolutions(ctx, dataset)]
    if any(r and r[0] * r[1] >= 1024 * 1024 for r in res):
        reasons.append("resolution 1024 or more")
    guess = "sdxl" if reasons else "sd15"
    why = "; ".join(reasons) if reasons else "nothing SDXL-specific found"
    ctx.set("model.family", guess, "training script (not given)",
            f"guessed {guess}: {why}. Import the command line, or pass --family, to say it", changed=True)


def _resolutions(ctx: ImportContext, dataset: dict | None) -> list[Any]:
    out = [ctx.peek("resolution")]
    if dataset:
        general, datasets = dataset.get("general"), dataset.get("datasets")
        out.append(general.get("resolution") if isinstance(general, dict) else None)
        out += [d.get("resolution") for d in datasets if isinstance(d, dict)] if isinstance(datasets, list) else []
    return [v for v in out if v is not None]


def _check_model(ctx: ImportContext, model: str) -> None:
    ctx.check_file("pretrained_model_name_or_path", model, "model.path", "diffusers folder or .safetensors file")


def _seed(ctx: ImportContext) -> None:
    if ctx.has("seed"):
        ctx.set("training.seed", ctx.take("seed"), "seed")
    else:
        ctx.args.pop("seed", None)
        ctx.report.change("seed (not set)", "training.seed", ctx.specs["training.seed"].default,
                          "not set: sd-scripts draws a random seed each run; LoRA Dash uses a fixed one")


def _schedule(ctx: ImportContext) -> None:
    name = ctx.take("lr_scheduler")
    if name is None:
        ctx.default("lr_scheduler", "schedule.lr_scheduler", "constant")
    elif str(name) in SCHEDULERS:
        ctx.set("schedule.lr_scheduler", name, "lr_scheduler")
    else:
        ctx.report.no_equivalent("lr_scheduler", name, f"not available (LoRA Dash has {', '.join(SCHEDULERS)}): "
                                                       "constant used")
    warm = ctx.take("lr_warmup_steps")
    if warm is None:
        return
    try:
        number(warm)
        if isinstance(warm, str):
            warm = int(warm) if warm.strip().isdigit() else number(warm)
    except ValueError as err:
        ctx.report.no_equivalent("lr_warmup_steps", warm, str(err))
        return
    if isinstance(warm, float) and 0 <= warm < 1:
        ctx.set("schedule.warmup_ratio", warm, "lr_warmup_steps", "a float below 1 is a ratio of all steps")
    elif isinstance(warm, float):
        ctx.set("schedule.warmup_steps", int(round(warm)), "lr_warmup_steps", "rounded to whole steps",
                changed=not float(warm).is_integer())
    else:
        ctx.set("schedule.warmup_steps", warm, "lr_warmup_steps")


def _length(ctx: ImportContext) -> None:
    epochs, steps = ctx.take("max_train_epochs"), ctx.take("max_train_steps")
    if epochs is not None and epochs != "" and epochs != 0:
        ctx.set("training.epochs", epochs, "max_train_epochs")
        ctx.values["training.max_steps"] = None
        if steps is not None:
            ctx.report.map("max_train_steps", "training.max_steps", steps,
                           "not used: sd-scripts lets max_train_epochs win")
    elif steps is not None and steps != "" and steps != 0:
        ctx.set("training.max_steps", steps, "max_train_steps")
    else:
        for key, value in (("max_train_epochs", epochs), ("max_train_steps", steps)):
            if value is not None:
                ctx.report.map(key, "", value, "empty: not set")
        ctx.set("training.max_steps", arg("max_train_steps").default, "max_train_steps (not set)",
                "not set: sd-scripts' default of 1600 steps used", changed=True)


def _caching(ctx: ImportContext) -> None:
    memory, disk = ctx.take("cache_latents"), ctx.take("cache_latents_to_disk")
    if as_bool(disk, False):
        ctx.set("training.cache_latents", "disk", "cache_latents_to_disk", source=disk)
        if memory is not None:
            ctx.report.map("cache_latents", "training.cache_latents", memory, "implied by cache_latents_to_disk")
    elif memory is not None:
        on = as_bool(memory, False)
        ctx.set("training.cache_latents", "memory" if on else "off", "cache_latents", source=memory)
        if disk is not None:
            ctx.report.map("cache_latents_to_disk", "training.cache_latents", disk)
    else:
        if disk is not None:
            ctx.report.map("cache_latents_to_disk", "training.cache_latents", disk)
        ctx.default("cache_latents", "training.cache_latents", False, "off")


def _saving(ctx: ImportContext) -> None:
    out = ctx.take("output_dir")
    if out not in (None, "") and ctx.base_dir is not None and Path(str(out)) == ctx.base_dir / "output":
        # the folder our own export names so that sd-scripts runs; the job folder's output/ is its equivalent
        ctx.report.map("output_dir", "", out, "the exported run's own output folder: not carried over")
    elif out not in (None, ""):
        relative = not Path(str(out)).expanduser().is_absolute()
        ctx.set("saving.output_dir", str(out), "output_dir",
                "relative: LoRA Dash takes it from the workspace folder, not sd-scripts' folder" if relative
                else "the final LoRA is also written there")
    precision = ctx.take("save_precision")
    if precision is None:
        ctx.default("save_precision", "saving.save_dtype", "float", "fp32")
    elif str(precision) in SAVE_PRECISION:
        ctx.set("saving.save_dtype", SAVE_PRECISION[str(precision)], "save_precision", source=precision)
    else:
        ctx.report.no_equivalent("save_precision", precision, "LoRA Dash saves fp32, fp16 or bf16")
    by_epochs, by_steps = ctx.take("save_last_n_epochs"), ctx.take("save_last_n_steps")
    if by_epochs not in (None, 0, ""):
        ctx.set("saving.keep_last_n", by_epochs, "save_last_n_epochs")
    if by_steps not in (None, 0, ""):
        every = ctx.values.get("saving.every_n_steps") or 0
        if by_epochs not in (None, 0, ""):
            ctx.report.map("save_last_n_steps", "", by_steps, "saving.keep_last_n already set by save_last_n_epochs")
        elif every:
            try:
                count = max(1, whole(by_steps) // int(every))
            except ValueError as err:
                ctx.report.no_equivalent("save_last_n_steps", by_steps, str(err))
            else:
                ctx.set("saving.keep_last_n", count, "save_last_n_steps",
                        f"{by_steps} steps ÷ save_every_n_steps {every} = {count} checkpoints", changed=True)
        else:
            ctx.report.no_equivalent("save_last_n_steps", by_steps, "a step window without save_every_n_steps")
    for key, value in (("save_last_n_epochs", by_epochs), ("save_last_n_steps", by_steps)):
        if value in (0, ""):
            ctx.report.map(key, "saving.keep_last_n", value, "0: keep every checkpoint")
    description, comment = ctx.take("metadata_description"), ctx.take("training_comment")
    if description is not None:
        ctx.set("saving.description", description, "metadata_description")
        if comment is not None:
            ctx.report.no_equivalent("training_comment", comment, "only one description is stored "
                                                                  "(metadata_description kept)")
    elif comment is not None:
        ctx.set("saving.description", comment, "training_comment", "stored as the description", changed=True)


def _sampling(ctx: ImportContext) -> None:
    sampler = ctx.take("sample_sampler")
    if sampler is None:
        if ctx.has("sample_prompts"):  # the sampler only matters when there are prompts
            ctx.default("sample_sampler", "sampling.sampler", "ddim", "ddim")
    elif str(sampler).lower() in SAMPLERS:
        ours = SAMPLERS[str(sampler).lower()]
        ctx.set("sampling.sampler", ours, "sample_sampler", source=sampler)
    else:
        ctx.report.no_equivalent("sample_sampler", sampler, "LoRA Dash samples with euler_a, euler, ddim or "
                                                            "dpmpp_2m")
    file = ctx.take("sample_prompts")
    if ctx.prompt_text is not None:  # kohya_ss keeps the prompts themselves, not a file
        prompts, notes = read_prompts(ctx.prompt_text)
        if prompts:
            ctx.set("sampling.prompts", prompts, "sample_prompts", f"{len(prompts)} prompt(s)")
        for note in notes:
            ctx.report.change("sample_prompts", "sampling.prompts", None, note)
        return
    if file is None:
        return
    path = ctx.local("sample_prompts", str(file))
    if path is None:
        return
    candidates = [path] if path.is_absolute() else [p for p in ((ctx.base_dir or Path.cwd()) / path, path)]
    found = next((p for p in candidates if path_kind(p) == "file"), None)
    if found is None:
        ctx.report.problem("sample_prompts", str(file), "file not found: no sample prompts imported")
        return
    prompts, notes = read_prompt_file(found)
    ctx.set("sampling.prompts", prompts, "sample_prompts", f"{len(prompts)} prompt(s) read from {found.name}")
    for note in notes:
        ctx.report.change("sample_prompts", "sampling.prompts", None, note)


def _apply_extras(ctx: ImportContext, extras: dict[str, Any]) -> None:
    for section, values in extras.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            path = f"{section}.{key}"
            if path not in ctx.specs:
                ctx.report.no_equivalent(f"{EXTRAS_FILE} {path}", value, "unknown option")
                continue
            ctx.set(path, value, f"{EXTRAS_FILE} {path}", "restored from the LoRA Dash export beside the config",
                    changed=True)


__all__ = ["EXTRAS_FILE", "assemble", "check_folder", "flatten_config", "import_kohya", "import_kohya_files"]
