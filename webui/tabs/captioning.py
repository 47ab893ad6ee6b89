"""Captioning tab: tag (WD14) or caption (VLM) a dataset as a job, edit captions one by one and in bulk
(previewed first), tag frequency, undo. Long work runs in the worker (kind "caption" / "download"); this
tab follows its events with its own timer, which runs only while such a job is unfinished.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from backend.captioning.undo import get_snapshot, restore
from backend.dataset.captions import caption_path, read_caption, write_caption
from backend.dataset.filecache import thumbs_cache_dir
from backend.errors import DatasetError, JobError
from backend.jobs.events import EventReader
from backend.models.download import load_download_config
from webui import captioning_view as cv
from webui import choices, forms
from webui.context import AppContext
from webui.handlers import info, reported, user_errors, warning
from webui.tabs.captioning_bulk import BulkEditing
from webui.text import code, md

TITLE = "Captioning"
TAB_ID = "captioning"


class CaptioningTab(BulkEditing):
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.specs = {s.path: s for s in cv.caption_specs()}
        self.fields: dict[str, gr.components.Component] = {}

    # layout ------------------------------------------------------------------------------------
    def field(self, path: str, choices: list | None = None) -> gr.components.Component:
        comp = forms.make_component(self.specs[path], choices)
        comp.elem_id = "cap-" + path.replace(".", "-")  # not the Training form's ids (read at config time)
        self.fields[path] = comp
        return comp

    def build(self) -> None:
        paths = self.ctx.paths
        with gr.Row(equal_height=True):
            self.ds = self.field("dataset.path", choices=choices.dataset_choices(paths))
            self.ext = self.field("dataset.caption_extension")
            self.rescan_btn = gr.Button("↻ Rescan", scale=0, min_width=90, size="sm")
        self.ds_info = gr.Markdown("Pick a dataset.", elem_id="cap-ds-info")
        with gr.Accordion("Tag or caption the dataset", open=True):
            with gr.Row(equal_height=True):
                spec = self.specs["model.mode"]
                self.mode = gr.Radio(list(spec.choices), value=spec.default, label=spec.label, info=spec.help,
                                     elem_id="cap-model-mode")
                self.fields["model.mode"] = self.mode
                self.model = self.field("model.path", choices=cv.model_choices(paths, spec.default))
                self.field("dataset.existing")
                self.field("dataset.recursive")
            with gr.Group(visible=True) as self.tagger_box:
                for row in cv.TAGGER_ROWS:
                    with gr.Row(equal_height=True):
                        for p in row:
                            self.field(p)
            with gr.Group(visible=False) as self.captioner_box:
                for row in cv.CAPTIONER_ROWS:
                    with gr.Row(equal_height=True):
                        for p in row:
                            self.field(p)
            with gr.Accordion("Runtime", open=False), gr.Row(equal_height=True):
                for p in ("model.device", "model.batch_size", "model.loader_workers"):
                    self.field(p)
            with gr.Row():
                self.run_btn = gr.Button("Run", variant="primary", elem_id="cap-run")
                self.stop_btn = gr.Button("Stop", variant="stop", elem_id="cap-stop")
            self.progress = gr.HTML("", elem_id="cap-progress")
            self.summary = gr.Markdown("", elem_id="cap-summary")
            with gr.Accordion("Download a model from Hugging Face", open=False), gr.Row(equal_height=True):
                self.repo = gr.Textbox(label="Repo id", placeholder="SmilingWolf/wd-vit-tagger-v3", scale=2,
                                       elem_id="cap-repo")
                self.repo_name = gr.Textbox(label="Folder name under models/", placeholder="the repo's name")
                self.patterns = gr.Textbox(label="Only files matching", placeholder="*.onnx, *.csv (empty: all)")
                self.download_btn = gr.Button("Download", scale=0, min_width=110, elem_id="cap-download")
        with gr.Accordion("Undo", open=False), gr.Row(equal_height=True):
            self.undo = gr.Dropdown(label="Saved captions (newest first): each caption job and bulk edit "
                                    "saves the captions it replaces", choices=[], scale=4, elem_id="cap-undo")
            self.restore_btn = gr.Button("Restore", scale=0, min_width=110, elem_id="cap-restore")
        self.build_editor()
        self.build_bulk()
        self.build_frequency()
        self.view = gr.State(None)
        self.follow = gr.State(None)
        self.pending = gr.State(None)
        self.timer = gr.Timer(1.0, active=False)
        self.wire()

    def build_editor(self) -> None:
        gr.Markdown("### Editor\nClick a thumbnail to edit its caption. **Ctrl+Enter** saves, **Alt+←/→** "
                    "moves. ⚠ marks images without a caption.")
        with gr.Row(equal_height=True):
            self.query = gr.Textbox(label="Filter", placeholder="tags, comma-separated (or text)", scale=3,
                                    elem_id="cap-filter")
            self.query_mode = gr.Radio([("has tags", "tags"), ("contains text", "text")], value="tags",
                                       label="Match", scale=2)
            self.missing_only = gr.Checkbox(label="Only images without a caption", value=False, scale=2)
            self.filter_btn = gr.Button("Filter", scale=0, min_width=90, elem_id="cap-filter-btn")
        with gr.Row():
            with gr.Column(scale=3):
                self.gallery = gr.Gallery(columns=6, height="auto", allow_preview=False, object_fit="cover",
                                          interactive=False, show_label=False, elem_id="cap-gallery")
                with gr.Row(equal_height=True):
                    self.page_prev = gr.Button("◀ Page", size="sm", min_width=80)
                    self.page_info = gr.Markdown("", elem_id="cap-page-info")
                    self.page_next = gr.Button("Page ▶", size="sm", min_width=80)
            with gr.Column(scale=2):
                self.image = gr.Image(type="filepath", interactive=False, height=380, show_label=False,
                                      elem_id="cap-image")
                self.image_info = gr.Markdown("", elem_id="cap-image-info")
                self.caption = gr.Textbox(label="Caption", lines=3, elem_id="cap-caption",
                                          info="Comma-separated tags; several lines are joined with commas.")
                with gr.Row():
                    self.prev_btn = gr.Button("◀ Previous", size="sm", min_width=60, elem_id="cap-prev")
                    self.save_btn = gr.Button("Save", variant="primary", size="sm", min_width=60, elem_id="cap-save")
                    self.next_btn = gr.Button("Next ▶", size="sm", min_width=60, elem_id="cap-next")

    # wiring ------------------------------------------------------------------------------------
    def wire(self) -> None:
        ui, private = self.ctx.ui, {"api_visibility": "private"}
        grid_in = {self.ds, self.ext, self.query, self.query_mode, self.missing_only}
        self.grid_out = {self.gallery, self.page_info, self.ds_info, self.view, self.undo, self.image,
                         self.caption, self.image_info}
        for event in (self.ds.change, self.ext.submit, self.rescan_btn.click, self.query.submit,
                      self.filter_btn.click, self.query_mode.input, self.missing_only.input):
            event(reported(self.refresh, self.ds_info), inputs=grid_in, outputs=self.grid_out, **private)
        self.rescan_btn.click(self.rescan_choices, inputs=self.mode, outputs={self.ds, self.model}, **private)
        if ui.datasets_changed is not None:  # the Dataset tab moved files: the image counts in the list change
            ui.datasets_changed.change(self.rescan_choices, inputs=self.mode, outputs={self.ds, self.model},
                                       show_progress="hidden", **private)
        self.mode.change(self.mode_changed, inputs=self.mode,
                         outputs={self.model, self.tagger_box, self.captioner_box}, **private)
        follow_out = {self.follow, self.timer, self.progress, self.summary}
        self.run_btn.click(self.run, inputs=set(self.fields.values()), outputs=follow_out, **private)
        self.download_btn.click(self.download, inputs={self.repo, self.repo_name, self.patterns},
                                outputs=follow_out, **private)
        self.stop_btn.click(self.stop, inputs=self.follow, outputs=self.timer, **private)
        self.timer.tick(self.tick, inputs=grid_in | {self.follow, self.mode},
                        outputs=follow_out | self.grid_out | {self.model}, show_progress="hidden",
                        concurrency_limit=None, **private)
        ui.blocks.load(self.on_load, inputs=self.mode, outputs=follow_out | {self.ds, self.model}, **private)
        ui.blocks.load(None, js=cv.KEYS_JS, **private)
        self.restore_btn.click(reported(self.restore, self.ds_info), inputs=grid_in | {self.undo},
                               outputs=self.grid_out, **private)
        # editor: moving to another image passes the caption box along, so unsaved edits are not dropped
        editor_out = {self.image, self.caption, self.image_info, self.view, self.gallery, self.page_info}
        self.gallery.select(reported(self.select, self.image_info), inputs=[self.view, self.caption],
                            outputs=editor_out, **private)
        for button, delta in ((self.prev_btn, -1), (self.next_btn, 1)):
            button.click(reported(partial(self.step, delta=delta), self.image_info), inputs=[self.view, self.caption],
                         outputs=editor_out, **private)
        for button, delta in ((self.page_prev, -1), (self.page_next, 1)):
            button.click(reported(partial(self.turn, delta=delta), self.image_info), inputs=self.view,
                         outputs=editor_out, **private)
        self.save_btn.click(reported(self.save, self.image_info), inputs={self.view, self.caption},
                            outputs=editor_out | {self.ds_info}, **private)
        self.wire_bulk(grid_in, private)

    # dataset and grid --------------------------------------------------------------------------
    def _root(self, data: dict) -> Path:
        return cv.dataset_root(self.ctx.paths, data.get(self.ds), self.ctx.allowed)

    def _grid(self, data: dict, **override: Any) -> dict:
        """Rescan the dataset, filter it, show page 1; the editor is cleared."""
        out = {self.image: None, self.caption: "", self.image_info: "", self.gallery: [], self.page_info: "",
               self.view: None, self.undo: gr.Dropdown(choices=[], value=None), self.ds_info: "Pick a dataset."}
        if not data.get(self.ds):
            return out
        root = self._root(data)
        out[self.undo] = gr.Dropdown(choices=cv.undo_choices(self.ctx.paths, root), value=None)
        wanted = {"query": data.get(self.query) or "", "mode": data.get(self.query_mode) or "tags",
                  "missing_only": bool(data.get(self.missing_only)), **override}
        try:
            view, out[self.ds_info] = cv.filtered_view(root, data.get(self.ext) or ".txt", **wanted)
        except DatasetError as err:
            return {**out, self.ds_info: f"✗ {md(err)}"}
        return {**out, **self._page(view, 1)}

    def _page(self, view: dict, page: int) -> dict:
        """Page `page` of the filtered list, captions read afresh (the list itself stays as filtered)."""
        n = len(view["paths"])
        view["page"] = min(max(1, page), cv.page_count(n))
        start = (view["page"] - 1) * cv.PER_PAGE
        items = [cv.image_item(Path(p), view["ext"]) for p in view["paths"][start:start + cv.PER_PAGE]]
        gallery = cv.gallery_page(items, Path(view["root"]), thumbs_cache_dir(self.ctx.paths))
        info = f"page {view['page']}/{cv.page_count(n)} · {n} image(s)" if n else "No image matches."
        return {self.gallery: gallery, self.page_info: info, self.view: view}

    @user_errors
    def refresh(self, data: dict) -> dict:
        return self._grid(data)

    @user_errors
    def rescan_choices(self, mode: str) -> dict:
        return {self.ds: gr.Dropdown(choices=choices.dataset_choices(self.ctx.paths)),
                self.model: gr.Dropdown(choices=cv.model_choices(self.ctx.paths, mode))}

    @user_errors
    def mode_changed(self, mode: str) -> dict:
        return {self.model: gr.Dropdown(choices=cv.model_choices(self.ctx.paths, mode), value=None),
                self.tagger_box: gr.Group(visible=mode == "tagger"),
                self.captioner_box: gr.Group(visible=mode == "captioner")}

    # jobs ----------------------------------------------------------------------------------------
    def _following(self, rec: Any) -> dict:
        follow = cv.new_follow(rec)
        return {self.follow: follow, self.timer: gr.Timer(1.0, active=True), self.summary: "",
                self.progress: cv.progress_html(rec, follow)}

    @user_errors
    def run(self, data: dict) -> dict:
        values = {p: data[c] for p, c in self.fields.items() if c in data}
        cfg = cv.form_config(values)
        config = cv.job_config(self.ctx.paths, cfg, self.ctx.allowed)
        what = "tag" if cfg.model.mode == "tagger" else "caption"
        rec = self.ctx.supervisor.submit("caption", config, f"{what} {Path(config['dataset']['path']).name}")
        info(f"{rec.name}: job {rec.id} {'started' if rec.active else 'queued'}.")
        return self._following(rec)

    @user_errors
    def download(self, data: dict) -> dict:
        repo = (data[self.repo] or "").strip()
        if not repo:
            raise gr.Error("Enter a Hugging Face repo id, e.g. SmilingWolf/wd-vit-tagger-v3.")
        patterns = [p.strip() for p in (data[self.patterns] or "").split(",") if p.strip()]
        cfg = load_download_config({"repo_id": repo, "name": (data[self.repo_name] or "").strip(),
                                    "allow_patterns": patterns})
        rec = self.ctx.supervisor.submit("download", cfg.model_dump(), f"download {repo}")
        return self._following(rec)

    @user_errors
    def stop(self, follow: dict | None) -> Any:
        if not follow:
            raise gr.Error("No caption or download job started from this page.")
        rec = self.ctx.supervisor.get(follow["job"])
        if rec.finished:
            info(f"{rec.name} is {rec.status} already.")
            return gr.skip()
        self.ctx.supervisor.stop(rec.id)
        info(f"Stop requested: {rec.name} stops after its current batch.")
        return gr.Timer(1.0, active=True)

    @user_errors
    def tick(self, data: dict) -> dict:
        follow = data.get(self.follow)
        if not follow:
            return {self.timer: gr.Timer(active=False)}
        self.ctx.supervisor.poll()
        try:
            rec = self.ctx.supervisor.get(follow["job"])
        except JobError:  # deleted in the Runs tab
            return {self.follow: None, self.timer: gr.Timer(active=False), self.progress: ""}
        events, follow["offset"] = EventReader(self.ctx.supervisor.job_dir(rec.id)).read(follow["offset"])
        cv.fold_events(follow, events)
        out = {self.follow: follow, self.progress: cv.progress_html(rec, follow)}
        if not rec.finished:
            return out
        out.update({self.timer: gr.Timer(active=False), self.summary: cv.summary_markdown(rec, follow)})
        if follow["kind"] == "download":
            out[self.model] = gr.Dropdown(choices=cv.model_choices(self.ctx.paths, data.get(self.mode, "tagger")))
        elif data.get(self.ds):
            out.update(self._grid(data))
        return out

    @user_errors
    def on_load(self, mode: str) -> dict:
        """A reloaded page follows the newest unfinished caption or download job again."""
        out = self.rescan_choices(mode)
        recs = [r for r in self.ctx.supervisor.jobs() if r.kind in cv.JOB_KINDS and not r.finished]
        if recs:
            out.update(self._following(recs[-1]))
        return out

    def _refuse_while_captioning(self) -> None:
        recs = self.ctx.supervisor.poll(force=True)  # not the throttled list: it may be a second old
        busy = [r for r in recs if r.kind == "caption" and not r.finished]
        if busy:
            raise gr.Error(f"Caption job {busy[0].name} ({busy[0].status}) may still write captions: wait for "
                           "it to finish or stop it first.")

    @user_errors
    def restore(self, data: dict) -> dict:
        if not data.get(self.undo):
            raise gr.Error("Pick the saved captions to restore in the Undo list.")
        self._refuse_while_captioning()
        done = restore(get_snapshot(self.ctx.paths, data[self.undo]))
        info(f"Restored {len(done.restored)} caption file(s), removed {len(done.removed)} that did not exist.")
        return self._grid(data)

    # editor --------------------------------------------------------------------------------------
    def _info_line(self, view: dict, index: int, cap: str | None) -> str:
        where = cv.rel(Path(view["paths"][index]), Path(view["root"]))
        return f"**{index + 1}/{len(view['paths'])}** · {code(where)}" + (" · ⚠ no caption yet" if cap is None else "")

    def _show(self, view: dict, index: int) -> dict:
        view["index"] = index
        image = Path(view["paths"][index])
        cap = read_caption(caption_path(image, view["ext"]))
        view["shown"], view["leaving"] = cap or "", None  # what the box holds until the user edits it
        return {self.image: str(image), self.caption: cap or "", self.image_info: self._info_line(view, index, cap),
                self.view: view}

    def _kept(self, view: dict, caption: str | None) -> dict | None:
        """Updates that keep the editor on its image when the box holds an edit not saved yet (a second
        move with the same text discards it), or None when the editor may move on."""
        index = view.get("index")
        if caption is None or index is None or cv.caption_text(caption) == cv.caption_text(view.get("shown", "")):
            return None
        if view.get("leaving") == [index, caption]:
            return None  # asked once already: the user moves on, the edit is dropped
        view["leaving"] = [index, caption]
        name = Path(view["paths"][index]).name
        warning(f"Unsaved changes to the caption of {name}: press Save (Ctrl+Enter) to keep them, or move "
                "again to discard them.", title="Unsaved caption")
        line = self._info_line(view, index, view.get("shown"))
        return {self.view: view, self.image_info: line + " · ⚠ **unsaved changes**: Save, or move again to discard"}

    @user_errors
    def select(self, view: dict | None, evt: gr.SelectData, caption: str | None = None) -> dict:
        if not view or not view["paths"]:
            return {}
        kept = self._kept(view, caption)
        if kept is not None:
            return kept
        index = (view["page"] - 1) * cv.PER_PAGE + int(evt.index)
        return self._show(view, min(index, len(view["paths"]) - 1))

    @user_errors
    def step(self, view: dict | None, caption: str | None = None, *, delta: int) -> dict:
        if not view or not view["paths"]:
            raise gr.Error("Pick a dataset with images first.")
        kept = self._kept(view, caption)
        if kept is not None:
            return kept
        index = 0 if view["index"] is None else (view["index"] + delta) % len(view["paths"])
        out = self._show(view, index)
        page = index // cv.PER_PAGE + 1
        return {**out, **self._page(view, page)} if page != view["page"] else out

    @user_errors
    def turn(self, view: dict | None, delta: int) -> dict:
        return self._page(view, view["page"] + delta) if view else {}

    @user_errors
    def save(self, data: dict) -> dict:
        view = data.get(self.view)
        if not view or view.get("index") is None:
            raise gr.Error("Click an image in the grid first.")
        image = Path(view["paths"][view["index"]])
        text = cv.caption_text(data.get(self.caption, ""))
        write_caption(caption_path(image, view["ext"]), text)
        if not text:
            warning(f"Saved an empty caption for {image.name}: training then uses the folder's class words.")
        else:
            info(f"Saved the caption of {image.name}.")
        out = {**self._page(view, view["page"]), **self._show(view, view["index"])}
        out[self.image_info] += f" · ✓ saved at {time.strftime('%H:%M:%S')}"
        out[self.ds_info] = cv.filtered_view(Path(view["root"]), view["ext"])[1]
        out.pop(self.image)  # the same picture: no reload
        return out

def build(ctx: AppContext) -> CaptioningTab:
    tab = CaptioningTab(ctx)
    tab.build()
    return tab
