"""What the Captioning tab computes, as plain functions (no gradio here): local model folders, the
caption form's values → a job config, the editor's filtered image list and gallery page, bulk-operation
specs, tag-frequency charts, and a caption/download job's progress read from its events.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from backend.captioning.config import CaptionConfig, load_caption_config
from backend.captioning.folders import (
    CAPTIONER_HELP,
    TAGGER_HELP,
    captioner_problem,
    diffusers_model_of,
    model_kind,
    tagger_problem,
)
from backend.captioning.job import resolve_in
from backend.captioning.tagops import ChangeSet
from backend.captioning.tagrules import tag_key
from backend.captioning.undo import list_snapshots
from backend.config.fields import FieldSpec, leaf_fields
from backend.dataset.captions import caption_path, read_caption, split_tags
from backend.dataset.scan import ImageItem, scan_dataset
from backend.errors import ConfigError, DatasetError, ModelError
from backend.jobs.registry import JobRecord
from backend.models.download import PARTIAL_SUFFIX
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots
from webui import forms
from webui.text import code, md, progress_bar

JOB_KINDS = ("caption", "download")
PER_PAGE = 24
TABLE_ROWS = 300  # rows of a bulk preview shown in the page (the summary counts them all)
OPS: dict[str, tuple[str, tuple[str, ...]]] = {  # op → (label, the argument boxes it uses)
    "add_trigger": ("Add trigger word(s) in front", ("tags",)),
    "remove_tags": ("Remove tags", ("tags",)),
    "replace_tag": ("Rename / replace a tag", ("find", "replace")),
    "search_replace": ("Search and replace text", ("find", "replace", "regex", "case_sensitive")),
    "dedupe": ("Remove duplicate tags", ()),
    "sort": ("Sort tags", ("sort_by", "keep_first")),
    "prune_rare": ("Prune rare tags", ("min_count", "tags")),
    "move_to_front": ("Move tags to front", ("tags",)),
}
TAGGER_ROWS = (("tagger.general_threshold", "tagger.character_threshold", "tagger.use_mcut"),
               ("tagger.trigger_words", "tagger.undesired_tags", "tagger.replacements"),
               ("tagger.include_rating", "tagger.replace_underscores", "tagger.character_first"))
CAPTIONER_ROWS = (("captioner.prompt", "captioner.prefix", "captioner.suffix"),
                  ("captioner.max_new_tokens", "captioner.num_beams", "captioner.dtype"))
# Ctrl/Cmd+Enter in the caption box saves; Alt+←/→ go to the previous/next image.
KEYS_JS = """() => {
  if (window.ldCaptionKeys) return; window.ldCaptionKeys = true;
  document.addEventListener('keydown', (e) => {
    if (!(e.target.closest && e.target.closest('#cap-caption'))) return;
    const id = ((e.ctrlKey || e.metaKey) && e.key === 'Enter') ? 'cap-save'
      : (e.altKey && e.key === 'ArrowRight') ? 'cap-next' : (e.altKey && e.key === 'ArrowLeft') ? 'cap-prev' : null;
    const button = id && document.getElementById(id);
    if (button) { e.preventDefault(); button.click(); }
  });
}"""


def caption_specs() -> list[FieldSpec]:
    return leaf_fields(CaptionConfig)


# --- model folders -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFolder:
    path: Path
    kind: str  # "tagger" | "captioner"


def model_folders(paths: WorkspacePaths, depth: int = 2) -> list[ModelFolder]:
    """Tagger and captioner folders under workspace/models (`depth` levels), unfinished downloads and the
    insides of diffusers models left out."""
    found: list[ModelFolder] = []

    def visit(folder: Path, level: int) -> None:
        try:
            entries = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(PARTIAL_SUFFIX):
                continue
            kind = model_kind(entry)
            if kind:
                found.append(ModelFolder(entry, kind))
            elif level < depth and diffusers_model_of(entry) is None:
                visit(entry, level + 1)

    visit(paths.models, 1)
    return found


def model_choices(paths: WorkspacePaths, mode: str) -> list[tuple[str, str]]:
    """(label, value) of the local folders usable in `mode`; values are workspace-relative."""
    return [(rel(m.path, paths.models), rel(m.path, paths.root)) for m in model_folders(paths) if m.kind == mode]


def rel(path: Path | str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- the caption form -----------------------------------------------------------------------------
def form_config(values: dict[str, Any]) -> CaptionConfig:
    """A CaptionConfig from {dotted path: component value}; ConfigError naming every bad field."""
    specs = caption_specs()
    kinds = {s.path: s.kind for s in specs}
    clean = {p: (v.replace("\n", ",") if kinds.get(p) == "list[str]" and isinstance(v, str) else v)
             for p, v in values.items()}
    data, problems = forms.values_to_dict(clean, specs)
    try:
        cfg = load_caption_config(data)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def dataset_root(paths: WorkspacePaths, value: str | None, roots: AllowedRoots | None = None) -> Path:
    """The dataset folder `value` names; with `roots`, checked to lie inside them before it is looked at."""
    if not value or not str(value).strip():
        raise DatasetError("pick a dataset first (a folder in workspace/datasets, or type a path)")
    root = resolve_in(paths, str(value).strip(), paths.datasets)
    if roots is not None:
        root = roots.check(root, "dataset")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: pick one from the list or type a path")
    return root


def check_model(folder: Path, mode: str) -> None:
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist: pick one from the list, or download it "
                         "with the download box below")
    if mode == "tagger":
        why = tagger_problem(folder)
        if why:
            raise ModelError(f"{folder} is not a tagger folder ({why}): {TAGGER_HELP}")
    else:
        why = captioner_problem(folder)
        if why:
            raise ModelError(f"{folder} is not a captioner folder: {why}. Pick one from the list: {CAPTIONER_HELP}")


def job_config(paths: WorkspacePaths, cfg: CaptionConfig, roots: AllowedRoots | None = None) -> dict[str, Any]:
    """The config the caption job stores: every option, with absolute dataset and model paths. With
    `roots`, both are checked to lie inside them before either is looked at."""
    root = dataset_root(paths, cfg.dataset.path, roots)
    model = resolve_in(paths, cfg.model.path, paths.models)
    if roots is not None:
        model = roots.check(model, "model.path")
    check_model(model, cfg.model.mode)
    data = cfg.model_dump(mode="json")
    data["dataset"]["path"], data["model"]["path"] = str(root), str(model)
    return data


# --- the editor -----------------------------------------------------------------------------------
def matches(item: ImageItem, query: str, mode: str) -> bool:
    """mode "tags": the caption has every comma-separated tag (compared like the tagger compares tags);
    mode "text": the caption or the file name contains the text (case-insensitive)."""
    if not query.strip():
        return True
    if mode == "tags":
        have = {tag_key(t) for t in split_tags(item.caption or "")}
        return all(tag_key(t) in have for t in split_tags(query))
    needle = query.strip().lower()
    return needle in (item.caption or "").lower() or needle in item.path.name.lower()


def filter_items(items: list[ImageItem], query: str, mode: str, missing_only: bool) -> list[ImageItem]:
    return [it for it in items if (not missing_only or not it.caption) and matches(it, query or "", mode)]


def page_count(n: int, per_page: int = PER_PAGE) -> int:
    return max(1, -(-n // per_page))


def image_item(image: Path, ext: str) -> ImageItem:
    """An image and its caption as on disk now (the editor re-reads captions after each edit)."""
    cap = caption_path(image, ext)
    return ImageItem(image, cap, read_caption(cap), "", 1, False)


def gallery_page(items: list[ImageItem], root: Path, cache_dir: Path) -> list[tuple[str, str]]:
    """[(thumbnail, label)] for a page of images; images without a caption say so in their label."""
    from backend.dataset.thumbnails import thumbnail

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(lambda it: thumbnail(it.path, cache_dir), items))
    return [(str(t or it.path), label(it, root)) for it, t in zip(items, thumbs, strict=True)]


def label(item: ImageItem, root: Path) -> str:
    name = rel(item.path, root)
    if not item.caption:
        return f"⚠ {name}: no caption"
    text = item.caption if len(item.caption) <= 60 else item.caption[:57] + "…"
    return f"{name}: {text}"


def filtered_view(root: Path, ext: str, query: str = "", mode: str = "tags",
                  missing_only: bool = False) -> tuple[dict[str, Any], str]:
    """The editor's state for the images matching the filter (page 1, none selected), and a line
    counting images and missing captions. DatasetError when the folder holds no images."""
    items = scan_dataset(root, ext, recursive=True).images
    shown = filter_items(items, query, mode, missing_only)
    view = {"root": str(root), "ext": ext, "paths": [str(it.path) for it in shown], "page": 1, "index": None}
    missing = sum(1 for it in items if not it.caption)
    parts = [f"**{md(root.name)}**: {len(items)} images", f"**{missing} without a caption**" if missing
             else "all captioned"]
    if query.strip() or missing_only:
        parts.append(f"{len(shown)} match the filter")
    return view, " · ".join(parts)


def caption_text(box: str) -> str:
    """The caption line to write: lines of the box joined with `, ` (training reads one line)."""
    return ", ".join(line.strip().strip(",").strip() for line in (box or "").splitlines() if line.strip())


# --- bulk operations ------------------------------------------------------------------------------
def op_choices() -> list[tuple[str, str]]:
    return [(lbl, op) for op, (lbl, _) in OPS.items()]


def op_spec(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The `op_from_dict` spec of a bulk operation from the form's argument boxes (by name)."""
    if op not in OPS:
        raise DatasetError(f"pick an operation ({', '.join(lbl for lbl, _ in OPS.values())})")
    tags = split_tags(str(args.get("tags") or ""))
    find, replace = str(args.get("find") or ""), str(args.get("replace") or "")
    if op in ("add_trigger", "remove_tags", "move_to_front") and not tags:
        raise DatasetError(f"{OPS[op][0]}: enter the tag(s) in the Tags box, comma-separated")
    if op in ("replace_tag", "search_replace") and not find.strip():
        raise DatasetError(f"{OPS[op][0]}: enter what to find in the Find box")
    if op == "add_trigger":
        return {"op": op, "words": tags}
    if op in ("remove_tags", "move_to_front"):
        return {"op": op, "tags": tags}
    if op == "replace_tag":
        return {"op": op, "src": find.strip(), "dst": replace.strip()}
    if op == "search_replace":
        return {"op": op, "find": find, "replace": replace, "regex": bool(args.get("regex")),
                "case_sensitive": bool(args.get("case_sensitive"))}
    if op == "sort":
        return {"op": op, "by": args.get("sort_by") or "alpha", "keep_first": int(args.get("keep_first") or 0)}
    if op == "prune_rare":
        minimum = int(args.get("min_count") or 0)
        if minimum < 2:
            raise DatasetError("Prune rare tags: Minimum count must be at least 2 (tags in fewer captions go)")
        return {"op": op, "min_count": minimum, "keep": tags}
    return {"op": op}


