"""A diffusers folder holds every part its family loads (SD 1.x, SDXL, Flux); model.clip_skip fits the
text encoder (SD 1.x reads the N-th last layer of its CLIP; SDXL always uses the penultimate one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models.flux import FluxFamily
from backend.models.sd15 import SD15Family
from backend.models.sdxl import SDXLFamily
from backend.preflight.inputs import Problem

# What each family's open() requires of a diffusers folder (the family modules import no torch).
FOLDER_PARTS = {f.name: (f.pipeline_parts, f.pipeline_description) for f in (SD15Family, SDXLFamily, FluxFamily)}
SDXL_PARTS = SDXLFamily.pipeline_parts


def folder_checks(cfg: Any) -> list[Problem]:
    """The check each family's open() makes of a diffusers folder (backend.models.loading)."""
    from backend.models.loading import check_diffusers_folder

    path = Path(cfg.model.path)
    if path.is_dir():
        parts, what = FOLDER_PARTS[cfg.model.family]
        try:
            check_diffusers_folder(path, parts, what)
        except ModelError as err:
            return [("model.path", str(err))]
    return []


def sd_checks(cfg: Any) -> list[Problem]:
    from backend.models.layers import ShapesUnknown, config_folder, read_json

    family, path = cfg.model.family, Path(cfg.model.path)
    problems = folder_checks(cfg)
    if problems:
        return problems
    if family != "sd15" or cfg.model.clip_skip == 1:
        return []
    try:
        layers = read_json(config_folder(path, family) / "text_encoder" / "config.json").get("num_hidden_layers")
    except ShapesUnknown:
        return []  # the worker reads the same file and names it
    if isinstance(layers, int) and cfg.model.clip_skip > layers:
        return [("model.clip_skip", f"{cfg.model.clip_skip} is more than the {layers} layers of this model's "
                                    f"text encoder; choose 1–{layers}")]
    return []
