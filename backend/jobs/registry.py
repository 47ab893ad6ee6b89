"""The job registry on disk: one folder per job under workspace/jobs/, described by job.json.

The folder is the job (DESIGN.md §3): config.toml, job.json, events.jsonl, job.log, control.json,
samples/, checkpoints/, output/. Everything the UI knows about a job it reads from here, so the UI
can restart without losing anything.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import fcntl
import os
import re
import shutil
import time
import tomllib
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from backend.errors import ConfigError, JobError
from backend.jobs.events import EVENTS_FILE
from backend.jobs.files import atomic_write_json, atomic_write_text, read_json
from backend.paths import WorkspacePaths

JOB_FILE = "job.json"
CONFIG_FILE = "config.toml"
LOCK_FILE = ".job.lock"
SUBFOLDERS = ("samples", "checkpoints", "output")

STATUSES = ("queued", "starting", "running", "stopping", "completed", "stopped", "failed", "interrupted")
ACTIVE = frozenset({"starting", "running", "stopping"})     # a process should exist
FINISHED = frozenset({"completed", "stopped", "failed", "interrupted"})
RESUMABLE = frozenset({"stopped", "interrupted"})


@dataclass
class JobRecord:
    """What job.json holds. Times are unix seconds; `pid_start_time` is the kernel's start time of
    `pid` (see `backend.jobs.procs.start_time`) so a reused pid is never taken for ours."""

    id: str
    kind: str
    name: str
    status: str = "queued"
    pid: int | None = None
    pid_start_time: float | None = None
    pgid: int | None = None                 # process group signalled on stop (the launcher's)
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    workspace: str = ""
    queue_position: int | None = None
    group: str | None = None
    resume: bool = False
    num_processes: int = 1
    runs: int = 0                           # how many times a worker was started for this job
    stop_requested_at: float | None = None  # supervisor's stop escalation state
    signal_sent: str | None = None
    signal_at: float | None = None
    stop_grace_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> JobRecord:
        """A copy whose `extra` is its own (cheaper than a deep copy; extra is shallow-copied)."""
        dup = _copy.copy(self)
        dup.extra = dict(self.extra)
        return dup

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Build from job.json; keys this version does not know are ignored (newer/older files)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def slugify(text: str, max_len: int = 40) -> str:
    """`My LoRA v2!` → `my-lora-v2`; only a-z, 0-9 and single dashes (accents dropped: é → e)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].rstrip("-")


def new_job_id(name: str, now: float | datetime | None = None, jobs_dir: Path | None = None) -> str:
    """`20261127-153000-my-lora`; with `jobs_dir`, suffixed -2, -3 … until no folder has that name."""
    if now is None:
        now = time.time()
    stamp = (now if isinstance(now, datetime) else datetime.fromtimestamp(now)).strftime("%Y%m%d-%H%M%S")
    slug = slugify(name)
    base = f"{stamp}-{slug}" if slug else stamp
    if jobs_dir is None:
        return base
    candidate, n = base, 1
    while (jobs_dir / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def job_dir(paths: WorkspacePaths, job_id: str) -> Path:
    """The folder of job `job_id`; JobError if there is none."""
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise JobError(f"invalid job id {job_id!r}")
    d = paths.jobs / job_id
    if not (d / JOB_FILE).is_file():
        raise JobError(f"no job {job_id!r} in {paths.jobs}")
    return d


def create_job(paths: WorkspacePaths, kind: str, config: dict, name: str, *,
               group: str | None = None, status: str = "queued", num_processes: int = 1,
               queue_position: int | None = None, extra: dict | None = None,
               now: float | None = None) -> Path:
    """Make jobs/<id>/ with config.toml, job.json, an empty events.jsonl and the subfolders."""
    if status not in STATUSES:
        raise JobError(f"invalid status {status!r}; accepted: {', '.join(STATUSES)}")
    try:
        config_text = tomli_w.dumps(config)
    except (TypeError, ValueError) as err:
        raise ConfigError([("", f"cannot be written as TOML: {err}")], source=f"{kind} config") from err
    now = time.time() if now is None else now
    paths.jobs.mkdir(parents=True, exist_ok=True)
    # mkdir is the reservation: two processes picking the same id cannot both succeed.
    while True:
        jid = new_job_id(name or kind, now, paths.jobs)
        d = paths.jobs / jid
        try:
            d.mkdir()
            break
        except FileExistsError:
            continue
    try:
        for sub in SUBFOLDERS:
            (d / sub).mkdir()
        atomic_write_text(d / CONFIG_FILE, config_text)
        (d / EVENTS_FILE).touch()
        rec = JobRecord(id=jid, kind=kind, name=name or jid, status=status, created_at=now,
                        workspace=str(paths.root), group=group, num_processes=int(num_processes),
                        queue_position=queue_position,
                        extra=dict(extra or {}))
        save_job(d, rec)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)  # no half-made job folders in the list
        raise
    return d


def load_job(job_dir: str | os.PathLike) -> JobRecord:
    """The JobRecord of a job folder; JobError if job.json is missing or unreadable."""
    path = Path(job_dir) / JOB_FILE
    data = read_json(path)
    if not isinstance(data, dict):
        raise JobError(f"{path} is missing or not a valid job file")
    try:
        return JobRecord.from_dict(data)
    except TypeError as err:
        raise JobError(f"{path}: {err}") from err


def save_job(job_dir: str | os.PathLike, rec: JobRecord) -> None:
    """Write job.json atomically (the old file stays if the write fails)."""
    atomic_write_json(Path(job_dir) / JOB_FILE, rec.to_dict())


@contextmanager
def _locked(job_dir: Path) -> Iterator[None]:
    with open(job_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_job(job_dir: str | os.PathLike, change: Callable[[JobRecord], Any]) -> JobRecord:
    """Read job.json, apply `change(rec)` in place, write it back, under a lock shared by the
    supervisor and the worker so neither overwrites the other's transition. If `change` returns
    False the file is left as it is."""
    job_dir = Path(job_dir)
    with _locked(job_dir):
        rec = load_job(job_dir)
        if change(rec) is not False:
            save_job(job_dir, rec)
        return rec


def load_config(job_dir: str | os.PathLike) -> dict:
    """The parsed config.toml of a job."""
    path = Path(job_dir) / CONFIG_FILE
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise JobError(f"{path} is missing") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML: {err}")], source=str(path)) from err


class JobIndex:
    """list_jobs with a cache keyed on each job.json's (mtime, size, inode): polling every second
    re-parses only the files that changed."""

    def __init__(self, paths: WorkspacePaths):
        self.paths = paths
        self._cache: dict[str, tuple[tuple[int, int, int], JobRecord]] = {}

    def list(self, copy: bool = True) -> list[JobRecord]:
        """Every job, oldest first. With copy=False the cached records themselves (do not edit)."""
        recs: list[JobRecord] = []
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.paths.jobs))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(entry.path, JOB_FILE))
            except FileNotFoundError:
                continue
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._cache.get(entry.name)
            if cached and cached[0] == key:
                rec = cached[1]
            else:
                try:
                    rec = load_job(entry.path)
                except JobError:
                    continue
                self._cache[entry.name] = (key, rec)
            seen.add(entry.name)
            recs.append(rec)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        recs.sort(key=lambda r: (r.created_at, r.id))
        # Cached records are shared: hand out copies so callers may edit theirs.
        return [r.copy() for r in recs] if copy else recs


def list_jobs(paths: WorkspacePaths) -> list[JobRecord]:
    """Every job in the workspace, oldest first."""
    return JobIndex(paths).list()
