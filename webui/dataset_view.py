"""What the Dataset tab shows, as plain functions: settings read through the schema, one check
(validation + buckets) kept per session, and the tables and sentences made from it. No gradio here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from backend.config import TrainConfig, list_presets, load_preset, validate_dict
from backend.dataset.bucket_report import BucketReport, bucket_report
from backend.dataset.fixes import Change
from backend.dataset.images import is_image_file
from backend.dataset.importer import ImportResult
from backend.dataset.repeats import SubfolderInfo, list_subfolders
from backend.dataset.scan import DatasetScan, parse_repeats, scan_dataset
from backend.dataset.thumbnails import GalleryPage
from backend.dataset.validate import CAPTION_EXTENSIONS, KINDS, Report, validate_dataset
from backend.errors import ConfigError, DatasetError
from backend.files import atomic_write_bytes
from backend.paths import WorkspacePaths
from webui.text import code, md

# Options of the schema the tab edits (label, help, default and bounds come from there).
SETTING_PATHS = ("dataset.caption_extension", "dataset.resolution", "dataset.min_bucket_reso",
                 "dataset.max_bucket_reso", "dataset.bucket_reso_steps", "dataset.enable_bucket",
                 "dataset.bucket_no_upscale", "training.batch_size")
PROBLEM_COLUMNS = ["file", "kind", "severity", "detail", "fix"]
BUCKET_COLUMNS = ["file", "subset", "size", "bucket", "resized", "cropped %", "upscaled"]
QUARANTINE_KINDS = tuple(k for k, (_, _, fix) in KINDS.items() if fix == "quarantine")
DEFAULT_QUARANTINE_KINDS = ("unreadable", "truncated")
HEAVY_CROP = 0.3


@dataclass(frozen=True)
class Settings:
    caption_extension: str
    resolution: int
    min_reso: int
    max_reso: int
    step: int
    enable_bucket: bool
    no_upscale: bool
    batch_size: int

    @property
    def bucket_args(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "min_reso": self.min_reso, "max_reso": self.max_reso,
                "step": self.step, "enable_bucket": self.enable_bucket, "no_upscale": self.no_upscale}


def settings_from(values: dict[str, Any]) -> Settings:
    """Settings from {dotted path: value}; ConfigError naming each bad option (the schema's own bounds)."""
    data: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        section, name = path.split(".")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        data.setdefault(section, {})[name] = value
    return settings_of(validate_dict(data, "dataset settings"))


def settings_of(cfg: TrainConfig) -> Settings:
    d = cfg.dataset
    return Settings(caption_extension=d.caption_extension, resolution=d.resolution, min_reso=d.min_bucket_reso,
                    max_reso=d.max_bucket_reso, step=d.bucket_reso_steps, enable_bucket=d.enable_bucket,
                    no_upscale=d.bucket_no_upscale, batch_size=cfg.training.batch_size)


def setting_values(cfg: TrainConfig) -> dict[str, Any]:
    """{dotted path: value} of the tab's settings in `cfg` (a preset's)."""
    dumped = cfg.model_dump()
    return {path: dumped[path.split(".")[0]][path.split(".")[1]] for path in SETTING_PATHS}


def preset_for(paths: WorkspacePaths, root: Path) -> str | None:
    """The first preset (shipped, then yours) whose dataset.path is this dataset: the one that trains it."""
    for preset in list_presets(paths):
        try:
            wanted = load_preset(preset.path, paths).dataset.path
        except ConfigError:
            continue  # a broken user preset names nothing; the Training tab reports it when loaded
        if wanted and paths.resolve(wanted) == root.absolute():
            return preset.name
    return None


def settings_source(paths: WorkspacePaths, settings: Settings, preset: str | None) -> str:
    """Where the check's settings come from, in words: "preset NAME", "the defaults" or ""."""
    if preset:
        try:
            if settings_of(load_preset(preset, paths)) == settings:
                return f"preset {preset}"
        except ConfigError:
            pass  # a preset that no longer loads is not where the settings came from
    return "the defaults" if settings_of(TrainConfig()) == settings else ""


@dataclass
class Checked:
    """One check of a dataset (kept in the session's gr.State)."""

    root: Path
    settings: Settings
    scan: DatasetScan
    report: Report
    buckets: BucketReport
    reg: tuple[DatasetScan, BucketReport] | None = None
    reg_repeats: int = 1
    source: str = ""  # where the settings come from: "preset demo", "the defaults" or "" (your own)


def run_check(root: Path, settings: Settings, cache_dir: Path | None, reg_path: Path | None = None,
              reg_repeats: int = 1, source: str = "") -> Checked:
    """Scan, validate and bucket a dataset (and its regularization set), with the facts cache."""
    scan = scan_dataset(root, caption_extension=settings.caption_extension)
    report = validate_dataset(scan, cache_dir=cache_dir, **settings.bucket_args)
    buckets = bucket_report(scan, report.sizes(), batch_size=settings.batch_size, heavy_crop=HEAVY_CROP,
                            **settings.bucket_args)
    reg = None
    if reg_path is not None:
        if reg_path.absolute() == scan.root:
            raise DatasetError(f"the regularization set {reg_path} is the dataset itself: pick another dataset")
        reg_scan = scan_dataset(reg_path, caption_extension=settings.caption_extension,
                                default_repeats=reg_repeats, is_reg=True)
        reg = (reg_scan, bucket_report(reg_scan, batch_size=settings.batch_size, heavy_crop=HEAVY_CROP,
                                       **settings.bucket_args))
    return Checked(root=scan.root, settings=settings, scan=scan, report=report, buckets=buckets, reg=reg,
                   reg_repeats=reg_repeats, source=source)


def recheck(c: Checked, cache_dir: Path | None, root: Path | None = None) -> Checked:
    """The same check again (after a fix), optionally on the dataset's new path (a renamed N_name folder)."""
    return run_check(root or c.root, c.settings, cache_dir, c.reg[0].root if c.reg else None, c.reg_repeats,
                     c.source)


def rel(path: Path | str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def workspace_value(paths: WorkspacePaths, path: Path) -> str:
    """Workspace-relative where possible (how the Training tab lists datasets)."""
    return rel(path, paths.root)


def counts_markdown(c: Checked) -> str:
    counts = c.report.counts
    errors = sum(1 for p in c.report.problems if p.severity == "error")
    warnings = sum(1 for p in c.report.problems if p.severity == "warning")
    head = "✓ No errors" if not errors else f"✗ **{errors} error(s)**"
    lines = [f"### {md(c.root.name)}: {counts['images']} images in {counts['subsets']} subfolder(s), "
             f"{counts['images_per_epoch']} per epoch with repeats, **{steps(c)} steps per epoch** "
             f"at batch size {c.settings.batch_size}",
             f"{head} · {warnings} warning(s) · {counts['problems'] - errors - warnings} note(s) · "
             f"{counts['files_with_problems']} file(s) flagged · {code(c.root)}",
             settings_line(c)]
    by_kind = [f"{KINDS[k][1]}: **{counts[k]}**" for k in KINDS if counts[k]]
    if by_kind:
        lines.append(" · ".join(by_kind))
    return "\n\n".join(lines)


def settings_line(c: Checked) -> str:
    """The resolution and buckets the images were judged at, and where those settings come from: a
    128 px image is "too small" at the default 512 px but fine for a preset that trains at 128 px."""
    s = c.settings
    buckets = f"buckets {s.min_reso}–{s.max_reso} px, step {s.step}" if s.enable_bucket else "no buckets"
    line = f"Checked at **{s.resolution} px** ({buckets}), batch size {s.batch_size}"
    if c.source == "the defaults":
        return (line + ": the defaults. Choose the preset you will train with above, so the images are "
                       "judged at its resolution.")
    return line + (f": the settings of {md(c.source)}." if c.source else ": your settings.")


def steps(c: Checked) -> int:
    """Steps per epoch: the dataset's buckets plus the regularization set's (kohya adds them)."""
    return c.buckets.steps_per_epoch + (c.reg[1].steps_per_epoch if c.reg else 0)


def problems_frame(c: Checked) -> pd.DataFrame:
    df = c.report.to_dataframe()
    df["file"] = [rel(f, c.root) for f in df["file"]]
    df["fix"] = df["fix"].fillna("")
    return df[PROBLEM_COLUMNS]


def subsets_frame(c: Checked) -> pd.DataFrame:
    rows = [{"subfolder": s.name, "repeats": s.repeats, "images": s.images, "captioned": s.captioned,
             "images per epoch": s.images_per_epoch, "regularization": "no"} for s in c.report.subsets]
    if c.reg:
        rows += [{"subfolder": f"{s.name} (from {c.reg[0].root.name})",
                  "repeats": s.repeats, "images": s.num_images,
                  "captioned": sum(1 for i in s.images if i.caption), "images per epoch": s.images_per_epoch,
                  "regularization": "yes"} for s in c.reg[0].subsets]
    return pd.DataFrame(rows, columns=["subfolder", "repeats", "images", "captioned", "images per epoch",
                                       "regularization"])


def bucket_frame(c: Checked) -> pd.DataFrame:
    df = c.buckets.per_image
    return pd.DataFrame({"file": [rel(f, c.root) for f in df["file"]], "subset": df["subset"],
                         "size": [f"{w}x{h}" for w, h in zip(df["width"], df["height"], strict=True)],
                         "bucket": df["bucket"], "resized": df["resized"],
                         "cropped %": (df["crop_fraction"] * 100).round(1),
                         "upscaled": ["yes" if u else "" for u in df["upscaled"]]}, columns=BUCKET_COLUMNS)


def bucket_markdown(c: Checked, limit: int = 20) -> str:
    b = c.buckets
    lines = [f"**{steps(c)} steps per epoch** at batch size {c.settings.batch_size} "
             f"({len(b.per_bucket)} bucket(s); each bucket is batched separately, so a part-filled batch "
             "counts as a step)."]
    if c.reg:
        lines.append(f"Regularization set {code(c.reg[0].root.name)}: {c.reg[0].num_images} images, "
                     f"{c.reg[1].steps_per_epoch} of those steps.")
    for title, files in ((f"Upscaled ({len(b.upscaled)})", b.upscaled),
                         (f"Heavily cropped, over {HEAVY_CROP:.0%} cut away ({len(b.heavily_cropped)})",
                          b.heavily_cropped)):
        if files:
            shown = ", ".join(code(rel(f, c.root)) for f in files[:limit])
            more = f" … and {len(files) - limit} more" if len(files) > limit else ""
            lines.append(f"{title}: {shown}{more}")
    return "\n\n".join(lines)


def files_with(c: Checked, kinds: Iterable[str]) -> list[Path]:
    wanted = set(kinds)
    return list(dict.fromkeys(p.file for p in c.report.problems if p.kind in wanted))


def quarantine_choices(c: Checked) -> list[str]:
    """Files a user may move away: those flagged with a problem whose fix is quarantine."""
    return [rel(f, c.root) for f in files_with(c, QUARANTINE_KINDS)]


def other_caption_extensions(c: Checked) -> list[str]:
    """Caption extensions found next to images instead of the configured one, most frequent first."""
    found: dict[str, int] = {}
    for image in files_with(c, ["caption_extension"]):
        for ext in CAPTION_EXTENSIONS:
            if ext != c.report.caption_extension.lower() and image.with_suffix(ext).is_file():
                found[ext] = found.get(ext, 0) + 1
                break
    return sorted(found, key=lambda e: -found[e])


def changes_markdown(title: str, changes: list[Change], root: Path, limit: int = 30) -> str:
    done = [ch for ch in changes if ch.action != "skipped"]
    skipped = [ch for ch in changes if ch.action == "skipped"]
    lines = [f"**{md(title)}: {len(done)} change(s)" + (f", {len(skipped)} skipped**" if skipped else "**")]
    for ch in (done + skipped)[:limit]:
        target = f" → {code(rel(ch.target, root))}" if ch.target else ""
        lines.append(f"- {md(ch.action)} {code(rel(ch.path, root))}{target}" + (f" ({md(ch.detail)})" if ch.detail else ""))
    if len(changes) > limit:
        lines.append(f"- … and {len(changes) - limit} more")
    return "\n".join(lines)


def import_markdown(result: ImportResult, limit: int = 15) -> str:
    how = "used in place" if result.in_place else "imported"
    lines = [f"**{md(result.name)}** {how}: {result.images} images, {result.captions} captions · {code(result.path)}"]
    if result.skipped:
        lines.append(f"{len(result.skipped)} file(s) skipped:")
        lines += [f"- {code(entry)}: {md(why)}" for entry, why in result.skipped[:limit]]
        if len(result.skipped) > limit:
            lines.append(f"- … and {len(result.skipped) - limit} more")
    if result.broken:
        lines.append(f"⚠ {len(result.broken)} image(s) cannot be read (kept: the check below flags them, and "
                     "**Move to _quarantine** takes them out):")
        lines += [f"- {code(entry)}: {md(why)}" for entry, why in result.broken[:limit]]
        if len(result.broken) > limit:
            lines.append(f"- … and {len(result.broken) - limit} more")
    return "\n".join(lines)


def pick_for_training(paths: WorkspacePaths, c: Checked, reg_value: str, reg_repeats: int) -> dict[str, Any]:
    """{dotted path: value} for the Training form: the dataset, its settings and the regularization set."""
    s = c.settings
    return {"dataset.path": workspace_value(paths, c.root), "dataset.caption_extension": s.caption_extension,
            "dataset.resolution": s.resolution, "dataset.min_bucket_reso": s.min_reso,
            "dataset.max_bucket_reso": s.max_reso, "dataset.bucket_reso_steps": s.step,
            "dataset.enable_bucket": s.enable_bucket, "dataset.bucket_no_upscale": s.no_upscale,
            "dataset.reg_path": reg_value if c.reg else "", "dataset.reg_repeats": int(reg_repeats or 1)}


def subfolders(root: Path) -> list[SubfolderInfo]:
    """The dataset's `N_name` subfolders, or the picked folder itself when it is one."""
    found = list_subfolders(root)
    parsed = parse_repeats(root.name)
    if not found and parsed:
        n = sum(1 for f in root.iterdir() if f.is_file() and is_image_file(f))
        found = [SubfolderInfo(root.name, root, parsed[0], parsed[1], n)]
    return found


def subfolders_frame(found: list[SubfolderInfo]) -> pd.DataFrame:
    return pd.DataFrame([{"subfolder": s.name, "repeats": s.repeats, "concept": s.concept, "images": s.n_images}
                         for s in found], columns=["subfolder", "repeats", "concept", "images"])


def unreadable_placeholder(cache_dir: Path) -> Path:
    """A grey tile shown for images that cannot be decoded (the original cannot be served either)."""
    out = cache_dir / "_unreadable.png"
    if not out.exists():
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (150, 150, 150)).save(buf, format="PNG")
        atomic_write_bytes(out, buf.getvalue(), durable=False)
    return out


def gallery_items(pg: GalleryPage, cache_dir: Path) -> list[tuple[str, str]]:
    """[(thumbnail, caption)] for gr.Gallery; every path lies in the thumbnail cache."""
    items = []
    for item in pg.items:
        if item.thumb is None:
            items.append((str(unreadable_placeholder(cache_dir)), f"⚠ cannot be read: {item.image.name}"))
        else:
            items.append((str(item.thumb), item.caption or f"⚠ no caption: {item.image.name}"))
    return items


def chosen_files(c: Checked, names: Iterable[str]) -> list[Path]:
    """Files picked by name (relative to the dataset); only the dataset's images and flagged files qualify."""
    known = {rel(i.path, c.root): i.path for i in c.scan.images}
    known.update({rel(p.file, c.root): p.file for p in c.report.problems})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DatasetError(f"{unknown[0]} is not an image or a flagged file of {c.root}: pick files from the list")
    return [known[n] for n in names]
