"""The job kinds the worker can run: kind → "module:function", imported only when a job needs it
(the web UI and the supervisor never import torch through here)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from backend.errors import JobError

KINDS: MappingProxyType[str, str] = MappingProxyType({
    "train": "backend.training.run:run_job",
    "caption": "backend.captioning.job:run_job",
    "download": "backend.models.download:run_job",
    "download_url": "backend.models.http_download:run_job",
    "selftest": "backend.worker.selftest:run_job",
})

Runner = Callable[[Any], Any]


def runner_spec(kind: str) -> str:
    """The "module:function" string of `kind`; JobError naming the known kinds otherwise."""
    try:
        return KINDS[kind]
    except KeyError:
        raise JobError(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}") from None


def resolve_runner(kind: str) -> Runner:
    """Import the runner of `kind` (see `load_runner`)."""
    return load_runner(runner_spec(kind), kind)


def load_runner(spec: str, kind: str = "") -> Runner:
    """Import "module:function". A failing import becomes a JobError that names the cause (e.g.
    "No module named 'onnxruntime'"), chained to the original exception."""
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise JobError(f"cannot load the {kind!r} job runner ({module_name}): {err}") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise JobError(f"the {kind!r} job runner {spec} does not exist")
    return func
