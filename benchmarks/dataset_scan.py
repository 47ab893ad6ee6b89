"""Scan + validate + thumbnails for N generated images, cold and with a warm cache; prints one JSON object.

    python benchmarks/dataset_scan.py [--n 5000] [--size 384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.dataset.bucket_report import bucket_report  # noqa: E402
from backend.dataset.scan import scan_dataset  # noqa: E402
from backend.dataset.thumbnails import page, thumbnail  # noqa: E402
from backend.dataset.validate import validate_dataset  # noqa: E402


def generate(root: Path, n: int, size: int) -> None:
    """n textured images in kohya subfolders (¾ JPEG, ¼ PNG), each with a caption."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("10_alpha" if i % 2 else "5_beta")
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (size, size * 3 // 4) if i % 3 else (size * 3 // 4, size)
        img = Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).resize((w, h), Image.BICUBIC)
        name = folder / f"img{i:05d}{'.png' if i % 4 == 0 else '.jpg'}"
        img.save(name, quality=85) if name.suffix == ".jpg" else img.save(name)
        name.with_suffix(".txt").write_text(f"trigger, tag{i % 17}, tag{i % 5}\n", encoding="utf-8")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, ws = Path(tmp) / "data", Path(tmp) / "cache"
        _, t_gen = timed(lambda: generate(root, args.n, args.size))
        scan, t_scan = timed(lambda: scan_dataset(root))
        _, t_scan2 = timed(lambda: scan_dataset(root))
        cold, t_val_cold = timed(lambda: validate_dataset(scan, cache_dir=ws / "dataset"))
        warm, t_val_warm = timed(lambda: validate_dataset(scan_dataset(root), cache_dir=ws / "dataset"))
        _, t_buckets = timed(lambda: bucket_report(scan, warm.sizes(), resolution=512, batch_size=4))
        _, t_buckets_probe = timed(lambda: bucket_report(scan, None, resolution=512, batch_size=4))
        _, t_page_cold = timed(lambda: page(scan, 1, 48, cache_dir=ws / "thumbs"))
        _, t_page_warm = timed(lambda: page(scan, 1, 48, cache_dir=ws / "thumbs"))
        _, t_thumbs_cold = timed(lambda: [thumbnail(i.path, ws / "thumbs") for i in scan.images])
        _, t_thumbs_warm = timed(lambda: [thumbnail(i.path, ws / "thumbs") for i in scan.images])
        _, t_last_page_warm = timed(lambda: page(scan, 10_000, 48, cache_dir=ws / "thumbs"))
        print(json.dumps({
            "benchmark": "dataset_scan", "images": scan.num_images, "image_size": args.size,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "generate_s": t_gen,
            "scan_s": t_scan, "scan_again_s": t_scan2,
            "validate_cold_s": t_val_cold, "validate_warm_s": t_val_warm,
            "validate_cold_per_image_ms": round(1000 * t_val_cold / scan.num_images, 3),
            "validate_warm_over_cold": round(t_val_warm / t_val_cold, 4),
            "cache_hits_warm": warm.cache_hits, "cache_misses_warm": warm.cache_misses,
            "problems": cold.counts["problems"], "near_duplicates_found": cold.counts["near_duplicate"],
            "bucket_report_cached_sizes_s": t_buckets, "bucket_report_header_probe_s": t_buckets_probe,
            "gallery_page48_cold_s": t_page_cold, "gallery_page48_warm_s": t_page_warm,
            "thumbnails_all_cold_s": t_thumbs_cold, "thumbnails_all_warm_s": t_thumbs_warm,
            "gallery_last_page48_warm_s": t_last_page_warm,
        }, indent=1))


if __name__ == "__main__":
    main()
