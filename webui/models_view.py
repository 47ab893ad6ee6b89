"""What the Models tab shows: the scan of workspace/models and the download jobs (no Gradio here).

Rows come from `backend.models.inspect.scan_models` (headers and configs only, never weights); a
download is an ordinary `download_url` job whose `progress` events carry bytes done/total and speed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backend.errors import ConfigError
from backend.jobs.registry import JobRecord
from backend.models.http_download import TOKEN_ENV, Source, UrlDownloadConfig, job_dest, resolve
from backend.models.inspect import ModelInfo
from webui.runs_view import fmt_duration
from webui.text import code, md, progress_bar

TABLE_HEADERS = [
    "name",
    "kind",
    "family",
    "size",
    "precision",
    "network",
    "rank",
    "base model",
    "trigger words",
    "path",
]
DOWNLOAD_KIND = "download_url"
SHOWN_DOWNLOADS = 5
FIELD_HELP = {
    "url": "enter an http(s) address: a Hugging Face file link (…/resolve/main/<file>), a Civitai "
    "model or download link, or any file URL",
    "sha256": "64 hexadecimal characters, or leave it empty",
    "dest": "a folder (ending in /) or file name under models/, or leave it empty",
}


def fmt_bytes(n: float | None) -> str:
    """1536 → "1.5 KiB"; None → ""."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _relative(path: str, models_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(models_dir))
    except ValueError:
        return path


def rows(infos: Iterable[ModelInfo], models_dir: Path) -> list[list[Any]]:
    """One table row per model: LoRA columns filled from its ss_* metadata."""
    out = []
    for m in infos:
        lora = m.lora
        network = (lora.algo or lora.network_module) if lora else ""
        rank = (
            ""
            if lora is None or lora.rank is None
            else (f"{lora.rank}" + (f" (α {lora.alpha:g})" if lora.alpha is not None else ""))
        )
        base = (lora.base_model or lora.base_model_name) if lora else ""
        triggers = ", ".join(lora.trigger_words) if lora else ""
        kind = m.kind + (" ⚠" if m.error else "")
        out.append(
            [
                m.name,
                kind,
                m.label or m.family or "",
                fmt_bytes(m.size_bytes),
                m.precision,
                network,
                rank,
                base,
                triggers,
                _relative(m.path, models_dir),
            ]
        )
    return out


def summary_markdown(infos: list[ModelInfo], models_dir: Path) -> str:
    if not infos:
        return (
            f"No models in {code(models_dir)} yet: put diffusers folders or `.safetensors` files there, or "
            "download one below."
        )
    kinds: dict[str, int] = {}
    for m in infos:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{len(infos)} in {code(models_dir)}: {md(parts)} · {fmt_bytes(sum(m.size_bytes for m in infos))}"


def details_markdown(m: ModelInfo) -> str:
    """Everything the scan knows about one model, LoRA metadata included."""
    lines = [
        f"### {md(m.name)}",
        code(m.path),
        "",
        f"- **kind:** {md(m.kind)}" + (f" · **family:** {md(m.label or m.family)}" if m.family else ""),
        f"- **size:** {fmt_bytes(m.size_bytes)}"
        + (f" · **precision:** {md(m.precision)}" if m.precision else ""),
    ]
    if m.prediction:
        lines.append(f"- **prediction:** {md(m.prediction)}")
    if m.error:
        lines.append(f"- **error:** {md(m.error)}")
    lines += [f"- {md(note)}" for note in m.notes]
    lora = m.lora
    if lora is not None:
        lines += [
            "",
            "**LoRA metadata**",
            "",
            f"- **network:** {md(lora.algo or '?')}"
            + (f" ({code(lora.network_module)})" if lora.network_module else "")
            + f" · rank {lora.rank if lora.rank is not None else '?'}"
            + (f" · alpha {lora.alpha:g}" if lora.alpha is not None else "")
            + f" · {lora.modules} modules"
            + (" · trains the text encoder" if lora.trains_text_encoder else ""),
        ]
        if lora.base_model or lora.base_model_name:
            lines.append(
                f"- **base model:** {md(' · '.join(x for x in (lora.base_model, lora.base_model_name) if x))}"
            )
        if lora.trigger_words:
            lines.append(f"- **trigger words:** {md(', '.join(lora.trigger_words))}")
        trained = [
            f"{v} {k}"
            for k, v in (("images", lora.num_train_images), ("steps", lora.steps), ("epochs", lora.epochs))
            if v is not None
        ]
        if trained or lora.resolution:
            lines.append(
                f"- **trained on:** {', '.join(trained)}"
                + (f" at {md(lora.resolution)}" if lora.resolution else "")
            )
        if lora.top_tags:
            lines.append("- **top tags:** " + md(", ".join(f"{t} ({n})" for t, n in lora.top_tags)))
    return "\n".join(lines)


def download_config(
    models_dir: Path, url: str, dest: str = "", sha256: str = ""
) -> tuple[dict[str, Any], Source]:
    """The `download_url` job config (UrlDownloadConfig's fields, no token) and where the URL leads.
    ConfigError naming the field (url, sha256, dest), or ModelError for a link that names no file."""
    raw = {"url": (url or "").strip(), "dest": (dest or "").strip(), "sha256": (sha256 or "").strip().lower()}
    try:
        cfg = UrlDownloadConfig.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            problems.append((name, f"{raw.get(name, '')!r}: {FIELD_HELP.get(name, e['msg'])}"))
        raise ConfigError(problems, "download") from None
    source = resolve(cfg.url)
    job_dest(models_dir, cfg.dest)  # a dest that leaves models/ is refused before any job exists
    return cfg.model_dump(exclude_none=True), source


def token_env(source: Source) -> str | None:
    """The environment variable the worker reads the token from (CIVITAI_TOKEN, HF_TOKEN), if any."""
    return TOKEN_ENV.get(source.kind)


def job_name(source: Source, url: str) -> str:
    name = source.name_hint or Path(urllib.parse.urlsplit(url.strip()).path).name
    return f"download {name}" if name else "download"


def file_name(source: Source, url: str) -> str:
    """What a download fetches, for messages: the file name, else the URL."""
    return source.name_hint or Path(urllib.parse.urlsplit(url.strip()).path).name or url.strip()


def downloads_html(recs: list[JobRecord], progress_of: Callable[[JobRecord], dict]) -> str:
    """The latest download jobs, newest first: a bar each with bytes, speed and ETA."""
    jobs = sorted(
        (r for r in recs if r.kind == DOWNLOAD_KIND), key=lambda r: (r.created_at, r.id), reverse=True
    )[:SHOWN_DOWNLOADS]
    if not jobs:
        return ""
    parts = []
    for rec in jobs:
        ev = progress_of(rec)
        done, total = ev.get("step"), ev.get("total")
        bits = (
            [f"{fmt_bytes(done)} of {fmt_bytes(total)}" if total else fmt_bytes(done)]
            if done is not None
            else []
        )
        if ev.get("bytes_per_s") and rec.active:
            bits.append(f"{fmt_bytes(ev['bytes_per_s'])}/s")
        if ev.get("eta_s") is not None and rec.active:
            bits.append(f"ETA {fmt_duration(ev['eta_s'])}")
        parts.append(progress_bar(rec.status, done, total, [rec.name, *bits], job=rec.id, error=rec.error or ""))
    return "".join(parts)
