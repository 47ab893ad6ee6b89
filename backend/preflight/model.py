"""model.path and model.family: a model of that family LoRA Dash can train, read from file headers and
configs only (backend.models.detect), as the worker's first check (family.check_model) reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.preflight.inputs import Problem

# Which option a detect.py message asks the user to change.
_FIELDS_IN_MESSAGES = ("model.family", "model.v_prediction")


def _field_of(message: str) -> str:
    return next((f for f in _FIELDS_IN_MESSAGES if f"set {f}" in message), "model.path")


def model_problems(cfg: Any) -> list[Problem]:
    """The family is one this version trains; the file or folder is a whole model of it, and its marked
    prediction type agrees with model.v_prediction."""
    from backend.models import detect
    from backend.models.registry import FAMILIES

    family = cfg.model.family
    if family not in FAMILIES:
        return [("model.family", f"{family!r} is not available in this version yet; choose one of "
                                 f"{', '.join(FAMILIES)}")]
    path = Path(cfg.model.path)
    try:
        det = detect.require_trainable(detect.detect(path), path, family)
        detect.check_prediction(det, path, cfg.model.v_prediction)
    except ModelError as err:
        return [(_field_of(str(err)), str(err))]
    return []
