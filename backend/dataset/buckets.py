"""Aspect-ratio bucketing: the one implementation the trainer and the dataset tab share.

Semantics follow kohya sd-scripts (library/model_util.py `make_bucket_resolutions`, library/train_util.py
`BucketManager.select_bucket` and `trim_and_resize_if_required`): pick the bucket whose aspect ratio is
nearest the image's, resize so the image covers the bucket, then crop the overflow from the centre.
With `no_upscale` the predefined buckets are not used: an image larger than resolution² is shrunk to that
area, and the bucket is the (resized) image size rounded down to `step`, so nothing is ever enlarged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backend.errors import DatasetError


@dataclass(frozen=True)
class BucketChoice:
    bucket: tuple[int, int]  # (w, h) the training tensor size
    resized: tuple[int, int]  # (w, h) the image after resizing, before the crop
    crop: tuple[int, int]  # (left, top) of the crop inside the resized image
    upscaled: bool
    crop_fraction: float  # share of the resized image's area cut away by the crop, 0..1


def make_buckets(resolution: int, min_reso: int, max_reso: int, step: int) -> list[tuple[int, int]]:
    """All (w, h) buckets for `resolution`, sorted; kohya `make_bucket_resolutions` (model_util.py).

    Sides are multiples of `step` within [min_reso, max_reso] and w*h ≤ resolution², plus the square bucket
    of side `floor(resolution / step) * step`. kohya only warns when min/max are not multiples of the
    step and then makes off-step sides; here min is rounded up and max down to the step instead.
    """
    _check_bucket_args(resolution, min_reso, max_reso, step)
    max_area = resolution * resolution
    side = (int(math.isqrt(max_area)) // step) * step
    resos = {(side, side)}
    lo = -(-min_reso // step) * step
    hi = max_reso // step * step
    width = lo
    while width <= hi:
        height = min(hi, (max_area // width) // step * step)
        if height >= lo:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def single_bucket(resolution: int) -> list[tuple[int, int]]:
    """Bucketing disabled: every image is resized to cover a square and centre-cropped (kohya's default)."""
    if resolution < 1:
        raise DatasetError(f"resolution must be a positive number of pixels, got {resolution}")
    return [(resolution, resolution)]


def assign_bucket(width: int, height: int, *, resolution: int, buckets: list[tuple[int, int]],
                  no_upscale: bool = False, step: int = 64) -> BucketChoice:
    """The bucket, resize and centre crop for an image of `width` × `height` (after EXIF rotation).

    kohya `BucketManager.select_bucket` + `trim_and_resize_if_required` with random_crop off. One
    deliberate difference: with `no_upscale`, a side shorter than `step` would give kohya a zero-sized
    bucket; here the bucket side is raised to `step` and the choice is marked `upscaled`.
    """
    if width < 1 or height < 1:
        raise DatasetError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    if not no_upscale:
        if not buckets:
            raise DatasetError("no buckets to choose from: check resolution, min/max bucket size and step")
        bucket = (width, height) if (width, height) in buckets else min(
            buckets, key=lambda b: abs(b[0] / b[1] - aspect))
        if aspect > bucket[0] / bucket[1]:  # wider than the bucket: match heights, crop the sides
            scale = bucket[1] / height
        else:
            scale = bucket[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    else:
        resized = _shrink_to_area(width, height, resolution * resolution, step)
        bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
        if resized[0] < bucket[0] or resized[1] < bucket[1]:  # tiny image: grow it to cover one step
            scale = max(bucket[0] / width, bucket[1] / height)
            resized = (max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5)))
    # Float rounding can leave the resized image one pixel short; never crop outside it.
    resized = (max(resized[0], bucket[0]), max(resized[1], bucket[1]))
    crop = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
    crop_fraction = 1.0 - (bucket[0] * bucket[1]) / (resized[0] * resized[1])
    return BucketChoice(bucket=bucket, resized=resized, crop=crop,
                        upscaled=resized[0] > width or resized[1] > height,
                        crop_fraction=round(crop_fraction, 6))


def _round_to_steps(x: float, step: int) -> int:
    v = int(x + 0.5)
    return v - v % step


def _shrink_to_area(width: int, height: int, max_area: int, step: int) -> tuple[int, int]:
    """kohya's no_upscale resize: images above `max_area` shrink to it, one side a multiple of `step`."""
    if width * height <= max_area:
        return (width, height)
    aspect = width / height
    rw = math.sqrt(max_area * aspect)
    rh = max_area / rw
    bw = _round_to_steps(rw, step)
    bh_in_w = _round_to_steps(bw / aspect, step)
    bh = _round_to_steps(rh, step)
    bw_in_h = _round_to_steps(bh * aspect, step)
    ar_w = bw / bh_in_w if bh_in_w else math.inf
    ar_h = bw_in_h / bh if bh else math.inf
    if abs(ar_w - aspect) < abs(ar_h - aspect):
        return (bw, int(bw / aspect + 0.5))
    return (int(bh * aspect + 0.5), bh)


def _check_bucket_args(resolution: int, min_reso: int, max_reso: int, step: int) -> None:
    problems = []
    if step < 1 or step > resolution:
        problems.append(f"step must be from 1 to resolution ({resolution}), got {step}")
    if resolution < 1:
        problems.append(f"resolution must be positive, got {resolution}")
    if min_reso < 1 or max_reso < min_reso:
        problems.append(f"need 1 ≤ min_reso ≤ max_reso, got min_reso={min_reso}, max_reso={max_reso}")
    if not problems and min_reso > resolution:
        problems.append(f"min_reso ({min_reso}) must not exceed resolution ({resolution})")
    if problems:
        raise DatasetError("bucket settings: " + "; ".join(problems))
