"""Bulk tag operations over a dataset's captions, previewed before anything is written.

`apply_ops(...)` computes a ChangeSet (which files change, before/after) without writing; `commit()`
saves an undo snapshot and writes the changed captions atomically. Tags are matched like the tagger
matches them: case-insensitive, `_` and space alike (`long_hair` = `Long hair`). Only the first line of a
caption file is edited, the line kohya's trainer reads.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from backend.captioning.tagrules import dedupe, tag_key, with_front
from backend.captioning.undo import create_snapshot
from backend.dataset.captions import join_tags, read_caption, split_tags, write_caption
from backend.dataset.scan import ImageItem, scan_dataset
from backend.errors import DatasetError
from backend.paths import WorkspacePaths


def _keys(tags: Iterable[str]) -> set[str]:
    return {tag_key(t) for t in tags if tag_key(t)}


def document_frequency(captions: Iterable[str]) -> Counter[str]:
    """In how many captions each tag (by tag_key) occurs."""
    counts: Counter[str] = Counter()
    for text in captions:
        counts.update(_keys(split_tags(text)))
    return counts


class TagOp:
    """Base: maps every caption of the scope at once (frequency-based ops need the whole scope)."""
    label = ""

    def apply(self, captions: list[str]) -> list[str]:
        return [self.apply_tags_text(c, counts=None) for c in captions]

    def apply_tags_text(self, text: str, counts: Counter[str] | None) -> str:
        tags = split_tags(text)
        new = self.edit(tags, counts)
        return text if new == tags else join_tags(new)

    def edit(self, tags: list[str], counts: Counter[str] | None) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class AddTrigger(TagOp):
    """Trigger words first, added when absent and moved when present: running it twice changes nothing."""
    words: tuple[str, ...]
    label = "add trigger word"

    def edit(self, tags, counts):
        return with_front(tags, [w.strip() for w in self.words if w.strip()])


@dataclass(frozen=True)
class RemoveTags(TagOp):
    tags: tuple[str, ...]
    label = "remove tags"

    def edit(self, tags, counts):
        drop = _keys(self.tags)
        return [t for t in tags if tag_key(t) not in drop]


@dataclass(frozen=True)
class ReplaceTag(TagOp):
    """Rename `src` to `dst` (an empty dst removes it); a duplicate created by the rename is dropped."""
    src: str
    dst: str
    label = "replace tag"

    def edit(self, tags, counts):
        src, dst = tag_key(self.src), self.dst.strip()
        out: list[str] = []
        for t in tags:
            new = dst if tag_key(t) == src else t
            if new and not (tag_key(new) == tag_key(dst) and tag_key(dst) in _keys(out)):
                out.append(new)
        return out


@dataclass(frozen=True)
class MoveToFront(TagOp):
    """Tags that a caption has are moved to its front, in the given order; absent ones are not added."""
    tags: tuple[str, ...]
    label = "move tags to front"

    def edit(self, tags, counts):
        present = _keys(tags)
        front = [next(t for t in tags if tag_key(t) == tag_key(w)) for w in self.tags
                 if tag_key(w) in present]
        return with_front(tags, front)


@dataclass(frozen=True)
class Deduplicate(TagOp):
    label = "remove duplicate tags"

    def edit(self, tags, counts):
        return dedupe(tags)


@dataclass(frozen=True)
class SortTags(TagOp):
    """Sort alphabetically or by frequency in the scope (most frequent first); the first `keep_first`
    tags (trigger words) stay where they are."""
    by: Literal["alpha", "frequency"] = "alpha"
    keep_first: int = 0
    label = "sort tags"

    def apply(self, captions):
        counts = document_frequency(captions) if self.by == "frequency" else None
        return [self.apply_tags_text(c, counts) for c in captions]

    def edit(self, tags, counts):
        head, rest = tags[:self.keep_first], tags[self.keep_first:]
        if counts is None:
            return head + sorted(rest, key=tag_key)
        return head + sorted(rest, key=lambda t: (-counts[tag_key(t)], tag_key(t)))


@dataclass(frozen=True)
class PruneRare(TagOp):
    """Remove tags found in fewer than `min_count` captions of the scope (except those in `keep`)."""
    min_count: int
    keep: tuple[str, ...] = ()
    label = "prune rare tags"

    def apply(self, captions):
        counts = document_frequency(captions)
        return [self.apply_tags_text(c, counts) for c in captions]

    def edit(self, tags, counts):
        assert counts is not None
        keep = _keys(self.keep)
        return [t for t in tags if counts[tag_key(t)] >= self.min_count or tag_key(t) in keep]


@dataclass(frozen=True)
class SearchReplace(TagOp):
    """Plain text (or regular expression) search and replace over the whole caption line."""
    find: str
    replace: str = ""
    regex: bool = False
    case_sensitive: bool = True
    label = "search and replace"

    def apply(self, captions):
        if not self.find:
            return list(captions)
        flags = 0 if self.case_sensitive else re.IGNORECASE
        try:
            pattern = re.compile(self.find if self.regex else re.escape(self.find), flags)
        except re.error as err:
            raise DatasetError(f"search pattern {self.find!r} is not a valid regular expression: {err}") from None
        repl: str | Callable[[re.Match[str]], str] = self.replace if self.regex else (lambda m: self.replace)
        return [pattern.sub(repl, c) for c in captions]


OPS: dict[str, type[TagOp]] = {
    "add_trigger": AddTrigger, "remove_tags": RemoveTags, "replace_tag": ReplaceTag,
    "move_to_front": MoveToFront, "dedupe": Deduplicate, "sort": SortTags, "prune_rare": PruneRare,
    "search_replace": SearchReplace,
}


def op_from_dict(spec: dict) -> TagOp:
    """`{"op": "remove_tags", "tags": ["a", "b"]}` → RemoveTags(("a", "b")); for forms and JSON."""
    spec = dict(spec)
    name = spec.pop("op", None)
    if name not in OPS:
        raise DatasetError(f"unknown tag operation {name!r}; choose one of {', '.join(OPS)}")
    spec = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    try:
        return OPS[name](**spec)
    except TypeError as err:
        raise DatasetError(f"tag operation {name!r}: {err}") from None


@dataclass
class Change:
    image: Path
    caption_path: Path
    before: str | None  # None: there was no caption file
    after: str


@dataclass
class ChangeSet:
    dataset: Path
    caption_extension: str
    ops: list[TagOp]
    considered: int
    changes: list[Change] = field(default_factory=list)
    undo_id: str | None = None
    written: int = 0
    conflicts: list[Path] = field(default_factory=list)  # edited by someone else since the preview

    @property
    def num_changed(self) -> int:
        return len(self.changes)

    def summary(self) -> str:
        what = "; ".join(op.label for op in self.ops) or "no operation"
        return f"{what}: {self.num_changed} of {self.considered} caption files change"

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({"image": [str(c.image) for c in self.changes],
                             "before": [c.before for c in self.changes],
                             "after": [c.after for c in self.changes]},
                            columns=["image", "before", "after"])


def _scan_items(dataset_root: str | os.PathLike, caption_extension: str, recursive: bool) -> list[ImageItem]:
    return scan_dataset(dataset_root, caption_extension, recursive=recursive).images


def compute_changes(items: Sequence[ImageItem], ops: Sequence[TagOp]) -> list[Change]:
    texts = [it.caption or "" for it in items]
    for op in ops:
        texts = op.apply(texts)
    changes = []
    for it, after in zip(items, texts, strict=True):
        after = after.strip()
        if after != (it.caption or "") and not (it.caption is None and not after):
            changes.append(Change(it.path, it.caption_path, it.caption, after))
    return changes


def apply_ops(dataset_root: str | os.PathLike, caption_extension: str, ops: Sequence[TagOp | dict],
              selection: Iterable[str | os.PathLike] | None = None, dry_run: bool = True,
              paths: WorkspacePaths | None = None, recursive: bool = True) -> ChangeSet:
    """The captions that `ops` (applied in order) would change, over the dataset or the selected images.

    dry_run=False also commits (needs `paths` for the undo snapshot)."""
    ops = [op_from_dict(op) if isinstance(op, dict) else op for op in ops]
    items = _scan_items(dataset_root, caption_extension, recursive)
    if selection is not None:
        chosen = {Path(p).absolute() for p in selection}
        items = [it for it in items if it.path in chosen]
    root = Path(dataset_root).expanduser().absolute()
    cs = ChangeSet(root, caption_extension, list(ops), len(items), compute_changes(items, ops))
    if not dry_run:
        if paths is None:
            raise DatasetError("applying tag operations needs the workspace (for the undo snapshot)")
        commit(cs, paths)
    return cs


def commit(changeset: ChangeSet, paths: WorkspacePaths) -> ChangeSet:
    """Snapshot the captions about to change, then write them; a file edited since the preview is
    left alone and listed in `conflicts`."""
    todo = [c for c in changeset.changes if read_caption(c.caption_path) == c.before]
    changeset.conflicts = [c.caption_path for c in changeset.changes if c not in todo]
    if todo:
        snap = create_snapshot(paths, changeset.dataset, [c.caption_path for c in todo],
                               label=changeset.summary())
        changeset.undo_id = snap.id
    for c in todo:
        write_caption(c.caption_path, c.after)
    changeset.written = len(todo)
    return changeset


def tag_frequency(dataset_root: str | os.PathLike, caption_extension: str = ".txt", recursive: bool = True,
                  by_subset: bool = False, selection: Iterable[str | os.PathLike] | None = None) -> pd.DataFrame:
    """Tags by how many images carry them: columns tag, count, percent (of captioned images), most
    frequent first; with by_subset a `subset` column (the kohya folder name) comes first."""
    items = _scan_items(dataset_root, caption_extension, recursive)
    if selection is not None:
        chosen = {Path(p).absolute() for p in selection}
        items = [it for it in items if it.path in chosen]
    groups: dict[str, list[ImageItem]] = {}
    for it in items:
        groups.setdefault(it.subset if by_subset else "", []).append(it)
    frames = []
    for subset, group in groups.items():
        counts: Counter[str] = Counter()
        for it in group:
            counts.update(dedupe(split_tags(it.caption or "")))
        n = sum(1 for it in group if it.caption)
        df = pd.DataFrame(counts.most_common(), columns=["tag", "count"])
        df["percent"] = (100.0 * df["count"] / max(n, 1)).round(1)
        if by_subset:
            df.insert(0, "subset", subset)
        frames.append(df)
    cols = (["subset"] if by_subset else []) + ["tag", "count", "percent"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values([*cols[:-3], "count", "tag"], ascending=[*([True] * by_subset), False, True],
                           ignore_index=True)
