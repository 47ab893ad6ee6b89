"""LoRA Dash backend. `from backend import Workspace` for notebooks.

Kept import-light: the web UI imports this package and must not pull in torch, so names are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.jobs.api import Workspace

__all__ = ["Workspace"]


def __getattr__(name: str) -> Any:
    if name == "Workspace":
        from backend.jobs.api import Workspace

        return Workspace
    raise AttributeError(f"module 'backend' has no attribute {name!r}")
