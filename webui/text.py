"""Text that is not ours (file and job names, paths, captions, error messages from the backend and from
libraries), made safe to show.

Gradio renders gr.Markdown and gr.HTML values, and the messages of gr.Error, gr.Info and gr.Warning, as
sanitised HTML: an error such as "expected <file>" loses everything from the unknown tag on, and a
name holding `*` or `_` turns into emphasis. Every such text goes through one of these before it is
put into a Markdown or HTML value (toasts: `webui.handlers.info` / `warning`, and `user_errors` for
gr.Error):

    md(text)        plain text inside Markdown: HTML and Markdown characters escaped
    prose(text)     Markdown-formatted text that is not all ours (a preset's description): HTML escaped,
                    its Markdown kept
    code(text)      text shown as an inline code span (a path, an id, a file name)
    html(text)      text inside an HTML fragment
    toast(text)     a toast message (gr.Error / gr.Info / gr.Warning): only `<` is escaped, since a tag is
                    what swallows text there; the rest stays as written for API callers and tests
    strip_ansi(s)   terminal colour codes removed (job logs: LyCORIS colours its INFO lines)
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

# CSI sequences (colours, cursor moves: ESC [ … final byte) and OSC sequences (titles, links).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# The Markdown characters that can hide or swallow text: \ (escapes), ` (code spans), * (emphasis), [ ]
# (links) and ~ (strikethrough in GitHub Markdown). Others are left as they are: `_` inside and next to
# words (`_quarantine`, file_names) stays literal in CommonMark, and escaping it would change every
# message a test or a user greps for.
_MARKDOWN = re.compile(r"([\\`*\[\]~])")


def strip_ansi(text: str) -> str:
    """`\\x1b[0;32mINFO\\x1b[0m` → `INFO`."""
    return _ANSI.sub("", text)


def md(value: Any) -> str:
    """Any value as literal text inside a Markdown value."""
    return _MARKDOWN.sub(r"\\\1", _html.escape(strip_ansi(str(value)), quote=False))


def prose(value: Any) -> str:
    """Markdown text whose formatting is meant (`code`, **bold**) but which may hold any characters."""
    return _html.escape(strip_ansi(str(value)), quote=False)


def code(value: Any) -> str:
    """Any value as an inline code span (its text shown as is, on one line)."""
    text = strip_ansi(str(value)).replace("\r", " ").replace("\n", " ")
    if not text.strip():
        return md(text) or "` `"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def toast(value: Any) -> str:
    return strip_ansi(str(value)).replace("<", "&lt;")


def untoast(text: str) -> str:
    """The text a `toast()` message was made from."""
    return text.replace("&lt;", "<")


def html(value: Any) -> str:
    """Any value as text inside an HTML fragment (attribute values included)."""
    return _html.escape(strip_ansi(str(value)), quote=True)


def progress_bar(status: str, done: Any, total: Any, parts: list[str], *, job: str = "", error: str = "") -> str:
    """The dashboard's progress bar (HTML): filled to done/total (full once completed), with the status
    in bold and `parts` (plain text, escaped here) after it; `error` (plain text) on a line below."""
    frac = 1.0 if status == "completed" else (
        min(1.0, done / total) if isinstance(done, int | float) and total else 0.0)
    label = " · ".join([f"<b>{_html.escape(status)}</b>", *(_html.escape(p) for p in parts)])
    data_job = f" data-job='{_html.escape(job)}'" if job else ""
    below = f"<div class='ld-progress-label'>⚠ {_html.escape(error)}</div>" if error else ""
    return (f"<div class='ld-progress' data-status='{_html.escape(status)}'{data_job}>"
            f"<div class='ld-bar'><div class='ld-fill' style='width:{frac * 100:.1f}%'></div></div>"
            f"<div class='ld-progress-label'>{label}</div>{below}</div>")
