"""Scanning a dataset folder the way kohya sd-scripts reads it (no image is decoded here).

Layouts accepted, checked in this order:
1. the folder holds `N_name` subfolders: each is a subset repeated N times (kohya DreamBooth layout);
2. the folder itself is named `N_name`: one subset repeated N times (the user picked the subfolder);
3. a flat folder of images: one subset with `default_repeats`.
Folders whose name starts with `_` (e.g. `_quarantine`) or `.` are never read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from backend.dataset.captions import caption_path, normalize_extension, read_caption
from backend.dataset.images import IMAGE_EXTENSIONS, is_image_file
from backend.errors import DatasetError

_REPEATS_RE = re.compile(r"^(\d+)_(.*)$", re.DOTALL)
LOOKED_FOR = ", ".join(sorted(IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class ImageItem:
    path: Path
    caption_path: Path
    caption: str | None  # None: no caption file; "": the file is empty
    subset: str  # the subset's folder name, e.g. "10_my concept"
    repeats: int
    is_reg: bool


@dataclass
class Subset:
    name: str  # folder name as kohya keys it in ss_tag_frequency / ss_dataset_dirs, e.g. "10_a"
    path: Path
    repeats: int
    is_reg: bool
    images: list[ImageItem] = field(default_factory=list)

    @property
    def class_tokens(self) -> str:
        """The caption kohya falls back to when an image has none: the folder name after `N_`."""
        parsed = parse_repeats(self.name)
        return parsed[1] if parsed else self.name

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def images_per_epoch(self) -> int:
        return len(self.images) * self.repeats


@dataclass
class DatasetScan:
    root: Path
    subsets: list[Subset]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why it is not used)
    caption_extension: str = ".txt"

    @property
    def images(self) -> list[ImageItem]:
        return [item for s in self.subsets for item in s.images]

    @property
    def num_images(self) -> int:
        return sum(len(s.images) for s in self.subsets)

    @property
    def images_per_epoch(self) -> int:
        """Images seen per epoch: each subset's image count times its repeats."""
        return sum(s.images_per_epoch for s in self.subsets)


def parse_repeats(folder_name: str) -> tuple[int, str] | None:
    """`"10_my concept"` → `(10, "my concept")`; None when the name is not `N_name` with N ≥ 1."""
    m = _REPEATS_RE.match(folder_name)
    if not m:
        return None
    n = int(m.group(1))
    return (n, m.group(2)) if n >= 1 else None


def is_ignored_dir(name: str) -> bool:
    return name.startswith("_") or name.startswith(".")


def scan_dataset(path: str | os.PathLike, caption_extension: str = ".txt", default_repeats: int = 1,
                 is_reg: bool = False, recursive: bool = False) -> DatasetScan:
    """Find the subsets, images and captions under `path`; raise DatasetError when nothing usable is found."""
    root = Path(path).expanduser().absolute()
    ext = normalize_extension(caption_extension)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DatasetError(f"dataset folder {root} {what}")
    if default_repeats < 1:
        raise DatasetError(f"default_repeats must be at least 1, got {default_repeats}")

    dirs, files = _list_dir(root)
    kohya_dirs = [d for d in dirs if not is_ignored_dir(d.name) and parse_repeats(d.name)]
    skipped: list[tuple[Path, str]] = []
    subsets: list[Subset] = []

    if kohya_dirs:
        for f in files:
            if is_image_file(f):
                skipped.append((f, "image next to N_name subfolders is not used by training: "
                                   "move it into one of them"))
        for d in dirs:
            if is_ignored_dir(d.name):
                continue
            if d not in kohya_dirs:
                why = ("repeats 0: the folder is not used" if _REPEATS_RE.match(d.name)
                       else "folder not named N_name (N = repeats), not used")
                skipped.append((d, why))
        for d in kohya_dirs:
            n, _ = parse_repeats(d.name)  # type: ignore[misc]
            subsets.append(_read_subset(d, n, ext, is_reg, recursive, skipped))
    else:
        parsed = parse_repeats(root.name)
        repeats = parsed[0] if parsed else default_repeats
        subsets.append(_read_subset(root, repeats, ext, is_reg, recursive, skipped))

    empty = [s for s in subsets if not s.images]
    subsets = [s for s in subsets if s.images]
    if not subsets:
        raise DatasetError(_no_images_message(root, dirs, kohya_dirs, recursive))
    for s in empty:
        skipped.append((s.path, f"no images ({LOOKED_FOR}) in this subfolder"))
    return DatasetScan(root=root, subsets=subsets, skipped=skipped, caption_extension=ext)


