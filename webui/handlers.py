"""Handler boundary: known problems become messages a user can act on; the rest is logged.

Wrap every event handler with `@user_errors`. A LoraDashError (ConfigError, JobError, ModelError, …)
becomes a gr.Error with its own words; anything unexpected is logged with its traceback and shown
briefly, so the page never hangs on a silent failure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from backend.errors import ConfigError, LoraDashError

log = logging.getLogger("loradash.webui")
F = TypeVar("F", bound=Callable[..., Any])


def problem_lines(err: ConfigError) -> str:
    """The problems of a ConfigError as one line each, dotted path first."""
    return "\n".join(f"• {path}: {msg}" if path else f"• {msg}" for path, msg in err.problems)


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ConfigError as err:
            head = f"{err.source}: " if err.source else ""
            raise gr.Error(head + "please fix:\n" + problem_lines(err), title="Invalid settings",
                           print_exception=False) from err
        except LoraDashError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # the handler boundary: log it whole, tell the user briefly
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(err).__name__}: {err}). The details are in the "
                           "console log.", duration=8, title="Unexpected error",
                           print_exception=False) from err

    return wrapper  # type: ignore[return-value]
