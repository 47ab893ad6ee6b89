"""Images and folders the dataset tests build for themselves (no files shipped)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def textured(seed: int, size: tuple[int, int] = (320, 320), mode: str = "RGB") -> Image.Image:
    """A smooth random texture: distinct seeds give perceptually different images (no false near-duplicates)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8"))
    img = small.resize(size, Image.Resampling.BICUBIC)
    return img.convert(mode) if mode != "RGB" else img


def save(img: Image.Image, path: Path, caption: str | None = None, ext: str = ".txt", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    if caption is not None:
        path.with_suffix(ext).write_text(caption + "\n", encoding="utf-8")
    return path


def kohya_tree(root: Path) -> Path:
    """root/10_a (3 images, captioned) and root/3_b (2 images, one captioned), plus an ignored _quarantine."""
    for i in range(3):
        save(textured(100 + i), root / "10_a" / f"a{i}.png", caption=f"trig, a{i}")
    save(textured(200), root / "3_b" / "b0.jpg", caption="trig, b0")
    save(textured(201), root / "3_b" / "b1.JPG")
    save(textured(300), root / "_quarantine" / "10_a" / "old.png")
    return root


def snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every path under `folder` with its size (0 for folders), to prove a refusal changed nothing."""
    if not folder.exists():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else 0)
                  for p in folder.rglob("*"))


def png_bytes(seed: int, size=(64, 64)) -> bytes:
    import io
    buf = io.BytesIO()
    textured(seed, size).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path