def changes_frame(cs: ChangeSet, limit: int = TABLE_ROWS) -> pd.DataFrame:
    rows = [{"image": rel(c.image, cs.dataset), "before": "(no caption)" if c.before is None else c.before,
             "after": c.after} for c in cs.changes[:limit]]
    return pd.DataFrame(rows, columns=["image", "before", "after"])


def preview_markdown(cs: ChangeSet, scope: str) -> str:
    text = f"**Preview** ({md(scope)}): {md(cs.summary())}."
    if cs.num_changed > TABLE_ROWS:
        text += f" The table shows the first {TABLE_ROWS}."
    return text + (" Press **Apply** to write them (undo below)." if cs.num_changed else " Nothing to apply.")


# --- tag frequency ----------------------------------------------------------------------------------
def frequency_figure(df: pd.DataFrame, top: int = 30) -> go.Figure:
    """Bars of the most frequent tags; per subfolder (a `subset` column) the bars are grouped."""
    fig = go.Figure()
    if "subset" in df.columns and not df.empty:
        order = df.groupby("tag")["count"].sum().sort_values(ascending=False).index[:top]
        for subset, part in df[df["tag"].isin(order)].groupby("subset", sort=True):
            part = part.set_index("tag").reindex(order).fillna(0)
            fig.add_trace(go.Bar(x=list(order), y=part["count"].tolist(), name=str(subset)))
        fig.update_layout(barmode="group")
    else:
        head = df.head(top)
        fig.add_trace(go.Bar(x=head["tag"].tolist(), y=head["count"].tolist(), name="images",
                             marker_color="#3b6fd1"))
    fig.update_layout(height=360, margin={"l": 40, "r": 10, "t": 30, "b": 110}, xaxis_tickangle=-45,
                      yaxis_title="images", title=f"Top {min(top, df['tag'].nunique() if not df.empty else 0)} tags",
                      legend={"orientation": "h", "y": 1.1})
    return fig


