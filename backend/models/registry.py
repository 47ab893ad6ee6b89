"""Model families by name. Each is imported only when asked for (no torch at import time)."""

from __future__ import annotations

import importlib
from types import MappingProxyType

from backend.errors import ModelError
from backend.models.base import ModelFamily

FAMILIES: MappingProxyType[str, str] = MappingProxyType({
    "sd15": "backend.models.sd15:SD15Family",
    "sdxl": "backend.models.sdxl:SDXLFamily",
    "flux": "backend.models.flux:FluxFamily",
})


def get_family(name: str) -> ModelFamily:
    """The family called `name` (model.family); ModelError naming the known ones otherwise."""
    spec = FAMILIES.get(name)
    if spec is None:
        raise ModelError(f"model.family: unknown family {name!r}; known: {', '.join(FAMILIES)}")
    module_name, _, cls_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise ModelError(f"model.family: {name!r} is not available in this version yet") from err
        raise
    return getattr(module, cls_name)()
