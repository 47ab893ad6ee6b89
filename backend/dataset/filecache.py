"""A small JSON cache of per-file facts, keyed by path + mtime + size, so re-checks skip unchanged files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from backend.files import atomic_write_bytes
from backend.paths import WorkspacePaths


def dataset_cache_dir(paths: WorkspacePaths) -> Path:
    return paths.root / "cache" / "dataset"


def thumbs_cache_dir(paths: WorkspacePaths) -> Path:
    return paths.root / "cache" / "thumbs"


def file_key(path: Path) -> tuple[str, int, int] | None:
    """(absolute path, mtime_ns, size), or None when the file cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.absolute()), st.st_mtime_ns, st.st_size)


class FileInfoCache:
    """Facts about files under one dataset root, stored in `<cache_dir>/<hash of root>.json`.

    An entry is reused only when the file's mtime and size are unchanged and the `version` matches (bump
    it when the facts computed change). A cache file that cannot be read is treated as empty.
    """

    def __init__(self, cache_dir: Path | None, root: Path, version: int):
        self.version = version
        self.path = (cache_dir / (hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:20] + ".json")
                     if cache_dir is not None else None)
        self.root = str(root.absolute())
        self._entries: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()
        self.hits = 0
        self.misses = 0
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("version") == self.version and isinstance(
                data.get("entries"), dict):
            self._entries = data["entries"]

    def get(self, key: tuple[str, int, int]) -> dict[str, Any] | None:
        path, mtime, size = key
        entry = self._entries.get(path)
        if entry is not None and entry.get("mtime_ns") == mtime and entry.get("size") == size:
            self._used.add(path)
            self.hits += 1
            return entry["info"]
        self.misses += 1
        return None

    def put(self, key: tuple[str, int, int], info: dict[str, Any]) -> None:
        path, mtime, size = key
        self._entries[path] = {"mtime_ns": mtime, "size": size, "info": info}
        self._used.add(path)

    def save(self) -> None:
        """Write the entries used in this run (stale ones drop out), atomically."""
        if self.path is None:
            return
        entries = {k: v for k, v in self._entries.items() if k in self._used}
        payload = {"version": self.version, "root": self.root, "entries": entries}
        atomic_write_bytes(self.path, json.dumps(payload, separators=(",", ":")).encode("utf-8"), durable=False)
