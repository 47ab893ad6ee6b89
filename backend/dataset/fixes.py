"""One-click fixes for the validation report. None of them deletes anything: a file that has to go, or
the original of a converted image, is moved into `<dataset>/_quarantine/` keeping its relative path
(the scan ignores folders starting with `_`, so training no longer sees it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from backend.dataset.captions import normalize_extension, read_caption, write_caption
from backend.dataset.images import image_error, is_image_file, load_rgb
from backend.dataset.scan import DatasetScan, is_ignored_dir
from backend.dataset.validate import CAPTION_EXTENSIONS, needs_conversion
from backend.errors import DatasetError

QUARANTINE = "_quarantine"
# PIL format names by extension, with the options used to re-save a converted image.
_SAVE_AS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
            ".webp": ("WEBP", {"quality": 95}), ".bmp": ("BMP", {})}


@dataclass(frozen=True)
class Change:
    action: str  # "moved", "converted", "created", "renamed", "skipped"
    path: Path  # the file acted on (its old path for moves and renames)
    target: Path | None  # where it went / what was written
    detail: str = ""


def _free_path(path: Path) -> Path:
    """`path`, or `name (1).ext`, `name (2).ext`, … whichever does not exist yet."""
    if not path.exists():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _quarantine_target(root: Path, file: Path) -> Path:
    try:
        rel = file.absolute().relative_to(root)
    except ValueError as err:
        raise DatasetError(f"{file} is not inside the dataset folder {root}: not moved") from err
    if rel.parts and rel.parts[0] == QUARANTINE:
        raise DatasetError(f"{file} is already in {QUARANTINE}")
    return _free_path(root / QUARANTINE / rel)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():  # _free_path checked, but never overwrite even if something appeared since
        raise DatasetError(f"cannot move {src} to {dst}: the target exists")
    os.rename(src, dst)


def _sidecars(image: Path) -> list[Path]:
    return [image.with_suffix(e) for e in CAPTION_EXTENSIONS if image.with_suffix(e).is_file()]


def quarantine(dataset_root: str | os.PathLike, files: Iterable[str | os.PathLike]) -> list[Change]:
    """Move files (and the captions next to images) into `<root>/_quarantine/`, keeping relative paths."""
    root = Path(os.path.abspath(dataset_root))
    sources = [Path(os.path.abspath(f)) for f in files]
    for src in sources:  # refuse before moving anything
        _quarantine_target(root, src)
    changes: list[Change] = []
    seen: set[Path] = set()
    for src in sources:
        if src in seen:
            continue
        seen.add(src)
        if not src.exists():
            changes.append(Change("skipped", src, None, "no longer exists"))
            continue
        group = [src] + (_sidecars(src) if src.is_file() and is_image_file(src) else [])
        for item in group:
            seen.add(item)
            dst = _quarantine_target(root, item)
            _move(item, dst)
            changes.append(Change("moved", item, dst, f"moved to {QUARANTINE}"))
    return changes


def convert_modes(files: Iterable[str | os.PathLike], dataset_root: str | os.PathLike | None = None,
                  ) -> list[Change]:
    """Rewrite RGBA/LA/P/CMYK/16-bit images as RGB (alpha on white, EXIF rotation applied) in place.

    The original goes to `<dataset_root>/_quarantine/` (default: a `_quarantine` next to each image).
    Images already in RGB or L are left alone and reported as skipped.
    """
    changes: list[Change] = []
    for f in files:
        path = Path(f).absolute()
        root = Path(dataset_root).absolute() if dataset_root is not None else path.parent
        fmt, options = _SAVE_AS.get(path.suffix.lower(), (None, {}))
        if fmt is None:
            raise DatasetError(f"{path}: cannot convert, not an image ({', '.join(_SAVE_AS)})")
        try:
            with Image.open(path) as img:
                mode = img.mode
            if not needs_conversion(mode):
                changes.append(Change("skipped", path, None, f"mode {mode} needs no conversion"))
                continue
            rgb = load_rgb(path)
        except OSError as err:
            raise DatasetError(f"{path}: cannot convert, the image cannot be read ({image_error(err)})") from err
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                rgb.save(out, format=fmt, **options)
            original = _quarantine_target(root, path)
            _move(path, original)
            try:
                os.replace(tmp, path)
            except OSError:
                os.rename(original, path)  # put the original back rather than leave a hole
                raise
        finally:
            tmp.unlink(missing_ok=True)
        changes.append(Change("converted", path, original, f"{mode} → RGB; original kept in {QUARANTINE}"))
    return changes


def create_missing_captions(scan: DatasetScan, trigger: str, include_empty: bool = True) -> list[Change]:
    """Write a caption holding `trigger` (or the subset's class tokens when blank) for uncaptioned images.

    Never overwrites a caption with text in it; an image whose caption exists under another extension is
    skipped (rename that one instead, or the two would disagree).
    """
    trigger = trigger.strip()
    ext = scan.caption_extension
    changes: list[Change] = []
    for subset in scan.subsets:
        text = trigger or subset.class_tokens.strip()
        for item in subset.images:
            if item.caption or (item.caption == "" and not include_empty):
                continue
            if not text:
                raise DatasetError(f"no trigger word given and folder {subset.name} has no class tokens "
                                   "(N_name): type the caption to write")
            try:
                current = read_caption(item.caption_path)
            except UnicodeDecodeError:
                changes.append(Change("skipped", item.path, item.caption_path,
                                      "caption file is not UTF-8 text: re-save it as UTF-8"))
                continue
            if current:
                changes.append(Change("skipped", item.path, item.caption_path, "caption written meanwhile"))
                continue
            others = [o for o in _sidecars(item.path) if o.suffix != ext]
            if others and not item.caption_path.exists():
                changes.append(Change("skipped", item.path, others[0],
                                      f"has a {others[0].suffix} caption: rename it to {ext} instead"))
                continue
            write_caption(item.caption_path, text)
            changes.append(Change("created", item.path, item.caption_path, text))
    return changes


def rename_caption_extension(root: str | os.PathLike, from_ext: str, to_ext: str) -> list[Change]:
    """Rename `name<from_ext>` → `name<to_ext>` for every caption next to an image (all dataset folders).

    A caption whose target already exists is left alone and reported as skipped (never overwritten).
    """
    base = Path(root).absolute()
    src_ext, dst_ext = normalize_extension(from_ext), normalize_extension(to_ext)
    if src_ext.lower() == dst_ext.lower():
        raise DatasetError(f"caption extensions are the same ({src_ext}): nothing to rename")
    if not base.is_dir():
        raise DatasetError(f"dataset folder {base} does not exist")
    changes: list[Change] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not is_ignored_dir(d))
        stems = {Path(f).stem for f in files if is_image_file(Path(f))}
        for name in sorted(files):
            src = Path(folder) / name
            if src.suffix.lower() != src_ext.lower() or src.stem not in stems:
                continue
            dst = src.with_suffix(dst_ext)
            if dst.exists():
                changes.append(Change("skipped", src, dst, f"{dst.name} exists: not overwritten"))
                continue
            os.rename(src, dst)
            changes.append(Change("renamed", src, dst, f"{src_ext} → {dst_ext}"))
    return changes
