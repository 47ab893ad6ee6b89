"""Handler boundary: known problems become messages a user can act on; the rest is logged.

Wrap every event handler with `@user_errors`. A LoraDashError (ConfigError, JobError, ModelError, …)
becomes a gr.Error with its own words; anything unexpected is logged with its traceback and shown
briefly, so the page never hangs on a silent failure.

An event whose outputs include input fields (a form, a picker) is wired to `reported(handler, status)`:
a raised gr.Error would cover every output with an "Error" badge, so there the problem is shown as a
warning toast and written into the event's status text (a gr.Markdown among its outputs), and the
fields keep their values. The handler itself still raises (tests and API callers see the error).

Toast messages are rendered as HTML: use `info()` / `warning()` here (see webui/text.py `toast`), never
gr.Info / gr.Warning with a message that holds a name, a path or an error. gr.Error messages are made
safe by `user_errors`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from backend.errors import ConfigError, LoraDashError
from webui.text import html as escape_html
from webui.text import md, toast, untoast

log = logging.getLogger("loradash.webui")
F = TypeVar("F", bound=Callable[..., Any])


def problem_lines(err: ConfigError) -> str:
    """The problems of a ConfigError as one line each, dotted path first."""
    return "\n".join(f"• {path}: {msg}" if path else f"• {msg}" for path, msg in err.problems)


def info(message: str, **kwargs: Any) -> None:
    gr.Info(toast(message), **kwargs)


def warning(message: str, **kwargs: Any) -> None:
    gr.Warning(toast(message), **kwargs)


class ShownError(gr.Error):
    """A gr.Error whose message is made for a toast already (by user_errors): passed on as is."""


def _problem(fn: Callable, err: Exception) -> tuple[str, str, float | None]:
    """(plain text, title, toast duration) of what went wrong; unexpected errors are logged whole."""
    if isinstance(err, gr.Error):  # raised by the handler itself; its message is plain text
        return str(err.message), err.title or "Error", err.duration
    if isinstance(err, ConfigError):
        head = f"{err.source}: " if err.source else ""
        return head + "please fix:\n" + problem_lines(err), "Invalid settings", 10
    if isinstance(err, LoraDashError):
        return str(err), "Error", 10
    log.exception("unexpected error in %s", getattr(fn, "__name__", fn))
    return (f"Unexpected error ({type(err).__name__}: {err}). The details are in the console log.",
            "Unexpected error", 8)


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShownError:  # from a handler this one called
            raise
        except Exception as err:  # the handler boundary: every error becomes a message (logged if unexpected)
            text, title, duration = _problem(fn, err)
            raise ShownError(toast(text), title=title, duration=duration, print_exception=False) from err

    return wrapper  # type: ignore[return-value]


def reported(handler: Callable[..., Any], status: Any, on_error: dict | None = None) -> Callable[..., Any]:
    """`handler` (a @user_errors function returning a dict of updates) for an event whose outputs include
    input fields: a gr.Error becomes a warning toast, `status` (a gr.Markdown or gr.HTML output) says it,
    the components in `on_error` get those values, and nothing else changes."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ShownError as err:  # its message is made for a toast already
            gr.Warning(err.message, title=err.title, duration=err.duration)
            text = untoast(str(err.message))
            shown = escape_html(text) if isinstance(status, gr.HTML) else md(text).replace("\n", "\n\n")
            return {status: "✗ " + shown, **(on_error or {})}

    return wrapper
