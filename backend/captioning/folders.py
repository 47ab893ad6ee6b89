"""Which model folders a caption job can load, told from their files alone (no torch, no transformers),
so the Captioning tab lists only those and refuses any other before a job starts.

A tagger folder holds `model.onnx` and `selected_tags.csv` (WD14). A captioner folder is a transformers
model saved with its processor: `config.json` naming a `model_type`, and `processor_config.json` or
`preprocessor_config.json`. The parts of a diffusers model (`unet/`, `vae/`, `text_encoder/` under a
folder with `model_index.json`) have a config.json too, but no captioner can load them.
"""

from __future__ import annotations

import json
from pathlib import Path

TAGGER_FILES = ("model.onnx", "selected_tags.csv")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TAGGER_HELP = "a WD14 tagger folder holds model.onnx and selected_tags.csv (e.g. SmilingWolf/wd-vit-tagger-v3)"
CAPTIONER_HELP = ("a captioner folder is a transformers model saved with its processor (config.json and "
                  "processor_config.json), e.g. Salesforce/blip-image-captioning-large or "
                  "florence-community/Florence-2-base")


def tagger_problem(folder: Path) -> str | None:
    """Why `folder` is not a WD14 tagger folder, or None."""
    missing = [f for f in TAGGER_FILES if not (folder / f).is_file()]
    return f"{', '.join(missing)} missing" if missing else None


def diffusers_model_of(folder: Path) -> Path | None:
    """The diffusers model folder (with model_index.json) that `folder` is, or is a part of."""
    for candidate in (folder, *folder.parents):
        if (candidate / "model_index.json").is_file():
            return candidate
    return None


def captioner_problem(folder: Path) -> str | None:
    """Why transformers could not load `folder` as a captioner, or None when it looks like one."""
    pipeline = diffusers_model_of(folder)
    if pipeline is not None:
        part = "" if pipeline == folder else f" ({folder.relative_to(pipeline).as_posix()}/ is one of its parts)"
        return f"it belongs to the diffusers model {pipeline.name}{part}, a model to train, not a captioner"
    config = folder / "config.json"
    if not config.is_file():
        return "config.json missing"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"config.json cannot be read as JSON ({err})"
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        return "config.json names no model_type, so it is not a transformers model"
    if not any((folder / f).is_file() for f in PROCESSOR_FILES):
        return f"no processor is saved with the model ({' or '.join(PROCESSOR_FILES)} missing)"
    return None


def model_kind(folder: Path) -> str | None:
    """"tagger", "captioner" or None (not a model a caption job can load)."""
    if tagger_problem(folder) is None:
        return "tagger"
    if (folder / "config.json").is_file() and captioner_problem(folder) is None:
        return "captioner"
    return None
