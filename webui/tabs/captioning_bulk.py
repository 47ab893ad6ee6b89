"""The Captioning tab's bulk edits (previewed, then applied) and tag frequency, mixed into CaptioningTab:
they use its dataset fields, grid and undo (`_root`, `_grid`, `_refuse_while_captioning`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from backend.captioning import tagops
from webui import captioning_view as cv
from webui.handlers import reported, user_errors
from webui.text import code


class BulkEditing:
    ctx: Any

    # layout ------------------------------------------------------------------------------------
    def build_bulk(self) -> None:
        with gr.Accordion("Bulk edit (preview, then apply)", open=False):
            with gr.Row(equal_height=True):
                self.op = gr.Dropdown(cv.op_choices(), value="add_trigger", label="Operation", elem_id="cap-op")
                self.scope = gr.Radio([("whole dataset", "dataset"), ("filtered images", "filtered")],
                                      value="dataset", label="Apply to")
            with gr.Row(equal_height=True):
                self.args = {
                    "tags": gr.Textbox(label="Tags", placeholder="comma-separated", elem_id="cap-op-tags"),
                    "find": gr.Textbox(label="Find", visible=False, elem_id="cap-op-find"),
                    "replace": gr.Textbox(label="Replace with (empty: remove)", visible=False,
                                          elem_id="cap-op-replace"),
                    "regex": gr.Checkbox(label="Regular expression", visible=False),
                    "case_sensitive": gr.Checkbox(label="Case sensitive", value=True, visible=False),
                    "sort_by": gr.Radio([("A→Z", "alpha"), ("most frequent first", "frequency")], value="alpha",
                                        label="Sort", visible=False),
                    "keep_first": gr.Number(label="Keep the first N tags in place", value=1, precision=0,
                                            minimum=0, visible=False),
                    "min_count": gr.Number(label="Minimum count (images)", value=2, precision=0, minimum=2,
                                           visible=False),
                }
            with gr.Row():
                self.preview_btn = gr.Button("Preview", elem_id="cap-preview")
                self.apply_btn = gr.Button("Apply", variant="primary", interactive=False, elem_id="cap-apply")
            self.bulk_info = gr.Markdown("", elem_id="cap-bulk-info")
            self.bulk_table = gr.Dataframe(headers=["image", "before", "after"], value=None, interactive=False,
                                           max_height=320, wrap=True, elem_id="cap-bulk-table")

    def build_frequency(self) -> None:
        with gr.Accordion("Tag frequency (click a tag to filter the grid)", open=False):
            with gr.Row(equal_height=True):
                self.freq_by = gr.Radio([("overall", "overall"), ("per subfolder", "subset")], value="overall",
                                        label="Count", scale=3)
                self.freq_btn = gr.Button("Count tags", scale=0, min_width=120, elem_id="cap-freq-btn")
            with gr.Row():
                self.freq_table = gr.Dataframe(value=None, interactive=False, max_height=360, scale=2,
                                               elem_id="cap-freq")
                self.freq_plot = gr.Plot(scale=3, elem_id="cap-freq-plot")

    def wire_bulk(self, grid_in: set, private: dict) -> None:
        self.op.change(self.op_changed, inputs=self.op, outputs={*self.args.values(), self.apply_btn}, **private)
        self.preview_btn.click(self.preview, inputs=grid_in | {self.op, self.scope, self.view, *self.args.values()},
                               outputs={self.bulk_info, self.bulk_table, self.pending, self.apply_btn}, **private)
        self.apply_btn.click(reported(self.apply, self.bulk_info), inputs=grid_in | {self.pending},
                             outputs=self.grid_out | {self.bulk_info, self.pending, self.apply_btn}, **private)
        self.freq_btn.click(self.frequency, inputs={self.ds, self.ext, self.freq_by},
                            outputs={self.freq_table, self.freq_plot}, **private)
        self.freq_by.change(self.frequency, inputs={self.ds, self.ext, self.freq_by},
                            outputs={self.freq_table, self.freq_plot}, **private)
        self.freq_table.select(reported(self.pick_tag, self.ds_info), inputs=grid_in,
                               outputs=self.grid_out | {self.query, self.query_mode, self.missing_only}, **private)


    # bulk edits ----------------------------------------------------------------------------------
    def op_changed(self, op: str) -> dict:
        used = cv.OPS.get(op, ("", ()))[1]
        return {**{c: gr.update(visible=name in used) for name, c in self.args.items()},
                self.apply_btn: gr.Button(interactive=False)}

    @user_errors
    def preview(self, data: dict) -> dict:
        root = self._root(data)
        spec = cv.op_spec(data[self.op], {name: data.get(c) for name, c in self.args.items()})
        view = data.get(self.view)
        selection = None
        if data[self.scope] == "filtered":
            if not view or view["root"] != str(root):
                raise gr.Error("Filter the grid first (or apply to the whole dataset).")
            selection = view["paths"]
        cs = tagops.apply_ops(root, data.get(self.ext) or ".txt", [spec], selection=selection)
        scope = "whole dataset" if selection is None else f"{len(selection)} filtered images"
        return {self.bulk_info: cv.preview_markdown(cs, scope), self.bulk_table: cv.changes_frame(cs),
                self.pending: cs if cs.num_changed else None, self.apply_btn: gr.Button(interactive=cs.num_changed > 0)}

    @user_errors
    def apply(self, data: dict) -> dict:
        cs = data.get(self.pending)
        if cs is None:
            raise gr.Error("Press Preview first: Apply writes the previewed changes.")
        self._refuse_while_captioning()
        tagops.commit(cs, self.ctx.paths)
        text = f"✓ Wrote {cs.written} caption file(s). The previous ones are saved under **Undo**."
        if cs.conflicts:
            text += (f" {len(cs.conflicts)} file(s) changed since the preview were left alone: "
                     + ", ".join(code(p.name) for p in cs.conflicts[:10]))
        gr.Info(f"Bulk edit: {cs.written} caption file(s) written.")
        return {**self._grid(data), self.bulk_info: text, self.pending: None,
                self.apply_btn: gr.Button(interactive=False)}

    # tag frequency -------------------------------------------------------------------------------
    @user_errors
    def frequency(self, data: dict) -> dict:
        root = self._root(data)
        df = tagops.tag_frequency(root, data.get(self.ext) or ".txt", by_subset=data[self.freq_by] == "subset")
        return {self.freq_table: df, self.freq_plot: cv.frequency_figure(df)}

    @user_errors
    def pick_tag(self, data: dict, evt: gr.SelectData) -> dict:
        row = evt.row_value or []
        tag = str(row[1] if len(row) == 4 else row[0]) if row else ""
        if not tag:
            return {}
        return {**self._grid(data, query=tag, mode="tags", missing_only=False), self.query: tag,
                self.query_mode: "tags", self.missing_only: False}
