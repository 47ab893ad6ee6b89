"""LoRA Easy Training Scripts (Derrian's LETS) → sd-scripts arguments → our preset.

Two shapes, from the LETS front end (main_ui_files/MainUI.py, ArgsListUI.py) and backend
(utils/validation.py):
- the JSON its front end POSTs to /validate: {"args": {section: {k: v}}, "dataset": {section: {k: v},
  "subsets": [{…}]}} with sections such as general_args, network_args, optimizer_args, saving_args;
- the TOML it saves (queue, auto-save): {section: {args: {…}, dataset_args: {…}}, subsets: [{…}]}.
Keys are sd-scripts names; network_args / optimizer_args / lr_scheduler_args are tables; the
backend picks network_module from them (algo → lycoris.kohya, unit → networks.dylora, fa → LoRA-FA,
guidance_scale → networks.lora_flux). Flux runs carry a `flux_args` section (FluxUI: ae, clip_l, t5xxl,
t5xxl_max_token_length, apply_t5_attn_mask, discrete_flow_shift, timestep_sampling, …) and the front
end starts them with GET /train?flux=True.
The TOML files the LETS backend writes for sd-scripts (runtime_store/config.toml + dataset.toml)
are plain kohya files: import them with kohya_import.
"""

from __future__ import annotations

from typing import Any

from backend.compat.kohya_import import import_kohya
from backend.compat.mapping import KOHYA_FLUX_LORA_MODULE
from backend.compat.report import ImportReport, ImportResult
from backend.compat.values import as_bool, format_kv
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots

FLUX_SECTION = "flux_args"  # LETS' FluxUI section
# Keys only the LETS front end reads (tag files, its TOML auto-save, log naming modes).
FRONTEND_ONLY = frozenset({"tag_occurrence", "save_toml", "save_toml_location", "tag_file_location",
                           "log_prefix_mode", "run_name_mode", "run_name", "validate_only"})


def is_lets_toml(data: dict[str, Any]) -> bool:
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("subsets"), list):
        return True
    return any(isinstance(v, dict) and ({"args", "dataset_args"} & set(v)) for v in data.values())


def is_lets_body(data: dict[str, Any]) -> bool:
    return isinstance(data, dict) and isinstance(data.get("args"), dict) and isinstance(data.get("dataset"), dict)


def lets_toml_to_body(data: dict[str, Any]) -> dict[str, Any]:
    """The saved-TOML shape → the /validate body shape (as MainUI.process_toml does)."""
    args: dict[str, Any] = {}
    dataset: dict[str, Any] = {}
    for section, value in data.items():
        if section == "subsets":
            dataset["subsets"] = value
        elif isinstance(value, dict):
            if "args" in value:
                args[section] = value["args"]
            if "dataset_args" in value:
                dataset[section] = value["dataset_args"]
    dataset.setdefault("subsets", [])
    return {"args": args, "dataset": dataset}


def lets_to_kohya(body: dict[str, Any], report: ImportReport) -> tuple[dict, dict, str | None]:
    """(sd-scripts config, dataset TOML, family) for a LETS /validate body."""
    config: dict[str, Any] = {}
    for section, values in (body.get("args") or {}).items():
        if not isinstance(values, dict):
            report.no_equivalent(section, values, "a LETS section must be a table of arguments")
            continue
        for key, value in values.items():
            config[key] = value
    family = None
    if "sdxl" in config:
        family = "sdxl" if as_bool(config.pop("sdxl"), False) else "sd15"
        report.map("sdxl", "model.family", family)
    if isinstance((body.get("args") or {}).get(FLUX_SECTION), dict):
        family = "flux"
        report.map(FLUX_SECTION, "model.family", "flux", "LETS' Flux section")
    net_args = config.get("network_args") if isinstance(config.get("network_args"), dict) else {}
    fa = config.pop("fa", None)
    if "network_module" not in config:
        if "algo" in net_args:
            config["network_module"] = "lycoris.kohya"
        elif "unit" in net_args:
            config["network_module"] = "networks.dylora"
        elif as_bool(fa, False):
            config["network_module"] = "networks.lora_fa"
        elif family == "flux" or "guidance_scale" in config:
            config["network_module"] = KOHYA_FLUX_LORA_MODULE
        else:
            config["network_module"] = "networks.lora"
    if fa is not None:
        report.map("fa", "", fa, "LETS' LoRA-FA switch, read as network_module")
    if "warmup_ratio" in config:
        ratio = config.pop("warmup_ratio")
        if "lr_warmup_steps" in config:
            report.map("warmup_ratio", "", ratio, "not used: lr_warmup_steps is set")
        else:
            config["lr_warmup_steps"] = ratio  # read (and reported if not a number) as lr_warmup_steps
            report.change("warmup_ratio", "schedule.warmup_ratio", ratio, "LETS' warm-up ratio (its backend turns "
                                                                          "it into steps; LoRA Dash keeps the ratio)")
    for key in ("network_args", "optimizer_args", "lr_scheduler_args"):
        if isinstance(config.get(key), dict):  # LETS sends tables; sd-scripts takes key=value lists
            config[key] = format_kv({k: v for k, v in config[key].items() if not (k == "preset" and v == "")})
    for key in sorted(FRONTEND_ONLY & set(config)):
        report.map(key, "", config.pop(key), "a LETS front-end setting")
    general: dict[str, Any] = {}
    subsets: list[dict[str, Any]] = []
    for section, values in (body.get("dataset") or {}).items():
        if section == "subsets":
            subsets = [dict(s) for s in values if isinstance(s, dict)] if isinstance(values, list) else []
        elif isinstance(values, dict):
            general.update(values)
    for i, subset in enumerate(subsets, 1):
        if "name" in subset:
            report.map(f"subset #{i} name", "", subset.pop("name"), "a label in LETS")
    return config, {"general": general, "datasets": [{"subsets": subsets}]}, family


def import_lets(data: dict[str, Any], *, source: str = "", paths: WorkspacePaths | None = None,
                roots: AllowedRoots | None = None) -> ImportResult:
    """A LETS saved TOML or /validate body → preset + report."""
    body = data if is_lets_body(data) else lets_toml_to_body(data)
    report = ImportReport(source=source)
    config, dataset, family = lets_to_kohya(body, report)
    return import_kohya(config, dataset, family=family, paths=paths, source=source, report=report, roots=roots)
