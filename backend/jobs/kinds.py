"""The job kinds, declared once: what runs a kind in the worker, what checks its config before a job
is made, whether a stopped job can resume, whether it takes one of the supervisor's slots (a GPU).

Functions are named as "module:function" and imported only when a job needs them, so the web UI and
the supervisor never import torch through here (tests/test_webui_imports.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from backend.errors import JobError


@dataclass(frozen=True)
class JobKind:
    name: str
    runner: str                          # "module:function": run_job(ctx) in the worker process
    validator: str | None = None         # "module:function": (config, paths) -> resolved config dict
    resumable: bool = False              # stopped/interrupted/failed jobs continue from their saved state
    takes_slot: bool = True              # counts against max_concurrent (uses the GPU)
    config_keys: frozenset[str] = frozenset()  # top-level config.toml keys that tell this kind apart
    # Dotted config options naming server files or folders, or the "module:function" listing them.
    path_fields: tuple[str, ...] | str = ()

    @property
    def path_options(self) -> tuple[str, ...]:
        if isinstance(self.path_fields, str):
            return tuple(load_function(self.path_fields, f"{self.name} path options")())
        return self.path_fields


_ALL = (
    JobKind("train", "backend.training.run:run_job", "backend.jobs.validation:validate_train", resumable=True,
            config_keys=frozenset({"model", "dataset", "network"}),
            path_fields="backend.config.fields:server_path_options"),  # the schema's, so none is missed
    JobKind("caption", "backend.captioning.job:run_job", config_keys=frozenset({"dataset", "tagger"}),
            path_fields=("dataset.path", "model.path")),
    JobKind("download", "backend.models.download:run_job", takes_slot=False,
            config_keys=frozenset({"repo_id"})),
    JobKind("download_url", "backend.models.http_download:run_job", takes_slot=False,
            config_keys=frozenset({"url"})),
    JobKind("selftest", "backend.worker.selftest:run_job", "backend.worker.selftest:validate", resumable=True,
            config_keys=frozenset({"steps"})),
)
KINDS: MappingProxyType[str, JobKind] = MappingProxyType({k.name: k for k in _ALL})


def job_kind(name: str) -> JobKind:
    """The declaration of kind `name`; JobError naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise JobError(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


def takes_slot(name: str) -> bool:
    """Whether a job of kind `name` counts against max_concurrent (unknown kinds do, to be safe)."""
    kind = KINDS.get(name)
    return kind.takes_slot if kind is not None else True


def is_resumable(name: str) -> bool:
    kind = KINDS.get(name)
    return kind is not None and kind.resumable


def guess_kind(config: dict[str, Any]) -> str | None:
    """The kind whose config keys `config` has (the most specific match), or None: used to rebuild a
    damaged job.json from its config.toml."""
    keys = set(config) if isinstance(config, dict) else set()
    matches = [k for k in _ALL if k.config_keys and k.config_keys <= keys]
    return max(matches, key=lambda k: len(k.config_keys)).name if matches else None


def load_function(spec: str, what: str = "") -> Callable[..., Any]:
    """Import "module:function". A failing import becomes a JobError that names the cause (e.g.
    "No module named 'onnxruntime'"), chained to the original exception."""
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise JobError(f"cannot load the {what or spec} ({module_name}): {err}") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise JobError(f"the {what or spec} {spec} does not exist")
    return func


def resolve_runner(name: str) -> Callable[[Any], Any]:
    """Import the worker function of kind `name`."""
    return load_function(job_kind(name).runner, f"{name!r} job runner")