# --- undo -------------------------------------------------------------------------------------------
def undo_choices(paths: WorkspacePaths, root: Path | None) -> list[tuple[str, str]]:
    if root is None:
        return []
    return [(f"{s.created_text} · {s.label} · {len(s.entries)} file(s)", s.id) for s in list_snapshots(paths, root)]


# --- following a job ------------------------------------------------------------------------------
def new_follow(rec: JobRecord) -> dict[str, Any]:
    return {"job": rec.id, "kind": rec.kind, "name": rec.name, "offset": 0, "progress": {}, "summary": None,
            "errors": []}


def fold_events(follow: dict[str, Any], events: list[dict]) -> None:
    for ev in events:
        kind = ev.get("type")
        if kind == "progress":
            follow["progress"] = {k: v for k, v in ev.items() if k not in ("t", "type")}
        elif kind in ("caption_summary", "download_summary"):
            follow["summary"] = {k: v for k, v in ev.items() if k not in ("t", "type")}
        elif kind == "error":
            follow["errors"].append(str(ev.get("message") or "error"))


def _amount(value: float, unit: str | None) -> str:
    return f"{value / 1e6:.1f} MB" if unit == "bytes" else f"{int(value)}"


def progress_html(rec: JobRecord, follow: dict[str, Any]) -> str:
    p = follow.get("progress") or {}
    step, total, unit = p.get("step"), p.get("total"), p.get("unit")
    what = "bytes" if unit == "bytes" else "images"
    parts = [rec.name]
    if isinstance(step, int | float) and total:
        parts.append(f"{_amount(step, unit)}/{_amount(total, unit)}" + ("" if unit == "bytes" else f" {what}"))
    if p.get("failed"):
        parts.append(f"{p['failed']} failed")
    if p.get("eta_s") is not None and not rec.finished:
        parts.append(f"ETA {int(p['eta_s'])} s")
    return progress_bar(rec.status, step, total, parts)


