"""The training data: images and captions from the dataset scan, bucketed, in a resumable order.

The order of an epoch depends only on (seed, epoch), and every random choice for one sample (flip,
caption shuffle and dropout) only on (seed, epoch, position), so a resumed run sees exactly the data
the uninterrupted run would have seen, without saving any sampler state but the position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.dataset.buckets import BucketChoice, assign_bucket, make_buckets, single_bucket
from backend.dataset.captions import join_tags, split_tags
from backend.dataset.images import image_error, image_size, load_rgb
from backend.dataset.scan import DatasetScan, parse_repeats, scan_dataset
from backend.errors import DatasetError


@dataclass(frozen=True)
class TrainItem:
    index: int
    path: Path
    caption: str              # the caption file, or the folder's class tokens when there is none
    subset: str
    repeats: int
    is_reg: bool
    size: tuple[int, int]     # (w, h) after EXIF rotation
    choice: BucketChoice


@dataclass(frozen=True)
class Sample:
    """One entry of an epoch: which item, mirrored or not, and its position (for per-sample seeds)."""

    item: int
    flip: bool
    position: int


@dataclass(frozen=True)
class CaptionRules:
    prefix: str = ""
    keep_tokens: int = 0
    shuffle: bool = False
    tag_dropout: float = 0.0
    caption_dropout: float = 0.0
    trigger_words: tuple[str, ...] = ()

    @property
    def varies(self) -> bool:
        """True when the same image may get a different caption text from step to step."""
        return self.shuffle or self.tag_dropout > 0 or self.caption_dropout > 0


def process_caption(raw: str, rules: CaptionRules, rng: random.Random) -> str:
    """The caption text for one step (sd-scripts `process_caption`, with the trigger kept first).

    The prefix (a trigger word) and leading tags that are trigger words stay first and are never
    dropped; then `keep_tokens` more tags stay in place; the rest are shuffled and/or dropped per tag;
    finally the whole caption may be dropped (empty string, unconditional training).
    """
    if rules.caption_dropout > 0 and rng.random() < rules.caption_dropout:
        return ""
    tags = split_tags(raw)
    fixed: list[str] = split_tags(rules.prefix)
    triggers = {t.lower() for t in rules.trigger_words} | {t.lower() for t in fixed}
    tags = [t for t in tags if t.lower() not in {f.lower() for f in fixed}]
    while tags and tags[0].lower() in triggers:
        fixed.append(tags.pop(0))
    kept, rest = tags[:rules.keep_tokens], tags[rules.keep_tokens:]
    if rules.tag_dropout > 0:
        rest = [t for t in rest if rng.random() >= rules.tag_dropout]
    if rules.shuffle:
        rng.shuffle(rest)
    return join_tags(fixed + kept + rest)


def sample_rng(seed: int, epoch: int, position: int) -> random.Random:
    return random.Random(f"{seed}:{epoch}:{position}")


class TrainData:
    """Items (training then regularization images), their buckets, and the batches of each epoch."""

    def __init__(self, items: list[TrainItem], batch_size: int, seed: int, flip_aug: bool,
                 prior_loss_weight: float = 1.0):
        self.items = items
        self.batch_size = batch_size
        self.seed = seed
        self.flip_aug = flip_aug
        self.prior_loss_weight = prior_loss_weight
        self.train = [it for it in items if not it.is_reg]
        self.reg = [it for it in items if it.is_reg]
        self._batches_cache: dict[int, list[list[Sample]]] = {}

    @property
    def num_train_images(self) -> int:
        """Training images per epoch with repeats (sd-scripts `ss_num_train_images`)."""
        return sum(it.repeats for it in self.train)

    @property
    def num_reg_images(self) -> int:
        return sum(it.repeats for it in self.reg)

    def loss_weight(self, item: TrainItem) -> float:
        return self.prior_loss_weight if item.is_reg else 1.0

    def epoch_samples(self, epoch: int) -> list[Sample]:
        """Each training image `repeats` times; regularization images cycled to the same count
        (sd-scripts balances them so), each possibly mirrored."""
        rng = random.Random(f"{self.seed}:order:{epoch}")
        entries = [it.index for it in self.train for _ in range(it.repeats)]
        if self.reg:
            pool = [it.index for it in self.reg for _ in range(it.repeats)]
            rng.shuffle(pool)
            entries += [pool[i % len(pool)] for i in range(len(entries))]
        return [Sample(i, self.flip_aug and rng.random() < 0.5, pos) for pos, i in enumerate(entries)]

    def epoch_batches(self, epoch: int) -> list[list[Sample]]:
        """Batches of one epoch: grouped by bucket, shuffled within and across buckets."""
        if epoch in self._batches_cache:
            return self._batches_cache[epoch]
        rng = random.Random(f"{self.seed}:batches:{epoch}")
        by_bucket: dict[tuple[int, int], list[Sample]] = {}
        for s in self.epoch_samples(epoch):
            by_bucket.setdefault(self.items[s.item].choice.bucket, []).append(s)
        batches: list[list[Sample]] = []
        for bucket in sorted(by_bucket):
            group = by_bucket[bucket]
            rng.shuffle(group)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        rng.shuffle(batches)
        self._batches_cache = {epoch: batches}
        return batches

    def batches_per_epoch(self) -> int:
        return len(self.epoch_batches(0))

    def bucket_info(self) -> dict[str, Any]:
        """sd-scripts `ss_bucket_info`: bucket resolutions and image counts (with repeats)."""
        counts: dict[tuple[int, int], int] = {}
        for it in self.train:
            counts[it.choice.bucket] = counts.get(it.choice.bucket, 0) + it.repeats
        buckets = {str(i): {"resolution": list(b), "count": counts[b]} for i, b in enumerate(sorted(counts))}
        errors = [abs(it.size[0] / it.size[1] - it.choice.bucket[0] / it.choice.bucket[1]) for it in self.train]
        return {"buckets": buckets, "mean_img_ar_error": sum(errors) / max(len(errors), 1)}


def _bucket_list(ds: Any) -> list[tuple[int, int]]:
    if not ds.enable_bucket:
        return single_bucket(ds.resolution)
    return make_buckets(ds.resolution, ds.min_bucket_reso, ds.max_bucket_reso, ds.bucket_reso_steps)


def _items_from_scan(scan: DatasetScan, ds: Any, buckets: list[tuple[int, int]], start: int) -> list[TrainItem]:
    out = []
    for img in scan.images:
        try:
            w, h = image_size(img.path)
        except OSError as err:
            raise DatasetError(f"cannot read image {img.path}: {image_error(err)}") from err
        if ds.enable_bucket:
            choice = assign_bucket(w, h, resolution=ds.resolution, buckets=buckets,
                                   no_upscale=ds.bucket_no_upscale, step=ds.bucket_reso_steps)
        else:
            choice = assign_bucket(w, h, resolution=ds.resolution, buckets=buckets)
        caption = img.caption
        if not caption:
            parsed = parse_repeats(img.subset)
            caption = parsed[1] if parsed else ""
        out.append(TrainItem(index=start + len(out), path=img.path, caption=caption, subset=img.subset,
                             repeats=img.repeats, is_reg=img.is_reg, size=(w, h), choice=choice))
    return out


def build_train_data(cfg: Any) -> TrainData:
    """Scan `dataset.path` (and `dataset.reg_path`), assign buckets; DatasetError when unusable."""
    ds = cfg.dataset
    if not ds.path:
        raise DatasetError("dataset.path is empty: pick a dataset folder")
    scan = scan_dataset(ds.path, caption_extension=ds.caption_extension, default_repeats=ds.default_repeats)
    buckets = _bucket_list(ds)
    items = _items_from_scan(scan, ds, buckets, 0)
    if ds.reg_path:
        reg = scan_dataset(ds.reg_path, caption_extension=ds.caption_extension, default_repeats=ds.reg_repeats,
                           is_reg=True)
        items += _items_from_scan(reg, ds, buckets, len(items))
    return TrainData(items, cfg.training.batch_size, cfg.training.seed, ds.flip_aug, ds.prior_loss_weight)


def caption_rules(cfg: Any) -> CaptionRules:
    ds = cfg.dataset
    return CaptionRules(prefix=ds.caption_prefix, keep_tokens=ds.keep_tokens, shuffle=ds.shuffle_caption,
                        tag_dropout=ds.caption_tag_dropout_rate, caption_dropout=ds.caption_dropout_rate,
                        trigger_words=tuple(cfg.saving.trigger_words))


def load_pixels(item: TrainItem, flip: bool) -> Any:
    """The image resized, centre-cropped to its bucket, maybe mirrored: a float tensor CHW in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        img = load_rgb(item.path)
    except OSError as err:
        raise DatasetError(f"cannot read image {item.path}: {image_error(err)}") from err
    c = item.choice
    if img.size != (item.size[0], item.size[1]):
        raise DatasetError(f"{item.path} changed while training (size {img.size}, was {item.size})")
    if img.size != c.resized:
        img = img.resize(c.resized, Image.Resampling.LANCZOS)
    left, top = c.crop
    img = img.crop((left, top, left + c.bucket[0], top + c.bucket[1]))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return arr / 127.5 - 1.0


