"""From tagger probabilities to a caption: thresholds, MCut, rating, undesired tags, underscores,
replacements, trigger words and merging with an existing caption. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.dataset.captions import split_tags

# The kaomoji list of SmilingWolf's wd-tagger space (from toriato's A1111 extension): their underscores
# are part of the face, not word separators.
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
    "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})
CHARACTER_MCUT_FLOOR = 0.15  # SmilingWolf's space: character threshold = max(0.15, mcut)


@dataclass(frozen=True)
class TagRules:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    use_mcut: bool = False
    include_rating: bool = False
    undesired: tuple[str, ...] = ()
    replace_underscores: bool = True
    character_first: bool = False
    replacements: tuple[tuple[str, str], ...] = ()


@dataclass
class Prediction:
    """The tags one image got, each with its probability, before formatting."""
    rating: str | None = None
    general: list[tuple[str, float]] = field(default_factory=list)
    character: list[tuple[str, float]] = field(default_factory=list)


def tag_key(tag: str) -> str:
    """How tags are compared: case-insensitive, `_` and space alike, outer spaces ignored."""
    return " ".join(tag.replace("_", " ").lower().split())


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut Thresholding: the middle of the largest gap between consecutive sorted probabilities.

    Largeron, Moulin & Géry, "MCut: A Thresholding Strategy for Multi-label Classification" (IDA 2012),
    as SmilingWolf's wd-tagger space applies it. Needs at least two probabilities.
    """
    p = np.sort(np.asarray(probs, dtype=np.float64))[::-1]
    gaps = p[:-1] - p[1:]
    t = int(gaps.argmax())
    return float((p[t] + p[t + 1]) / 2)


def _selected(names: Sequence[str], probs: np.ndarray, threshold: float) -> list[tuple[str, float]]:
    keep = np.flatnonzero(probs >= threshold)
    pairs = [(names[i], float(probs[i])) for i in keep]
    return sorted(pairs, key=lambda kv: -kv[1])  # most confident first


def select(probs: np.ndarray, names: Sequence[str], rating_idx: np.ndarray, general_idx: np.ndarray,
           character_idx: np.ndarray, rules: TagRules) -> Prediction:
    """Pick the tags of one image from its probability vector (index sets from the CSV categories)."""
    gen_p, char_p = probs[general_idx], probs[character_idx]
    gen_t, char_t = rules.general_threshold, rules.character_threshold
    if rules.use_mcut:
        if gen_p.size >= 2:
            gen_t = mcut_threshold(gen_p)
        if char_p.size >= 2:
            char_t = max(CHARACTER_MCUT_FLOOR, mcut_threshold(char_p))
    gen_names = [names[i] for i in general_idx]
    char_names = [names[i] for i in character_idx]
    rating = None
    if rating_idx.size:
        rating = names[int(rating_idx[int(np.argmax(probs[rating_idx]))])]
    return Prediction(rating=rating, general=_selected(gen_names, gen_p, gen_t),
                      character=_selected(char_names, char_p, char_t))


def format_tag(tag: str, replace_underscores: bool) -> str:
    """`long_hair` → `long hair`; kaomoji (`^_^`) and very short tags keep their underscores."""
    tag = tag.strip()
    if not replace_underscores or tag in KAOMOJI or len(tag) <= 3:
        return tag
    return tag.replace("_", " ")


def dedupe(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tags:
        k = tag_key(t)
        if k and k not in seen:
            seen.add(k)
            out.append(t)
    return out


def apply_replacements(tags: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Each tag matching a pair's src (by tag_key) becomes its dst; an empty dst drops the tag."""
    table = {tag_key(src): dst.strip() for src, dst in pairs}
    out = []
    for t in tags:
        dst = table.get(tag_key(t), t)
        if dst:
            out.append(dst)
    return out


def with_front(tags: Iterable[str], front: Sequence[str]) -> list[str]:
    """`front` first in its order (added if absent, moved if present), then the other tags."""
    keys = {tag_key(f) for f in front}
    return [*dedupe(front), *(t for t in tags if tag_key(t) not in keys)]


def prediction_tags(pred: Prediction, rules: TagRules) -> list[str]:
    """The tags of a prediction in caption order, filtered, renamed and formatted (no trigger words)."""
    general = [n for n, _ in pred.general]
    character = [n for n, _ in pred.character]
    body = character + general if rules.character_first else general + character
    tags = ([pred.rating] if rules.include_rating and pred.rating else []) + body
    undesired = {tag_key(u) for u in rules.undesired}
    tags = [t for t in tags if tag_key(t) not in undesired]
    tags = apply_replacements(tags, rules.replacements)
    return dedupe(format_tag(t, rules.replace_underscores) for t in tags)


def merge_caption(new_tags: Sequence[str], existing: str | None, append: bool,
                  trigger_words: Sequence[str] = ()) -> list[str]:
    """The caption's tags: the existing ones first when appending (no duplicates), triggers in front."""
    tags = dedupe([*split_tags(existing or ""), *new_tags]) if append else list(new_tags)
    return with_front(tags, [t.strip() for t in trigger_words if t.strip()])
