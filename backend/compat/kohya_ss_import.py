"""kohya_ss (bmaltais) GUI JSON presets → sd-scripts arguments → our preset.

The GUI's names differ from sd-scripts' in a few places (facts from kohya_ss presets/lora/*.json and
kohya_gui/lora_gui.py): LoRA_type picks network_module and algo, epoch is the run length, lr_warmup
is a percentage of all steps, max_resolution is "W,H", optimizer is optimizer_type, the LyCORIS knobs
are top-level keys, sample_prompts holds the prompt text itself, and numbers are often strings.
An empty string means "not set" for every option but text ones. Flux runs (flux_train_network.py) are
flux1_checkbox = true with LoRA_type "Flux1" (networks.lora_flux; per-layer *_dim fields, empty when unused).
"""

from __future__ import annotations

from typing import Any

from backend.compat.command import _flags
from backend.compat.kohya_import import import_kohya
from backend.compat.mapping import MAPPING
from backend.compat.report import ImportReport, ImportResult
from backend.compat.values import as_bool, number, whole
from backend.config.fields import field_map
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots

# LoRA_type → (network_module, algo for lycoris.kohya, network_args keys the GUI passes for it)
_LYCO = ("LyCORIS_preset", "conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "module_dropout", "dora_wd",
         "use_scalar", "train_norm", "bypass_mode", "rank_dropout_scale")
_KOHYA = ("rank_dropout", "module_dropout", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
          "block_lr_zero_threshold", "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
LORA_TYPES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "Standard": ("networks.lora", None, _KOHYA),
    "Kohya LoCon": ("networks.lora", None, ("conv_dim", "conv_alpha") + _KOHYA),
    "LoCon": ("lycoris.kohya", "locon", _LYCO),
    "LyCORIS/LoCon": ("lycoris.kohya", "locon", _LYCO),
    "LyCORIS/LoHa": ("lycoris.kohya", "loha", _LYCO),
    "LyCORIS/LoKr": ("lycoris.kohya", "lokr", _LYCO + ("factor", "use_cp", "decompose_both")),
    "LyCORIS/iA3": ("lycoris.kohya", "ia3", ("LyCORIS_preset", "conv_dim", "conv_alpha", "train_on_input")),
    "LyCORIS/DyLoRA": ("lycoris.kohya", "dylora", ("conv_dim", "conv_alpha", "use_tucker", "use_cp", "unit",
                                                   "rank_dropout", "module_dropout")),
    "Kohya DyLoRA": ("networks.dylora", None, ("conv_dim", "conv_alpha", "unit") + _KOHYA),
    "LyCORIS/GLoRA": ("lycoris.kohya", "glora", _LYCO),
    "LyCORIS/Diag-OFT": ("lycoris.kohya", "diag-oft", _LYCO + ("constrain", "rescaled")),
    "LyCORIS/BOFT": ("lycoris.kohya", "boft", _LYCO + ("constrain", "rescaled")),
    "LyCORIS/Native Fine-Tuning": ("lycoris.kohya", "full", ("LyCORIS_preset", "rank_dropout", "module_dropout",
                                                            "train_norm", "rank_dropout_scale")),
    "LoRA-FA": ("networks.lora_fa", None, _KOHYA),
    "Flux1": ("networks.lora_flux", None, ("rank_dropout", "module_dropout", "train_blocks", "split_qkv",
                                           "train_t5xxl", "in_dims", "img_attn_dim", "img_mlp_dim", "img_mod_dim",
                                           "single_dim", "single_mod_dim", "txt_attn_dim", "txt_mlp_dim",
                                           "txt_mod_dim")),
}
_ALL_NET_KEYS = {k for _, _, keys in LORA_TYPES.values() for k in keys} | {"factor", "use_cp", "decompose_both",
                                                                         "unit", "constrain", "rescaled"}
