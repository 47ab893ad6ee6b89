"""Training tab: pick model, dataset and preset; the schema-generated form; validate, start, queue."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from backend import compat
from backend.config import TrainConfig, validate_dict
from backend.config.fields import leaf_fields
from backend.config.schema import SECTIONS
from backend.errors import ConfigError
from webui import choices, forms
from webui import training_actions as act
from webui.algo_notes import algo_note
from webui.context import AppContext
from webui.estimate_view import EstimateView
from webui.forms import Form
from webui.handlers import info, problem_lines, reported, user_errors
from webui.text import code, md, prose

TITLE = "Training"
TAB_ID = "training"
SECTION_TITLES = {"model": "Model", "dataset": "Dataset", "network": "Network", "optimizer": "Optimizer",
                  "training": "Training", "schedule": "LR schedule", "loss": "Loss and noise",
                  "sampling": "Samples", "saving": "Saving"}


class TrainingTab:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.form = Form()
        specs = leaf_fields()
        self.basic = [s.path for s in specs if s.basic and s.path not in act.PICKED_PATHS]
        self.advanced = {sec: [s.path for s in specs if s.section == sec and not s.basic] for sec in SECTIONS}

    # layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        paths = self.ctx.paths
        with gr.Row(equal_height=True):
            self.preset = gr.Dropdown(choices=choices.preset_choices(paths), value=None, label="Preset",
                                      info="Loads a preset's settings into the form (shipped and yours).",
                                      scale=3, elem_id="preset-picker")
            self.reset = gr.Button("Reset to defaults", scale=1, size="sm")
        self.preset_about = gr.Markdown("", elem_id="preset-about")
        self._build_import()  # on the first screen: kohya users start from their own config
        with gr.Row(equal_height=True):
            self.form.add("model.path", choices=choices.model_choices(paths))
            self.refresh = gr.Button("↻ Rescan", scale=0, min_width=90, size="sm")
            self.form.add("dataset.path", choices=choices.dataset_choices(paths))
        self.model_note = gr.Markdown("", elem_id="model-note")
        self.form.render(self.basic, per_row=3)
        self.algo_note = gr.Markdown("", elem_id="algo-note")  # beside network.algo: see webui/algo_notes.py
        with gr.Row(equal_height=True):
            self.run_name = gr.Textbox(label="Run name", placeholder="defaults to the output name", scale=2,
                                       elem_id="run-name")
            self.validate_btn = gr.Button("Validate", scale=1)
            self.start_btn = gr.Button("Start", variant="primary", scale=1, elem_id="start-btn")
            self.queue_btn = gr.Button("Add to queue", scale=1)
            self.estimate = EstimateView(self.ctx)
            self.estimate.render_button()
        self.status = gr.Markdown("", elem_id="train-status")
        self.estimate.render_output()
        self.marked = gr.State([])
        with gr.Accordion("All options", open=False):
            for section, fields in self.advanced.items():
                if fields:
                    with gr.Accordion(SECTION_TITLES.get(section, section), open=False):
                        self.form.render(fields, per_row=3)
        with gr.Accordion("Presets: save, import, export", open=False):
            with gr.Row(equal_height=True):
                self.preset_name = gr.Textbox(label="Preset name", scale=2)
                self.overwrite = gr.Checkbox(label="Overwrite if it exists", value=False, scale=1)
                self.save_btn = gr.Button("Save as preset", scale=1)
            with gr.Row(equal_height=True):
                self.import_file = gr.File(label="Import a preset (.toml)", file_types=[".toml"],
                                           type="filepath")
                with gr.Column():
                    self.export_btn = gr.Button("Export preset file")
                    self.export_file = gr.File(label="Exported preset", visible=False, interactive=False,
                                               elem_classes=["ld-downloads"])
        with gr.Accordion("Resolved config (TOML)", open=False):
            self.show_toml = gr.Button("Show the resolved config", size="sm")
            self.toml = gr.Code(label="config.toml", language=None, interactive=False,
                                buttons=["copy", "download"], elem_id="resolved-toml")
        self.wire()

    def _build_import(self) -> None:
        with gr.Accordion("Import config (kohya sd-scripts, LETS, kohya_ss)", open=False):
            gr.Markdown("A kohya `--config_file` TOML, an sd-scripts command line, a LETS TOML/JSON or a "
                        "kohya_ss JSON preset. The form is reset to the defaults, then filled from it; the "
                        "report lists what mapped, what changed and what has no equivalent. On the command "
                        "line: `python -m backend import-config CONFIG.toml --dataset DATASET.toml -o mine.toml`.")
            with gr.Row(equal_height=True):
                self.kohya_file = gr.File(label="Config file", type="filepath", elem_id="import-config-file",
                                          file_types=[".toml", ".json", ".sh", ".bat", ".cmd", ".ps1",
                                                      ".txt"])
                self.kohya_dataset = gr.File(label="Its dataset config (.toml, optional)", type="filepath",
                                             file_types=[".toml"], elem_id="import-config-dataset")
            self.kohya_text = gr.Textbox(label="…or paste the config or command here", lines=6,
                                         elem_id="import-config-text")
            self.kohya_btn = gr.Button("Import pasted config", size="sm", elem_id="import-config-btn")
            self.kohya_report = gr.Textbox(label="Import report", lines=8, max_lines=20, interactive=False,
                                           buttons=["copy"], elem_id="import-config-report")

    # wiring ------------------------------------------------------------------------------------
    def wire(self) -> None:
        ui = self.ctx.ui
        form_in = self.form.inputs
        picks = {self.form.components[p] for p in act.PICKED_PATHS}
        private = {"api_visibility": "private"}
        status = self.status  # events that update form fields report problems here, not as Error badges
        self.preset.input(reported(self.load_preset, status), inputs=picks | {self.preset},
                          outputs=form_in | {self.preset_about, status}, **private)
        self.reset.click(reported(self.load_defaults, status), inputs=picks,
                         outputs=form_in | {self.preset_about, status}, **private)
        comps = self.form.components
        comps["model.path"].input(reported(self.on_model, self.model_note), inputs=comps["model.path"],
                                  outputs={comps["model.family"], self.model_note}, **private)
        comps["network.algo"].change(algo_note, inputs=comps["network.algo"], outputs=self.algo_note, **private)
        rescan = reported(self.rescan, status)
        self.refresh.click(rescan, outputs=picks | {self.preset, status}, **private)
        ui.blocks.load(rescan, outputs=picks | {self.preset, status}, **private)
        if ui.datasets_changed is not None:  # the Dataset tab moved files: the image counts in the list change
            ui.datasets_changed.change(rescan, outputs=picks | {self.preset, status}, show_progress="hidden",
                                       **private)
        marks_out = form_in | {status, self.marked, self.toml}
        self.validate_btn.click(reported(self.validate, status), inputs=form_in | {self.marked}, outputs=marks_out,
                                **private)
        self.show_toml.click(reported(self.validate, status), inputs=form_in | {self.marked}, outputs=marks_out,
                             **private)
        start_out = marks_out | {ui.timer, ui.tabs, ui.job_id}
        for button, start in ((self.start_btn, True), (self.queue_btn, False)):
            button.click(reported(partial(self.submit, start=start), status),
                         inputs=form_in | {self.marked, self.run_name}, outputs=start_out, **private)
        self.estimate.wire(self.form, form_in, lambda cfg: act.resolved_toml(cfg, self.ctx))
        self.save_btn.click(reported(self.save_preset, status), inputs=form_in | {self.preset_name, self.overwrite},
                            outputs={self.preset, status}, **private)
        self.export_btn.click(self.export, inputs=form_in | {self.preset_name}, outputs=self.export_file, **private)
        self.import_file.upload(reported(self.import_preset, status), inputs=self.import_file,
                                outputs=form_in | {self.preset, status}, **private)
        imported = form_in | {self.kohya_report, status, self.marked}
        import_in = picks | {self.kohya_dataset, self.marked}
        self.kohya_file.upload(reported(self.import_config_file, status), inputs=import_in | {self.kohya_file},
                               outputs=imported, **private)
        self.kohya_btn.click(reported(self.import_config_text, status), inputs=import_in | {self.kohya_text},
                             outputs=imported, **private)
        if ui.dataset_pick is not None:  # the Dataset tab's "Use for training"
            ui.dataset_pick.change(reported(self.apply_dataset_pick, status), inputs=ui.dataset_pick,
                                   outputs=form_in | {status}, **private)
        gr.api(self.api_start, api_name="start_training")

    # handlers ----------------------------------------------------------------------------------
    @user_errors
    def rescan(self) -> dict:
        paths = self.ctx.paths
        return {self.form.components["model.path"]: gr.Dropdown(choices=choices.model_choices(paths)),
                self.form.components["dataset.path"]: gr.Dropdown(choices=choices.dataset_choices(paths)),
                self.preset: gr.Dropdown(choices=choices.preset_choices(paths))}

    @user_errors
    def on_model(self, model_path: str | None) -> dict:
        """A model was picked: say what it is and set the family to match."""
        if not model_path:
            return {self.model_note: ""}
        path = self.ctx.server_path(model_path, "model.path")  # not read outside the allowed folders
        if not path.exists():
            return {self.model_note: f"⚠ {code(path)} does not exist."}
        family, line = act.describe_model(path)
        out = {self.model_note: f"*{md(line)}*" if family else f"⚠ {md(line)}"}
        if family:
            out[self.form.components["model.family"]] = family
        return out

    @user_errors
    def load_preset(self, data: dict) -> dict:
        name = data[self.preset]
        cfg = act.preset_config(self.ctx, name)
        keep = act.keep_picks(cfg, self.form.values(data))
        about = choices.preset_summaries(self.ctx.paths).get(name, "")
        return {**self.form.updates(cfg, keep), self.preset_about: prose(about),
                self.status: f"Loaded preset **{md(name)}**."}

    @user_errors
    def load_defaults(self, data: dict) -> dict:
        keep = {p: v for p, v in self.form.values(data).items() if v}
        return {**self.form.updates(TrainConfig(), keep), self.preset_about: ""}

    def _checked(self, data: dict) -> tuple[TrainConfig | None, list[tuple[str, str]]]:
        values = self.form.values(data)
        try:
            cfg = self.form.config(data)
        except ConfigError as err:
            named = {path for path, _ in err.problems}
            return None, err.problems + [p for p in act.path_problems(values, self.ctx) if p[0] not in named]
        return cfg, act.input_problems(cfg, self.ctx)

    def _problems_out(self, data: dict, problems: list[tuple[str, str]]) -> dict:
        updates, marked = self.form.marks(problems, data.get(self.marked, []))
        gr.Warning(f"{len(problems)} setting(s) need attention: see the list under the buttons.")
        text = "**Please fix:**\n\n" + md(problem_lines(ConfigError(problems))).replace("\n", "\n\n")
        return {**updates, self.status: text, self.marked: marked}

    @user_errors
    def validate(self, data: dict) -> dict:
        cfg, problems = self._checked(data)
        if problems:
            return self._problems_out(data, problems)
        updates, marked = self.form.marks([], data.get(self.marked, []))
        return {**updates, self.marked: marked, self.status: "✓ The settings are valid.",
                self.toml: act.resolved_toml(cfg, self.ctx)}

    @user_errors
    def submit(self, data: dict, start: bool) -> dict:
        cfg, problems = self._checked(data)
        if problems:
            return self._problems_out(data, problems)
        rec = act.submit(cfg, self.ctx, data.get(self.run_name, ""), start=start)
        updates, marked = self.form.marks([], data.get(self.marked, []))
        where = "started" if rec.status in ("starting", "running") else "queued"
        out = {**updates, self.marked: marked, self.toml: act.resolved_toml(cfg, self.ctx),
               self.status: f"Job **{md(rec.name)}** ({code(rec.id)}) {where}. Follow it in the Runs tab.",
               self.ctx.ui.timer: gr.Timer(value=1.0, active=True), self.ctx.ui.job_id: rec.id}
        if start:
            out[self.ctx.ui.tabs] = gr.Tabs(selected="runs")
        return out

    @user_errors
    def save_preset(self, data: dict) -> dict:
        cfg = self.form.config(data)
        path = act.save_user_preset(self.ctx, cfg, data[self.preset_name], data[self.overwrite])
        info(f"Saved preset {path.stem} ({path})")
        return {self.preset: gr.Dropdown(choices=choices.preset_choices(self.ctx.paths), value=path.stem),
                self.status: f"Saved your preset **{md(path.stem)}**."}

    @user_errors
    def export(self, data: dict) -> gr.File:
        cfg = self.form.config(data)
        return gr.File(value=act.export_preset(cfg, data[self.preset_name]), visible=True)

    @user_errors
    def import_preset(self, file_path: str | None) -> dict:
        if not file_path:
            return {}
        cfg, message = act.import_preset(self.ctx, file_path)
        info(message)
        return {**self.form.updates(cfg), self.status: md(message),
                self.preset: gr.Dropdown(choices=choices.preset_choices(self.ctx.paths))}

    @user_errors
    def apply_dataset_pick(self, pick: dict | None) -> dict:
        """Fill the fields the Dataset tab sent ({dotted path: config value}); the rest stay as they are."""
        comps, pick = self.form.components, pick or {}
        out: dict = {comps[p]: forms.to_ui(self.form.specs[p], v) for p, v in pick.items() if p in comps}
        if "dataset.path" in pick:  # the path as typed (a new dataset is not among the page's choices yet)
            out[self.status] = f"Dataset **{md(pick['dataset.path'])}** and its settings set from the Dataset tab."
        return out

    @user_errors
    def import_config_file(self, data: dict) -> dict:
        path = data[self.kohya_file]
        if not path:
            return {}
        result = compat.import_file(path, data.get(self.kohya_dataset), paths=self.ctx.paths, roots=self.ctx.allowed)
        return self._imported(result, data, Path(path).name)

    @user_errors
    def import_config_text(self, data: dict) -> dict:
        text = data[self.kohya_text] or ""
        if not text.strip():
            raise gr.Error("Paste a kohya config, an sd-scripts command, or a LETS/kohya_ss preset first.")
        result = compat.import_text(text, dataset=data.get(self.kohya_dataset), paths=self.ctx.paths,
                                    source="pasted config", roots=self.ctx.allowed)
        return self._imported(result, data, "the pasted config")

    def _imported(self, result, data: dict, what: str) -> dict:
        """defaults ← the imported preset (not layered over the form); an empty model/dataset keeps
        the current pick."""
        cfg = validate_dict(result.preset, result.report.source or "imported config")
        keep = act.keep_picks(cfg, self.form.values(data))
        out = self.form.updates(cfg, keep)
        marks, marked = self.form.marks([], data.get(self.marked, []))  # old problem marks go
        out.update({comp: {**mark, "value": out[comp]} for comp, mark in marks.items()})
        r = result.report
        info(f"Imported: {len(r.mapped)} mapped, {len(r.changed)} changed, {len(r.unmapped)} without "
             f"equivalent. Read the report, then Validate.")
        return {**out, self.marked: marked, self.kohya_report: r.to_text(),
                self.status: f"Imported **{md(what)}** into the form: read its report under “Import config”."}

    @user_errors
    def api_start(self, config_toml: str, name: str = "", start: bool = True) -> dict:
        """Start a training job from a TOML config (sparse: unset options take their defaults).
        Returns {"id", "status", "job_dir"}."""
        return act.submit_toml(self.ctx, config_toml, name, start)


def build(ctx: AppContext) -> TrainingTab:
    tab = TrainingTab(ctx)
    tab.build()
    return tab
