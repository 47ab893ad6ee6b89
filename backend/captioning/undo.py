"""One undo level per caption-writing action: the previous caption files, byte for byte.

`<workspace>/cache/caption-undo/<id>/` holds `files/<path relative to the dataset>` copies and
`manifest.json` (written last, so a snapshot without one is incomplete and ignored). Captions that did
not exist are listed too: restoring removes them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backend.errors import DatasetError
from backend.files import atomic_write_bytes
from backend.paths import WorkspacePaths

MANIFEST = "manifest.json"


def undo_root(paths: WorkspacePaths) -> Path:
    return paths.root / "cache" / "caption-undo"


@dataclass(frozen=True)
class SnapshotEntry:
    path: str  # relative to the dataset, POSIX separators
    existed: bool


@dataclass
class Snapshot:
    id: str
    folder: Path
    dataset: Path
    label: str
    created: float
    entries: list[SnapshotEntry] = field(default_factory=list)

    @property
    def num_existing(self) -> int:
        return sum(e.existed for e in self.entries)

    @property
    def created_text(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class RestoreResult:
    restored: list[Path]
    removed: list[Path]


def _relative(dataset: Path, caption: Path) -> str:
    try:
        return Path(caption).absolute().relative_to(dataset).as_posix()
    except ValueError:
        raise DatasetError(f"caption file {caption} is outside the dataset folder {dataset}") from None


def create_snapshot(paths: WorkspacePaths, dataset: str | os.PathLike, caption_files: Iterable[Path],
                    label: str) -> Snapshot:
    """Save the current state of `caption_files` (present or not) before something overwrites them."""
    dataset = Path(dataset).absolute()
    stamp = time.time()
    snap_id = datetime.fromtimestamp(stamp).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = undo_root(paths) / snap_id
    files = folder / "files"
    files.mkdir(parents=True)
    entries: list[SnapshotEntry] = []
    seen: set[str] = set()
    for cap in caption_files:
        rel = _relative(dataset, Path(cap))
        if rel in seen:
            continue
        seen.add(rel)
        src = dataset / rel
        existed = src.is_file()
        if existed:
            (files / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, files / rel)
        entries.append(SnapshotEntry(rel, existed))
    snap = Snapshot(snap_id, folder, dataset, label, stamp, entries)
    manifest = {"id": snap_id, "dataset": str(dataset), "label": label, "created": stamp,
                "entries": [{"path": e.path, "existed": e.existed} for e in entries]}
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=1).encode(), durable=False)
    return snap


def load_snapshot(folder: Path) -> Snapshot | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return Snapshot(data["id"], folder, Path(data["dataset"]), data.get("label", ""), data["created"],
                    [SnapshotEntry(e["path"], e["existed"]) for e in data["entries"]])


def list_snapshots(paths: WorkspacePaths, dataset: str | os.PathLike | None = None) -> list[Snapshot]:
    """Complete snapshots, newest first; only those of `dataset` when given."""
    root = undo_root(paths)
    if not root.is_dir():
        return []
    want = Path(dataset).absolute() if dataset is not None else None
    snaps = [s for s in (load_snapshot(d) for d in root.iterdir() if d.is_dir()) if s is not None]
    if want is not None:
        snaps = [s for s in snaps if s.dataset == want]
    return sorted(snaps, key=lambda s: (s.created, s.id), reverse=True)


def get_snapshot(paths: WorkspacePaths, snapshot_id: str) -> Snapshot:
    snap = load_snapshot(undo_root(paths) / snapshot_id) if "/" not in snapshot_id else None
    if snap is None:
        raise DatasetError(f"no caption undo snapshot {snapshot_id!r} in {undo_root(paths)}")
    return snap


def restore(snapshot: Snapshot) -> RestoreResult:
    """Put every caption back as it was: same bytes, and remove the ones that did not exist."""
    restored, removed = [], []
    for e in snapshot.entries:
        target = snapshot.dataset / e.path
        if e.existed:
            atomic_write_bytes(target, (snapshot.folder / "files" / e.path).read_bytes(), durable=False)
            restored.append(target)
        elif target.exists():
            target.unlink()
            removed.append(target)
    return RestoreResult(restored, removed)


def delete_snapshot(snapshot: Snapshot) -> None:
    (snapshot.folder / MANIFEST).unlink(missing_ok=True)  # first, so a half-deleted one is never listed
    shutil.rmtree(snapshot.folder, ignore_errors=True)


def prune_snapshots(paths: WorkspacePaths, dataset: str | os.PathLike, keep: int = 20) -> int:
    """Delete all but the `keep` newest snapshots of a dataset; returns how many were deleted."""
    old = list_snapshots(paths, dataset)[keep:]
    for snap in old:
        delete_snapshot(snap)
    return len(old)
