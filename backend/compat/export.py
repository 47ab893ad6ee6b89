"""Export a LoRA Dash run or preset to sd-scripts: config TOML, dataset TOML, prompts, the command.

Every mapped value is written explicitly (so sd-scripts' defaults never decide). What sd-scripts
cannot say is found by importing the written files back and comparing: those options go to
loradash_extras.toml beside them (which our import applies) and are listed in `notes`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from backend.compat.kohya_import import EXTRAS_FILE, import_kohya_files
from backend.compat.mapping import (
    ALGO_TO_LYCORIS,
    KOHYA_FLUX_LORA_MODULE,
    KOHYA_LORA_MODULE,
    LAUNCH_KEYS,
    LYCORIS_MODULE,
    LYCORIS_NEUTRAL,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_TO_KOHYA,
    OUR_OPTIMIZER_EXTRAS,
    OURS_ALONE,
    SAMPLER_TO_KOHYA,
    SAVE_PRECISION_TO_KOHYA,
)
from backend.compat.prompts import format_prompt_file
from backend.compat.values import format_kv
from backend.config.io import dumps_toml, load_config
from backend.config.presets import find_preset, load_preset
from backend.config.schema import TrainConfig
from backend.dataset.scan import is_ignored_dir, parse_repeats
from backend.files import atomic_write_text
from backend.jobs.registry import CONFIG_FILE, job_dir
from backend.models.base import lycoris_preset
from backend.paths import WorkspacePaths

CONFIG_NAME = "config.toml"
DATASET_NAME = "dataset.toml"
PROMPTS_NAME = "sample_prompts.txt"
COMMAND_NAME = "train_command.txt"
SCRIPTS = {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py", "flux": "flux_train_network.py"}


@dataclass
class KohyaExport:
    out_dir: Path
    script: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    prompts: str | None
    argv: list[str]
    command: str
    extras: dict[str, Any] = field(default_factory=dict)   # what sd-scripts cannot carry (sparse)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (our path, why it is not in the kohya files)
    warnings: list[str] = field(default_factory=list)  # what to set before sd-scripts can run the command

    def files(self) -> list[Path]:
        names = [CONFIG_NAME, DATASET_NAME, COMMAND_NAME] + ([PROMPTS_NAME] if self.prompts else [])
        return [self.out_dir / n for n in names] + ([self.out_dir / EXTRAS_FILE] if self.extras else [])


def kohya_network(cfg: TrainConfig) -> tuple[str, list[str], dict[str, Any]]:
    """(network_module, network_args, other config keys) for our network section."""
    n = cfg.network
    lyco_only = any(getattr(n, k) != v for k, v in LYCORIS_NEUTRAL.items())
    out: dict[str, Any] = {"network_dim": n.rank, "network_alpha": n.alpha}
    # The engine adapts 3×3 convs when conv_rank > 0; locon with conv_rank 0 uses the linear rank/alpha.
    conv_rank, conv_alpha = n.conv_rank, n.conv_alpha
    if n.algo == "locon" and conv_rank == 0:
        conv_rank, conv_alpha = n.rank, n.alpha
    if cfg.model.family == "flux" and n.algo == "lora" and not lyco_only and n.target == "attn-mlp":
        # kohya's Flux LoRA: every linear layer of the double and single blocks; split_qkv trains q, k, v
        # (and proj_mlp) apart, as LoRA Dash does
        args = {"split_qkv": True}
        args.update({k: getattr(n, k) for k in ("rank_dropout", "module_dropout") if getattr(n, k)})
        if n.dropout:
            out["network_dropout"] = n.dropout
        return KOHYA_FLUX_LORA_MODULE, format_kv(args), out
    if n.algo in ("lora", "locon") and not lyco_only and n.target == "attn-mlp" and cfg.model.family != "flux":
        # kohya's own networks.lora: Transformer2D blocks, + ResNet/sampler convs with conv_dim (LoCon)
        args: dict[str, Any] = {}
        if conv_rank:
            args.update(conv_dim=conv_rank, conv_alpha=conv_alpha)
        elif n.conv_alpha != 1.0:
            args["conv_alpha"] = n.conv_alpha  # no effect without conv_dim; kept so the import reads it back
        args.update({k: getattr(n, k) for k in ("rank_dropout", "module_dropout") if getattr(n, k)})
        if n.dropout:
            out["network_dropout"] = n.dropout
        return KOHYA_LORA_MODULE, format_kv(args), out
    # LyCORIS presets: full = our "all" with convs, full-lin = "all" without; attn-mlp and attn-only
    # adapt no convs (conv_rank there has no LyCORIS preset: the export notes it)
    conv = n.target == "all" and conv_rank > 0 and n.algo not in ("ia3", "full")
    preset = lycoris_preset(n.target, conv)
    algo = ALGO_TO_LYCORIS[n.algo]
    if n.algo == "lora" and conv:
        algo = "locon"
    args = {"algo": algo, "preset": preset}
    if conv:
        args["conv_dim"] = conv_rank
    args["conv_alpha"] = conv_alpha if conv else n.conv_alpha
    for key in ("dropout", "rank_dropout", "module_dropout"):
        if getattr(n, key):
            args[key] = getattr(n, key)
    if n.algo == "lokr":
        args.update(factor=n.factor, decompose_both=n.decompose_both)
    if n.algo == "dylora":
        args["block_size"] = n.block_size
    args.update({k: getattr(n, k) for k in ("use_tucker", "use_scalar", "rescaled", "train_norm") if getattr(n, k)})
    if n.constraint:
        args["constraint"] = n.constraint
    if n.dora:
        args["dora_wd"] = True
    return LYCORIS_MODULE, format_kv(args), out


def kohya_config(cfg: TrainConfig, out_dir: Path, paths: WorkspacePaths | None = None) -> dict[str, Any]:
    """The --config_file TOML for `cfg` (flat, sd-scripts' names)."""
    m, n, o, t, s = cfg.model, cfg.network, cfg.optimizer, cfg.training, cfg.schedule
    c: dict[str, Any] = {"pretrained_model_name_or_path": _path(m.path, paths)}
    flux = m.family == "flux"
    if flux:
        c.update(_flux_options(cfg, paths))
    else:
        if m.vae_path:
            c["vae"] = _path(m.vae_path, paths)
        c.update(v_parameterization=m.v_prediction, clip_skip=m.clip_skip)
    module, net_args, net_other = kohya_network(cfg)
    c.update(network_module=module, network_args=net_args, **net_other)
    c["network_train_unet_only"] = not n.train_text_encoder
    if n.unet_lr is not None:
        c["unet_lr"] = n.unet_lr
    if n.text_encoder_2_lr is not None and m.family == "sdxl":
        c["text_encoder_lr"] = [n.text_encoder_lr if n.text_encoder_lr is not None else o.lr, n.text_encoder_2_lr]
    elif n.text_encoder_lr is not None:
        c["text_encoder_lr"] = n.text_encoder_lr
    if n.network_weights:
        c["network_weights"] = _path(n.network_weights, paths)
    c.update(optimizer_type=OPTIMIZER_TO_KOHYA[o.name], learning_rate=o.lr)
    opt: dict[str, Any] = {}
    for key in OPTIMIZER_DEFAULTS[o.name]:
        opt[key] = getattr(o, key)
    if "beta1" in opt:
        opt["betas"] = (opt.pop("beta1"), opt.pop("beta2"))
    opt.update(OUR_OPTIMIZER_EXTRAS.get(o.name, {}))  # sd-scripts' own defaults differ (Adafactor)
    opt.update(o.extra_args)
    c["optimizer_args"] = format_kv(opt)
    c["lr_scheduler"] = s.lr_scheduler
    c["lr_warmup_steps"] = float(s.warmup_ratio) if s.warmup_ratio is not None else int(s.warmup_steps)
    c.update(lr_scheduler_num_cycles=s.num_cycles, lr_scheduler_power=s.power)
    if t.max_steps is not None:
        c["max_train_steps"] = t.max_steps
    else:
        c["max_train_epochs"] = t.epochs
    c.update(gradient_accumulation_steps=t.gradient_accumulation_steps, max_grad_norm=t.max_grad_norm, seed=t.seed,
             mixed_precision=t.mixed_precision, gradient_checkpointing=t.gradient_checkpointing,
             cache_latents=t.cache_latents != "off", cache_latents_to_disk=t.cache_latents == "disk")
    if m.family in ("sdxl", "flux"):
        c["cache_text_encoder_outputs"] = t.cache_text_encoder_outputs
    c["fp8_base"] = t.fp8_base
    c["max_data_loader_n_workers"] = cfg.dataset.num_workers
    c["prior_loss_weight"] = cfg.dataset.prior_loss_weight
    loss = cfg.loss
    c.update(min_snr_gamma=loss.min_snr_gamma, noise_offset=loss.noise_offset,
             multires_noise_iterations=loss.multires_noise_iterations,
             multires_noise_discount=loss.multires_noise_discount, zero_terminal_snr=loss.zero_terminal_snr)
    sp = cfg.sampling
    if sp.prompts:
        c["sample_prompts"] = str(out_dir / PROMPTS_NAME)
    c["sample_sampler"] = SAMPLER_TO_KOHYA[sp.sampler]
    for key, value in (("sample_every_n_steps", sp.every_n_steps), ("sample_every_n_epochs", sp.every_n_epochs)):
        if value:  # sd-scripts divides by these: 0 must be absent
            c[key] = value
    c["sample_at_first"] = sp.sample_at_start
    sv = cfg.saving
    output_dir = _path(sv.output_dir, paths) if sv.output_dir else str(out_dir / "output")
    c.update(output_dir=output_dir, output_name=sv.output_name, save_model_as="safetensors",
             save_precision=SAVE_PRECISION_TO_KOHYA[sv.save_dtype], save_state=sv.save_state)
    for key, value in (("save_every_n_steps", sv.every_n_steps), ("save_every_n_epochs", sv.every_n_epochs)):
        if value:
            c[key] = value
    if sv.keep_last_n:
        if sv.every_n_epochs:
            c["save_last_n_epochs"] = sv.keep_last_n
        if sv.every_n_steps:
            c["save_last_n_steps"] = sv.keep_last_n * sv.every_n_steps
    for key, value in (("metadata_title", sv.title), ("metadata_author", sv.author),
                       ("metadata_description", sv.description)):
        if value:
            c[key] = value
    return c


def _flux_options(cfg: TrainConfig, paths: WorkspacePaths | None) -> dict[str, Any]:
    """flux_train_network.py's own options: the component files, T5 and flow matching (all written, so
    sd-scripts' defaults never decide)."""
    m, f = cfg.model, cfg.flow
    c: dict[str, Any] = {}
    for key, value in (("clip_l", m.clip_l_path), ("t5xxl", m.t5_path), ("ae", m.vae_path)):
        if value:
            c[key] = _path(value, paths)
    if m.t5_max_length is not None:
        c["t5xxl_max_token_length"] = m.t5_max_length
    c.update(apply_t5_attn_mask=m.apply_t5_attn_mask, timestep_sampling=f.timestep_sampling,
             sigmoid_scale=f.sigmoid_scale, discrete_flow_shift=f.discrete_flow_shift,
             model_prediction_type=f.model_prediction_type, weighting_scheme=f.weighting_scheme,
             guidance_scale=f.guidance_scale)
    return c


def kohya_dataset(cfg: TrainConfig, paths: WorkspacePaths | None = None) -> dict[str, Any]:
    """The --dataset_config TOML: options in [general], one [[datasets]], its folders as subsets."""
    d = cfg.dataset
    general: dict[str, Any] = {
        "resolution": d.resolution, "batch_size": cfg.training.batch_size, "enable_bucket": d.enable_bucket,
        "min_bucket_reso": d.min_bucket_reso, "max_bucket_reso": d.max_bucket_reso,
        "bucket_reso_steps": d.bucket_reso_steps, "bucket_no_upscale": d.bucket_no_upscale,
        "caption_extension": d.caption_extension, "shuffle_caption": d.shuffle_caption,
        "keep_tokens": d.keep_tokens, "caption_dropout_rate": d.caption_dropout_rate,
        "caption_tag_dropout_rate": d.caption_tag_dropout_rate, "flip_aug": d.flip_aug,
    }
    if d.caption_prefix:
        general["caption_prefix"] = d.caption_prefix
    subsets = _subsets(d.path, d.default_repeats, False, paths)
    if d.reg_path:
        subsets += _subsets(d.reg_path, d.reg_repeats, True, paths)
    return {"general": general, "datasets": [{"subsets": subsets}]}


def _subsets(folder: str, repeats: int, is_reg: bool, paths: WorkspacePaths | None) -> list[dict[str, Any]]:
    """One subset per N_name subfolder (repeats and class from the name), else the folder itself."""
    path = _path(folder, paths)
    root = Path(path) if path else None
    kohya_dirs = []
    if root is not None and root.is_dir():
        kohya_dirs = sorted(p for p in root.iterdir()
                            if p.is_dir() and not is_ignored_dir(p.name) and parse_repeats(p.name))
    if kohya_dirs:
        return [{"image_dir": str(p), "num_repeats": parse_repeats(p.name)[0],
                 "class_tokens": parse_repeats(p.name)[1], "is_reg": is_reg} for p in kohya_dirs]
    named = parse_repeats(os.path.basename(path.rstrip("/\\"))) if path else None
    return [{"image_dir": path, "num_repeats": named[0] if named else repeats, "is_reg": is_reg}]


def _path(value: str, paths: WorkspacePaths | None) -> str:
    if value and paths is not None:
        return str(paths.resolve(value))
    return value


def export_config(cfg: TrainConfig, out_dir: str | os.PathLike, *, paths: WorkspacePaths | None = None,
                  sd_scripts_dir: str | os.PathLike | None = None) -> KohyaExport:
    """Write the kohya files for `cfg` into `out_dir` and return them with the exact command."""
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = kohya_config(cfg, out_dir, paths)
    dataset = kohya_dataset(cfg, paths)
    prompts = format_prompt_file([p.model_dump() for p in cfg.sampling.prompts]) if cfg.sampling.prompts else None
    stale = out_dir / EXTRAS_FILE
    if stale.exists():
        stale.unlink()  # an old one would be read back into the comparison below
    atomic_write_text(out_dir / CONFIG_NAME, tomli_w.dumps(config))
    atomic_write_text(out_dir / DATASET_NAME, tomli_w.dumps(dataset))
    if prompts:
        atomic_write_text(out_dir / PROMPTS_NAME, prompts)
    script = SCRIPTS[cfg.model.family]
    script_path = str(Path(sd_scripts_dir).expanduser().resolve() / script) if sd_scripts_dir else script
    argv = ["accelerate", "launch"]
    t = cfg.training
    if t.num_processes > 1:
        argv += ["--multi_gpu", "--num_processes", str(t.num_processes)]
    if t.num_machines > 1:
        argv += ["--num_machines", str(t.num_machines), "--machine_rank", str(t.machine_rank),
                 "--main_process_ip", t.main_process_ip, "--main_process_port", str(t.main_process_port)]
    if cfg.training.device == "cpu":
        argv.append("--cpu")
    argv += [script_path, "--config_file", str(out_dir / CONFIG_NAME), "--dataset_config", str(out_dir / DATASET_NAME)]
    command = shlex.join(argv)
    atomic_write_text(out_dir / COMMAND_NAME, command + "\n")
    back = import_kohya_files(out_dir / CONFIG_NAME, out_dir / DATASET_NAME,
                              launcher={k: getattr(t, k) for k in LAUNCH_KEYS}).config
    extras, notes = _differences(cfg, back)
    warnings = _flux_warnings(cfg, paths) if cfg.model.family == "flux" else []
    if extras:
        header = "# LoRA Dash options sd-scripts cannot express; LoRA Dash's import reads this file.\n"
        atomic_write_text(out_dir / EXTRAS_FILE, header + dumps_toml(extras))
    return KohyaExport(out_dir, script, config, dataset, prompts, argv, command, extras, notes, warnings)


def _flux_warnings(cfg: TrainConfig, paths: WorkspacePaths | None) -> list[str]:
    """flux_train_network.py loads single files: a diffusers folder (which LoRA Dash reads whole) leaves
    the transformer, --clip_l, --t5xxl and --ae for the user to point at."""
    m = cfg.model
    model = Path(_path(m.path, paths)) if m.path else None
    out = []
    if model is not None and model.is_dir():
        out.append(f"pretrained_model_name_or_path is a diffusers folder ({model}): flux_train_network.py takes "
                   "the transformer as one file (e.g. flux1-dev.safetensors)")
    missing = [k for k, v in (("clip_l", m.clip_l_path), ("t5xxl", m.t5_path), ("ae", m.vae_path)) if not v]
    if missing:
        out.append(f"set {', '.join('--' + k for k in missing)}: flux_train_network.py needs the "
                   f"{'file' if len(missing) == 1 else 'files'} (LoRA Dash read them from the model folder)")
    return out


def _differences(cfg: TrainConfig, back: TrainConfig) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    want, got = cfg.model_dump(mode="json"), back.model_dump(mode="json")
    extras: dict[str, Any] = {}
    notes: list[tuple[str, str]] = []
    for section, values in want.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if got[section].get(key) != value:
                path = f"{section}.{key}"
                extras.setdefault(section, {})[key] = value
                notes.append((path, OURS_ALONE.get(path, f"sd-scripts reads {got[section].get(key)!r} from the "
                                                        f"exported files, not {value!r}: kept in {EXTRAS_FILE}")))
    return extras, notes


def export_job(paths: WorkspacePaths, job_id: str, out_dir: str | os.PathLike | None = None,
               **kw: Any) -> KohyaExport:
    """A job's resolved config.toml → kohya files (default: the job's kohya/ folder)."""
    d = job_dir(paths, job_id)
    cfg = load_config(d / CONFIG_FILE)
    return export_config(cfg, out_dir or d / "kohya", paths=paths, **kw)


def export_preset(name_or_path: str, paths: WorkspacePaths | None, out_dir: str | os.PathLike,
                  **kw: Any) -> KohyaExport:
    cfg = load_preset(find_preset(name_or_path, paths), paths)
    return export_config(cfg, out_dir, paths=None, **kw)
