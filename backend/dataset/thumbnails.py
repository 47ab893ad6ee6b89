"""Cached thumbnails and a paginated gallery, so the dataset tab stays quick with thousands of images."""

from __future__ import annotations

import hashlib
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from backend.dataset.filecache import file_key
from backend.dataset.images import to_rgb
from backend.dataset.scan import DatasetScan
from backend.files import atomic_write_bytes


@dataclass(frozen=True)
class GalleryItem:
    image: Path
    thumb: Path | None  # None when the image cannot be decoded
    caption: str | None
    subset: str


@dataclass(frozen=True)
class GalleryPage:
    items: list[GalleryItem]
    page: int  # 1-based, clamped into [1, pages]
    pages: int
    total: int

    def gallery_value(self) -> list[tuple[str, str]]:
        """[(image file, caption)] as gr.Gallery takes it; the original stands in for a missing thumbnail."""
        return [(str(i.thumb or i.image), i.caption or "") for i in self.items]


def thumbnail_path(cache_dir: Path, image: Path, size: int) -> Path | None:
    key = file_key(image)
    if key is None:
        return None
    digest = hashlib.sha256(f"{key[0]}\0{key[1]}\0{key[2]}\0{size}".encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.jpg"


def thumbnail(image: str | os.PathLike, cache_dir: Path, size: int = 256) -> Path | None:
    """The cached JPEG thumbnail (longest side `size`) of `image`, made if missing; None if unreadable.

    Keyed by path + mtime + size, so an edited image gets a fresh thumbnail.
    """
    src = Path(image).absolute()
    out = thumbnail_path(cache_dir, src, size)
    if out is None:
        return None
    if out.exists():
        return out
    try:
        with Image.open(src) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85)
    atomic_write_bytes(out, buf.getvalue(), durable=False)
    return out


def page(scan: DatasetScan, page: int, per_page: int = 48, *, cache_dir: Path, size: int = 256,
         workers: int | None = None) -> GalleryPage:
    """One page (1-based) of the dataset's images with their thumbnails and captions."""
    per_page = max(1, per_page)
    images = scan.images
    pages = max(1, math.ceil(len(images) / per_page))
    current = min(max(1, page), pages)
    chunk = images[(current - 1) * per_page: current * per_page]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(lambda item: thumbnail(item.path, cache_dir, size), chunk))
    items = [GalleryItem(image=i.path, thumb=t, caption=i.caption, subset=i.subset)
             for i, t in zip(chunk, thumbs, strict=True)]
    return GalleryPage(items=items, page=current, pages=pages, total=len(images))
