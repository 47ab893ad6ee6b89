"""The workspace: one folder holding datasets/, models/, jobs/ and the user's presets/.

Every path handed between processes is absolute; relative paths inside a config resolve against the
workspace root, so a config means the same thing wherever the app or a worker was started from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backend.errors import WorkspaceError

ENV_VAR = "LORADASH_WORKSPACE"
DEFAULT_DIR = "workspace"
SUBDIRS = ("datasets", "models", "jobs", "presets")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRESETS = PROJECT_ROOT / "presets"


def choose_root(cli_value: str | os.PathLike | None, environ: Mapping[str, str]) -> Path:
    """`--workspace` wins, then $LORADASH_WORKSPACE, then ./workspace; always absolute."""
    raw = cli_value or environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class WorkspacePaths:
    root: Path

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    def resolve(self, path: str | os.PathLike) -> Path:
        """An absolute path: `~` expanded, relative paths taken from the workspace root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p).resolve()

    def ensure(self) -> WorkspacePaths:
        """Create the folders, or say which one cannot be created or written and why."""
        for sub in (self.root, *(self.root / s for s in SUBDIRS)):
            try:
                sub.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise WorkspaceError(
                    f"cannot create workspace folder {sub}: {err.strerror or err}. "
                    f"Choose a writable folder with --workspace DIR or ${ENV_VAR}."
                ) from err
            if not os.access(sub, os.W_OK | os.X_OK):
                raise WorkspaceError(
                    f"workspace folder {sub} is not writable. "
                    f"Fix its permissions or choose another with --workspace DIR or ${ENV_VAR}."
                )
        return self


def open_workspace(cli_value: str | os.PathLike | None = None,
                   environ: Mapping[str, str] | None = None) -> WorkspacePaths:
    """The workspace for `--workspace`/$LORADASH_WORKSPACE, created if missing."""
    return WorkspacePaths(choose_root(cli_value, os.environ if environ is None else environ)).ensure()
