"""AppContext: what every tab gets — the workspace, the job supervisor, and the shared UI pieces."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths, open_workspace
from backend.roots import AllowedRoots

if TYPE_CHECKING:
    import gradio as gr


@dataclass
class SharedUI:
    """Components made by create_app before the tabs, so one tab can drive another.

    tabs:   the gr.Tabs; return `gr.Tabs(selected="runs")` to switch to the Runs tab.
    timer:  the page's gr.Timer. The Runs tab slows it down when no job is active; after you
            submit a job, return `gr.Timer(1.0, active=True)` to it so the page follows the job.
    job_id: gr.State with the job the Runs tab shows; set it to show a job there.
    blocks: the gr.Blocks being built, for `ctx.ui.blocks.load(...)` (refresh choices on page load).
    tab_items: {TAB_ID: gr.Tab} of the tabs built so far (a tab's own is there when it builds), e.g.
            `ctx.ui.tab_items["runs"].select(...)` to refresh when the tab is opened.
    dataset_pick: gr.State of {dotted path: config value} set by the Dataset tab's "Use for
            training"; the Training tab fills those fields of its form when it changes.
    datasets_changed: gr.State the Dataset tab sets to a new number after an import or a change to a
            dataset's files (quarantine, fixes, repeats); tabs that list datasets with their image counts
            relist them.
    """

    blocks: gr.Blocks
    tabs: gr.Tabs
    timer: gr.Timer
    job_id: gr.State
    tab_items: dict[str, gr.Tab] = field(default_factory=dict)
    dataset_pick: gr.State | None = None
    datasets_changed: gr.State | None = None


@dataclass
class AppContext:
    """The app's long-lived objects. One per process; shared by every browser session (thread-safe
    pieces only: the Supervisor locks itself; `cache` is guarded by `lock`)."""

    paths: WorkspacePaths
    supervisor: Supervisor
    title: str = "LoRA Dash"
    ui: SharedUI | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[str, Any] = field(default_factory=dict)
    roots: AllowedRoots | None = None    # the server folders the browser may name (None: the workspace)

    @property
    def allowed(self) -> AllowedRoots:
        return self.roots or AllowedRoots.of(self.paths)

    def server_path(self, value: str | os.PathLike, what: str) -> Path:
        """A path typed or picked in the browser, resolved (relative: from the workspace) and checked to
        lie inside the allowed roots; ConfigError naming `what` otherwise (see backend.roots)."""
        return self.allowed.check(value, what)

    def start_polling(self, interval_s: float = 2.0) -> None:
        """Poll the supervisor in the background, so queued jobs start and dead workers are
        reconciled even while no page is open. The supervisor's poller logs and retries every error
        (one bad job folder must not stop the queue); a second call keeps the running thread."""
        self.supervisor.start_background(interval_s)

    def stop_polling(self) -> bool:
        """Stop the background poll (workers keep running); True once its thread has ended."""
        return self.supervisor.stop_background()


def make_context(workspace: str | None = None, *, max_concurrent: int = 1,
                 environ: dict[str, str] | None = None, allow_dirs: Iterable[str] = ()) -> AppContext:
    """Open (create) the workspace and start a Supervisor on it; its first poll reconciles jobs
    whose worker died while no app was running. `allow_dirs`: server folders, besides the workspace,
    that the browser (and the LETS API) may name."""
    paths = open_workspace(workspace, environ if environ is not None else {})
    roots = AllowedRoots.of(paths, allow_dirs)
    return AppContext(paths=paths, supervisor=Supervisor(paths, max_concurrent=max_concurrent, roots=roots),
                      roots=roots)
