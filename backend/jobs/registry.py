"""The job registry on disk: one folder per job under workspace/jobs/, described by job.json.

The folder is the job (DESIGN.md §3): config.toml, job.json, events.jsonl, job.log, control.json,
samples/, checkpoints/, output/. Everything the UI knows about a job it reads from here, so the UI
can restart without losing anything.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import time
import tomllib
import typing
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from backend.errors import ConfigError, JobError
from backend.files import atomic_write_json, atomic_write_text, disk_full_guard, file_lock
from backend.jobs.events import EVENTS_FILE, EventWriter
from backend.paths import WorkspacePaths

JOB_FILE = "job.json"
CONFIG_FILE = "config.toml"
LOCK_FILE = ".job.lock"
SUBFOLDERS = ("samples", "checkpoints", "output")

STATUSES = ("queued", "starting", "running", "stopping", "completed", "stopped", "failed", "interrupted")
ACTIVE = frozenset({"starting", "running", "stopping"})     # a process should exist
FINISHED = frozenset({"completed", "stopped", "failed", "interrupted"})
# A failed job resumes too: from its last saved state, e.g. once a config.toml edit that broke the
# run is undone (a failed resume must not lock the job out of its own checkpoints).
RESUMABLE = frozenset({"stopped", "interrupted", "failed"})
# Never written to job.json: how the listing shows a folder whose job.json is missing or unreadable.
DAMAGED = "damaged"
CREATION_GRACE_S = 30.0   # a folder this young without job.json is still being made by create_job
# Unix-seconds fields of job.json: a finite 1e20 passes the type check but no date can show it.
TIME_FIELDS = frozenset({"created_at", "started_at", "ended_at", "stop_requested_at", "signal_at"})
MAX_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC, the last second a datetime holds


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
        """Build from job.json; keys this version does not know are ignored (newer/older files).
        DamagedJobError listing every field of the wrong type (see `record_problems`)."""
        problems = record_problems(data)
        if problems:
            raise DamagedJobError(problems)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def damaged(self) -> bool:
        return self.status == DAMAGED


class DamagedJobError(JobError):
    """job.json is missing, unreadable or holds fields of the wrong type. `problems`: one line each."""

    def __init__(self, problems: list[str], folder: str | os.PathLike | None = None):
        self.problems = list(problems)
        self.folder = Path(folder) if folder is not None else None
        where = f"{self.folder / JOB_FILE}: " if self.folder is not None else f"{JOB_FILE}: "
        super().__init__(where + "; ".join(self.problems))


_REQUIRED = ("id", "kind", "name")


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (from JSON) fits the dataclass annotation `hint`: int, float, str, bool, dict,
    and `X | None`. bool is not a number here, and numbers must be finite."""
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    hint = typing.get_origin(hint) or hint
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, hint)


def valid_time(value: float) -> bool:
    """Whether `value` (a finite number) is a time in unix seconds that can be shown as a date."""
    return 0 <= value <= MAX_TIME


def _fits(key: str, value: Any) -> bool:
    """Whether job.json's `key` may hold `value`: its type, and for a time a showable one."""
    if not _accepts(_hints()[key], value):
        return False
    return key not in TIME_FIELDS or value is None or valid_time(value)


def _type_name(hint: Any) -> str:
    parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "an object",
             type(None): "null"}
    return " or ".join(names.get(typing.get_origin(p) or p, str(p)) for p in parts)


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(JobRecord)


def valid_fields(data: Any) -> dict[str, Any]:
    """The fields of a (damaged) job.json that have the right type: what can be kept of it."""
    hints = _hints()
    if not isinstance(data, dict):
        return {}
    good = {k: v for k, v in data.items() if k in hints and _fits(k, v)}
    if good.get("status") not in STATUSES:
        good.pop("status", None)
    return good


