"""Decoding images on a thread pool ahead of the model, so inference never waits on JPEG decoding.

Pillow's decoders and resizers release the GIL, as does onnxruntime's `run`, so threads overlap for real.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from backend.dataset.images import image_error

# What an unreadable or hostile file raises from Pillow: OSError (UnidentifiedImageError, truncated
# data), ValueError (bad sizes/modes), SyntaxError (some broken PNG chunks), DecompressionBombError.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class Loaded:
    path: Path
    value: Any = None
    error: str | None = None  # set when the image could not be read; value is then None


def load_one(load: Callable[[Path], Any], path: Path) -> Loaded:
    try:
        return Loaded(path, load(path))
    except UNREADABLE as err:
        return Loaded(path, error=f"{type(err).__name__}: {image_error(err)}")


def iter_loaded(paths: Iterable[Path], load: Callable[[Path], Any], workers: int = 2,
                lookahead: int | None = None) -> Iterator[Loaded]:
    """`load(path)` for each path, in order; up to `lookahead` loads run ahead on `workers` threads.

    workers=0 loads each image in the calling thread when it is needed (no overlap).
    """
    if workers <= 0:
        for p in paths:
            yield load_one(load, Path(p))
        return
    lookahead = max(1, lookahead or workers * 4)
    it = iter(paths)
    pending: deque[Future[Loaded]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="caption-loader") as pool:
        try:
            for p in it:
                pending.append(pool.submit(load_one, load, Path(p)))
                if len(pending) >= lookahead:
                    break
            while pending:
                done = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(load_one, load, Path(nxt)))
                yield done.result()
        finally:
            for fut in pending:  # the consumer stopped early: do not decode what nobody will read
                fut.cancel()


def iter_batches(paths: Iterable[Path], load: Callable[[Path], Any], batch_size: int, workers: int = 2,
                 lookahead: int | None = None) -> Iterator[tuple[list[Loaded], list[Loaded]]]:
    """(loaded, failed) groups: `loaded` holds up to batch_size readable images; `failed` the unreadable
    ones met since the previous group. The last group may be short."""
    batch: list[Loaded] = []
    failed: list[Loaded] = []
    ahead = lookahead or max(batch_size * 2, workers * 4)
    for item in iter_loaded(paths, load, workers, ahead):
        (failed if item.error else batch).append(item)
        if len(batch) >= batch_size:
            yield batch, failed
            batch, failed = [], []
    if batch or failed:
        yield batch, failed
