"""Which bucket each image goes to, how full each bucket is, and the steps per epoch (dataset tab).

Uses `assign_bucket` from buckets.py, the function the trainer calls, so the view cannot drift from training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from backend.dataset.buckets import assign_bucket, make_buckets, single_bucket
from backend.dataset.images import image_size
from backend.dataset.scan import DatasetScan


@dataclass
class BucketReport:
    per_image: pd.DataFrame  # file, subset, repeats, width, height, bucket, resized, crop_fraction, upscaled
    per_bucket: pd.DataFrame  # bucket, width, height, images, with_repeats, batches
    steps_per_epoch: int
    upscaled: list[Path]
    heavily_cropped: list[Path]
    unreadable: list[Path]


def probe_sizes(scan: DatasetScan) -> dict[Path, tuple[int, int]]:
    """Sizes from the image headers (no decoding); unreadable images are left out."""
    out = {}
    for item in scan.images:
        try:
            out[item.path] = image_size(item.path)
        except (OSError, SyntaxError, ValueError):
            continue
    return out


def bucket_report(scan: DatasetScan, sizes: Mapping[Path, tuple[int, int]] | None = None, *,
                  resolution: int = 512, min_reso: int = 256, max_reso: int = 1024, step: int = 64,
                  enable_bucket: bool = True, no_upscale: bool = False, batch_size: int = 1,
                  heavy_crop: float = 0.3) -> BucketReport:
    """Assign every image of `scan` to its bucket, as the trainer will.

    Steps per epoch follow kohya: every image enters its bucket `repeats` times and each bucket is cut
    into batches of `batch_size` (the last one may be short), so steps = Σ ceil(images×repeats / batch).
    Regularisation images, if any, are a separate scan and add their own steps.
    """
    sizes = probe_sizes(scan) if sizes is None else sizes
    buckets = make_buckets(resolution, min_reso, max_reso, step) if enable_bucket else single_bucket(resolution)
    rows = []
    unreadable = []
    for item in scan.images:
        if item.path not in sizes:
            unreadable.append(item.path)
            continue
        w, h = sizes[item.path]
        choice = assign_bucket(w, h, resolution=resolution, buckets=buckets,
                               no_upscale=no_upscale and enable_bucket, step=step)
        rows.append({"file": str(item.path), "subset": item.subset, "repeats": item.repeats, "width": w,
                     "height": h, "bucket": f"{choice.bucket[0]}x{choice.bucket[1]}",
                     "resized": f"{choice.resized[0]}x{choice.resized[1]}",
                     "crop_fraction": choice.crop_fraction, "upscaled": choice.upscaled,
                     "_bw": choice.bucket[0], "_bh": choice.bucket[1]})
    per_image = pd.DataFrame(rows, columns=["file", "subset", "repeats", "width", "height", "bucket", "resized",
                                            "crop_fraction", "upscaled", "_bw", "_bh"])
    batch = max(1, batch_size)
    grouped = []
    for (bw, bh), g in per_image.groupby(["_bw", "_bh"], sort=True):
        n_rep = int(g["repeats"].sum())
        grouped.append({"bucket": f"{bw}x{bh}", "width": int(bw), "height": int(bh), "images": len(g),
                        "with_repeats": n_rep, "batches": math.ceil(n_rep / batch)})
    per_bucket = pd.DataFrame(grouped, columns=["bucket", "width", "height", "images", "with_repeats",
                                                "batches"])
    return BucketReport(
        per_image=per_image.drop(columns=["_bw", "_bh"]), per_bucket=per_bucket,
        steps_per_epoch=int(per_bucket["batches"].sum()) if len(per_bucket) else 0,
        upscaled=[Path(f) for f in per_image.loc[per_image["upscaled"].astype(bool), "file"]],
        heavily_cropped=[Path(f) for f in per_image.loc[per_image["crop_fraction"] > heavy_crop, "file"]],
        unreadable=unreadable)


def bucket_figure(report: BucketReport):
    """A plotly bar chart of images per bucket (with repeats stacked on top), for gr.Plot."""
    import plotly.graph_objects as go  # imported here: only the UI draws it

    df = report.per_bucket
    fig = go.Figure(go.Bar(x=df["bucket"], y=df["images"], name="images"))
    fig.add_bar(x=df["bucket"], y=df["with_repeats"] - df["images"], name="extra from repeats")
    fig.update_layout(barmode="stack", xaxis_title="bucket (w×h)", yaxis_title="images",
                      margin={"l": 40, "r": 10, "t": 30, "b": 40})
    return fig
