"""Dataset tab: import (zip or server folder), check, one-click fixes, repeats, buckets, browse, use for training.

Checking reads every image once (the facts are cached under the workspace), so it runs in the handler on
Gradio's queue with a progress bar; it is I/O and PIL work, never torch. The last check is kept per
session in a gr.State and every view (counts, tables, buckets, gallery) is drawn from it.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import gradio as gr

from backend.config import load_preset
from backend.config.fields import leaf_fields
from backend.dataset import fixes, importer, repeats
from backend.dataset.bucket_report import bucket_figure, bucket_report
from backend.dataset.filecache import dataset_cache_dir, thumbs_cache_dir
from backend.dataset.thumbnails import page as gallery_page
from backend.dataset.validate import CAPTION_EXTENSIONS, KINDS
from webui import choices
from webui import dataset_view as view
from webui.context import AppContext
from webui.handlers import info, reported, user_errors
from webui.text import md

TITLE = "Dataset"
TAB_ID = "dataset"
PER_PAGE = (24, 48, 96)
_ELEM = {"dataset.caption_extension": "ds-caption-ext", "dataset.resolution": "ds-resolution",
         "dataset.min_bucket_reso": "ds-min-reso", "dataset.max_bucket_reso": "ds-max-reso",
         "dataset.bucket_reso_steps": "ds-step", "dataset.enable_bucket": "ds-enable-bucket",
         "dataset.bucket_no_upscale": "ds-no-upscale", "training.batch_size": "ds-batch"}


def _schema_component(spec) -> gr.components.Component:
    """A component for one schema option (label, help and default from the schema), with a ds- elem_id."""
    common = {"label": spec.label, "info": spec.help, "elem_id": _ELEM[spec.path], "min_width": 120}
    if spec.kind == "bool":
        return gr.Checkbox(value=spec.default, **common)
    if spec.kind == "int":
        return gr.Number(value=spec.default, precision=0, minimum=spec.ge, maximum=spec.le, **common)
    return gr.Textbox(value=spec.default, **common)


class DatasetTab:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.specs = {s.path: s for s in leaf_fields()}
        self.settings: dict[str, gr.components.Component] = {}

    # layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        datasets = choices.dataset_choices(self.ctx.paths)
        with gr.Accordion("Import a dataset", open=not datasets):
            with gr.Row(equal_height=True):
                self.zip_file = gr.File(label="Upload a zip of images and captions", file_types=[".zip"],
                                        type="filepath", elem_id="ds-zip", scale=2)
                with gr.Column(scale=2):
                    self.server_folder = gr.Textbox(label="…or a folder on the server", placeholder="/data/my-set",
                                                    elem_id="ds-server-folder")
                    self.folder_mode = gr.Radio(["Use in place", "Copy into the workspace"], value="Use in place",
                                                label="Server folder", elem_id="ds-folder-mode")
            with gr.Row():
                self.import_name = gr.Textbox(label="Dataset name", elem_id="ds-import-name", scale=2,
                                              info="Folder under workspace/datasets (empty: the zip's or folder's name).")
                with gr.Column(scale=2):
                    self.overwrite = gr.Checkbox(label="Overwrite an existing dataset of that name", value=False,
                                                 elem_id="ds-overwrite")
                    with gr.Row():
                        self.import_zip_btn = gr.Button("Import zip", variant="primary", elem_id="ds-import-zip")
                        self.import_folder_btn = gr.Button("Import folder", elem_id="ds-import-folder")
            self.import_status = gr.Markdown("", elem_id="ds-import-status")
        with gr.Row(equal_height=True):
            self.dataset = gr.Dropdown(choices=datasets, value=None, allow_custom_value=True, label="Dataset",
                                       info="One in workspace/datasets, or a folder path: the parent of N_name "
                                            "folders, or one of them.", elem_id="ds-path", scale=4)
            self.rescan_btn = gr.Button("↻ Rescan", size="sm", scale=0, min_width=90)
            self.preset = gr.Dropdown(choices=choices.preset_choices(self.ctx.paths), value=None, scale=2,
                                      label="Settings of preset", elem_id="ds-preset",
                                      info="The preset you will train with: its resolution, buckets and batch "
                                           "size (set when a preset trains this dataset).")
        with gr.Row(equal_height=True):
            for path in view.SETTING_PATHS:
                self.settings[path] = _schema_component(self.specs[path])
        with gr.Row(equal_height=True):
            reg_spec = self.specs["dataset.reg_repeats"]
            self.reg = gr.Dropdown(choices=datasets, value=None, allow_custom_value=True, scale=3,
                                   label=self.specs["dataset.reg_path"].label, elem_id="ds-reg",
                                   info=self.specs["dataset.reg_path"].help)
            self.reg_repeats = gr.Number(value=reg_spec.default, precision=0, minimum=reg_spec.ge,
                                         maximum=reg_spec.le, label=reg_spec.label, info=reg_spec.help,
                                         elem_id="ds-reg-repeats", scale=1)
        with gr.Row(equal_height=True):
            self.check_btn = gr.Button("Check", variant="primary", elem_id="ds-check")
            self.use_btn = gr.Button("Use for training", elem_id="ds-use")
        self.use_path = gr.Textbox(label="Dataset path for the Training tab", visible=False, buttons=["copy"],
                                   interactive=False, elem_id="ds-use-path")
        self.counts = gr.Markdown("Pick a dataset and press **Check**.", elem_id="ds-counts")
        self.checked = gr.State(None)
        self.imported = gr.State(None)  # the path of the dataset an import just made
        self._build_problems()
        self._build_repeats()
        self._build_buckets()
        self._build_browse()
        self.wire()

    def _build_problems(self) -> None:
        with gr.Accordion("Problems and fixes", open=True):
            self.problems = gr.Dataframe(headers=view.PROBLEM_COLUMNS, interactive=False, wrap=True,
                                         max_height=360, label="Problems (click a row to select its file)",
                                         elem_id="ds-problems")
            self.subsets = gr.Dataframe(interactive=False, max_height=200, label="Per subfolder",
                                        elem_id="ds-subsets")
            with gr.Row():
                with gr.Column(scale=3):
                    self.q_files = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                               label="Files to move to _quarantine", elem_id="ds-q-files")
                    self.q_kinds = gr.CheckboxGroup([(KINDS[k][1], k) for k in view.QUARANTINE_KINDS],
                                                    value=list(view.DEFAULT_QUARANTINE_KINDS),
                                                    label="…and every file flagged as", elem_id="ds-q-kinds")
                with gr.Column(scale=1, min_width=180):
                    self.q_btn = gr.Button("Move to _quarantine", variant="stop", elem_id="ds-fix-quarantine")
                    self.convert_btn = gr.Button("Convert colour modes to RGB", elem_id="ds-fix-convert")
            with gr.Row():
                with gr.Column():
                    self.trigger = gr.Textbox(label="Trigger word", elem_id="ds-trigger",
                                              info="Written as the caption of images that have none (empty: the "
                                                   "folder's concept name).")
                    self.captions_btn = gr.Button("Create missing captions", elem_id="ds-fix-captions")
                with gr.Column():
                    self.rename_from = gr.Dropdown(choices=list(CAPTION_EXTENSIONS), value=None,
                                                   label="Caption extension to rename from", elem_id="ds-rename-from",
                                                   info="Captions in it become the configured extension.")
                    self.rename_btn = gr.Button("Rename captions", elem_id="ds-fix-rename")
            self.fix_log = gr.Markdown("", elem_id="ds-fix-log")

    def _build_repeats(self) -> None:
        with gr.Accordion("Repeats and concepts", open=False):
            self.subfolders = gr.Dataframe(interactive=False, max_height=240, elem_id="ds-subfolders",
                                           label="N_name subfolders (N = repeats)")
            with gr.Row(equal_height=True):
                self.sub_pick = gr.Dropdown(choices=[], value=None, label="Subfolder", elem_id="ds-sub-pick")
                self.sub_repeats = gr.Number(value=1, precision=0, minimum=1, maximum=10000, label="Repeats",
                                             elem_id="ds-sub-repeats")
                self.set_repeats_btn = gr.Button("Set repeats (renames the folder)", elem_id="ds-set-repeats")
            with gr.Row(equal_height=True):
                self.concept = gr.Textbox(label="New concept", elem_id="ds-concept")
                self.concept_repeats = gr.Number(value=10, precision=0, minimum=1, maximum=10000, label="Repeats",
                                                 elem_id="ds-concept-repeats")
                self.nest = gr.Checkbox(label="Move the images lying directly in the dataset into it", value=False,
                                        elem_id="ds-nest")
                self.add_sub_btn = gr.Button("Add subfolder", elem_id="ds-add-sub")
            self.repeats_status = gr.Markdown("", elem_id="ds-repeats-status")

    def _build_buckets(self) -> None:
        with gr.Accordion("Buckets", open=False):
            with gr.Row(equal_height=True):
                self.bucket_md = gr.Markdown("", elem_id="ds-bucket-summary")
                self.bucket_btn = gr.Button("Recompute with the settings above", size="sm", scale=0,
                                            elem_id="ds-bucket-update")
            self.bucket_plot = gr.Plot(label="Images per bucket", elem_id="ds-bucket-plot")
            self.bucket_table = gr.Dataframe(headers=view.BUCKET_COLUMNS, interactive=False, max_height=360,
                                             label="Bucket of each image", elem_id="ds-bucket-table")

    def _build_browse(self) -> None:
        with gr.Accordion("Browse", open=True):
            with gr.Row():
                self.prev_btn = gr.Button("◀ Previous", size="sm", elem_id="ds-prev")
                self.page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="ds-page", min_width=90)
                self.next_btn = gr.Button("Next ▶", size="sm", elem_id="ds-next")
                self.per_page = gr.Dropdown(choices=list(PER_PAGE), value=PER_PAGE[1], label="Per page",
                                            elem_id="ds-per-page", min_width=90)
                self.page_label = gr.Markdown("", elem_id="ds-page-label")
            self.gallery = gr.Gallery(columns=8, height=560, object_fit="cover", label="Images and captions",
                                      elem_id="ds-gallery", allow_preview=True, fit_columns=False)

    # wiring ------------------------------------------------------------------------------------
    def wire(self) -> None:
        ui = self.ctx.ui
        private = {"api_visibility": "private"}
        check_in = {self.dataset, self.reg, self.reg_repeats, *self.settings.values(), self.per_page, self.preset}
        views = self.view_outputs
        pickers = {self.dataset, self.reg, self.preset}
        ui.blocks.load(self.rescan, outputs=pickers, **private)
        self.rescan_btn.click(self.rescan, outputs=pickers, **private)
        # Events that update pickers or fix buttons' fields report problems in a status line, not as Error
        # badges over every output (webui/handlers.py `reported`).
        # Imports and fixes change the datasets: other tabs' dataset lists (with image counts) follow.
        changed = {ui.datasets_changed} if ui.datasets_changed is not None else set()
        imported_out = {self.import_status, self.dataset, self.reg, self.imported} | changed
        zip_in = {self.zip_file, self.import_name, self.overwrite}
        folder_in = {self.server_folder, self.folder_mode, self.import_name, self.overwrite}
        for button, handler, inputs in ((self.import_zip_btn, self.import_zip, zip_in),
                                        (self.import_folder_btn, self.import_folder, folder_in)):
            button.click(reported(handler, self.import_status, {self.imported: None}), inputs=inputs,
                         outputs=imported_out, **private
                         ).success(reported(self.check_imported, self.counts), inputs=check_in | {self.imported},
                                   outputs=views, **private)
        settings_out = set(self.settings.values())
        self.dataset.input(reported(self.preset_of_dataset, self.counts), inputs={self.dataset, self.preset},
                           outputs=settings_out | {self.preset, self.counts}, **private)
        self.preset.input(reported(self.apply_preset, self.counts), inputs={self.preset},
                          outputs=settings_out | {self.counts}, **private)
        self.check_btn.click(reported(self.check, self.counts), inputs=check_in, outputs=views, concurrency_limit=2,
                             **private)
        self.problems.select(self.select_problem, inputs={self.q_files}, outputs={self.q_files}, **private)
        fix_in = {self.checked, self.per_page}
        fixed = {self.quarantine: fix_in | {self.q_files, self.q_kinds}, self.convert: fix_in,
                 self.create_captions: fix_in | {self.trigger}, self.rename_captions: fix_in | {self.rename_from}}
        for button, handler in ((self.q_btn, self.quarantine), (self.convert_btn, self.convert),
                                (self.captions_btn, self.create_captions), (self.rename_btn, self.rename_captions)):
            button.click(reported(handler, self.fix_log), inputs=fixed[handler], outputs=views | changed, **private)
        self.set_repeats_btn.click(reported(self.set_repeats, self.repeats_status),
                                   inputs=fix_in | {self.sub_pick, self.sub_repeats},
                                   outputs=views | {self.dataset} | changed, **private)
        self.add_sub_btn.click(reported(self.add_subfolder, self.repeats_status),
                               inputs=fix_in | {self.concept, self.concept_repeats, self.nest}, outputs=views | changed,
                               **private)
        self.bucket_btn.click(reported(self.update_buckets, self.bucket_md),
                              inputs={self.checked, self.preset, *self.settings.values()},
                              outputs={self.checked, self.counts, self.bucket_md, self.bucket_plot, self.bucket_table},
                              **private)
        page_in = {self.checked, self.page, self.per_page}
        page_out = {self.gallery, self.page, self.page_label}
        for event, delta in ((self.prev_btn.click, -1), (self.next_btn.click, 1), (self.page.submit, 0),
                             (self.per_page.input, 0)):
            event(reported(partial(self.show_page, delta=delta), self.page_label), inputs=page_in, outputs=page_out,
                  **private)
        self.pick = getattr(ui, "dataset_pick", None)  # the Training tab's hook, when it has one
        use_out = {self.use_path} | ({self.pick, ui.tabs} if self.pick is not None else set())
        self.use_btn.click(self.use_for_training, inputs={self.checked, self.reg, self.reg_repeats},
                           outputs=use_out, **private)

    @property
    def view_outputs(self) -> set:
        return {self.checked, self.counts, self.problems, self.subsets, self.q_files, self.rename_from,
                self.fix_log, self.subfolders, self.sub_pick, self.repeats_status, self.bucket_md, self.bucket_plot,
                self.bucket_table, self.gallery, self.page, self.page_label}

    # views -------------------------------------------------------------------------------------
    def _views(self, c: view.Checked, per_page: int, log: str = "") -> dict:
        found = view.subfolders(c.root)
        other_ext = view.other_caption_extensions(c)
        return {self.checked: c, self.counts: view.counts_markdown(c), self.problems: view.problems_frame(c),
                self.subsets: view.subsets_frame(c), self.fix_log: log,
                self.q_files: gr.Dropdown(choices=view.quarantine_choices(c), value=[], multiselect=True),
                self.rename_from: gr.Dropdown(choices=list(CAPTION_EXTENSIONS), value=other_ext[0] if other_ext else None),
                self.subfolders: view.subfolders_frame(found), self.repeats_status: "" if found else
                "A flat dataset: its images repeat once per epoch. Add a subfolder below and tick “Move the "
                "images…” to give them repeats.",
                self.sub_pick: gr.Dropdown(choices=[s.name for s in found], value=found[0].name if found else None),
                **self._bucket_views(c), **self._page(c, 1, per_page)}

    def _bucket_views(self, c: view.Checked) -> dict:
        return {self.bucket_md: view.bucket_markdown(c), self.bucket_plot: bucket_figure(c.buckets),
                self.bucket_table: view.bucket_frame(c)}

    def _page(self, c: view.Checked, number: int, per_page: int) -> dict:
        cache = thumbs_cache_dir(self.ctx.paths)
        pg = gallery_page(c.scan, int(number or 1), int(per_page or PER_PAGE[1]), cache_dir=cache)
        return {self.gallery: view.gallery_items(pg, cache), self.page: pg.page,
                self.page_label: f"Page {pg.page} of {pg.pages} · {pg.total} images"}

    def _checked(self, data: dict) -> view.Checked:
        c = data.get(self.checked)
        if c is None:
            raise gr.Error("Check a dataset first: pick it above and press Check.")
        return c

    def _recheck(self, c: view.Checked, data: dict, log: str, root: Path | None = None) -> dict:
        out = self._views(view.recheck(c, dataset_cache_dir(self.ctx.paths), root), data[self.per_page], log)
        return self._changed(out)

    def _changed(self, out: dict) -> dict:
        """`out` and the signal that a dataset changed (tabs listing datasets with their counts relist them)."""
        if self.ctx.ui is not None and self.ctx.ui.datasets_changed is not None:
            out[self.ctx.ui.datasets_changed] = time.time()
        return out

    def _resolve(self, value: str | None, what: str) -> Path:
        if not (value or "").strip():
            raise gr.Error(f"Choose the {what}: one from the list, or type the path of a folder.")
        return self.ctx.server_path(value.strip(), what)  # inside the workspace or an --allow-dir folder

    # handlers ----------------------------------------------------------------------------------
    @user_errors
    def rescan(self) -> dict:
        found = choices.dataset_choices(self.ctx.paths)
        return {self.dataset: gr.Dropdown(choices=found), self.reg: gr.Dropdown(choices=found),
                self.preset: gr.Dropdown(choices=choices.preset_choices(self.ctx.paths))}

    def _settings_of_preset(self, name: str) -> dict:
        values = view.setting_values(load_preset(name, self.ctx.paths))
        return {comp: values[path] for path, comp in self.settings.items()}

    @user_errors
    def preset_of_dataset(self, data: dict) -> dict:
        """A dataset was picked: when a preset trains it (its dataset.path), take that preset's settings."""
        value = (data[self.dataset] or "").strip()
        name = view.preset_for(self.ctx.paths, self.ctx.paths.resolve(value)) if value else None
        if not name or name == data[self.preset]:
            return {}
        return {self.preset: name, **self._settings_of_preset(name),
                self.counts: f"Settings of preset **{md(name)}**, which trains this dataset. Press **Check**."}

    @user_errors
    def apply_preset(self, data: dict) -> dict:
        name = data[self.preset]
        if not name:
            return {}
        return {**self._settings_of_preset(name), self.counts: f"Settings of preset **{md(name)}**. Press **Check**."}

    def _imported(self, result: importer.ImportResult) -> dict:
        found = choices.dataset_choices(self.ctx.paths)
        value = view.workspace_value(self.ctx.paths, result.path)
        info(f"{result.name}: {result.images} images. Checking it now…")
        return self._changed({self.import_status: view.import_markdown(result), self.reg: gr.Dropdown(choices=found),
                              self.dataset: gr.Dropdown(choices=found, value=value, allow_custom_value=True),
                              self.imported: value})

    @user_errors
    def check_imported(self, data: dict, progress=gr.Progress()) -> dict:
        """After an import (its event put the new dataset in the picker): check it at once."""
        return self.check(data, progress) if data[self.imported] else {}

    @user_errors
    def import_zip(self, data: dict, progress=gr.Progress()) -> dict:
        upload = data[self.zip_file]
        if not upload:
            raise gr.Error("Upload a .zip file first (drop it on the upload box).")
        name = (data[self.import_name] or "").strip() or Path(upload).stem
        progress(0, desc=f"Extracting {Path(upload).name}…")
        return self._imported(importer.import_zip(self.ctx.paths, upload, name, overwrite=data[self.overwrite]))

    @user_errors
    def import_folder(self, data: dict, progress=gr.Progress()) -> dict:
        folder = self._resolve(data[self.server_folder], "server folder to import")
        copy = data[self.folder_mode] != "Use in place"
        progress(0, desc=f"{'Copying' if copy else 'Reading'} {folder}…")
        result = importer.import_folder(self.ctx.paths, folder, (data[self.import_name] or "").strip() or None,
                                        copy=copy, overwrite=data[self.overwrite])
        return self._imported(result)

    @user_errors
    def check(self, data: dict, progress=gr.Progress()) -> dict:
        root = self._resolve(data[self.dataset], "dataset")
        settings = view.settings_from({p: data[comp] for p, comp in self.settings.items()})
        reg = self._resolve(data[self.reg], "regularization set") if (data[self.reg] or "").strip() else None
        source = view.settings_source(self.ctx.paths, settings, data.get(self.preset))
        progress(0, desc=f"Checking {root.name} (images not seen before are read once)…")
        c = view.run_check(root, settings, dataset_cache_dir(self.ctx.paths), reg, int(data[self.reg_repeats] or 1),
                           source)
        progress(0.9, desc="Drawing the report…")
        return self._views(c, data[self.per_page])

    def select_problem(self, data: dict, evt: gr.SelectData) -> dict:
        row = evt.row_value or []
        chosen = list(data[self.q_files] or [])
        if row and row[0] and row[0] not in chosen:
            chosen.append(row[0])
        return {self.q_files: gr.update(value=chosen)}

    @user_errors
    def quarantine(self, data: dict) -> dict:
        c = self._checked(data)
        files = view.chosen_files(c, data[self.q_files] or []) + view.files_with(c, data[self.q_kinds] or [])
        if not files:
            raise gr.Error("Nothing to move: select files (click rows of the table) or tick a kind of problem.")
        changes = fixes.quarantine(c.root, list(dict.fromkeys(files)))
        return self._recheck(c, data, view.changes_markdown("Moved to _quarantine", changes, c.root))

    @user_errors
    def convert(self, data: dict) -> dict:
        c = self._checked(data)
        files = view.files_with(c, ["mode"])
        if not files:
            raise gr.Error("No image needs a colour-mode conversion.")
        changes = fixes.convert_modes(files, c.root)
        return self._recheck(c, data, view.changes_markdown("Converted to RGB", changes, c.root))

    @user_errors
    def create_captions(self, data: dict) -> dict:
        c = self._checked(data)
        changes = fixes.create_missing_captions(c.scan, data[self.trigger] or "")
        if not changes:
            info("Every image has a caption already.")
        return self._recheck(c, data, view.changes_markdown("Captions created", changes, c.root))

    @user_errors
    def rename_captions(self, data: dict) -> dict:
        c = self._checked(data)
        source = data[self.rename_from]
        if not source:
            raise gr.Error("Choose the caption extension to rename from.")
        changes = fixes.rename_caption_extension(c.root, source, c.settings.caption_extension)
        return self._recheck(c, data, view.changes_markdown(
            f"Captions renamed {source} → {c.settings.caption_extension}", changes, c.root))

    @user_errors
    def set_repeats(self, data: dict) -> dict:
        c = self._checked(data)
        found = {s.name: s for s in view.subfolders(c.root)}
        name = data[self.sub_pick]
        if name not in found:
            raise gr.Error("Choose a subfolder (N_name) of this dataset.")
        new = repeats.set_repeats(found[name].path, int(data[self.sub_repeats] or 0))
        root = new if found[name].path == c.root else None  # the picked folder itself was renamed
        out = self._recheck(c, data, "", root)
        out[self.repeats_status] = f"Renamed **{md(name)}** → **{md(new.name)}**."
        if root is not None:
            out[self.dataset] = gr.update(value=view.workspace_value(self.ctx.paths, new))
        return out

    @user_errors
    def add_subfolder(self, data: dict) -> dict:
        c = self._checked(data)
        args = (c.root, data[self.concept] or "", int(data[self.concept_repeats] or 0))
        made = repeats.nest_flat_dataset(*args) if data[self.nest] else repeats.add_subfolder(*args)
        out = self._recheck(c, data, "")
        out[self.repeats_status] = f"Created **{md(made.name)}**" + (
            " and moved the images into it." if data[self.nest] else ": put its images in it, then Check.")
        return out

    @user_errors
    def update_buckets(self, data: dict) -> dict:
        c = self._checked(data)
        s = view.settings_from({p: data[comp] for p, comp in self.settings.items()})
        c = view.Checked(root=c.root, settings=s, scan=c.scan, report=c.report, reg=c.reg, reg_repeats=c.reg_repeats,
                         buckets=bucket_report(c.scan, c.report.sizes(), batch_size=s.batch_size,
                                               heavy_crop=view.HEAVY_CROP, **s.bucket_args),
                         source=view.settings_source(self.ctx.paths, s, data.get(self.preset)))
        if c.reg:
            c.reg = (c.reg[0], bucket_report(c.reg[0], batch_size=s.batch_size, heavy_crop=view.HEAVY_CROP,
                                             **s.bucket_args))
        return {self.checked: c, self.counts: view.counts_markdown(c), **self._bucket_views(c)}

    @user_errors
    def show_page(self, data: dict, delta: int) -> dict:
        c = self._checked(data)
        return self._page(c, int(data[self.page] or 1) + delta, data[self.per_page])

    @user_errors
    def use_for_training(self, data: dict) -> dict:
        c = self._checked(data)
        pick = view.pick_for_training(self.ctx.paths, c, (data[self.reg] or "").strip(), data[self.reg_repeats])
        if self.pick is None:
            info("Copy this path into the Training tab's Dataset field.")
            return {self.use_path: gr.Textbox(value=pick["dataset.path"], visible=True)}
        info(f"Dataset {c.root.name} set in the Training tab.")
        return {self.pick: pick, self.ctx.ui.tabs: gr.Tabs(selected="training"),
                self.use_path: gr.Textbox(value=pick["dataset.path"], visible=True)}


def build(ctx: AppContext) -> DatasetTab:
    tab = DatasetTab(ctx)
    tab.build()
    return tab
