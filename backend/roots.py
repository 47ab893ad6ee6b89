"""The server folders a request may name: the workspace, plus the folders the operator allows.

Paths that come from a browser or over an API (the LETS-compatible API, the dashboard's "folder on the
server" inputs) must resolve, symbolic links followed, inside one of these roots. The operator adds
roots with `--allow-dir DIR` (repeatable) or $LORADASH_ALLOW_DIRS (folders separated by ":").
Paths typed on the server's own command line are the operator's and are not limited.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from backend.errors import ConfigError
from backend.paths import WorkspacePaths

ENV_VAR = "LORADASH_ALLOW_DIRS"
FLAG = "--allow-dir"
HOW_TO_ALLOW = f"the operator can allow a folder with {FLAG} DIR or ${ENV_VAR}"
# A caption extension: a dot and a short name (".txt", ".caption", ".wd14.txt"); never a file name.
EXTENSION_RE = re.compile(r"^\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,15}$")


def dirs_from_env(environ: Mapping[str, str]) -> list[str]:
    """The folders listed in $LORADASH_ALLOW_DIRS (os.pathsep-separated; empty parts ignored)."""
    return [part for part in environ.get(ENV_VAR, "").split(os.pathsep) if part.strip()]


def _plain(value: object, what: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError([(what, f"must be a path (text), got {type(value).__name__}")])
    if "\0" in value:
        raise ConfigError([(what, "contains a NUL byte: not a valid path")])
    if not value.strip():
        raise ConfigError([(what, "is empty: give a folder or file path")])
    return value.strip()


class OutsideRoots(ConfigError):
    """A well-formed path outside every allowed root (the API answers 403; a malformed one is a 400)."""


@dataclass(frozen=True)
class AllowedRoots:
    """The folders requests may reach, symbolic links resolved. `workspace` is always the first."""

    workspace: Path
    extra: tuple[Path, ...] = ()

    @classmethod
    def of(cls, paths: WorkspacePaths, extra: Iterable[str | os.PathLike] = ()) -> AllowedRoots:
        """The workspace of `paths` plus `extra` folders (each must exist: ConfigError otherwise)."""
        folders: list[Path] = []
        for raw in extra:
            text = _plain(raw, FLAG)
            folder = Path(text).expanduser().resolve()
            if not folder.is_dir():
                raise ConfigError([(FLAG, f"{text} is not an existing folder")])
            folders.append(folder)
        return cls(paths.root.resolve(), tuple(dict.fromkeys(folders)))

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.workspace, *self.extra)

    def describe(self) -> str:
        """The roots in words, for messages and the README."""
        extra = ", ".join(str(p) for p in self.extra)
        return f"the workspace {self.workspace}" + (f" and {extra}" if extra else " (no other folder is allowed)")

    def contains(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.roots)

    def check(self, value: object, what: str) -> Path:
        """`value` as an absolute, resolved path inside the roots (relative paths are taken from the
        workspace). ConfigError naming `what` for a NUL byte, an empty value, or a path (after `~`, `..`
        and symbolic links) outside every root."""
        text = _plain(value, what)
        try:
            p = Path(text).expanduser()
            resolved = (p if p.is_absolute() else self.workspace / p).resolve()
        except (OSError, RuntimeError) as err:  # ~nosuchuser, a symlink loop, an unreadable component
            raise ConfigError([(what, f"{text} cannot be resolved ({err})")]) from None
        if not self.contains(resolved):
            raise OutsideRoots([(what, f"{text} is outside the folders this server may use ({self.describe()}); "
                                       f"{HOW_TO_ALLOW}")])
        return resolved


def check_extension(value: object, what: str) -> str:
    """A caption extension such as `.txt`: ConfigError naming `what` for anything else (a file name,
    a path, a bare word without its dot)."""
    text = value if isinstance(value, str) else ""
    if not EXTENSION_RE.match(text):
        raise ConfigError([(what, f"{value!r} is not a file extension: give a dot and a short name such as "
                                  "'.txt' or '.caption'")])
    return text


def config_path_problems(config: dict, options: Iterable[str], roots: AllowedRoots) -> list[tuple[str, str]]:
    """(dotted option, message) for each of `options` in `config` (a nested dict) whose path is outside
    the roots; relative paths are taken from the workspace. Empty options are skipped."""
    problems: list[tuple[str, str]] = []
    for option in options:
        value: object = config
        for part in option.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value in (None, ""):
            continue
        try:
            roots.check(value, option)
        except ConfigError as err:
            problems += err.problems
    return problems
