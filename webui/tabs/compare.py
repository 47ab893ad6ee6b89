"""Compare tab: 2–4 runs side by side (loss, learning rate, settings diff, sample grid, outcome),
A/B launches of presets or a swept option, and exports (standalone HTML, grid PNG).

Runs are read from their job folders through a RunCache shared by all sessions (events by byte
offset). The tab's own timer ticks every 2 s while a shown run is queued or active, and stops when
none is; a tick redraws only when an event offset or a status changed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from backend.compare import view
from backend.compare.ab import launch_ab, plan_ab
from backend.compare.charts import loss_figure, lr_figure
from backend.compare.grid import build_grid, save_grid_png
from backend.compare.report import export_html
from backend.compare.runs import DEFAULT_SMOOTHING, RunData, groups
from backend.compare.summary import diff_rows, outcome_table
from backend.errors import JobError
from webui import choices
from webui.context import AppContext
from webui.handlers import info, reported, user_errors, warning
from webui.runs_view import shared_runs
from webui.text import code, md

TITLE = "Compare"
TAB_ID = "compare"
TICK_S = 2.0
PRIVATE = {"api_visibility": "private"}


def _table(headers: list[str], rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


class CompareTab:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.cache = shared_runs(ctx)  # the Runs tab's too: a run open in both is read once

    # layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        with gr.Row(equal_height=True):
            self.group = gr.Dropdown(label="Comparison group", choices=[], value=None, scale=2,
                                     info="An A/B launch: picks its runs.", elem_id="compare-group")
            self.runs = gr.Dropdown(label="Runs", choices=[], value=[], multiselect=True, max_choices=4,
                                    scale=5, info="2–4 training runs: finished, stopped or running.",
                                    elem_id="compare-runs")
            self.refresh_btn = gr.Button("↻ Refresh", scale=0, min_width=100, size="sm")
        self.note = gr.Markdown("Pick 2–4 runs, or a comparison group.", elem_id="compare-note")
        with gr.Row(equal_height=True):
            self.smoothing = gr.Slider(0.0, 0.99, value=DEFAULT_SMOOTHING, step=0.01, label="Loss smoothing",
                                       info="EMA weight, as TensorBoard's slider.", elem_id="compare-smoothing")
            self.x_axis = gr.Radio([("Step", "step"), ("Images seen", "images")], value="step", label="X axis",
                                   info="Images seen = step × batch × accumulation × GPUs.",
                                   elem_id="compare-x")
        with gr.Row():
            self.loss_plot = gr.Plot(label="Loss", elem_id="compare-loss")
            self.lr_plot = gr.Plot(label="Learning rate", elem_id="compare-lr")
        self.outcome = gr.Dataframe(label="Outcome", interactive=False, wrap=True, elem_id="compare-outcome")
        self.diff = gr.Dataframe(label="Settings that differ", interactive=False, wrap=True,
                                 line_breaks=True, elem_id="compare-diff")
        self.step = gr.Slider(0, 1, value=0, step=1, label="Sample step",
                              info="Each run shows its sample nearest to this step.", elem_id="compare-step")
        self.grid_note = gr.Markdown("", elem_id="compare-grid-note")
        self.gallery = gr.Gallery(label="Samples: one row per prompt and seed, one column per run", columns=2,
                                  height="auto", object_fit="contain", allow_preview=True, interactive=False,
                                  elem_id="compare-grid")
        with gr.Accordion("Export", open=False):
            with gr.Row():
                self.html_btn = gr.Button("Export HTML report", elem_id="compare-export-html")
                self.png_btn = gr.Button("Export sample grid (PNG)", elem_id="compare-export-png")
            self.export_file = gr.File(label="Download", interactive=False, visible=False,
                                       elem_id="compare-export-file", elem_classes=["ld-downloads"])
        with gr.Accordion("A/B launch", open=False, elem_id="compare-ab"):
            self._build_ab()
        self.timer = gr.Timer(TICK_S, active=False)
        self.shown = gr.State(None)      # {"sig": …, "max_step": …}: what is on screen
        self.wire()

    def _build_ab(self) -> None:
        paths = self.ctx.paths
        gr.Markdown("Queue 2–4 runs that differ only in their preset, or in one option. They get the "
                    "same base model, dataset, seed and sample prompts, and open here as one group.")
        with gr.Row(equal_height=True):
            self.ab_model = gr.Dropdown(label="Base model", choices=choices.model_choices(paths),
                                        allow_custom_value=True, elem_id="ab-model")
            self.ab_dataset = gr.Dropdown(label="Dataset", choices=choices.dataset_choices(paths),
                                          allow_custom_value=True, elem_id="ab-dataset")
        self.ab_mode = gr.Radio([("Compare presets", "presets"), ("Sweep one option", "sweep")],
                                value="presets", label="What differs", elem_id="ab-mode")
        self.ab_presets = gr.Dropdown(label="Presets (2–4; one for a sweep)", multiselect=True, max_choices=4,
                                      choices=choices.preset_choices(paths), elem_id="ab-presets")
        with gr.Row(equal_height=True, visible=False) as self.ab_sweep_row:
            self.ab_field = gr.Dropdown(label="Option to sweep", choices=view.sweepable_fields(),
                                        value="network.rank", elem_id="ab-field")
            self.ab_values = gr.Textbox(label="Values (2–4, comma-separated)", placeholder="8, 16, 32",
                                        elem_id="ab-values")
        with gr.Row(equal_height=True):
            self.ab_prompts = gr.Textbox(label="Sample prompts (one per line)", lines=3,
                                         placeholder="empty: the first preset's prompts", elem_id="ab-prompts")
            with gr.Column():
                # A text box: a gr.Number shows an empty value as 0 (and sent 0, overriding the presets' seed).
                self.ab_seed = gr.Textbox(label="Seed", placeholder="empty: the first preset's seed", max_lines=1,
                                          elem_id="ab-seed")
                self.ab_title = gr.Textbox(label="Comparison name", placeholder="e.g. rank test",
                                           elem_id="ab-title")
        self.ab_overrides = gr.Textbox(label="Settings for every run (section.option=value, one per line)",
                                       lines=2, placeholder="training.max_steps=400\nsampling.every_n_steps=100",
                                       elem_id="ab-overrides")
        self.ab_launch = gr.Button("Launch comparison", variant="primary", elem_id="ab-launch")
        self.ab_status = gr.Markdown("", elem_id="ab-status")

    # wiring ------------------------------------------------------------------------------------
    def wire(self) -> None:
        show_in = {self.runs, self.smoothing, self.x_axis, self.step, self.shown}
        show_out = [self.loss_plot, self.lr_plot, self.outcome, self.diff, self.step, self.grid_note,
                    self.gallery, self.note, self.timer, self.shown]
        self.runs.change(self.show_all, inputs=show_in, outputs=show_out, **PRIVATE)
        self.timer.tick(self.tick, inputs=show_in, outputs=show_out, show_progress="hidden",
                        concurrency_limit=None, **PRIVATE)
        for event in (self.smoothing.release, self.x_axis.change):
            event(self.charts, inputs={self.runs, self.smoothing, self.x_axis},
                  outputs=[self.loss_plot, self.lr_plot, self.outcome], **PRIVATE)
        self.step.release(self.grid, inputs={self.runs, self.step}, outputs=[self.grid_note, self.gallery],
                          **PRIVATE)
        self.group.input(self.pick_group, inputs=self.group, outputs=self.runs, **PRIVATE)
        pickers = [self.group, self.runs, self.ab_model, self.ab_dataset, self.ab_presets]
        self.refresh_btn.click(self.refresh_choices, inputs={self.group, self.runs}, outputs=pickers, **PRIVATE)
        if self.ctx.ui is not None:
            self.ctx.ui.blocks.load(self.refresh_choices, inputs={self.group, self.runs}, outputs=pickers,
                                    **PRIVATE)
        self.ab_mode.change(lambda mode: gr.Row(visible=mode == "sweep"), inputs=self.ab_mode,
                            outputs=self.ab_sweep_row, **PRIVATE)
        ab_in = {self.ab_model, self.ab_dataset, self.ab_mode, self.ab_presets, self.ab_field, self.ab_values,
                 self.ab_prompts, self.ab_seed, self.ab_title, self.ab_overrides}
        ab_out = [self.ab_status, self.group, self.runs, self.timer]
        if self.ctx.ui is not None:
            ab_out.append(self.ctx.ui.timer)
        self.ab_launch.click(reported(self.launch, self.ab_status), inputs=ab_in, outputs=ab_out, **PRIVATE)
        self.html_btn.click(self.export_html, inputs={self.runs, self.smoothing, self.x_axis, self.step},
                            outputs=self.export_file, **PRIVATE)
        self.png_btn.click(self.export_png, inputs={self.runs, self.step}, outputs=self.export_file, **PRIVATE)

    # reading -----------------------------------------------------------------------------------
    def _runs(self, ids: list[str] | None) -> tuple[list[RunData], list[str]]:
        """The runs still there, and a note for ids whose folder is gone."""
        runs, gone = [], []
        for jid in ids or []:
            try:
                runs.extend(self.cache.get([jid]))
            except JobError:
                gone.append(jid)
        return runs, gone

    def _note(self, runs: list[RunData], gone: list[str], same_settings: bool) -> str:
        parts = []
        if not runs:
            parts.append("Pick 2–4 runs, or a comparison group.")
        elif len(runs) == 1:
            parts.append("One run picked: add another to compare.")
        if gone:
            parts.append(f"No longer in the workspace: {md(', '.join(gone))}.")
        waiting = [r.name for r in runs if r.record.status == "queued"]
        if waiting:
            parts.append(f"Queued, not started yet: {md(', '.join(waiting))}.")
        if len(runs) > 1 and same_settings:
            parts.append("These runs have the same settings.")
        return " ".join(parts)

    @user_errors
    def show_all(self, data: dict, force: bool = True) -> dict:
        ids, smoothing, x_axis = data[self.runs], data[self.smoothing], data[self.x_axis]
        step, shown = data[self.step], data[self.shown]
        runs, gone = self._runs(ids)
        active = any(r.active for r in runs)
        if active:  # keep the queue moving even when no other tab polls (throttled by the supervisor)
            self.ctx.supervisor.poll()
            runs, gone = self._runs(ids)
        sig = (view.signature(runs), tuple(gone))
        if not force and shown and shown.get("sig") == sig:
            return {self.timer: gr.Timer(active=active)}
        steps = sorted({s for r in runs for s in r.sample_steps()})
        max_step = steps[-1] if steps else 0
        follow = not shown or step is None or step >= (shown.get("max_step") or 0) or force
        at = max_step if follow else int(step)
        dh, drows = diff_rows(runs)
        oh, orows = outcome_table(runs, smoothing)
        grid_note, gallery = self._grid(runs, at)
        low, high, movable = view.step_slider(steps)
        return {
            self.loss_plot: loss_figure(runs, smoothing, x_axis),
            self.lr_plot: lr_figure(runs, x_axis),
            self.outcome: _table(oh, orows),
            self.diff: _table(dh, drows),
            self.step: gr.Slider(minimum=low, maximum=high, value=min(max(at, low), high), interactive=movable),
            self.grid_note: grid_note,
            self.gallery: gallery,
            self.note: self._note(runs, gone, len(runs) > 1 and not drows),
            self.timer: gr.Timer(active=active),
            self.shown: {"sig": sig, "max_step": max_step},
        }

    def tick(self, data: dict) -> dict:
        return self.show_all(data, force=False)

    def _grid(self, runs: list[RunData], step: int | None) -> tuple[str, Any]:
        grid = build_grid(runs, step)
        if grid.empty:
            return md(grid.reason or ""), gr.Gallery(value=[], columns=max(1, len(runs)))
        note = f"Step {grid.step}: rows are prompts with their seed, columns are runs " + \
            md(" | ".join(grid.labels)) + ". Click an image to see it full size."
        return note, gr.Gallery(value=view.gallery_items(grid), columns=len(grid.labels))

    @user_errors
    def charts(self, data: dict) -> dict:
        smoothing, x_axis = data[self.smoothing], data[self.x_axis]
        runs, _ = self._runs(data[self.runs])
        oh, orows = outcome_table(runs, smoothing)
        return {self.loss_plot: loss_figure(runs, smoothing, x_axis), self.lr_plot: lr_figure(runs, x_axis),
                self.outcome: _table(oh, orows)}

    @user_errors
    def grid(self, data: dict) -> dict:
        runs, step = self._runs(data[self.runs])[0], data[self.step]
        note, gallery = self._grid(runs, None if step is None else int(step))
        return {self.grid_note: note, self.gallery: gallery}

    # pickers -----------------------------------------------------------------------------------
    @user_errors
    def pick_group(self, group: str | None) -> Any:
        ids = groups(self.ctx.paths).get(group or "", [])
        return gr.Dropdown(value=ids[:4]) if ids else gr.skip()

    @user_errors
    def refresh_choices(self, data: dict) -> dict:
        paths, group, ids = self.ctx.paths, data[self.group], data[self.runs]
        return {
            self.group: gr.Dropdown(choices=view.group_choices(paths), value=group),
            self.runs: gr.Dropdown(choices=view.run_choices(paths), value=ids or []),
            self.ab_model: gr.Dropdown(choices=choices.model_choices(paths)),
            self.ab_dataset: gr.Dropdown(choices=choices.dataset_choices(paths)),
            self.ab_presets: gr.Dropdown(choices=choices.preset_choices(paths)),
        }

    # A/B launch --------------------------------------------------------------------------------
    @user_errors
    def launch(self, data: dict) -> dict:
        sweep = None
        if data[self.ab_mode] == "sweep":
            field, values = data[self.ab_field], (data[self.ab_values] or "").strip()
            if not field or not values:
                raise gr.Error("Choose the option to sweep and 2–4 values, e.g. 8, 16, 32.")
            sweep = f"{field} = [{values.strip('[]')}]"
        plan = plan_ab(self.ctx.paths, presets=list(data[self.ab_presets] or []), sweep=sweep,
                       model_path=data[self.ab_model] or "", dataset_path=data[self.ab_dataset] or "",
                       overrides=view.overrides_from_text(data[self.ab_overrides]),
                       seed=view.seed_from_text(data[self.ab_seed]),
                       prompts=view.lines(data[self.ab_prompts]) or None)
        group, recs = launch_ab(self.ctx.supervisor, plan, data[self.ab_title] or "")
        ids = [r.id for r in recs]
        info(f"Queued {len(recs)} runs as {group}.")
        out = {
            self.ab_status: f"Queued **{len(recs)} runs** as group {code(group)}: " + md(", ".join(r.name for r in recs))
                            + ". They run one after another; this tab follows them.",
            self.group: gr.Dropdown(choices=view.group_choices(self.ctx.paths), value=group),
            self.runs: gr.Dropdown(choices=view.run_choices(self.ctx.paths), value=ids[:4]),
            self.timer: gr.Timer(active=True),
        }
        if self.ctx.ui is not None:
            out[self.ctx.ui.timer] = gr.Timer(active=True)
        return out

    # exports -----------------------------------------------------------------------------------
    def _export_path(self, ids: list[str], suffix: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="loradash-compare-"))
        return folder / f"compare-{'-vs-'.join(i[:15] for i in ids)}{suffix}"

    @user_errors
    def export_html(self, data: dict) -> Any:
        ids, step = data[self.runs], data[self.step]
        runs, _ = self._runs(ids)
        if not runs:
            raise gr.Error("Pick the runs to export first.")
        path = export_html(runs, self._export_path(ids, ".html"), data[self.smoothing], data[self.x_axis],
                           None if step is None else int(step))
        return gr.File(value=str(path), visible=True)

    @user_errors
    def export_png(self, data: dict) -> Any:
        ids, step = data[self.runs], data[self.step]
        runs, _ = self._runs(ids)
        if not runs:
            raise gr.Error("Pick the runs to export first.")
        grid = build_grid(runs, None if step is None else int(step))
        if grid.empty:
            warning(grid.reason or "No samples to put in a grid.")
        return gr.File(value=str(save_grid_png(grid, self._export_path(ids, ".png"))), visible=True)


def build(ctx: AppContext) -> CompareTab:
    tab = CompareTab(ctx)
    tab.build()
    return tab
