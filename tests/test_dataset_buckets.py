import random

import pytest

from backend.dataset.buckets import assign_bucket, make_buckets, single_bucket
from backend.errors import DatasetError


def test_make_buckets_kohya_rules():
    b = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in b and (256, 1024) in b and (1024, 256) in b and (448, 576) in b
    for w, h in b:
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
        assert w * h <= 512 * 512
        assert (h, w) in b  # every aspect ratio both ways
    assert b == sorted(set(b))
    # min/max off the step: sides still multiples of step inside [min, max]
    odd = make_buckets(512, 250, 1000, 48)
    assert all(w % 48 == 0 and h % 48 == 0 and 250 <= min(w, h) and max(w, h) <= 1000 for w, h in odd)
    with pytest.raises(DatasetError, match="must not exceed resolution"):
        make_buckets(512, 640, 1024, 64)


def _sizes(n=400, seed=0):
    rng = random.Random(seed)
    return [(rng.randint(64, 4000), rng.randint(64, 4000)) for _ in range(n)] + [(512, 512), (768, 512)]


@pytest.mark.parametrize("resolution", [512, 1024])
def test_assign_covers_and_centres(resolution):
    buckets = make_buckets(resolution, 256, 2048, 64)
    for w, h in _sizes():
        c = assign_bucket(w, h, resolution=resolution, buckets=buckets)
        assert c.bucket in buckets
        bw, bh = c.bucket
        rw, rh = c.resized
        assert rw >= bw and rh >= bh  # covers the bucket: crop, never pad
        assert c.crop == ((rw - bw) // 2, (rh - bh) // 2)
        assert abs(rw / w - rh / h) < 2 / min(w, h) + 2 / min(rw, rh)  # aspect kept (rounding only)
        assert (rw == bw) or (rh == bh)  # one side fits exactly
        ar = w / h
        if (w, h) not in buckets:
            assert abs(bw / bh - ar) == min(abs(x / y - ar) for x, y in buckets)
        assert c.upscaled == (rw > w or rh > h)
        assert 0 <= c.crop_fraction < 1


def test_no_upscale_never_upscales():
    buckets = make_buckets(512, 256, 1024, 64)
    for w, h in _sizes(seed=1):
        c = assign_bucket(w, h, resolution=512, buckets=buckets, no_upscale=True, step=64)
        bw, bh = c.bucket
        assert not c.upscaled and c.resized[0] <= w and c.resized[1] <= h
        assert bw % 64 == 0 and bh % 64 == 0 and bw <= c.resized[0] and bh <= c.resized[1]
        assert bw * bh <= 512 * 512
    small = assign_bucket(300, 200, resolution=512, buckets=buckets, no_upscale=True)
    assert small.bucket == (256, 192) and small.resized == (300, 200) and small.crop == (22, 4)


def test_single_bucket_is_square_crop():
    c = assign_bucket(1000, 500, resolution=512, buckets=single_bucket(512))
    assert c.bucket == (512, 512) and c.resized == (1024, 512) and c.crop == (256, 0)
    assert c.crop_fraction == pytest.approx(0.5)
