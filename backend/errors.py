"""The project's exceptions. Each one carries what the user must fix, in words they can act on."""

from __future__ import annotations


class LoraDashError(Exception):
    """Base class: a problem the user can fix. `str(err)` is the message shown to them."""


class ConfigError(LoraDashError):
    """A config or preset is invalid. `problems` holds (dotted.path, message) pairs, one per problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        super().__init__(head + ("invalid config\n" if len(lines) > 1 else "") + "\n".join(lines))


class WorkspaceError(LoraDashError):
    """The workspace folder cannot be created or written."""


class DatasetError(LoraDashError):
    """A dataset folder, file or archive cannot be used as it is."""


class ModelError(LoraDashError):
    """A model folder or file is missing, incomplete or of an unexpected kind."""


class JobError(LoraDashError):
    """A job cannot be started, stopped, resumed or deleted in its present state."""


class TrainingError(LoraDashError):
    """Training cannot start or must stop (NaN loss, out of memory, …)."""


class DiskFullError(LoraDashError, OSError):
    """No space left (or over quota) where a file was being written. Still an OSError, so code that
    handles failed writes keeps working; `str(err)` names the folder and the free space there."""

    def __init__(self, message: str, folder: object = None):
        super().__init__(28, message)  # errno.ENOSPC
        self.message = message
        self.folder = folder

    def __str__(self) -> str:
        return self.message
