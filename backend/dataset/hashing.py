"""Content and perceptual hashes for duplicate detection (PIL + numpy only)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

HASH_BITS = 64
FLAT_STD = 2.0  # grey-level spread below which an image is a flat colour: its perceptual hash says nothing


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bits_to_int(bits: np.ndarray) -> int:
    out = 0
    for b in bits.ravel():
        out = (out << 1) | int(b)
    return out


def dhash(gray: Image.Image) -> int:
    """Difference hash: 9×8 greyscale, one bit per horizontal neighbour pair (brighter left → 1).

    N. Krawetz, "Kind of Like That", hackerfactor.com blog, 2013.
    """
    small = np.asarray(gray.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    return _bits_to_int(small[:, :-1] > small[:, 1:])


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: C[k, i] = a(k) cos(pi (2i+1) k / 2n)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0, :] = np.sqrt(1.0 / n)
    return m


def phash(gray: Image.Image) -> tuple[int, bool]:
    """Perceptual hash and whether the image is flat.

    32×32 greyscale, 2-D DCT-II, the 8×8 lowest frequencies compared with their median (DC term excluded
    from the median). N. Krawetz, "Looks Like It", hackerfactor.com blog, 2011; Zauner, "Implementation
    and Benchmarking of Perceptual Image Hash Functions", 2010.
    """
    px = np.asarray(gray.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    c = _dct_matrix(32)
    low = (c @ px @ c.T)[:8, :8]
    median = np.median(low.ravel()[1:])
    return _bits_to_int(low > median), bool(px.std() < FLAT_STD)


def earliest_matches(dhashes: Sequence[int], phashes: Sequence[int], eligible: Sequence[bool],
                     threshold: int) -> dict[int, tuple[int, int]]:
    """For each index j, the first earlier index i whose dHash and pHash both lie within `threshold` bits.

    Returns {j: (i, distance)} with distance the larger of the two Hamming distances. Ineligible
    entries (flat or undecodable images) neither match nor are matched. O(n²) comparisons, vectorised.
    """
    n = len(dhashes)
    if n < 2:
        return {}
    dh = np.array(dhashes, dtype=np.uint64)
    ph = np.array(phashes, dtype=np.uint64)
    ok = np.array(eligible, dtype=bool)
    found: dict[int, tuple[int, int]] = {}
    for j in range(1, n):
        if not ok[j]:
            continue
        dd = np.bitwise_count(dh[:j] ^ dh[j])
        pd = np.bitwise_count(ph[:j] ^ ph[j])
        dist = np.maximum(dd, pd)
        hits = np.flatnonzero((dist <= threshold) & ok[:j])
        if hits.size:
            i = int(hits[0])
            found[j] = (i, int(dist[i]))
    return found
