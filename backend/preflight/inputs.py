"""File and folder options: named when required, free of NUL bytes, existing, and of the kind the schema
says each accepts (`accepts` on the option in backend/config/schema.py); a custom VAE that loads as a
VAE; a starting LoRA of the same family, algorithm and rank."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.config.fields import FieldSpec, path_fields
from backend.errors import ModelError
from backend.paths import WorkspacePaths

Problem = tuple[str, str]

VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")  # what backend.models.loading.load_vae_any opens


def values_of(cfg: Any) -> dict[str, Any]:
    """{dotted.path: value} of a TrainConfig's path options."""
    return {f.path: getattr(getattr(cfg, f.section), f.name) for f in path_fields()}


def _kind(path: Path) -> str | None:
    """"file", "folder", "other" (a socket, a device…), or None when nothing is there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "other"


def _one_path(spec: FieldSpec, raw: Any, paths: WorkspacePaths | None) -> str | None:
    """What is wrong with one path option's value, or None."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return f"empty: {spec.label.lower()} is needed to train. {spec.help}" if spec.required else None
    if "\x00" in text:
        return "contains a NUL byte (\\x00); remove it"
    path = paths.resolve(text) if paths is not None else Path(text).expanduser()
    try:
        kind = _kind(path)
    except OSError as err:
        return f"{path} cannot be read: {err.strerror or err}"
    want = spec.accepts or "file or folder"
    if kind is None:
        return f"{path} does not exist; pick an existing {want} or correct the path" + (
            "" if spec.required else ", or clear it")
    if kind not in want.split(" or "):
        return f"{path} is a {kind}, but {spec.path} takes a {want}"
    return None


def path_problems(values: Mapping[str, Any], paths: WorkspacePaths | None = None) -> list[Problem]:
    """Every path option of the schema, from {dotted.path: value} (a config's, or raw form values when
    other options are invalid); relative paths are taken from the workspace."""
    out = []
    for spec in path_fields():
        message = _one_path(spec, values.get(spec.path), paths)
        if message:
            out.append((spec.path, message))
    return out


def output_dir_problems(output_dir: str) -> list[Problem]:
    """saving.output_dir (absolute): the worker makes it and writes the final LoRA into it, so it must not be
    a file, and the nearest part of it that exists must be a folder this user can write in."""
    if not output_dir:
        return []
    if "\x00" in output_dir:
        return [("saving.output_dir", "contains a NUL byte (\\x00); remove it")]
    path = Path(output_dir)
    try:
        kind = _kind(path)
        if kind == "folder":
            ok = os.access(path, os.W_OK | os.X_OK)
            return [] if ok else [("saving.output_dir", f"{path} is a folder you cannot write to; choose a "
                                                        "writable folder, or clear it")]
        if kind is not None:
            return [("saving.output_dir", f"{path} is a {kind}, not a folder; choose a folder (created if "
                                          "missing), or clear it")]
        parent = next(p for p in path.parents if os.path.lexists(p))
        parent_kind = _kind(parent)
    except OSError as err:
        return [("saving.output_dir", f"{path} cannot be read: {err.strerror or err}")]
    if parent_kind != "folder":
        return [("saving.output_dir", f"{path} cannot be created: {parent} is a {parent_kind or 'broken link'}, "
                                      "not a folder; choose a folder, or clear it")]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [("saving.output_dir", f"{path} cannot be created: {parent} is not writable; choose a folder "
                                      "you can write to, or clear it")]
    return []


# Latent channels the family's UNet / transformer takes: a VAE of the other kind crashes the first encode.
LATENT_CHANNELS = {"sd15": 4, "sdxl": 4, "flux": 16}


def _vae_folder(folder: Path) -> Path | None:
    """The folder holding the VAE's config.json and weights (itself or its vae/), or None."""
    from backend.models.loading import weight_files

    inner = folder / "vae" if (folder / "vae" / "config.json").is_file() else folder
    return inner if (inner / "config.json").is_file() and weight_files(inner) else None


def _folder_channels(folder: Path) -> int | None:
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # the worker's diffusers load names an unreadable config
    if not isinstance(config, dict):
        return None
    channels = config.get("latent_channels", 4)  # diffusers AutoencoderKL's default
    return channels if isinstance(channels, int) else None


