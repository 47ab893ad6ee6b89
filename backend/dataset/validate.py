"""The dataset validation report: every problem found before the first training step, each listed once.

Per-image facts (size, mode, content and perceptual hashes, decode errors) are cached by path + mtime +
size under the workspace, so a re-check of thousands of unchanged images only reads directories.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.dataset.buckets import make_buckets, single_bucket
from backend.dataset.filecache import FileInfoCache, file_key
from backend.dataset.hashing import dhash, earliest_matches, phash, sha256_bytes
from backend.dataset.images import image_error, oriented_size
from backend.dataset.scan import DatasetScan, scan_dataset

if TYPE_CHECKING:
    import pandas as pd

FACTS_VERSION = 2  # 2: error texts without Python object reprs
# Sidecar extensions other tools write captions with; a caption in one of them is ignored by training
# that reads another (captioning.md §3).
CAPTION_EXTENSIONS = (".txt", ".caption", ".tags", ".cap")

# kind → (severity, label, fix id the fixes module implements or None). Order = display order.
KINDS: dict[str, tuple[str, str, str | None]] = {
    "unreadable": ("error", "cannot be opened as an image", "quarantine"),
    "truncated": ("error", "truncated or corrupt image data", "quarantine"),
    "empty_caption": ("error", "caption file is empty (kohya stops with an assertion)", "create_caption"),
    "too_small": ("warning", "smaller than the smallest bucket", "quarantine"),
    "extreme_aspect": ("warning", "extreme aspect ratio", "quarantine"),
    "mode": ("warning", "colour mode needs conversion to RGB", "convert_mode"),
    "caption_unreadable": ("error", "caption file is not readable UTF-8 text", None),
    "missing_caption": ("warning", "no caption file", "create_caption"),
    "caption_extension": ("warning", "caption has another extension than the configured one",
                          "rename_caption_extension"),
    "duplicate": ("warning", "exact duplicate of another image", "quarantine"),
    "near_duplicate": ("info", "looks almost the same as another image", "quarantine"),
    "not_used": ("info", "file or folder that training will not read", None),
}


def needs_conversion(mode: str) -> bool:
    """Modes other tools mishandle: alpha (black background), palette, CMYK, 16-bit / 32-bit greyscale."""
    return mode in ("RGBA", "RGBa", "LA", "La", "PA", "P", "CMYK", "I", "F") or mode.startswith("I;16")


@dataclass(frozen=True)
class Problem:
    file: Path
    kind: str
    detail: str
    fix: str | None = None

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "kind": self.kind, "severity": self.severity,
                "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class SubsetTotals:
    name: str
    path: Path
    repeats: int
    images: int
    captioned: int
    images_per_epoch: int
    is_reg: bool


@dataclass
class Report:
    root: Path
    caption_extension: str
    problems: list[Problem]
    subsets: list[SubsetTotals]
    facts: dict[Path, dict[str, Any]] = field(default_factory=dict)  # per image: width, height, mode, …
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def counts(self) -> dict[str, int]:
        out = {"images": sum(s.images for s in self.subsets), "subsets": len(self.subsets),
               "images_per_epoch": sum(s.images_per_epoch for s in self.subsets),
               "problems": len(self.problems),
               "files_with_problems": len({p.file for p in self.problems})}
        for kind in KINDS:
            out[kind] = 0
        for p in self.problems:
            out[p.kind] += 1
        return out

    def files(self, kind: str) -> list[Path]:
        return [p.file for p in self.problems if p.kind == kind]

    def sizes(self) -> dict[Path, tuple[int, int]]:
        """(width, height) after EXIF rotation of every decodable image (for the bucket view)."""
        return {p: (f["width"], f["height"]) for p, f in self.facts.items() if f.get("width")}

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "caption_extension": self.caption_extension, "counts": self.counts,
                "subsets": [{**asdict(s), "path": str(s.path)} for s in self.subsets],
                "problems": [p.to_dict() for p in self.problems]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_dataframe(self) -> pd.DataFrame:
        import pandas as pd  # imported here: the trainer and the CLI do not need it
        cols = ["file", "kind", "severity", "detail", "fix"]
        return pd.DataFrame([p.to_dict() for p in self.problems], columns=cols)

    def subsets_dataframe(self) -> pd.DataFrame:
        import pandas as pd
        cols = ["name", "path", "repeats", "images", "captioned", "images_per_epoch", "is_reg"]
        return pd.DataFrame([{**asdict(s), "path": str(s.path)} for s in self.subsets], columns=cols)


def analyse_image(path: Path) -> dict[str, Any]:
    """Decode one image fully and return its facts; never raises for a bad image (the error is a fact)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return {"error_kind": "unreadable", "error": f"cannot read file: {err.strerror or err}"}
    facts: dict[str, Any] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return {**facts, "error_kind": "unreadable", "error": image_error(err)}
    with img:
        width, height = oriented_size(img)
        facts.update(width=width, height=height, mode=img.mode, format=img.format)
        try:
            if img.format == "JPEG":
                img.draft("L", (128, 128))  # decode at a reduced scale: the hashes need 32 px
            img.load()
            img = ImageOps.exif_transpose(img)
            gray = img.convert("L") if img.mode not in ("I", "F") and not img.mode.startswith("I;16") \
                else img.point(lambda v: v / 256).convert("L")
            facts["dhash"] = format(dhash(gray), "016x")
            ph, flat = phash(gray)
            facts["phash"] = format(ph, "016x")
            facts["flat"] = flat
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            facts.update(error_kind="truncated", error=f"image data cannot be decoded ({image_error(err)})")
    return facts


