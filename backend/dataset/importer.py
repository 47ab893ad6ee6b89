"""Importing a dataset: a zip into `workspace/datasets/<name>`, or a folder already on the server.

A zip is checked entry by entry before anything is written (paths, links, devices, encryption, sizes,
compression ratios), extracted into a hidden temporary sibling folder, and renamed into place only when
complete. A refusal raises DatasetError naming the entry and leaves the workspace as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from backend.dataset.images import is_image_file, unreadable_reason
from backend.dataset.scan import parse_repeats, scan_dataset
from backend.dataset.validate import CAPTION_EXTENSIONS
from backend.errors import DatasetError
from backend.files import disk_full_error, is_disk_full
from backend.paths import WorkspacePaths

_NAME_RE = re.compile(r"^[\w][\w .()+-]*$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    max_total_bytes: int = 10 * 1024**3  # uncompressed, all entries together
    max_files: int = 50_000
    max_ratio: float = 200.0  # uncompressed / compressed, per entry (deflated zeros reach ~1000)
    ratio_min_bytes: int = 1024**2  # small entries may compress well without being a bomb


@dataclass
class ImportResult:
    name: str
    path: Path
    images: int
    captions: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry or file, why it was not taken)
    in_place: bool = False
    # Images taken but unreadable, (path relative to the dataset, why): kept, so nothing is lost; the
    # dataset check flags them and its "Move to _quarantine" takes them out.
    broken: list[tuple[str, str]] = field(default_factory=list)


def validate_dataset_name(name: str) -> str:
    """The name stripped, or DatasetError saying what a dataset name may contain."""
    clean = (name or "").strip()
    if not clean or len(clean) > 100 or not _NAME_RE.match(clean) or clean.endswith("."):
        raise DatasetError(
            f"dataset name {name!r} is not usable: use 1–100 letters, digits, spaces and . _ - ( ) +, "
            "starting with a letter or digit and not ending with a dot")
    return clean


def _classify(rel: PurePosixPath) -> str | None:
    """None when the entry is taken, else why it is skipped."""
    if any(p.startswith(".") or p == "__MACOSX" for p in rel.parts):
        return "hidden or macOS metadata"
    if any(p.startswith("_") for p in rel.parts[:-1]):
        return "inside a folder starting with _ (not read by training)"
    if is_image_file(Path(rel.name)) or rel.suffix.lower() in CAPTION_EXTENSIONS:
        return None
    return "not an image or a caption"


def _entry_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path, or DatasetError when it could escape the target folder."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetError(f"zip entry {raw!r} refused: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"zip entry {raw!r} refused: '..' would write outside the dataset folder")
    if "\x00" in name:
        raise DatasetError(f"zip entry {raw!r} refused: NUL in the name")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_entry(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise DatasetError(f"zip entry {info.filename!r} refused: symbolic link")
    if mode and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetError(f"zip entry {info.filename!r} refused: device, pipe or socket")
    if info.flag_bits & 0x1:
        raise DatasetError(f"zip entry {info.filename!r} refused: encrypted")
    if info.file_size >= limits.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise DatasetError(f"zip entry {info.filename!r} refused: compression ratio {ratio:.0f}:1 is above "
                               f"{limits.max_ratio:g}:1 (zip bomb?)")


def _plan(zf: zipfile.ZipFile, limits: ZipLimits) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]],
                                                          list[tuple[str, str]]]:
    """Check every entry; return the files to extract (with relative paths) and the skipped ones."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise DatasetError(f"zip refused: {len(infos)} entries, more than the limit of {limits.max_files}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise DatasetError(f"zip refused: {total / 1024**2:.0f} MiB uncompressed, more than the limit of "
                           f"{limits.max_total_bytes / 1024**2:.0f} MiB")
    take: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for info in infos:
        rel = _entry_path(info)
        _check_entry(info, limits)
        if info.is_dir() or str(rel) == ".":
            continue
        key = str(rel)
        if key in seen:
            raise DatasetError(f"zip entry {info.filename!r} refused: the archive holds this path twice")
        seen.add(key)
        why = _classify(rel)
        if why:
            skipped.append((info.filename, why))
        else:
            take.append((info, rel))
    if not any(is_image_file(Path(rel.name)) for _, rel in take):
        raise DatasetError("zip refused: it holds no images (.png, .jpg, .jpeg, .webp, .bmp)")
    # A zip of one folder `myset/...` becomes the dataset itself, unless that folder is a kohya N_name one.
    tops = {rel.parts[0] for _, rel in take}
    if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in take) and not parse_repeats(next(iter(tops))):
        take = [(i, PurePosixPath(*rel.parts[1:])) for i, rel in take]
    return take, skipped