def record_problems(data: Any) -> list[str]:
    """What is wrong with the contents of a job.json, one line per field; [] when it is fine."""
    if not isinstance(data, dict):
        return [f"not a JSON object (found {type(data).__name__})"]
    hints = _hints()
    problems = [f"{key} is missing" for key in _REQUIRED if key not in data]
    for key, hint in hints.items():
        if key in data and not _accepts(hint, data[key]):
            problems.append(f"{key} must be {_type_name(hint)} (found {json.dumps(data[key])[:60]})")
        elif key in data and not _fits(key, data[key]):
            problems.append(f"{key} must be a time in unix seconds, 0 to {MAX_TIME:.0f} "
                            f"(found {json.dumps(data[key])[:60]})")
    if isinstance(data.get("status"), str) and data["status"] not in STATUSES:
        problems.append(f"status {data['status']!r} is not one of {', '.join(STATUSES)}")
    return problems


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
    """The folder of job `job_id` (its job.json may be damaged: see `load_job`); JobError if there is none."""
    if not job_id or "/" in job_id or "\0" in job_id or job_id.startswith("."):
        raise JobError(f"invalid job id {job_id!r}")
    d = paths.jobs / job_id
    if not d.is_dir() or d.is_symlink():
        raise JobError(f"no job {job_id!r} in {paths.jobs}")
    return d


def create_job(paths: WorkspacePaths, kind: str, config: dict, name: str, *,
               group: str | None = None, status: str = "queued", num_processes: int = 1,
               queue_position: int | None = None, extra: dict | None = None,
               now: float | None = None, announce: bool = False) -> Path:
    """Make jobs/<id>/ with config.toml, job.json, an empty events.jsonl and the subfolders. With
    `announce`, events.jsonl starts with the job's first status event, written before job.json (the
    order `set_status` keeps). A full disk is named (DiskFullError) and leaves no folder behind."""
    if status not in STATUSES:
        raise JobError(f"invalid status {status!r}; accepted: {', '.join(STATUSES)}")
    try:
        config_text = tomli_w.dumps(config)
    except (TypeError, ValueError) as err:
        raise ConfigError([("", f"cannot be written as TOML: {err}")], source=f"{kind} config") from err
    now = time.time() if now is None else now
    with disk_full_guard(paths.jobs, "creating a job folder"):
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
            if announce:
                EventWriter(d).emit("status", status=status)
            rec = JobRecord(id=jid, kind=kind, name=name or jid, status=status, created_at=now,
                            workspace=str(paths.root), group=group, num_processes=int(num_processes),
                            queue_position=queue_position,
                            extra=dict(extra or {}))
            save_job(d, rec)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)  # no half-made job folders in the list
            raise
    return d


def read_job_json(job_dir: str | os.PathLike) -> Any:
    """The parsed job.json; DamagedJobError saying why when it is missing, empty or not JSON."""
    job_dir = Path(job_dir)
    try:
        raw = (job_dir / JOB_FILE).read_bytes()
    except FileNotFoundError:
        raise DamagedJobError([f"{JOB_FILE} is missing"], job_dir) from None
    except OSError as err:
        raise DamagedJobError([f"{JOB_FILE} cannot be read ({err.strerror or err})"], job_dir) from err
    if not raw.strip():
        raise DamagedJobError([f"{JOB_FILE} is empty"], job_dir)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedJobError([f"{JOB_FILE} is not UTF-8 text"], job_dir) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise DamagedJobError([f"{JOB_FILE} is not valid JSON ({err}): truncated or overwritten?"],
                              job_dir) from None


def load_job(job_dir: str | os.PathLike) -> JobRecord:
    """The JobRecord of a job folder; DamagedJobError (a JobError) saying what is wrong with its job.json."""
    job_dir = Path(job_dir)
    data = read_job_json(job_dir)
    problems = record_problems(data)
    if not problems and data["id"] != job_dir.name:
        problems = [f"id {data['id']!r} is not the name of its folder {job_dir.name!r}"]
    if problems:
        raise DamagedJobError(problems, job_dir)
    return JobRecord.from_dict(data)