def load_batch(pairs: Sequence[tuple[TrainItem, bool]], workers: int = 0) -> Any:
    """`load_pixels` for a batch, stacked; with workers > 0 the images decode in parallel threads
    (PIL releases the GIL while decoding and resizing), so large JPEGs do not serialise the step."""
    import torch

    if workers > 0 and len(pairs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
            return torch.stack(list(pool.map(lambda p: load_pixels(*p), pairs)))
    return torch.stack([load_pixels(it, flip) for it, flip in pairs])


def size_conditioning(items: Sequence[TrainItem]) -> dict[str, list[tuple[int, int]]]:
    """Per-sample (h, w) sizes and crop (top, left) for families that condition on them (SDXL)."""
    return {
        "original_size": [(it.size[1], it.size[0]) for it in items],
        "crop_top_left": [(it.choice.crop[1], it.choice.crop[0]) for it in items],
        "target_size": [(it.choice.bucket[1], it.choice.bucket[0]) for it in items],
    }


def tag_frequency(data: TrainData) -> dict[str, dict[str, int]]:
    """sd-scripts `ss_tag_frequency`: {subset folder: {tag: count}} over the caption files."""
    out: dict[str, dict[str, int]] = {}
    for it in data.train:
        freq = out.setdefault(it.subset, {})
        for tag in split_tags(it.caption):
            freq[tag] = freq.get(tag, 0) + 1
    return out


def dataset_dirs(data: TrainData, reg: bool = False) -> dict[str, dict[str, int]]:
    """sd-scripts `ss_dataset_dirs` / `ss_reg_dataset_dirs`: {folder: {n_repeats, img_count}}."""
    out: dict[str, dict[str, int]] = {}
    for it in (data.reg if reg else data.train):
        entry = out.setdefault(it.subset, {"n_repeats": it.repeats, "img_count": 0})
        entry["img_count"] += 1
    return out
