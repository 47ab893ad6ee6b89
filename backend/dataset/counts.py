"""How many images each dataset of the workspace holds, for the dataset pickers of four tabs.

Counted as `scan_dataset` finds them (the same layouts: `N_name` subfolders, an `N_name` folder, a
flat folder; no recursion) but from directory listings alone: no caption is read. Counts are kept
in `workspace/cache/dataset_counts.json` keyed by the modification times of the folders counted
(adding, removing or renaming an image changes its folder's), so a page load lists no folder that
did not change.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from backend.dataset.images import is_image_file
from backend.dataset.scan import entry_names, is_ignored_dir, parse_repeats
from backend.files import atomic_write_bytes
from backend.paths import WorkspacePaths

log = logging.getLogger(__name__)
CACHE_VERSION = 1
# A folder changed this recently may change again within its clock tick: count it again next time.
SETTLE_NS = 2_000_000_000

Signature = list[list]  # [[folder name relative to the dataset ("" = the dataset itself), mtime_ns], …]


def cache_file(paths: WorkspacePaths) -> Path:
    return paths.root / "cache" / "dataset_counts.json"


def _images(names: list[str]) -> int:
    return sum(1 for n in names if is_image_file(Path(n)))


def count_images(root: Path) -> tuple[int, Signature]:
    """(images training would use, the folders counted with their mtimes). 0 when unreadable."""
    try:
        signature: Signature = [["", root.stat().st_mtime_ns]]
        dirs, files = entry_names(root)
        subsets = sorted(d for d in dirs if not is_ignored_dir(d) and parse_repeats(d))
        if not subsets:  # a flat folder, or the N_name folder itself
            return _images(files), signature
        total = 0
        for name in subsets:
            sub = root / name
            signature.append([name, sub.stat().st_mtime_ns])
            total += _images(entry_names(sub)[1])
        return total, signature
    except OSError:
        return 0, []


def _still_valid(root: Path, entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("sig"), list) or not entry["sig"]:
        return False
    try:
        mtimes = [(root / name if name else root).stat().st_mtime_ns for name, _ in entry["sig"]]
    except (OSError, TypeError, ValueError):
        return False
    recorded = [m for _, m in entry["sig"]]
    return mtimes == recorded and isinstance(entry.get("n"), int) and entry.get("at", 0) - max(recorded) > SETTLE_NS


def dataset_counts(paths: WorkspacePaths) -> list[tuple[str, Path, int]]:
    """(name, folder, image count) of every dataset in `workspace/datasets/`, sorted by name; from the
    cache where the folders have not changed since they were counted."""
    base = paths.datasets
    if not base.is_dir():
        return []
    path = cache_file(paths)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entries = cached.get("datasets") if isinstance(cached, dict) and cached.get("version") == CACHE_VERSION else {}
    entries = entries if isinstance(entries, dict) else {}
    now = time.time_ns()
    out, fresh, changed = [], {}, False
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entry = entries.get(d.name)
        if _still_valid(d, entry):
            n = int(entry["n"])
        else:
            n, sig = count_images(d)
            entry, changed = {"n": n, "sig": sig, "at": now}, True
        fresh[d.name] = entry
        out.append((d.name, d, n))
    if changed or set(fresh) != set(entries):
        try:
            payload = {"version": CACHE_VERSION, "datasets": fresh}
            atomic_write_bytes(path, json.dumps(payload, separators=(",", ":")).encode("utf-8"), durable=False)
        except OSError as err:  # a read-only workspace: the counts are right, only not kept
            log.warning("cannot keep the dataset counts in %s: %s", path, err)
    return out
