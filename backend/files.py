"""File primitives shared by every process: atomic writes, JSON reads, one file lock, temp clean-up,
and the disk-full message.

Atomic write: the data goes to a temp file in the same folder, named `.<name>.<random>.tmp` (see
`temp_path`), is fsynced, then replaces the target with `os.replace`, so a reader sees the old file or
the new one, never half of one. If anything fails (disk full, an object json cannot serialize) the
temp file is removed and the old file stays. A process killed between the two leaves its temp file
behind: `remove_orphan_temps` finds those by their name and removes them at the next start.

Lock: `file_lock(path)` is the one advisory lock (flock on a lock file) used for job.json updates,
control requests and the queue, between threads and processes alike.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend.errors import DiskFullError

TEMP_SUFFIX = ".tmp"
# `.<target name>.[<tag>.]<8 random chars>.tmp[<suffix>]`, as tempfile.mkstemp names them here.
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]{1,8})?$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# --- disk full ---------------------------------------------------------------------------------------------
def _free_text(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        try:
            free = shutil.disk_usage(candidate).free
        except OSError:
            continue
        for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
            if free < 1024 or unit == "TiB":
                return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
            free /= 1024
    return "unknown"


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _DISK_FULL


def disk_full_error(err: OSError, folder: str | os.PathLike, what: str = "") -> DiskFullError:
    """The error to raise for a full disk (or quota): names the folder and what is still free there."""
    folder = Path(folder)
    doing = f" while {what}" if what else ""
    return DiskFullError(f"no space left on the device holding {folder}{doing} ({_free_text(folder)} free): "
                         "free some space there (old checkpoints, caches under workspace/cache) or choose "
                         "another folder, then try again", folder)


@contextmanager
def disk_full_guard(folder: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Turn an ENOSPC/EDQUOT OSError raised inside the block into a DiskFullError naming `folder`."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(err, folder, what) from err
        raise


# --- atomic writes ---------------------------------------------------------------------------------------------
def temp_path(final: str | os.PathLike, tag: str = "", suffix: str = "") -> Path:
    """A new empty temp file beside `final`, named so `remove_orphan_temps` recognises it."""
    final = Path(final)
    prefix = f".{final.name}." + (f"{tag}." if tag else "")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX + suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def replacing(final: str | os.PathLike, tag: str = "write", suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `final` to write to; on success it replaces `final` atomically. On any
    error the temp file is removed and `final` is left as it was; a full disk is named (DiskFullError)."""
    final = Path(final)
    with disk_full_guard(final.parent, f"writing {final.name}"):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final, tag, suffix)
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` atomically (temp file + fsync + os.replace), creating its folder.

    `durable=False` skips the fsync: for caches and for bulk writes of many small files (captions),
    where a crash may lose the newest writes but never leaves half a file."""
    with replacing(path, tag="") as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Serialize `obj` first (so a TypeError leaves the old file untouched), then write atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The parsed JSON at `path`, or `default` when the file is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return default


# --- the lock ----------------------------------------------------------------------------------------------
@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the lock file `path` (created if missing) for the block.

    flock belongs to the open file description, so two threads that each enter this block exclude each
    other as two processes do. Not re-entrant: never take the same lock twice in one thread."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- orphan temp files ------------------------------------------------------------------------------------------
def is_orphan_temp_name(name: str) -> bool:
    """Whether `name` is one of our atomic-write temp files (`.<target>.<random>.tmp`)."""
    return bool(_TEMP_RE.match(name))


def remove_orphan_temps(folder: str | os.PathLike, *, recursive: bool = False,
                        older_than_s: float = 0.0, now: float | None = None) -> list[Path]:
    """Remove the temp files that atomic writes left in `folder` (and below, with `recursive`) when
    their process was killed. Only files whose name matches ours and whose last change is at least
    `older_than_s` old: call it where no writer can be busy, or with an age that no write takes."""
    folder = Path(folder)
    now = time.time() if now is None else now
    removed: list[Path] = []
    walker = os.walk(folder) if recursive else [(str(folder), [], _names(folder))]
    for dirpath, _dirs, names in walker:
        for name in names:
            if not is_orphan_temp_name(name):
                continue
            p = Path(dirpath) / name
            try:
                st = p.lstat()
                if not p.is_symlink() and now - st.st_mtime >= older_than_s:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                continue
    return removed


def _names(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