RENAMES = {"optimizer": "optimizer_type", "lora_network_weights": "network_weights",
           "sdxl_cache_text_encoder_outputs": "cache_text_encoder_outputs", "sdxl_no_half_vae": "no_half_vae",
           "flux1_cache_text_encoder_outputs": "cache_text_encoder_outputs",
           "flux1_cache_text_encoder_outputs_to_disk": "cache_text_encoder_outputs_to_disk",
           "flux1_clip_l": "clip_l", "flux1_t5xxl": "t5xxl"}
# Settings of the GUI or of accelerate that do not change the trained LoRA.
GUI_ONLY = frozenset({
    "num_cpu_threads_per_process", "num_machines", "multi_gpu", "gpu_ids", "main_process_port",
    "dynamo_backend", "dynamo_mode", "dynamo_use_dynamic", "dynamo_use_fullgraph", "extra_accelerate_launch_args",
    "headless", "print_only", "save_as_bool", "model_list", "huggingface_repo_id", "huggingface_token",
    "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_path_in_repo", "save_state_to_huggingface",
    "resume_from_huggingface", "async_upload", "log_tracker_config", "log_config", "use_shell", "debiased_estimation_loss_only",
    "stop_text_encoder_training", "stop_text_encoder_training_pct", "noise_offset_type", "lr_warmup", "epoch",
    "max_resolution", "LoRA_type", "sdxl", "flux1_checkbox", "sample_prompts", "additional_parameters", "dataset_config",
})


def is_kohya_ss(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and ("LoRA_type" in data or "max_resolution" in data
                                       or ("epoch" in data and "train_batch_size" in data))


def import_kohya_ss(data: dict[str, Any], *, source: str = "", paths: WorkspacePaths | None = None,
                    dataset: dict[str, Any] | None = None, roots: AllowedRoots | None = None) -> ImportResult:
    report = ImportReport(source=source)
    args, family, prompt_text, launcher = kohya_ss_to_args(data, report)
    return import_kohya(args, dataset, family=family, paths=paths, source=source, launcher=launcher,
                        report=report, prompt_text=prompt_text, roots=roots)


def kohya_ss_to_args(data: dict[str, Any], report: ImportReport) -> tuple[dict, str | None, str | None, dict]:
    """The sd-scripts arguments a kohya_ss GUI JSON stands for (what its lora_gui.py would pass)."""
    specs = field_map()
    text_keys = {a.key for a in MAPPING if specs[a.path].kind == "str"} | {"train_data_dir", "reg_data_dir",
                                                                            "output_dir", "logging_dir"}
    src: dict[str, Any] = {}
    for key, value in data.items():
        if value == "" and RENAMES.get(key, key) not in text_keys and key not in GUI_ONLY:
            report.map(key, "", value, "empty: not set")
        else:
            src[key] = value
    args: dict[str, Any] = {}
    family = None
    if "sdxl" in src:
        family = "sdxl" if as_bool(src.pop("sdxl"), False) else "sd15"
        report.map("sdxl", "model.family", family)
    if src.pop("flux1_checkbox", None) in (True, "true", "True"):
        family = "flux"
        report.map("flux1_checkbox", "model.family", family, "flux_train_network.py")
    _network(src, args, report)
    _length(src, args, report)
    if "max_resolution" in src:
        args["resolution"] = src.pop("max_resolution")
        report.alias("resolution", "max_resolution")
    if "lr_warmup_steps" in src and src["lr_warmup_steps"] not in (0, "0"):
        args["lr_warmup_steps"] = _as(whole, src.pop("lr_warmup_steps"))
        if "lr_warmup" in src:
            report.map("lr_warmup", "", src.pop("lr_warmup"), "not used: lr_warmup_steps is set")
    elif "lr_warmup" in src:
        raw = src.pop("lr_warmup") or 0
        try:
            pct = number(raw)
        except ValueError as err:
            report.no_equivalent("lr_warmup", raw, f"{err}: no warm-up")
            pct = 0.0
        src.pop("lr_warmup_steps", None)
        args["lr_warmup_steps"] = pct / 100 if pct else 0
        if pct:
            report.change("lr_warmup", "schedule.warmup_ratio", pct, f"{pct:g} % of all steps → ratio", pct / 100)
    noise_type = src.pop("noise_offset_type", None)
    if noise_type is not None:
        report.map("noise_offset_type", "", noise_type, "picks noise_offset or multires noise")
        unused = ("multires_noise_iterations", "multires_noise_discount") if noise_type == "Original" else (
            ("noise_offset",) if noise_type == "Multires" else ())
        for key in unused:
            if key in src:
                report.map(key, "", src.pop(key), f"not used with noise_offset_type {noise_type}")
    prompt_text = src.pop("sample_prompts", None)
    if prompt_text is not None and not isinstance(prompt_text, str):
        report.no_equivalent("sample_prompts", prompt_text, "not text (one prompt per line): no prompts imported")
        prompt_text = None
    extra = str(src.pop("additional_parameters", "") or "")
    launcher = {}
    if "num_processes" in src:
        launcher["num_processes"] = src.pop("num_processes")
    for key in sorted(set(src) & GUI_ONLY):
        report.map(key, "", src.pop(key), "a kohya_ss GUI or accelerate setting")
    for key, value in src.items():
        args[RENAMES.get(key, key)] = value
        if key in RENAMES:
            report.alias(RENAMES[key], key)
    if not extra.strip():
        report.map("additional_parameters", "", extra, "empty: no extra flags")
    else:
        for key, value in _flags(extra.split()).items():
            args[key] = value
            report.map("additional_parameters", "", f"--{key}", "read as an sd-scripts flag")
    return args, family, prompt_text or None, launcher


def _network(src: dict[str, Any], args: dict[str, Any], report: ImportReport) -> None:
    lora_type = str(src.pop("LoRA_type", "Standard"))
    known = LORA_TYPES.get(lora_type)
    if known is None:
        report.no_equivalent("LoRA_type", lora_type, "LoRA type not available: Standard (LoRA) used")
        known = LORA_TYPES["Standard"]
    else:
        report.map("LoRA_type", "network.algo", lora_type)
    module, algo, keys = known
    args["network_module"] = module
    net: list[str] = [f"algo={algo}"] if algo else []
    for key in keys:
        if key not in src:
            continue
        value = src.pop(key)
        if (key in ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_alphas",
                    "conv_block_alphas") or key.endswith(("_dim", "_dims"))) and value in ("", None):
            continue
        name = {"LyCORIS_preset": "preset", "unit": "block_size" if module == "lycoris.kohya" else "unit"}.get(key, key)
        if name != key:
            report.alias(name, key)
        net.append(f"{name}={value}")
    for key in sorted(_ALL_NET_KEYS & set(src)):
        report.map(key, "", src.pop(key), f"not used by LoRA_type {lora_type}")
    args["network_args"] = net


