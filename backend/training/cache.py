"""Latent and text-encoder output caches, in memory or on disk (workspace/cache/).

Latents are keyed by the image file's content hash, its size, the resize and crop, the flip and the
VAE's identity; text outputs by the caption, clip skip and the text encoders' identity. Change any
of them and the entry is rebuilt; keep them and a later run (of any job) reuses the entry from disk,
so a warm start loads neither the VAE nor the text encoders when nothing is missing.
`plan` says what is missing (so the caller loads a model only when needed); `fill` encodes it in
batches of one bucket, reporting progress through a callback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from backend.files import replacing
from backend.training.data import TrainItem, load_batch

ProgressFn = Callable[[int, int], None]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def latent_key(content_hash: str, item: TrainItem, flip: bool, vae_id: str) -> str:
    """Everything the latent depends on, hashed: file content, size, resize, crop, flip, VAE."""
    c = item.choice
    desc = json.dumps({"file": content_hash, "size": item.size, "resized": c.resized, "crop": c.crop,
                       "bucket": c.bucket, "flip": flip, "vae": vae_id}, sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()[:32]


def _write_entry(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with replacing(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def _read_entry(path: Path) -> dict[str, torch.Tensor] | None:
    """The entry's tensors, or None when missing; a damaged entry is removed (and encoded again)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except (OSError, RuntimeError, ValueError):
        path.unlink(missing_ok=True)
        return None


class LatentCache:
    """Latents by (item index, flip), kept in memory or in per-entry safetensors files on disk."""

    def __init__(self, mode: str, folder: Path | None, vae_id: str):
        if mode not in ("memory", "disk") or (mode == "disk" and folder is None):
            raise ValueError(f"cache mode {mode!r} (folder {folder})")
        self.mode = mode
        self.folder = folder
        self.vae_id = vae_id
        self._mem: dict[tuple[int, bool], torch.Tensor] = {}
        self._keys: dict[tuple[int, bool], str] = {}
        self.reused = 0
        self.encoded = 0
        self.total = 0

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def plan(self, items: Sequence[TrainItem], flips: Iterable[bool]) -> list[tuple[TrainItem, bool]]:
        """Key every (item, flip); returns those not cached yet (on disk, a present entry is reused)."""
        flips = sorted(set(flips))
        todo = []
        for it in items:
            digest = file_sha256(it.path)
            for flip in flips:
                key = latent_key(digest, it, flip, self.vae_id)
                self._keys[(it.index, flip)] = key
                if self.mode == "disk" and _read_entry(self._path(key)) is not None:
                    self.reused += 1
                else:
                    todo.append((it, flip))
        self.total = len(self._keys)
        return todo

    def fill(self, todo: Sequence[tuple[TrainItem, bool]], encode: Callable[[torch.Tensor], torch.Tensor],
             batch_size: int = 4, progress: ProgressFn | None = None, workers: int = 0) -> None:
        """Encode `todo` (from `plan`), one bucket at a time, `batch_size` images at once."""
        by_bucket: dict[tuple[int, int], list[tuple[TrainItem, bool]]] = {}
        for it, flip in todo:
            by_bucket.setdefault(it.choice.bucket, []).append((it, flip))
        done = self.reused
        if progress:
            progress(done, self.total)
        for bucket in sorted(by_bucket):
            group = by_bucket[bucket]
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                pixels = load_batch(chunk, workers)
                latents = encode(pixels).float().cpu()
                for (it, flip), lat in zip(chunk, latents, strict=True):
                    key = self._keys[(it.index, flip)]
                    if self.mode == "memory":
                        self._mem[(it.index, flip)] = lat.clone()
                    else:
                        _write_entry(self._path(key), {"latent": lat})
                    self.encoded += 1
                done += len(chunk)
                if progress:
                    progress(done, self.total)

    def get(self, index: int, flip: bool) -> torch.Tensor:
        if self.mode == "memory":
            return self._mem[(index, flip)]
        entry = _read_entry(self._path(self._keys[(index, flip)]))
        if entry is None:
            raise FileNotFoundError(f"latent cache entry of image {index} vanished from {self.folder}")
        return entry["latent"]


class TextCache:
    """Text-encoder outputs by caption text (captions that never change from step to step).

    With a folder, entries are also written to and read from disk, keyed by the encoders' identity,
    the clip skip and the text.
    """

    def __init__(self, folder: Path | None = None, encoder_id: str = "", clip_skip: int = 1):
        self.folder = folder
        self.encoder_id = encoder_id
        self.clip_skip = clip_skip
        self._by_text: dict[str, dict[str, torch.Tensor]] = {}
        self.reused = 0

    def _path(self, text: str) -> Path:
        assert self.folder is not None
        key = hashlib.sha256(f"{self.encoder_id}\0{self.clip_skip}\0{text}".encode()).hexdigest()[:32]
        return self.folder / key[:2] / f"{key}.safetensors"

    def missing(self, texts: Iterable[str]) -> list[str]:
        """Texts neither in memory nor on disk (those on disk are loaded now)."""
        out = []
        for text in sorted(set(texts)):
            if text in self._by_text:
                continue
            entry = _read_entry(self._path(text)) if self.folder is not None else None
            if entry is None:
                out.append(text)
            else:
                self._by_text[text] = entry
                self.reused += 1
        return out

    def fill(self, texts: Iterable[str], encode: Callable[[list[str]], dict[str, torch.Tensor]],
             batch_size: int = 16) -> None:
        todo = sorted({t for t in texts if t not in self._by_text})
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            with torch.no_grad():
                out = encode(chunk)
            for j, text in enumerate(chunk):
                entry = {k: v[j].detach().float().cpu().clone() for k, v in out.items()}
                self._by_text[text] = entry
                if self.folder is not None:
                    _write_entry(self._path(text), entry)

    def get(self, texts: Sequence[str], device: Any = None, dtype: Any = None) -> dict[str, torch.Tensor]:
        """The batch of outputs for `texts`, stacked."""
        keys = self._by_text[texts[0]].keys()
        return {k: torch.stack([self._by_text[t][k] for t in texts]).to(device=device, dtype=dtype) for k in keys}
