"""The caption job (kind "caption"): tag or caption every image of a dataset, writing sidecars.

`run_job(ctx)` is the worker's entry; `caption_foreground(paths, config, progress_cb)` runs the same
thing in the calling process (CLI, notebooks). Previous captions are saved for undo first; unreadable
images are listed and skipped; a stop request is honoured between batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.captioning.config import CaptionConfig, load_caption_config
from backend.captioning.loader import iter_batches
from backend.captioning.tagrules import TagRules, merge_caption
from backend.captioning.undo import create_snapshot, delete_snapshot, prune_snapshots
from backend.dataset.captions import write_caption
from backend.dataset.scan import ImageItem, scan_dataset
from backend.paths import WorkspacePaths

ProgressFn = Callable[..., Any]
# (path, new caption text or None when the model produced nothing) per image, (path, error) per failure.
Batch = tuple[list[tuple[Path, list[str]]], list[tuple[Path, str]]]


@dataclass
class FailedImage:
    path: str
    error: str


@dataclass
class CaptionRunResult:
    mode: str
    model: str
    provider: str  # onnxruntime's execution provider, or "torch cuda bfloat16" for a captioner
    total: int  # images to caption (after `existing = skip`)
    written: int = 0
    skipped_existing: int = 0
    failed: list[FailedImage] = field(default_factory=list)
    undo_id: str | None = None
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_in(paths: WorkspacePaths, value: str, folder: Path) -> Path:
    """A relative name is looked up in `folder` (datasets/ or models/) first, then the workspace root."""
    p = Path(value).expanduser()
    if not p.is_absolute() and (folder / p).exists():
        return (folder / p).absolute()
    return paths.resolve(p)


def tagger_rules(cfg: CaptionConfig) -> TagRules:
    t = cfg.tagger
    return TagRules(general_threshold=t.general_threshold, character_threshold=t.character_threshold,
                    use_mcut=t.use_mcut, include_rating=t.include_rating, undesired=tuple(t.undesired_tags),
                    replace_underscores=t.replace_underscores, character_first=t.character_first,
                    replacements=tuple(t.replacement_pairs()))


def _tagger_batches(cfg: CaptionConfig, model_dir: Path, images: list[Path]) -> tuple[str, Iterator[Batch]]:
    from backend.captioning.wd14 import WD14Tagger

    tagger = WD14Tagger(model_dir, device=cfg.model.device)
    rules = tagger_rules(cfg)

    def batches() -> Iterator[Batch]:
        for tagged, failed in tagger.tag_images(images, rules, cfg.model.batch_size, cfg.model.loader_workers):
            yield [(t.path, t.tags) for t in tagged], [(f.path, f.error or "") for f in failed]

    return tagger.provider, batches()


def _captioner_batches(cfg: CaptionConfig, model_dir: Path,
                       images: list[Path]) -> tuple[str, Iterator[Batch]]:
    from backend.captioning.vlm import Captioner, join_parts, load_for_captioner

    cap = Captioner(model_dir, device=cfg.model.device, dtype=cfg.captioner.dtype)
    c = cfg.captioner

    def batches() -> Iterator[Batch]:
        for loaded, failed in iter_batches(images, load_for_captioner, cfg.model.batch_size, cfg.model.loader_workers):
            texts = cap.caption([it.value for it in loaded], c.prompt, c.max_new_tokens, c.num_beams)
            out = [(it.path, [join_parts(c.prefix, text, c.suffix)] if text else []) for it, text in
                   zip(loaded, texts, strict=True)]
            yield out, [(f.path, f.error or "") for f in failed]

    info = cap.info
    return f"torch {info.device} {info.dtype}", batches()


def caption_dataset(paths: WorkspacePaths, config: dict | CaptionConfig, progress: ProgressFn | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    log: logging.Logger | None = None) -> CaptionRunResult:
    """Caption the dataset of `config`; returns what was written, what failed, and the undo id."""
    cfg = load_caption_config(config)
    log = log or logging.getLogger(__name__)
    dataset = resolve_in(paths, cfg.dataset.path, paths.datasets)
    model_dir = resolve_in(paths, cfg.model.path, paths.models)
    scan = scan_dataset(dataset, cfg.dataset.caption_extension, recursive=cfg.dataset.recursive)
    items: list[ImageItem] = scan.images
    targets = [it for it in items if not it.caption] if cfg.dataset.existing == "skip" else items
    by_path = {it.path: it for it in targets}
    append = cfg.dataset.existing == "append"
    triggers = cfg.tagger.trigger_words if cfg.model.mode == "tagger" else []

    make = _tagger_batches if cfg.model.mode == "tagger" else _captioner_batches
    provider, batches = make(cfg, model_dir, [it.path for it in targets])  # a bad model fails here
    result = CaptionRunResult(cfg.model.mode, str(model_dir), provider, len(targets),
                              skipped_existing=len(items) - len(targets))
    log.info("%s %s on %s: %d images (%d skipped: captioned already)", cfg.model.mode, model_dir.name,
             provider, len(targets), result.skipped_existing)
    if not targets:
        return result
    snap = create_snapshot(paths, scan.root, [it.caption_path for it in targets],
                           label=f"{cfg.model.mode} {model_dir.name}")
    done = 0
    if progress:
        progress(0, len(targets), written=0, failed=0)
    for captioned, failed in batches:
        for path, err in failed:
            log.warning("unreadable image skipped: %s (%s)", path, err)
            result.failed.append(FailedImage(str(path), err))
        for path, new in captioned:
            item = by_path[path]
            tags = merge_caption(new, item.caption, append, triggers)
            if not tags:
                why = ("no tag reached the thresholds" if cfg.model.mode == "tagger"
                       else "the model returned an empty caption")
                result.failed.append(FailedImage(str(path), why + " (nothing written)"))
                continue
            write_caption(item.caption_path, ", ".join(tags))
            result.written += 1
        done += len(captioned) + len(failed)
        if progress:
            progress(done, len(targets), written=result.written, failed=len(result.failed))
        if should_stop and should_stop():
            result.stopped = done < len(targets)
            break
    if result.written:
        result.undo_id = snap.id
        prune_snapshots(paths, scan.root)
    else:
        delete_snapshot(snap)
    return result


def caption_foreground(paths: WorkspacePaths, config: dict | CaptionConfig,
                       progress_cb: ProgressFn | None = None) -> CaptionRunResult:
    """The caption job in this process (CLI, notebooks); `progress_cb(step, total, **counts)`."""
    return caption_dataset(paths, config, progress=progress_cb)


def run_job(ctx: Any) -> dict[str, Any]:
    """Worker runner for kind "caption" (ctx: backend.worker.context.WorkerContext)."""
    cfg = load_caption_config(ctx.config, source=str(Path(ctx.job_dir) / "config.toml"))
    result = caption_dataset(ctx.paths, cfg, progress=ctx.progress, should_stop=lambda: ctx.stop_requested,
                             log=ctx.log)
    summary = {"written": result.written, "failed": [asdict(f) for f in result.failed],
               "provider": result.provider, "undo_id": result.undo_id, "total": result.total,
               "skipped_existing": result.skipped_existing, "stopped": result.stopped, "mode": result.mode}
    ctx.events.emit("caption_summary", **summary)
    return summary