def summary_markdown(rec: JobRecord, follow: dict[str, Any], limit: int = 10) -> str:
    s = follow.get("summary") or {}
    if rec.status == "failed" or (not s and rec.status != "completed"):
        why = rec.error or (follow["errors"][-1] if follow.get("errors") else "")
        return (f"✗ **{md(rec.name)}** {md(rec.status)}" + (f": {md(why)}" if why else "")
                + f" (job {code(rec.id)}, log in the Runs tab)")
    if follow.get("kind") == "download":
        return (f"✓ Downloaded **{md(s.get('repo_id', ''))}** into {code(s.get('path', ''))} "
                f"({s.get('files', 0)} files).")
    lines = [f"✓ **{md(rec.name)}**: wrote **{s.get('written', 0)}** of {s.get('total', 0)} captions on "
             f"{md(s.get('provider', '?'))}" + (f", {s['skipped_existing']} already captioned (skipped)"
                                              if s.get("skipped_existing") else "")
             + (" — stopped early" if s.get("stopped") else "") + "."]
    failed = s.get("failed") or []
    if failed:
        lines.append(f"{len(failed)} image(s) not captioned:")
        lines += [f"- {code(Path(f['path']).name)}: {md(f['error'])}" for f in failed[:limit]]
        if len(failed) > limit:
            lines.append(f"- … and {len(failed) - limit} more")
    if s.get("undo_id"):
        lines.append(f"The previous captions are saved: restore them under **Undo** ({code(s['undo_id'])}).")
    return "\n".join(lines)