def validate_dataset(scan_or_path: DatasetScan | str | os.PathLike, *, caption_extension: str = ".txt",
                     resolution: int = 512, min_reso: int = 256, max_reso: int = 1024, step: int = 64,
                     enable_bucket: bool = True, no_upscale: bool = False, max_aspect: float = 4.0,
                     near_duplicate_threshold: int = 6, cache_dir: Path | None = None,
                     workers: int | None = None) -> Report:
    """Check every image and caption of a dataset (a scan, or a folder to scan) and list the problems."""
    scan = scan_or_path if isinstance(scan_or_path, DatasetScan) else scan_dataset(
        scan_or_path, caption_extension=caption_extension)
    ext = scan.caption_extension
    if not enable_bucket:
        min_side = min(single_bucket(resolution)[0])
    elif no_upscale:
        min_side = step
    else:
        min_side = min(min(b) for b in make_buckets(resolution, min_reso, max_reso, step))

    cache = FileInfoCache(cache_dir, scan.root, FACTS_VERSION)
    facts = _gather_facts([item.path for item in scan.images], cache, workers)
    cache.save()

    problems: list[Problem] = []

    def add(file: Path, kind: str, detail: str) -> None:
        problems.append(Problem(file=file, kind=kind, detail=detail, fix=KINDS[kind][2]))

    for item in scan.images:
        f = facts[item.path]
        if f.get("error_kind"):
            add(item.path, f["error_kind"], f["error"])
        if f.get("width"):
            w, h = f["width"], f["height"]
            if min(w, h) < min_side:
                add(item.path, "too_small", f"{w}x{h}: a side is below {min_side} px, the smallest bucket "
                                            "side; training would upscale it")
            if max(w, h) / min(w, h) > max_aspect:
                add(item.path, "extreme_aspect", f"{w}x{h} is {max(w, h) / min(w, h):.1f}:1, above "
                                                 f"{max_aspect:g}:1; it is heavily cropped or trained as a thin strip")
            if needs_conversion(f["mode"]):
                add(item.path, "mode", f"mode {f['mode']}: convert to RGB (alpha composited on white)")
        _caption_problems(item, ext, add)
    _duplicate_problems(scan, facts, near_duplicate_threshold, add)
    reported_captions = {i.caption_path for i in scan.images if i.caption is None}
    for path, why in scan.skipped:
        if path not in reported_captions:
            add(path, "not_used", why)

    order = {k: i for i, k in enumerate(KINDS)}
    problems.sort(key=lambda p: (order[p.kind], str(p.file)))
    totals = [SubsetTotals(name=s.name, path=s.path, repeats=s.repeats, images=s.num_images,
                           captioned=sum(1 for i in s.images if i.caption), is_reg=s.is_reg,
                           images_per_epoch=s.images_per_epoch) for s in scan.subsets]
    return Report(root=scan.root, caption_extension=ext, problems=problems, subsets=totals, facts=facts,
                  cache_hits=cache.hits, cache_misses=cache.misses)


def _gather_facts(paths: list[Path], cache: FileInfoCache, workers: int | None) -> dict[Path, dict]:
    facts: dict[Path, dict] = {}
    todo: list[tuple[Path, tuple[str, int, int] | None]] = []
    for p in paths:
        key = file_key(p)
        hit = cache.get(key) if key else None
        if hit is not None:
            facts[p] = hit
        else:
            todo.append((p, key))
    if todo:
        n = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n) as pool:  # PIL decoding and hashlib release the GIL
            results = list(pool.map(analyse_image, [p for p, _ in todo]))
        for (p, key), f in zip(todo, results, strict=True):
            facts[p] = f
            if key is not None and "sha256" in f:  # a read error (permissions) may clear without a new mtime
                cache.put(key, f)
    return facts


def _caption_problems(item, ext: str, add) -> None:
    if item.caption == "":
        add(item.path, "empty_caption", f"{item.caption_path.name} is empty")
        return
    if item.caption is not None:
        return
    if item.caption_path.is_file():
        add(item.path, "caption_unreadable", f"{item.caption_path.name} cannot be read as UTF-8 text: "
                                             "re-save it as UTF-8 (training would ignore it)")
        return
    others = [item.path.with_suffix(e) for e in CAPTION_EXTENSIONS if e != ext.lower()]
    found = [o for o in others if o.is_file()]
    if found:
        add(item.path, "caption_extension",
            f"no {ext} caption, but {found[0].name} exists: training reads {ext} only "
            f"(rename {found[0].suffix} → {ext}, or set the caption extension to {found[0].suffix})")
    else:
        add(item.path, "missing_caption", f"no {item.caption_path.name}: training would use the folder's "
                                          f"class tokens or an empty caption")


def _duplicate_problems(scan: DatasetScan, facts: dict[Path, dict], threshold: int, add) -> None:
    """The first image (scan order) of each group is kept; every later copy is listed once."""
    first_by_sha: dict[str, Path] = {}
    dup: set[Path] = set()
    for item in scan.images:
        sha = facts[item.path].get("sha256")
        if sha is None:
            continue
        if sha in first_by_sha:
            dup.add(item.path)
            add(item.path, "duplicate", f"same bytes as {_rel(first_by_sha[sha], scan.root)}")
        else:
            first_by_sha[sha] = item.path
    cands = [i.path for i in scan.images if i.path not in dup and facts[i.path].get("dhash")]
    matches = earliest_matches([int(facts[p]["dhash"], 16) for p in cands],
                               [int(facts[p]["phash"], 16) for p in cands],
                               [not facts[p].get("flat") for p in cands], threshold)
    for j, (i, dist) in sorted(matches.items()):
        add(cands[j], "near_duplicate", f"looks like {_rel(cands[i], scan.root)} "
                                        f"(perceptual hash distance {dist}/64)")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
