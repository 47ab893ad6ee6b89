"""The download job (kind "download"): a Hugging Face repo into `workspace/models/<name>/`.

Files land in `<name>.partial/` and the folder is renamed to `<name>/` only once every file is there,
so a folder under models/ is always complete. An interrupted download keeps `<name>.partial/`; running
the job again resumes it. With no connection the job fails saying where to put the files by hand.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.errors import ConfigError, ModelError
from backend.paths import WorkspacePaths

PARTIAL_SUFFIX = ".partial"
REPO_ID_RE = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"
NAME_RE = re.compile(r"^[\w][\w.+ -]*$")


class DownloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo_id: str = Field(..., description="Hugging Face repo id, e.g. SmilingWolf/wd-vit-tagger-v3.",
                         pattern=REPO_ID_RE)
    name: str = Field("", description="Folder name under models/; empty: the repo's name.", max_length=120)
    revision: str = Field("", description="Branch, tag or commit; empty: the default branch.")
    allow_patterns: list[str] = Field([], description="Only files matching these globs (e.g. *.onnx, *.csv); "
                                                      "empty: every file.")
    endpoint: str = Field("", description="Hub address (a mirror); empty: huggingface.co or $HF_ENDPOINT.")


@dataclass
class DownloadResult:
    repo_id: str
    path: str
    files: int
    bytes: int
    stopped: bool = False


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection/timeout errors (huggingface_hub 1.x+ uses httpx or its httpx2 fork)."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _explain(err: BaseException, repo_id: str, target: Path) -> ModelError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return ModelError(f"{repo_id} is gated: accept its terms on huggingface.co and set HF_TOKEN, or place "
                          f"the files in {target}")
    if isinstance(err, RepositoryNotFoundError):
        return ModelError(f"no Hugging Face repo {repo_id!r} (or it is private: set HF_TOKEN)")
    if isinstance(err, RevisionNotFoundError):
        return ModelError(f"{repo_id} has no such revision: {err}")
    if isinstance(err, (LocalEntryNotFoundError, ConnectionError, TimeoutError, *_transport_errors())):
        return ModelError(f"cannot reach the Hugging Face Hub to download {repo_id} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}). Retry when online, or download the "
                          f"files elsewhere and place them in {target}")
    if isinstance(err, HfHubHTTPError):
        return ModelError(f"the Hugging Face Hub refused the download of {repo_id}: {err}")
    return ModelError(f"download of {repo_id} failed: {type(err).__name__}: {err}")


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    return (HfHubHTTPError, LocalEntryNotFoundError, OSError, *_transport_errors())


def folder_bytes(folder: Path) -> int:
    """Bytes under `folder`, partial `.incomplete` files included (they grow while downloading)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                continue  # renamed between listing and stat: counted on the next poll
    return total


def target_name(cfg: DownloadConfig) -> str:
    name = cfg.name.strip() or cfg.repo_id.split("/")[-1]
    if not NAME_RE.match(name) or name.endswith(PARTIAL_SUFFIX) or name in (".", ".."):
        raise ConfigError([("name", f"{name!r} is not a usable folder name (letters, digits, . _ - + space)")])
    return name


def download_repo(paths: WorkspacePaths, cfg: DownloadConfig, progress: Callable[..., Any] | None = None,
                  should_stop: Callable[[], bool] | None = None, poll_s: float = 0.5) -> DownloadResult:
    from huggingface_hub import HfApi, snapshot_download

    target = paths.models / target_name(cfg)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    if target.exists():
        raise ModelError(f"{target} exists already: delete it or choose another name")
    endpoint = cfg.endpoint or None
    try:
        info = HfApi(endpoint=endpoint).repo_info(cfg.repo_id, revision=cfg.revision or None,
                                                  files_metadata=True)
    except _hub_errors() as err:
        raise _explain(err, cfg.repo_id, target) from err
    files = [s for s in info.siblings or [] if not cfg.allow_patterns
             or any(fnmatch.fnmatch(s.rfilename, p) for p in cfg.allow_patterns)]
    total = sum(s.size or 0 for s in files)
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:  # the commit sha pins every file to one revision, and stops an offline fallback to
            # whatever an earlier attempt left in the partial folder
            snapshot_download(cfg.repo_id, revision=info.sha, local_dir=partial, endpoint=endpoint,
                              allow_patterns=cfg.allow_patterns or None)
        except _hub_errors() as err:
            outcome["error"] = err

    # A daemon thread: on a stop request the job returns and the process exits; the partial folder stays.
    thread = threading.Thread(target=fetch, name="hf-download", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        if progress:
            progress(min(folder_bytes(partial), total) if partial.exists() else 0, total, unit="bytes")
        if should_stop and should_stop() and thread.is_alive():
            return DownloadResult(cfg.repo_id, str(partial), len(files), total, stopped=True)
    if "error" in outcome:
        raise _explain(outcome["error"], cfg.repo_id, target) from outcome["error"]
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata
    os.replace(partial, target)
    if progress:
        progress(total, total, unit="bytes")
    return DownloadResult(cfg.repo_id, str(target), len(files), total)


def load_download_config(data: dict) -> DownloadConfig:
    try:
        return DownloadConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError([(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()],
                          "download config") from None


def run_job(ctx: Any) -> dict[str, Any]:
    """Worker runner for kind "download" (ctx: backend.worker.context.WorkerContext)."""
    cfg = load_download_config(ctx.config)
    ctx.log.info("downloading %s into %s", cfg.repo_id, ctx.paths.models)
    result = download_repo(ctx.paths, cfg, progress=ctx.progress, should_stop=lambda: ctx.stop_requested)
    summary = asdict(result)
    ctx.events.emit("download_summary", **summary)
    return summary
