"""Opening images the same way everywhere: training, tagging, validation and thumbnails."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def image_error(err: BaseException) -> str:
    """What went wrong reading an image, in words a user can act on. PIL names the file object it read
    from ("cannot identify image file <_io.BytesIO object at 0x7f…>"), which tells a user nothing."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image PIL can read: the file is damaged, or not the kind of image its extension says"
    if isinstance(err, Image.DecompressionBombError):
        return f"too many pixels to open safely ({_OBJECT_REPR.sub('', str(err)).strip()})"
    text = _OBJECT_REPR.sub("the file", getattr(err, "strerror", None) or str(err)).strip()
    return text or type(err).__name__


# What a damaged or hostile file raises from PIL: UnidentifiedImageError (an OSError), truncated data,
# bad sizes or modes, broken chunks, decompression bombs.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def unreadable_reason(path: str | Path) -> str | None:
    """Why `path` cannot be read as an image (header, then PIL's structural check: PNG chunks and their
    checksums), or None. Cheap: pixels are not decoded, so a JPEG cut short passes here (the dataset
    check, which decodes every image, flags it as truncated)."""
    try:
        with Image.open(path) as img:
            img.verify()
    except UNREADABLE as err:
        return image_error(err)
    return None


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with transparency composited onto white (PIL's plain convert("RGB") turns it black)."""
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "I;16" or img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode fully, honour the EXIF orientation, composite alpha on white; raises OSError if unreadable."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)


# EXIF orientations 5–8 rotate by 90° or 270°: width and height swap once the image is transposed.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
EXIF_ORIENTATION_TAG = 0x0112


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as the image will look after `exif_transpose`, without decoding pixels."""
    w, h = img.size
    try:
        if img.format == "PNG":
            # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixels;
            # the header's chunk (where the PNG spec puts it) is enough here.
            raw = img.info.get("exif")
            exif = Image.Exif()
            if raw:
                exif.load(raw)
        else:
            exif = img.getexif()
        orientation = exif.get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError):  # a broken EXIF block: PIL's exif_transpose ignores it too
        orientation = 1
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header only (cheap; for bucketing); OSError if unreadable."""
    with Image.open(path) as img:
        return oriented_size(img)