def _extract(zf: zipfile.ZipFile, take, dest: Path, limits: ZipLimits) -> None:
    """Stream every entry, counting real bytes: a header that lies about sizes cannot get past the limits."""
    written = 0
    for info, rel in take:
        out = dest.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        entry_bytes = 0
        with zf.open(info) as src, open(out, "xb") as dst:
            while chunk := src.read(_CHUNK):
                entry_bytes += len(chunk)
                written += len(chunk)
                if entry_bytes > max(info.file_size, 0) or written > limits.max_total_bytes:
                    raise DatasetError(f"zip entry {info.filename!r} refused: it expands beyond its declared "
                                       "size or the total limit (zip bomb?)")
                dst.write(chunk)


def _put_in_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; an old dataset is moved aside until then, never lost."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:
        raise DatasetError(f"dataset {target.name!r} already exists at {target}: choose another name or "
                           "overwrite it explicitly")
    backup = target.with_name(f".backup-{target.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup)  # the user chose to overwrite, and the new dataset is in place


def import_zip(paths: WorkspacePaths, zip_path: str | os.PathLike, name: str, *, overwrite: bool = False,
               limits: ZipLimits | None = None) -> ImportResult:
    """Extract a zip of images and captions into `workspace/datasets/<name>` (all or nothing)."""
    limits = limits or ZipLimits()
    name = validate_dataset_name(name)
    src = Path(zip_path).expanduser()
    target = paths.datasets / name
    if target.exists() and not overwrite:
        raise DatasetError(f"dataset {name!r} already exists at {target}: choose another name or overwrite it "
                           "explicitly")
    try:
        zf = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{src} cannot be opened as a zip archive: {err}") from err
    with zf:
        take, skipped = _plan(zf, limits)
        paths.datasets.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=paths.datasets))
        try:
            _extract(zf, take, tmp, limits)
            _put_in_place(tmp, target, overwrite)
        except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as err:
            if is_disk_full(err):
                raise disk_full_error(err, paths.datasets, f"importing {src.name}; nothing was changed") from err
            raise DatasetError(f"importing {src} failed, nothing was changed: {err}") from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)  # our own half-extracted temporary folder
    return _result(name, target, skipped, in_place=False)


def import_folder(paths: WorkspacePaths, folder: str | os.PathLike, name: str | None = None, *,
                  copy: bool = False, overwrite: bool = False) -> ImportResult:
    """Use a server folder in place (its path is returned), or copy its images and captions into the workspace."""
    src = Path(folder).expanduser().absolute()
    scan_dataset(src)  # raises with a clear message when the folder holds no usable images
    if not copy:
        return _result(name or src.name, src, [], in_place=True)
    name = validate_dataset_name(name or src.name)
    target = paths.datasets / name
    if target.exists() and not overwrite:
        raise DatasetError(f"dataset {name!r} already exists at {target}: choose another name or overwrite it "
                           "explicitly")
    if target.absolute() == src or src in target.absolute().parents:
        raise DatasetError(f"cannot copy {src} onto itself")
    paths.datasets.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=paths.datasets))
    try:
        for dirpath, dirs, files in os.walk(src):
            dirs.sort()
            base = Path(dirpath)
            for fname in sorted(files):
                f = base / fname
                rel = PurePosixPath(*f.relative_to(src).parts)
                why = "symbolic link" if f.is_symlink() else _classify(rel)
                if why:
                    skipped.append((str(f), why))
                    continue
                out = tmp.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
            dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and not (base / d).is_symlink()]
        _put_in_place(tmp, target, overwrite)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(err, paths.datasets, f"copying {src}; nothing was changed") from err
        raise DatasetError(f"copying {src} failed, nothing was changed: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _result(name, target, skipped, in_place=False)


def _result(name: str, path: Path, skipped: list[tuple[str, str]], in_place: bool) -> ImportResult:
    """Count what the dataset holds; for a copy or an extracted zip, name each image that cannot be read
    (a folder used in place is the user's own: the check that follows reports its images)."""
    images = captions = 0
    broken: list[tuple[str, str]] = []
    for dirpath, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for f in sorted(files):
            p = Path(dirpath) / f
            if is_image_file(p):
                images += 1
                why = None if in_place else unreadable_reason(p)
                if why:
                    broken.append((p.relative_to(path).as_posix(), why))
            captions += p.suffix.lower() in CAPTION_EXTENSIONS
    return ImportResult(name=name, path=path, images=images, captions=captions, skipped=skipped,
                        in_place=in_place, broken=broken)