def damaged_record(job_dir: str | os.PathLike, err: DamagedJobError) -> JobRecord:
    """How a job whose job.json is damaged is listed: status `damaged`, the problems in `error`, and what
    could still be read (kind, name, times) kept, so the user recognises it and can repair or delete it."""
    job_dir = Path(job_dir)
    try:
        data = read_job_json(job_dir)
    except DamagedJobError:
        data = {}
    good = valid_fields(data)
    try:
        made = job_dir.stat().st_mtime
    except OSError:
        made = 0.0
    return JobRecord(id=job_dir.name, kind=good.get("kind", "?"), name=good.get("name", job_dir.name),
                     status=DAMAGED, created_at=good.get("created_at", made),
                     started_at=good.get("started_at"), ended_at=good.get("ended_at"),
                     workspace=good.get("workspace", ""), group=good.get("group"),
                     pid=good.get("pid"), pid_start_time=good.get("pid_start_time"),
                     error=f"damaged job.json in {job_dir}: " + "; ".join(err.problems)
                           + ". Repair it (rebuilt from events.jsonl and config.toml) or delete the job.",
                     extra={"problems": err.problems, "folder": str(job_dir)})


def load_or_damaged(job_dir: str | os.PathLike) -> JobRecord:
    """`load_job`, or the `damaged` record of the folder: for listings, which must show every job."""
    try:
        return load_job(job_dir)
    except DamagedJobError as err:
        return damaged_record(job_dir, err)


def save_job(job_dir: str | os.PathLike, rec: JobRecord) -> None:
    """Write job.json atomically (the old file stays if the write fails)."""
    atomic_write_json(Path(job_dir) / JOB_FILE, rec.to_dict())


def job_lock(job_dir: str | os.PathLike):
    """The lock every read-modify-write of a job's job.json holds (supervisor and worker alike)."""
    return file_lock(Path(job_dir) / LOCK_FILE)


def update_job(job_dir: str | os.PathLike, change: Callable[[JobRecord], Any]) -> JobRecord:
    """Read job.json, apply `change(rec)` in place, write it back, under a lock shared by the
    supervisor and the worker so neither overwrites the other's transition. If `change` returns
    False the file is left as it is. Status changes go through `backend.jobs.status.set_status`."""
    job_dir = Path(job_dir)
    with job_lock(job_dir):
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
    re-parses only the files that changed. A job whose job.json is missing, unreadable or wrongly
    typed is listed as `damaged` (never skipped), except a folder younger than CREATION_GRACE_S
    without job.json, which create_job is still making."""

    def __init__(self, paths: WorkspacePaths):
        self.paths = paths
        self._cache: dict[str, tuple[tuple[int, int, int], JobRecord]] = {}

    def _read(self, name: str, now: float) -> JobRecord | None:
        """The (cached) record of folder `name`; None when it is no job (gone, or still being made)."""
        folder = os.path.join(self.paths.jobs, name)
        try:
            st = os.stat(os.path.join(folder, JOB_FILE))
        except FileNotFoundError:
            try:
                st = os.stat(folder)
            except FileNotFoundError:
                return None
            if now - st.st_mtime < CREATION_GRACE_S:
                return None
        except OSError:
            st = None
        key = (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else (0, 0, 0)
        cached = self._cache.get(name)
        if cached and cached[0] == key and st is not None:
            return cached[1]
        rec = load_or_damaged(folder)
        self._cache[name] = (key, rec)
        return rec

    def list(self, copy: bool = True) -> list[JobRecord]:
        """Every job, oldest first. With copy=False the cached records themselves (do not edit)."""
        recs: list[JobRecord] = []
        now = time.time()
        try:
            entries = list(os.scandir(self.paths.jobs))
        except FileNotFoundError:
            return []
        names = [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        for name in names:
            rec = self._read(name, now)
            if rec is not None:
                recs.append(rec)
        for gone in set(self._cache) - set(names):
            del self._cache[gone]
        recs.sort(key=lambda r: (r.created_at, r.id))
        # Cached records are shared: hand out copies so callers may edit theirs.
        return [r.copy() for r in recs] if copy else recs

    def refresh(self, recs: list[JobRecord]) -> list[JobRecord]:
        """`recs` re-read where their job.json changed since (one stat each; no folder listing).
        Jobs whose folder is gone are left out."""
        now = time.time()
        out = [self._read(r.id, now) for r in recs]
        return [r for r in out if r is not None]


def list_jobs(paths: WorkspacePaths) -> list[JobRecord]:
    """Every job in the workspace, oldest first."""
    return JobIndex(paths).list()
