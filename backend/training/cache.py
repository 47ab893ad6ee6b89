"""Latent and text-encoder output caches.

Latents are keyed by the image file's content hash, its size, the resize and crop, the flip and the
VAE's identity: change any of them and the entry is rebuilt; keep them and a later run (of any job)
reuses it from workspace/cache/latents/ (disk mode). Encoding runs in batches of one bucket, with
progress reported through a callback; afterwards the caller frees the VAE.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from backend.training.data import TrainItem, load_pixels

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


class LatentCache:
    """Latents by (item index, flip), kept in memory or in per-entry safetensors files on disk."""

    def __init__(self, mode: str, folder: Path | None, vae_id: str):
        if mode not in ("memory", "disk"):
            raise ValueError(f"cache mode {mode!r}")
        self.mode = mode
        self.folder = folder
        self.vae_id = vae_id
        self._mem: dict[tuple[int, bool], torch.Tensor] = {}
        self._keys: dict[tuple[int, bool], str] = {}
        self.reused = 0
        self.encoded = 0

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def build(self, items: Sequence[TrainItem], flips: Iterable[bool], encode: Callable[[torch.Tensor], torch.Tensor],
              batch_size: int = 4, progress: ProgressFn | None = None) -> None:
        """Encode every (item, flip) not cached yet, one bucket at a time, `batch_size` at once."""
        from safetensors.torch import load_file, save_file

        flips = sorted(set(flips))
        hashes = {it.index: file_sha256(it.path) for it in items}
        todo: dict[tuple[int, int], list[tuple[TrainItem, bool]]] = {}
        total = len(items) * len(flips)
        done = 0
        for it in items:
            for flip in flips:
                key = latent_key(hashes[it.index], it, flip, self.vae_id)
                self._keys[(it.index, flip)] = key
                if self.mode == "disk" and self._readable(key, load_file):
                    self.reused += 1
                    done += 1
                    continue
                todo.setdefault(it.choice.bucket, []).append((it, flip))
        if progress:
            progress(done, total)
        for bucket in sorted(todo):
            group = todo[bucket]
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                pixels = torch.stack([load_pixels(it, flip) for it, flip in chunk])
                latents = encode(pixels).float().cpu()
                for (it, flip), lat in zip(chunk, latents, strict=True):
                    key = self._keys[(it.index, flip)]
                    if self.mode == "memory":
                        self._mem[(it.index, flip)] = lat.clone()
                    else:
                        self._write(key, lat.contiguous(), save_file)
                    self.encoded += 1
                done += len(chunk)
                if progress:
                    progress(done, total)

    def _readable(self, key: str, load_file: Any) -> bool:
        """True when the entry exists and opens; a damaged one is removed and encoded again."""
        path = self._path(key)
        if not path.is_file():
            return False
        try:
            load_file(str(path))["latent"]
            return True
        except (OSError, KeyError, RuntimeError, ValueError):
            path.unlink(missing_ok=True)
            return False

    def _write(self, key: str, latent: torch.Tensor, save_file: Any) -> None:
        import os
        import tempfile

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file({"latent": latent}, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get(self, index: int, flip: bool) -> torch.Tensor:
        if self.mode == "memory":
            return self._mem[(index, flip)]
        from safetensors.torch import load_file

        return load_file(str(self._path(self._keys[(index, flip)])))["latent"]


class TextCache:
    """Text-encoder outputs by caption text (captions that never change from step to step)."""

    def __init__(self) -> None:
        self._by_text: dict[str, dict[str, torch.Tensor]] = {}

    def build(self, texts: Iterable[str], encode: Callable[[list[str]], dict[str, torch.Tensor]],
              batch_size: int = 16) -> None:
        todo = sorted({t for t in texts if t not in self._by_text})
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            with torch.no_grad():
                out = encode(chunk)
            for j, text in enumerate(chunk):
                self._by_text[text] = {k: v[j].detach().cpu().clone() for k, v in out.items()}

    def __contains__(self, text: str) -> bool:
        return text in self._by_text

    def get(self, texts: Sequence[str], device: Any = None, dtype: Any = None) -> dict[str, torch.Tensor]:
        """The batch of outputs for `texts`, stacked."""
        keys = self._by_text[texts[0]].keys()
        return {k: torch.stack([self._by_text[t][k] for t in texts]).to(device=device, dtype=dtype) for k in keys}
