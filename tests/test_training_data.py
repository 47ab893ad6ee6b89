"""Captions, buckets and the batch order of the training data (pure, no model)."""

from __future__ import annotations

import random
from collections import Counter

from PIL import Image

from backend.config import load_config
from backend.training.data import CaptionRules, build_train_data, process_caption


def test_caption_rules_keep_trigger_and_kept_tags_first():
    raw = "dashdemo, red circle, white background, gradient, simple shapes"
    rules = CaptionRules(keep_tokens=1, shuffle=True, tag_dropout=0.5, trigger_words=("dashdemo",))
    seen_orders = set()
    for i in range(40):
        out = process_caption(raw, rules, random.Random(i)).split(", ")
        assert out[0] == "dashdemo" and out[1] == "red circle"   # trigger, then keep_tokens=1
        assert set(out[2:]) <= {"white background", "gradient", "simple shapes"}
        seen_orders.add(tuple(out))
    assert len(seen_orders) > 3   # shuffled and dropped differently per draw


def test_caption_prefix_and_caption_dropout():
    rules = CaptionRules(prefix="mytrigger")
    assert process_caption("a, b", rules, random.Random(0)) == "mytrigger, a, b"
    assert process_caption("mytrigger, a", rules, random.Random(0)) == "mytrigger, a"   # not twice
    drop = CaptionRules(prefix="mytrigger", caption_dropout=1.0)
    assert process_caption("a, b", drop, random.Random(0)) == ""
    same = [process_caption("x, y, z", CaptionRules(shuffle=True), random.Random(7)) for _ in range(2)]
    assert same[0] == same[1]   # the same seed gives the same caption (resumable)


def _dataset(tmp_path, sizes, repeats=2, name="img"):
    folder = tmp_path / "ds" / f"{repeats}_{name}"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGBA" if i == 0 else "RGB", (w, h), (200, 10, 10, 0) if i == 0 else (1, 2, 3)).save(
            folder / f"{i}.png")
        if i:   # the first has no caption: kohya falls back to the folder's class tokens
            (folder / f"{i}.txt").write_text(f"tag{i}, other")
    return tmp_path / "ds"


def test_buckets_batches_and_resumable_order(tmp_path):
    ds = _dataset(tmp_path, [(128, 128)] * 3 + [(192, 128)] * 3)
    cfg = load_config({"dataset": {"path": str(ds), "resolution": 128, "min_bucket_reso": 64,
                                   "max_bucket_reso": 256, "bucket_reso_steps": 32, "flip_aug": True},
                       "training": {"batch_size": 2, "seed": 3}})
    data = build_train_data(cfg)
    assert data.num_train_images == 12
    assert {it.choice.bucket for it in data.items} == {(128, 128), (160, 96)}
    assert data.items[0].caption == "img"
    batches = data.epoch_batches(0)
    # every batch holds one bucket; every image appears `repeats` times per epoch
    assert all(len({data.items[s.item].choice.bucket for s in b}) == 1 for b in batches)
    assert Counter(s.item for b in batches for s in b) == {i: 2 for i in range(6)}
    assert any(s.flip for b in batches for s in b) and not all(s.flip for b in batches for s in b)
    again = build_train_data(cfg).epoch_batches(0)
    assert [[(s.item, s.flip) for s in b] for b in again] == [[(s.item, s.flip) for s in b] for b in batches]
    assert [[s.item for s in b] for b in data.epoch_batches(1)] != [[s.item for s in b] for b in batches]


def test_regularization_images_balance_and_weight(tmp_path):
    train = _dataset(tmp_path / "t", [(128, 128)] * 2, repeats=3)
    reg = _dataset(tmp_path / "r", [(128, 128)] * 5, repeats=1, name="person")
    cfg = load_config({"dataset": {"path": str(train), "reg_path": str(reg), "resolution": 128,
                                   "min_bucket_reso": 64, "prior_loss_weight": 0.5}})
    data = build_train_data(cfg)
    samples = data.epoch_samples(0)
    regs = [s for s in samples if data.items[s.item].is_reg]
    assert len(regs) == data.num_train_images == 6   # as many reg samples as training samples
    assert data.loss_weight(data.items[regs[0].item]) == 0.5
    assert data.num_reg_images == 5


def test_pixels_are_resized_cropped_and_alpha_is_white(tmp_path):
    from backend.training.data import load_pixels

    ds = _dataset(tmp_path, [(128, 128), (192, 128)])
    cfg = load_config({"dataset": {"path": str(ds), "resolution": 128, "min_bucket_reso": 64,
                                   "max_bucket_reso": 256, "bucket_reso_steps": 32}})
    data = build_train_data(cfg)
    transparent = load_pixels(data.items[0], flip=False)
    assert transparent.shape == (3, 128, 128) and float(transparent.min()) == 1.0   # white, not black
    wide = load_pixels(data.items[1], flip=True)
    assert wide.shape == (3, 96, 160)


def test_parallel_loader_threads_give_the_same_batch(demo_workspace):
    import torch

    from backend.training.data import load_batch

    cfg = load_config({"dataset": {"path": str(demo_workspace / "datasets" / "demo"), "resolution": 128,
                                   "min_bucket_reso": 64, "max_bucket_reso": 256, "flip_aug": True}})
    data = build_train_data(cfg)
    pairs = [(it, i % 2 == 1) for i, it in enumerate(data.items[:6])]
    same_bucket = [p for p in pairs if p[0].choice.bucket == pairs[0][0].choice.bucket]
    serial = load_batch(same_bucket, workers=0)
    threaded = load_batch(same_bucket, workers=3)
    assert serial.shape[0] == len(same_bucket) >= 2
    assert torch.equal(serial, threaded)