def _channels_problem(p: Path, channels: int | None, family: str) -> list[Problem]:
    from backend.models.detect import LABELS

    want = LATENT_CHANNELS.get(family)
    if channels is None or want is None or channels == want:
        return []
    kinds = {4: "an SD 1.5/SDXL VAE", 16: "a Flux AE"}
    return [("model.vae_path", f"{p} is a VAE with {channels} latent channels; "
                               f"{LABELS.get(family, family)} needs {want} ({kinds[want]}): pick one, or clear it "
                               "to use the model's own")]


def vae_problems(vae_path: str, family: str) -> list[Problem]:
    """model.vae_path: what backend.models.loading.load_vae_any can open as a VAE, with the latent
    channels of model.family."""
    from backend.models import detect

    p = Path(vae_path)
    if p.is_dir():
        inner = _vae_folder(p)
        if inner is None:
            return [("model.vae_path", f"{p} is not a diffusers VAE folder (needs config.json and a weights "
                                       "file, or a vae/ subfolder holding them)")]
        return _channels_problem(p, _folder_channels(inner), family)
    if p.suffix.lower() not in VAE_SUFFIXES:
        return [("model.vae_path", f"{p} is neither a folder nor a {'/'.join(VAE_SUFFIXES)} file")]
    if p.suffix.lower() != ".safetensors":
        return []  # a pickle is only read by the worker (reading it here would import torch)
    try:
        det = detect.detect(p)
    except ModelError as err:
        return [("model.vae_path", str(err))]
    if det.kind not in ("vae", "checkpoint") or (det.kind == "checkpoint" and det.family == "flux"):
        return [("model.vae_path", f"{p} is not a VAE ({det.describe()}); pick a VAE .safetensors or folder, "
                                   "or clear it to use the model's own")]
    if det.kind == "checkpoint":
        channels = 4  # an SD/SDXL checkpoint's own VAE (first_stage_model)
    else:
        channels = int(det.variant.removesuffix("ch")) if det.variant else None
    return _channels_problem(p, channels, family)


# Parameter names per LyCORIS algorithm in a saved network (the file's own suffixes).
_ALGO_MARKERS = (
    (".lora_down.weight", ("lora", "locon", "dylora")), (".hada_w1_a", ("loha",)), (".hada_t1", ("loha",)),
    (".lokr_w1", ("lokr",)), (".lokr_w1_a", ("lokr",)), (".a1.weight", ("glora",)), (".diff", ("full",)),
    (".on_input", ("ia3",)),
)


def _file_algorithms(tensors: Mapping[str, Any]) -> set[str]:
    algos: set[str] = set()
    for key, info in tensors.items():
        if key.endswith(".oft_blocks"):
            algos.add("boft" if len(info.shape) == 4 else "diag-oft")
            continue
        for marker, names in _ALGO_MARKERS:
            if key.endswith(marker):
                algos.update(names)
    return algos


def lora_file_problems(cfg: Any) -> list[Problem]:
    """network.network_weights: a .safetensors LoRA of the model's family, algorithm and rank (the worker
    loads it with safetensors into the network it builds: backend.training.networks.load_initial_weights)."""
    from backend.models import detect
    from backend.models.inspect import check_lora_for_model

    p, net = Path(cfg.network.network_weights), cfg.network
    if p.suffix.lower() != ".safetensors":
        return [("network.network_weights", f"{p} is not a .safetensors file; LoRA Dash continues only from "
                                            ".safetensors LoRA files")]
    try:
        check_lora_for_model(p, cfg.model.family)
        tensors = detect.read_header(p).tensors
    except ModelError as err:
        return [("network.network_weights", str(err).removeprefix("network.network_weights: "))]
    found = _file_algorithms(tensors)
    if found and net.algo not in found:
        return [("network.network_weights", f"{p.name} holds a {' / '.join(sorted(found))} network, not "
                                            f"{net.algo}: set network.algo to match it, or pick another file")]
    ranks = {info.shape[0] for key, info in tensors.items()
             if key.endswith(".lora_down.weight") and len(info.shape) == 2}
    if net.algo in ("lora", "locon") and ranks and net.rank not in ranks:
        return [("network.network_weights", f"{p.name} has rank {', '.join(map(str, sorted(ranks)))}; set "
                                            f"network.rank to {max(ranks)} to continue from it")]
    from backend.preflight.network import weights_file_problems  # (network.py imports this module)

    return weights_file_problems(cfg, p.name, {k: tuple(info.shape) for k, info in tensors.items()})
