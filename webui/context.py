"""AppContext: what every tab gets — the workspace, the job supervisor, and the shared UI pieces."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths, open_workspace

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("loradash.webui")


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
    """

    blocks: gr.Blocks
    tabs: gr.Tabs
    timer: gr.Timer
    job_id: gr.State
    tab_items: dict[str, gr.Tab] = field(default_factory=dict)


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
    _poller: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def start_polling(self, interval_s: float = 2.0) -> None:
        """Poll the supervisor in the background, so queued jobs start and dead workers are
        reconciled even while no page is open."""
        if self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, args=(interval_s,),
                                        name="loradash-supervisor", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()

    def _poll_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.supervisor.poll()
            except OSError:  # a full disk or a vanished folder must not kill the loop
                log.exception("supervisor poll failed; trying again in %.0f s", interval_s)


def make_context(workspace: str | None = None, *, max_concurrent: int = 1,
                 environ: dict[str, str] | None = None) -> AppContext:
    """Open (create) the workspace and start a Supervisor on it; its first poll reconciles jobs
    whose worker died while no app was running."""
    paths = open_workspace(workspace, environ if environ is not None else {})
    return AppContext(paths=paths, supervisor=Supervisor(paths, max_concurrent=max_concurrent))