def _length(src: dict[str, Any], args: dict[str, Any], report: ImportReport) -> None:
    """max_train_epochs, else max_train_steps, else epoch (the GUI turns it into steps)."""
    epochs, steps, epoch = (src.pop(k, None) for k in ("max_train_epochs", "max_train_steps", "epoch"))
    if _num(epochs):
        args["max_train_epochs"] = epochs
        for key, value in (("max_train_steps", steps), ("epoch", epoch)):
            if value is not None:
                report.map(key, "", value, "not used: max_train_epochs is set")
    elif _num(steps):
        args["max_train_steps"] = steps
        if epoch is not None:
            report.map("epoch", "", epoch, "not used: max_train_steps is set")
    elif _num(epoch):
        args["max_train_epochs"] = epoch
        report.change("epoch", "training.epochs", epoch, "the GUI's epoch count (it computes the steps from it)")
    for key, value in (("max_train_epochs", epochs), ("max_train_steps", steps)):
        if value is not None and not _num(value):
            report.map(key, "", value, "0: not set")


def _num(value: Any) -> bool:
    try:
        return number(value) > 0
    except ValueError:
        return False


def _as(convert: Any, value: Any) -> Any:
    """`convert(value)` (values.number or whole), or the value as it was for the importer to report."""
    try:
        return convert(value)
    except ValueError:
        return value
