"""Models tab: what is in workspace/models (family, size, precision, LoRA metadata) and downloads by URL.

The scan reads headers only (milliseconds even for big checkpoints), so it runs in the handler. A
download is a `download_url` job: the worker fetches with resume and checks size and sha256; this tab
follows its progress events on the page timer and rescans when one completes. A token typed here goes
to the supervisor's memory (handed to download workers in their environment), never into a config.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from backend.models.inspect import LoraInfo, ModelInfo, scan_models
from webui import models_view as mv
from webui import runs_view as rv
from webui.context import AppContext
from webui.handlers import info, reported, user_errors, warning

TITLE = "Models"
TAB_ID = "models"


class ModelsTab:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        with ctx.lock:
            self.progress_cache: rv.ProgressCache = ctx.cache.setdefault("progress", rv.ProgressCache())

    # layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        with gr.Row(equal_height=True):
            self.summary = gr.Markdown("", elem_id="models-summary")
            self.rescan_btn = gr.Button(
                "↻ Rescan", scale=0, min_width=100, size="sm", elem_id="models-rescan"
            )
        self.table = gr.Dataframe(
            headers=mv.TABLE_HEADERS,
            value=[],
            interactive=False,
            max_height=420,
            label="Models in workspace/models (click a row for details)",
            elem_id="models-table",
        )
        self.details = gr.Markdown("", elem_id="models-details")
        self.found = gr.State([])  # the scanned ModelInfo dicts, in table order
        with gr.Accordion("Download a model by URL", open=True):
            with gr.Row(equal_height=True):
                self.url = gr.Textbox(
                    label="URL",
                    scale=3,
                    elem_id="models-url",
                    placeholder="https://huggingface.co/<owner>/<repo>/resolve/main/<file>, "
                    "or a Civitai model link",
                )
                self.dest = gr.Textbox(
                    label="Save as (optional)",
                    scale=2,
                    elem_id="models-dest",
                    placeholder="empty: models/ · a folder ending in / · a file name",
                )
            with gr.Row(equal_height=True):
                self.sha256 = gr.Textbox(
                    label="SHA-256 (optional)",
                    scale=2,
                    elem_id="models-sha256",
                    info="Checked when the download completes.",
                )
                self.token = gr.Textbox(
                    label="API token (optional)",
                    type="password",
                    scale=2,
                    elem_id="models-token",
                    info="Civitai or Hugging Face token, kept in this app's memory for "
                    "downloads from that site; never written to a config or job folder.",
                )
                self.dl_btn = gr.Button("Download", variant="primary", scale=1, elem_id="models-download")
            self.downloads = gr.HTML("", elem_id="models-downloads")
        self.seen = gr.State(None)
        self.wire()

    def wire(self) -> None:
        ui = self.ctx.ui
        scan_out = [self.table, self.summary, self.found]
        self.rescan_btn.click(self.scan, outputs=scan_out, api_visibility="private")
        if TAB_ID in ui.tab_items:  # scan when the tab is opened (not on every page load)
            ui.tab_items[TAB_ID].select(self.scan, outputs=scan_out, show_progress="hidden",
                                        api_visibility="private")
        self.table.select(
            self.show_details, inputs=self.found, outputs=self.details, api_visibility="private"
        )
        self.dl_btn.click(
            reported(self.download, self.downloads),
            inputs={self.url, self.dest, self.sha256, self.token},
            outputs={self.downloads, self.token, ui.timer},
            api_visibility="private",
        )
        ui.timer.tick(
            self.follow,
            inputs=self.seen,
            outputs=[self.downloads, self.seen, *scan_out],
            show_progress="hidden",
            api_visibility="private",
            concurrency_limit=None,
        )

    # handlers ----------------------------------------------------------------------------------
    @user_errors
    def scan(self) -> list:
        models = self.ctx.paths.models
        infos = scan_models(models)
        return [mv.rows(infos, models), mv.summary_markdown(infos, models), [m.to_dict() for m in infos]]

    def show_details(self, found: list[dict], evt: gr.SelectData) -> str | Any:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(found):
            return gr.skip()
        return mv.details_markdown(_info(found[row]))

    @user_errors
    def download(self, data: dict) -> dict:
        url = (data[self.url] or "").strip()
        if not url:
            raise gr.Error("Enter the URL of the file to download.")
        config, source = mv.download_config(
            self.ctx.paths.models, url, data[self.dest] or "", data[self.sha256] or ""
        )
        token = (data[self.token] or "").strip()
        if token:
            env = mv.token_env(source)
            if env is None:
                warning("A token is only used for Civitai and Hugging Face links: not sent to this server.")
            else:
                self.ctx.supervisor.set_secret(env, token)
        rec = self.ctx.supervisor.submit(mv.DOWNLOAD_KIND, config, mv.job_name(source, url))
        what = mv.file_name(source, url)  # the job's name starts with "download" already
        info(f"Download {what} {'queued' if rec.status == 'queued' else 'started'} (job {rec.id}).")
        return {
            self.downloads: self._downloads_html(self.ctx.supervisor.poll(force=True)),
            self.token: "",
            self.ctx.ui.timer: gr.Timer(value=1.0, active=True),
        }

    @user_errors
    def follow(self, seen: dict | None) -> list:
        """On the page timer: redraw the downloads when they change; rescan when one has completed."""
        skip = gr.skip()
        recs = [r for r in self.ctx.supervisor.poll() if r.kind == mv.DOWNLOAD_KIND]
        if not recs and not seen:
            return [skip] * 5
        seen = seen or {}
        text = self._downloads_html(recs)
        completed = sorted(r.id for r in recs if r.status == "completed")
        out = [skip if text == seen.get("html") else text, {"html": text, "completed": completed}]
        if seen and completed != seen.get("completed"):
            return out + self.scan()
        return out + [skip] * 3

    def _downloads_html(self, recs: list) -> str:
        return mv.downloads_html(recs, lambda r: self.progress_cache.get(self.ctx.paths.jobs / r.id))


def _info(d: dict) -> ModelInfo:
    """A ModelInfo back from its to_dict() (kept in a gr.State between events)."""
    lora = d.get("lora")
    if lora is not None:
        lora = LoraInfo(**{**lora, "top_tags": [tuple(t) for t in lora.get("top_tags", [])]})
    return ModelInfo(**{**d, "lora": lora})


def build(ctx: AppContext) -> ModelsTab:
    tab = ModelsTab(ctx)
    tab.build()
    return tab
