"""Atomic file writes: other processes read these files while we write them.

A write goes to a temp file in the same folder, is fsynced, then replaces the target with
`os.replace`, so a reader sees the old file or the new one, never half of one. If anything fails
(disk full, an object json cannot serialize) the temp file is removed and the old file stays.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` atomically (temp file + fsync + os.replace), creating its folder.

    `durable=False` skips the fsync: for caches and for bulk writes of many small files (captions),
    where a crash may lose the newest writes but never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Keep the previous file; drop the half-written temp file, then let the error through.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


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
    except (json.JSONDecodeError, UnicodeDecodeError):
        return default
