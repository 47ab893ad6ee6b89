"""Runs tab: the jobs table and the selected job — progress, loss chart, samples, log, files, actions.

Everything is read from the job folders on each timer tick (by byte offset, so a tick reads only
what is new). A reloaded page or a restarted app starts from offset 0 and shows the same history.
The page timer (ctx.ui.timer) ticks every second while a job is queued or active and idles (one tick
every IDLE_S) when none is; submitting or acting on a job makes it fast again at once.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from backend.compare.runs import RunData
from backend.compat import export_job
from backend.errors import JobError
from backend.jobs.kinds import is_resumable
from backend.jobs.registry import ACTIVE, RESUMABLE, JobRecord
from webui import runs_view as rv
from webui.context import AppContext
from webui.handlers import info, user_errors
from webui.runs_damaged import DamagedPanel
from webui.text import code, md

TITLE = "Runs"
TAB_ID = "runs"
IDLE_S = 5.0
PLOT_EVERY_S = 2.0
DOWNLOADS_CLASS = "ld-downloads"  # file lists to download from, without Gradio's "×" (CSS in webui/app.py)
# A page opened while a job runs shows the Runs tab, unless the user has picked a tab in the meantime:
# the first script (on load) notes the user's own clicks on tabs, the second opens the tab asked for.
WATCH_TAB_CLICKS_JS = """() => {
  if (window.ldTabWatch) return; window.ldTabWatch = true;
  document.addEventListener('click', (e) => {
    if (e.isTrusted && e.target.closest && e.target.closest('[role=tab]')) window.ldTabPicked = true;
  }, true);
}"""
OPEN_TAB_JS = """(button_id) => {
  const button = button_id && !window.ldTabPicked && document.getElementById(button_id);
  const tabs = [...document.querySelectorAll('button[role=tab][id^="tab-"][id$="-button"]')];
  const selected = tabs.find((t) => t.getAttribute('aria-selected') === 'true');
  if (!button || (selected && selected !== tabs[0])) return;  // the user has moved on already
  if (button !== selected) button.click();
}"""


class RunsTab:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        with ctx.lock:
            self.progress_cache: rv.ProgressCache = ctx.cache.setdefault("progress", rv.ProgressCache())
        self.runs = rv.shared_runs(ctx)

    # layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        self.table = gr.Dataframe(headers=rv.TABLE_HEADERS, value=[], interactive=False, max_height=320,
                                  label="Jobs (click a row to show it)", elem_id="jobs-table")
        with gr.Row(equal_height=True):
            self.picker = gr.Dropdown(label="Job", choices=[], value=None, scale=4, elem_id="job-picker")
            self.refresh_btn = gr.Button("↻ Refresh", scale=0, min_width=100, size="sm")
        self.header = gr.Markdown("Select a job in the table.", elem_id="job-header")
        self.progress = gr.HTML(rv.progress_html(None, {}), elem_id="job-progress")
        with gr.Row():
            self.stop_btn = gr.Button("Stop", variant="stop", size="sm")
            self.save_btn = gr.Button("Save now", size="sm")
            self.sample_btn = gr.Button("Sample now", size="sm")
            self.resume_btn = gr.Button("Resume", size="sm")
            self.delete_btn = gr.Button("Delete…", size="sm")
        self.damaged = DamagedPanel(self.ctx)  # job.json damaged: what is wrong, Repair
        self.damaged.build()
        with gr.Row(visible=False) as self.confirm_row:
            self.confirm_text = gr.Markdown("")
            self.confirm_btn = gr.Button("Delete permanently", variant="stop", size="sm")
            self.cancel_btn = gr.Button("Cancel", size="sm")
        self.plot = gr.Plot(label="Loss and learning rate", elem_id="loss-plot")
        self.gallery = gr.Gallery(label="Samples (newest step first)", columns=6, height="auto", fit_columns=False,
                                  object_fit="contain", elem_id="samples", interactive=False)
        with gr.Row():
            self.lora_btn = gr.DownloadButton("Download LoRA", visible=False, variant="primary",
                                              elem_id="download-lora")
            self.checkpoints = gr.File(label="Checkpoints", file_count="multiple", visible=False,
                                       interactive=False, elem_id="checkpoints", elem_classes=[DOWNLOADS_CLASS])
        with gr.Accordion("sd-scripts (kohya) export", open=False):
            self.export_btn = gr.Button("Export to sd-scripts", size="sm", elem_id="export-kohya")
            self.export_cmd = gr.Code(label="Command (run it in your sd-scripts folder)", language="shell",
                                      lines=2, wrap_lines=True, interactive=False, buttons=["copy"],
                                      visible=False, elem_id="export-command")
            self.export_notes = gr.Markdown("", elem_id="export-notes")
            self.export_files = gr.File(label="Files (config, dataset config, prompts, command)",
                                        file_count="multiple", visible=False, interactive=False,
                                        elem_classes=[DOWNLOADS_CLASS],
                                        elem_id="export-files")
        with gr.Accordion("Log", open=False):
            self.log = gr.Textbox(lines=14, max_lines=14, show_label=False, autoscroll=True,
                                  interactive=False, elem_id="job-log")
        # Enabled only where they apply to the shown job's status (see `_buttons`).
        self.action_buttons = (self.stop_btn, self.save_btn, self.sample_btn, self.resume_btn)
        self.view = gr.State(None)
        self.row_ids = gr.State([])
        self.seen = gr.State(None)
        self.open_tab = gr.Textbox(visible=False)  # the id of the tab button to open on load, or ""
        self.wire()

    def wire(self) -> None:
        ui = self.ctx.ui
        shown = [self.table, self.picker, self.header, self.progress, self.plot, self.gallery, self.lora_btn,
                 self.checkpoints, self.log, *self.action_buttons, self.view, self.row_ids, self.seen, ui.timer,
                 ui.job_id]
        state_in = [ui.job_id, self.view, self.seen]
        ui.timer.tick(self.tick, inputs=state_in, outputs=shown, show_progress="hidden",
                      api_visibility="private", concurrency_limit=None)
        ui.blocks.load(self.tick, inputs=state_in, outputs=shown, api_visibility="private")
        ui.blocks.load(self.tab_on_load, outputs=self.open_tab, js=WATCH_TAB_CLICKS_JS, api_visibility="private",
                       show_progress="hidden").then(None, inputs=self.open_tab, js=OPEN_TAB_JS)
        self.refresh_btn.click(self.tick, inputs=state_in, outputs=shown, api_visibility="private")
        ui.tab_items[TAB_ID].select(self.tick, inputs=state_in, outputs=shown, show_progress="hidden",
                                    api_visibility="private")
        ui.job_id.change(self.tick, inputs=state_in, outputs=shown, show_progress="hidden",
                         api_visibility="private")
        self.table.select(self.select_row, inputs=self.row_ids, outputs=ui.job_id, api_visibility="private")
        self.picker.input(lambda job: job, inputs=self.picker, outputs=ui.job_id, api_visibility="private")
        for btn, action in ((self.stop_btn, "stop"), (self.save_btn, "save_now"),
                            (self.sample_btn, "sample_now"), (self.resume_btn, "resume")):
            btn.click(self.act(action), inputs=ui.job_id, outputs=ui.timer, api_visibility="private")
        self.delete_btn.click(self.ask_delete, inputs=ui.job_id, outputs=[self.confirm_row, self.confirm_text],
                              api_visibility="private")
        self.cancel_btn.click(lambda: gr.Row(visible=False), outputs=self.confirm_row, api_visibility="private")
        self.confirm_btn.click(self.delete, inputs=ui.job_id, outputs=[self.confirm_row, ui.job_id, self.view],
                               api_visibility="private")
        self.export_btn.click(self.export_kohya, inputs=ui.job_id, api_visibility="private",
                              outputs=[self.export_cmd, self.export_notes, self.export_files])
        self.damaged.wire(ui.job_id, ui.timer)
        gr.api(self.api_jobs, api_name="jobs")
        gr.api(self.api_stop, api_name="stop_job")

    # the tick ----------------------------------------------------------------------------------
    @user_errors
    def tick(self, job_id: str | None, view: dict | None, seen: dict | None) -> list:
        seen = seen or {}
        recs = self.ctx.supervisor.poll()
        by_id = {r.id: r for r in recs}
        table = [self.progress_cache.run(self.ctx.paths.jobs / r.id, r) for r in recs]
        rows = rv.jobs_rows([t for t in table if t is not None])
        sig = repr(rows)
        if job_id not in by_id:
            job_id = self._default_job(recs)
        rec = by_id.get(job_id)
        fresh = view is None or view.get("job") != job_id
        if fresh:
            view = rv.new_view(job_id)
        run = self._run(rec)
        changed = rv.read_new(view, run) if run else set()
        busy = any(r.status in ACTIVE or r.status == "queued" for r in recs)
        skip = gr.skip()
        picks = [(f"{r.name} · {r.status} · {r.id}", r.id) for r in reversed(recs)]
        out_table = skip if sig == seen.get("rows") else rows
        # The picker only changes with the jobs and their statuses (not every second while one runs).
        out_picker = skip if repr(picks) == seen.get("picks") and not fresh else gr.Dropdown(
            choices=picks, value=job_id)
        # Idle: tick every IDLE_S only (jobs started elsewhere still show up); busy: every second.
        timer = skip if busy and seen.get("busy") else gr.Timer(value=1.0 if busy else IDLE_S, active=True)
        detail = self._detail(run, view, changed, fresh)
        return [out_table, out_picker, *detail, view, [r[-1] for r in rows],
                {"rows": sig, "picks": repr(picks), "busy": busy},
                timer, job_id]

    @user_errors
    def tab_on_load(self) -> str:
        """This tab's button id when a job is running (a reload mid-run comes back to it), else ""."""
        running = any(r.status in ACTIVE for r in self.ctx.supervisor.poll())
        return f"tab-{TAB_ID}-button" if running else ""

    def _default_job(self, recs: list[JobRecord]) -> str | None:
        """With nothing selected: the newest active job, else the newest job."""
        active = [r for r in recs if r.status in ACTIVE]
        pool = active or recs
        return max(pool, key=lambda r: (r.created_at, r.id)).id if pool else None

    def _run(self, rec: JobRecord | None) -> RunData | None:
        """The shown job's run (shared with the Compare tab), or None when there is none."""
        if rec is None:
            return None
        try:
            return self.runs.run(self.ctx.paths.jobs / rec.id, rec)
        except JobError:
            return None  # deleted since the poll

    def _detail(self, run: RunData | None, view: dict, changed: set[str], fresh: bool) -> list:
        """header, progress, plot, gallery, LoRA button, checkpoints, log, action buttons — skipped where
        unchanged."""
        skip = gr.skip()
        if run is None:
            return [rv.job_header(None), rv.progress_html(None, {}), None, [], gr.DownloadButton(visible=False),
                    gr.File(value=None, visible=False), "", *self._buttons(None)]
        rec, progress = run.record, rv.progress_state(run)
        status_sig = (rec.status, rec.error, repr(progress))
        status_changed = fresh or view.get("status_sig") != status_sig
        view["status_sig"] = status_sig
        job_dir = self.ctx.paths.jobs / rec.id
        lora, ckpts = rv.files_of(job_dir)
        files_sig = (str(lora), [str(p) for p in ckpts])
        files_changed = fresh or view.get("files_sig") != files_sig
        view["files_sig"] = files_sig
        # Redraw the chart at most every PLOT_EVERY_S while a job runs: a big figure each second is
        # too much for a share link.
        now = time.monotonic()
        view["plot_pending"] = view.get("plot_pending", False) or "metrics" in changed
        draw = fresh or (view["plot_pending"] and (not rec.active or now - view.get("plot_t", 0) >= PLOT_EVERY_S))
        if draw:
            view["plot_pending"], view["plot_t"] = False, now
        return [
            rv.job_header(rec, run.started_at) if status_changed else skip,
            rv.progress_html(rec, progress) if status_changed else skip,
            rv.run_figure(run) if draw else skip,
            rv.gallery_items(run) if fresh or "samples" in changed else skip,
            (gr.DownloadButton(f"Download LoRA ({lora.name})", value=str(lora), visible=True) if lora
             else gr.DownloadButton(visible=False)) if files_changed else skip,
            gr.File(value=[str(p) for p in ckpts] or None, visible=bool(ckpts)) if files_changed else skip,
            view["log"] if fresh or "log" in changed else skip,
            *(self._buttons(rec) if status_changed else [skip] * len(self.action_buttons)),
        ]

    @staticmethod
    def _buttons(rec: JobRecord | None) -> list[gr.Button]:
        """Stop / Save now / Sample now while the job runs (Stop also while queued); Resume once stopped."""
        status = rec.status if rec else None
        running = status in ("starting", "running")
        stepped = rec is not None and is_resumable(rec.kind)  # jobs with steps and saved states
        return [gr.Button(interactive=status in ACTIVE or status == "queued"),
                gr.Button(interactive=running and stepped), gr.Button(interactive=running and stepped),
                gr.Button(interactive=stepped and status in RESUMABLE)]

    # actions -----------------------------------------------------------------------------------
    @user_errors
    def select_row(self, row_ids: list[str], evt: gr.SelectData) -> str | Any:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        return row_ids[row] if isinstance(row, int) and 0 <= row < len(row_ids) else gr.skip()

    def act(self, action: str):
        sup = self.ctx.supervisor
        calls = {"stop": sup.stop, "save_now": sup.save_now, "sample_now": sup.sample_now,
                 "resume": sup.resume}
        done = {"stop": "Stop requested: the job saves and stops after its current step.",
                "save_now": "Save requested: a checkpoint is written after the current step.",
                "sample_now": "Samples requested: they appear after the current step.",
                "resume": "Resumed: the job is queued and continues from its last saved state."}

        @user_errors
        def handler(job_id: str | None) -> gr.Timer:
            if not job_id:
                raise gr.Error("Select a job first.")
            calls[action](job_id)
            info(done[action])
            return gr.Timer(value=1.0, active=True)

        handler.__name__ = f"runs_{action}"
        return handler

    @user_errors
    def ask_delete(self, job_id: str | None) -> list:
        if not job_id:
            raise gr.Error("Select a job first.")
        rec = self.ctx.supervisor.record(job_id)  # a damaged job can be deleted too
        if rec.status in ACTIVE:
            raise gr.Error(f"Job {rec.name} is {rec.status}: stop it before deleting it.")
        return [gr.Row(visible=True),
                f"Delete **{md(rec.name)}** ({code(rec.id)}) with its samples, checkpoints and LoRA files?"]

    @user_errors
    def delete(self, job_id: str | None) -> list:
        if job_id:
            self.ctx.supervisor.delete(job_id)
            info(f"Deleted {job_id}.")
        return [gr.Row(visible=False), None, None]

    @user_errors
    def export_kohya(self, job_id: str | None) -> list:
        """The job's config as sd-scripts files (in the job's kohya/ folder) and the command to run them."""
        if not job_id:
            raise gr.Error("Select a job first.")
        rec = self.ctx.supervisor.get(job_id)
        if rec.kind != "train":
            raise gr.Error(f"Only training runs export to sd-scripts; {rec.name} is a {rec.kind} job.")
        ex = export_job(self.ctx.paths, job_id)
        info(f"Exported {rec.name} to {ex.out_dir}.")
        return [gr.Code(value=ex.command, visible=True), rv.export_notes_markdown(ex.notes, ex.extras),
                gr.File(value=[str(p) for p in ex.files() if p.is_file()], visible=True)]

    # API ---------------------------------------------------------------------------------------
    @user_errors
    def api_jobs(self) -> list[dict]:
        """Every job: id, name, kind, status, created_at, started_at, ended_at, error."""
        keys = ("id", "name", "kind", "status", "created_at", "started_at", "ended_at", "error")
        return [{k: getattr(r, k) for k in keys} for r in self.ctx.supervisor.poll()]

    @user_errors
    def api_stop(self, job_id: str) -> str:
        """Ask a job to stop; returns its status."""
        return self.ctx.supervisor.stop(job_id).status


def build(ctx: AppContext) -> RunsTab:
    tab = RunsTab(ctx)
    tab.build()
    return tab
