"""Schema migrations: each step turns a raw dict of version N into version N+1.

A preset or job written by an older LoRA Dash keeps working: `migrate` runs every step from the file's
`schema_version` up to the current one before validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.config.schema import SCHEMA_VERSION
from backend.errors import ConfigError

# version N -> function upgrading a dict from N to N+1. Empty while only version 1 exists.
STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def migrate(data: dict[str, Any], steps: dict[int, Callable] | None = None,
            target: int = SCHEMA_VERSION) -> dict[str, Any]:
    steps = STEPS if steps is None else steps
    version = data.get("schema_version", target)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        if isinstance(version, bool):
            shown = str(version).lower()  # as TOML writes it
        elif isinstance(version, int) and version < 0:
            shown = "a negative number"  # (repr of a 5000-digit one raises)
        else:
            shown = repr(version)[:40]
        raise ConfigError([("schema_version", f"must be a whole number from 1 to {target}, got {shown}")])
    if version > target:
        shown = str(version) if version < 10**9 else "a huge number"  # str() of 5000 digits raises
        raise ConfigError([("schema_version", f"{shown} is newer than this LoRA Dash understands "
                                              f"(up to {target}); update LoRA Dash")])
    out = dict(data)
    while version < target:
        out = steps[version](out)
        version += 1
        out["schema_version"] = version
    return out
