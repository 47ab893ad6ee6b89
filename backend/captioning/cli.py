"""`python -m backend caption DATASET --tagger MODEL_DIR | --captioner MODEL_DIR [options]`.

Runs the caption job in the foreground with a progress bar on stderr. Options left out keep the
schema's defaults (backend/captioning/config.py), so every default is declared once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parsers(subparsers: Any) -> argparse.ArgumentParser:
    common = getattr(subparsers, "common", None)  # backend/__main__.py's --workspace option
    p = subparsers.add_parser(
        "caption", parents=[common] if common else [], help="tag (WD14) or caption (vision-language model) every image of a dataset",
        description="Write a caption file next to each image of DATASET_PATH, in the foreground. The "
                    "previous captions are saved first (restore them from the Captioning tab).")
    p.add_argument("dataset", metavar="DATASET_PATH", help="dataset folder (flat or kohya N_name subfolders)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tagger", metavar="MODEL_DIR", help="WD14 folder: model.onnx + selected_tags.csv")
    which.add_argument("--captioner", metavar="MODEL_DIR", help="transformers vision-language model folder")
    p.add_argument("--caption-extension", help="caption file extension (default .txt)")
    p.add_argument("--no-recursive", action="store_true", help="do not read subfolders of subsets")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--append", action="store_true", help="add to existing captions instead of replacing")
    existing.add_argument("--skip-existing", action="store_true", help="leave captioned images alone")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="image decoding threads")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"])
    t = p.add_argument_group("tagger")
    t.add_argument("--general-threshold", type=float)
    t.add_argument("--character-threshold", type=float)
    t.add_argument("--mcut", action="store_true", help="MCut thresholds instead of fixed ones")
    t.add_argument("--rating", action="store_true", help="add the rating tag")
    t.add_argument("--trigger", action="append", default=[], metavar="WORD",
                   help="trigger word(s) put first (repeat, or comma-separated)")
    t.add_argument("--undesired", action="append", default=[], metavar="TAGS", help="tags never written")
    t.add_argument("--replace", action="append", default=[], metavar="'SRC -> DST'", help="tag replacement")
    t.add_argument("--keep-underscores", action="store_true", help="write long_hair, not long hair")
    t.add_argument("--character-first", action="store_true")
    c = p.add_argument_group("captioner")
    c.add_argument("--prompt", help="prompt or task token (e.g. <DETAILED_CAPTION>)")
    c.add_argument("--max-new-tokens", type=int)
    c.add_argument("--num-beams", type=int)
    c.add_argument("--prefix", help="text before each caption (joined with ', ')")
    c.add_argument("--suffix", help="text after each caption")
    p.set_defaults(func=run_caption_command)
    return p


def _set(section: dict, key: str, value: Any) -> None:
    if value is not None and value != [] and value is not False:
        section[key] = value


def config_from_args(args: argparse.Namespace) -> dict:
    """The sparse config dict (dataset/model/tagger/captioner sections) the options describe."""
    dataset: dict = {"path": args.dataset}
    _set(dataset, "caption_extension", args.caption_extension)
    _set(dataset, "recursive", False if args.no_recursive else None)
    _set(dataset, "existing", "append" if args.append else "skip" if args.skip_existing else None)
    mode = "tagger" if args.tagger else "captioner"
    model: dict = {"mode": mode, "path": args.tagger or args.captioner}
    _set(model, "batch_size", args.batch_size)
    _set(model, "loader_workers", args.workers)
    _set(model, "device", args.device)
    cfg: dict = {"dataset": dataset, "model": model}
    triggers = [w.strip() for item in args.trigger for w in item.split(",") if w.strip()]
    if mode == "tagger":
        tagger: dict = {}
        _set(tagger, "general_threshold", args.general_threshold)
        _set(tagger, "character_threshold", args.character_threshold)
        _set(tagger, "use_mcut", args.mcut)
        _set(tagger, "include_rating", args.rating)
        _set(tagger, "trigger_words", triggers)
        _set(tagger, "undesired_tags", ",".join(args.undesired) or None)
        _set(tagger, "replacements", list(args.replace))
        _set(tagger, "replace_underscores", False if args.keep_underscores else None)
        _set(tagger, "character_first", args.character_first)
        cfg["tagger"] = tagger
    else:
        cap: dict = {}
        _set(cap, "prompt", args.prompt)
        _set(cap, "max_new_tokens", args.max_new_tokens)
        _set(cap, "num_beams", args.num_beams)
        _set(cap, "prefix", ", ".join([*triggers, *([args.prefix] if args.prefix else [])]) or None)
        _set(cap, "suffix", args.suffix)
        cfg["captioner"] = cap
    return cfg


def run_caption_command(args: argparse.Namespace) -> int:
    """Exit status 0 when every image was captioned, 1 when some could not be."""
    from tqdm import tqdm

    from backend.captioning.job import caption_foreground
    from backend.paths import open_workspace

    bar: tqdm | None = None

    def progress(step: int, total: int, **counts: Any) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)
        bar.update(step - bar.n)
        bar.set_postfix(counts, refresh=False)

    try:  # a LoraDashError (bad model folder, bad option) is reported by backend/__main__.py
        paths = open_workspace(getattr(args, "workspace", None))
        result = caption_foreground(paths, config_from_args(args), progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"{result.mode} on {result.provider}: wrote {result.written} of {result.total} captions"
          + (f", skipped {result.skipped_existing} already captioned" if result.skipped_existing else ""))
    for f in result.failed:
        print(f"failed: {f.path}: {f.error}", file=sys.stderr)
    if result.undo_id:
        print(f"previous captions saved: undo snapshot {result.undo_id}")
    return 1 if result.failed else 0
