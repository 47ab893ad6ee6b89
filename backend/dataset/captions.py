"""Caption sidecars: `name.png` → `name<caption_extension>`, UTF-8, one line of comma-separated tags."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def normalize_extension(ext: str) -> str:
    ext = ext.strip()
    return ext if ext.startswith(".") else "." + ext


def caption_path(image: Path, extension: str) -> Path:
    return image.with_suffix(normalize_extension(extension))


def read_caption(path: Path) -> str | None:
    """The first non-empty line (what training reads), or None when there is no file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def write_caption(path: Path, text: str) -> None:
    """Write atomically so a reader (the trainer, the editor) never sees half a caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text.strip() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
