"""Repeats and concepts: kohya `N_name` subfolders, renamed to change N; datasets listed in the workspace."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from backend.dataset.counts import dataset_counts
from backend.dataset.images import is_image_file
from backend.dataset.scan import is_ignored_dir, parse_repeats
from backend.dataset.validate import CAPTION_EXTENSIONS
from backend.errors import DatasetError
from backend.paths import WorkspacePaths

_CONCEPT_RE = re.compile(r"^[^/\\\x00]+$")


class DatasetEntry(NamedTuple):
    name: str
    path: Path
    n_images: int


class SubfolderInfo(NamedTuple):
    name: str  # folder name, e.g. "10_my concept"
    path: Path
    repeats: int
    concept: str  # the part after N_ (kohya's class tokens)
    n_images: int


def _check_repeats(repeats: int) -> int:
    if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= 10_000:
        raise DatasetError(f"repeats must be a whole number from 1 to 10000, got {repeats!r}")
    return repeats


def _check_concept(concept: str) -> str:
    clean = concept.strip()
    if not clean or not _CONCEPT_RE.match(clean) or clean in (".", "..") or clean.startswith((".", "_")):
        raise DatasetError(f"concept name {concept!r} is not usable: give a name without / or \\ that does "
                           "not start with . or _")
    return clean


def _count_images(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.is_file() and is_image_file(Path(e.name)))
    except OSError:
        return 0


def list_subfolders(dataset_root: str | os.PathLike) -> list[SubfolderInfo]:
    """Every `N_name` subfolder of a dataset, empty ones included (the scan leaves those out)."""
    root = Path(dataset_root).absolute()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not is_ignored_dir(p.name)):
        parsed = parse_repeats(d.name)
        if parsed:
            out.append(SubfolderInfo(d.name, d, parsed[0], parsed[1], _count_images(d)))
    return out


def set_repeats(subset_dir: str | os.PathLike, repeats: int) -> Path:
    """Rename `5_x` → `<repeats>_x`; refuses when that name is taken. Returns the new path."""
    folder = Path(subset_dir).absolute()
    _check_repeats(repeats)
    if not folder.is_dir():
        raise DatasetError(f"subfolder {folder} does not exist")
    parsed = parse_repeats(folder.name)
    if not parsed:
        raise DatasetError(f"{folder.name} is not an N_name folder: rename it to N_{folder.name} (N = repeats), "
                           "or use 'Add subfolder' with 'Move the images lying directly in the dataset into it'")
    return _rename(folder, folder.with_name(f"{repeats}_{parsed[1]}"))


def prefix_subfolder(subfolder: str | os.PathLike, repeats: int) -> Path:
    """Rename a plain subfolder `x` → `<repeats>_x` so training reads it with those repeats."""
    folder = Path(subfolder).absolute()
    _check_repeats(repeats)
    if not folder.is_dir():
        raise DatasetError(f"subfolder {folder} does not exist")
    if parse_repeats(folder.name):
        return set_repeats(folder, repeats)
    return _rename(folder, folder.with_name(f"{repeats}_{_check_concept(folder.name)}"))


def _rename(folder: Path, target: Path) -> Path:
    if target == folder:
        return folder
    if target.exists():
        raise DatasetError(f"cannot rename {folder.name} to {target.name}: {target} already exists")
    os.rename(folder, target)
    return target


def add_subfolder(dataset_root: str | os.PathLike, concept: str, repeats: int) -> Path:
    """Create `<root>/<repeats>_<concept>`; refuses when a subfolder of that name exists."""
    root = Path(dataset_root).absolute()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    target = root / f"{_check_repeats(repeats)}_{_check_concept(concept)}"
    if target.exists():
        raise DatasetError(f"subfolder {target} already exists")
    target.mkdir()
    return target


def nest_flat_dataset(dataset_root: str | os.PathLike, concept: str, repeats: int) -> Path:
    """Move the images (and captions) lying directly in a flat dataset into a new `N_concept` subfolder."""
    root = Path(dataset_root).absolute()
    target = root / f"{_check_repeats(repeats)}_{_check_concept(concept)}"
    if target.exists():
        raise DatasetError(f"subfolder {target} already exists")
    images = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
    if not images:
        raise DatasetError(f"no images directly in {root} to move")
    target.mkdir()
    for img in images:
        for f in [img] + [img.with_suffix(e) for e in CAPTION_EXTENSIONS if img.with_suffix(e).is_file()]:
            os.rename(f, target / f.name)
    return target


def list_datasets(paths: WorkspacePaths) -> list[DatasetEntry]:
    """The datasets in `workspace/datasets/` with their image counts (0 when one cannot be scanned):
    counted from folder listings, no caption read, and kept while the folders are unchanged."""
    return [DatasetEntry(name, path, n) for name, path, n in dataset_counts(paths)]
