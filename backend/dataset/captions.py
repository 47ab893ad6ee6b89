"""Caption sidecars: `name.png` → `name<caption_extension>`, UTF-8, one line of comma-separated tags."""

from __future__ import annotations

from pathlib import Path

from backend.files import atomic_write_bytes


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
    atomic_write_bytes(path, (text.strip() + "\n").encode("utf-8"), durable=False)