def entry_names(folder: Path) -> tuple[list[str], list[str]]:
    """Names of the subfolders and files of `folder` (links followed), unsorted; os.scandir avoids a stat
    per entry. OSError when the folder cannot be listed."""
    dirs: list[str] = []
    files: list[str] = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=True):
                dirs.append(entry.name)
            elif entry.is_file(follow_symlinks=True):
                files.append(entry.name)
    return dirs, files


def _list_dir(folder: Path) -> tuple[list[Path], list[Path]]:
    """Subfolders and files of `folder`, sorted by name."""
    try:
        dirs, files = entry_names(folder)
    except OSError as err:
        raise DatasetError(f"cannot read dataset folder {folder}: {err.strerror or err}") from err
    return [folder / d for d in sorted(dirs)], [folder / f for f in sorted(files)]


def _read_subset(folder: Path, repeats: int, ext: str, is_reg: bool, recursive: bool,
                 skipped: list[tuple[Path, str]]) -> Subset:
    subset = Subset(name=folder.name, path=folder, repeats=repeats, is_reg=is_reg)
    pending = [folder]
    while pending:
        current = pending.pop(0)
        dirs, files = _list_dir(current)
        image_stems = {f.stem for f in files if is_image_file(f)}
        for f in files:
            if is_image_file(f):
                cap = caption_path(f, ext)
                try:
                    caption = read_caption(cap)
                except (UnicodeDecodeError, OSError) as err:
                    caption = None  # validate reports it as caption_unreadable
                    skipped.append((cap, f"caption cannot be read as UTF-8 text ({err}): not used"))
                subset.images.append(ImageItem(path=f, caption_path=cap, caption=caption,
                                               subset=subset.name, repeats=repeats, is_reg=is_reg))
            elif f.stem in image_stems or f.name.startswith("."):
                continue  # a sidecar (caption in any extension, latent cache) or a hidden file
            elif f.suffix.lower() == ext.lower():
                skipped.append((f, "caption without an image of the same name"))
            else:
                skipped.append((f, f"not an image ({LOOKED_FOR}) or a caption ({ext})"))
        for d in dirs:
            if is_ignored_dir(d.name):
                continue
            if recursive:
                pending.append(d)
            else:
                skipped.append((d, "subfolder not read (recursive is off)"))
    return subset


def _no_images_message(root: Path, dirs: list[Path], kohya_dirs: list[Path], recursive: bool) -> str:
    where = "in its N_name subfolders" if kohya_dirs else "in it"
    msg = f"no images found in dataset folder {root}: looked for {LOOKED_FOR} files {where}"
    if kohya_dirs:
        return msg + " (" + ", ".join(d.name for d in kohya_dirs) + " are empty)"
    with_images: list[str] = []
    with_kohya: list[str] = []
    for d in dirs:
        if is_ignored_dir(d.name):
            continue
        sub_dirs, sub_files = _list_dir(d)
        if any(is_image_file(f) for f in sub_files):
            with_images.append(d.name)
        if any(parse_repeats(s.name) and not is_ignored_dir(s.name) for s in sub_dirs):
            with_kohya.append(d.name)
    if with_kohya:
        msg += (f". {', '.join(with_kohya)} holds N_name subfolders: pick that folder "
                f"(e.g. {root / with_kohya[0]})")
    if with_images and not recursive:
        example = with_images[0]
        msg += (f". Images exist one level deeper in {', '.join(with_images)}, whose names are not "
                f"N_name: name those subfolders N_name (e.g. 10_{example}, N = repeats) and pick "
                f"the parent folder {root}, or pick one subfolder itself")
    return msg
