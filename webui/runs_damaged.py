"""Runs tab: what it offers for a damaged job, one whose job.json is missing, unreadable or wrongly typed.

The jobs table lists such a job with status `damaged` (never hides it); when it is the shown job,
this panel says what is wrong, names its folder and offers Repair: job.json rebuilt from the job's
events.jsonl and config.toml (`Supervisor.repair`). Deleting it is the tab's own Delete button.
"""

from __future__ import annotations

import gradio as gr

from backend.jobs.registry import JobRecord
from webui.context import AppContext
from webui.handlers import info, user_errors
from webui.text import code, md


def panel_text(rec: JobRecord) -> str:
    problems = rec.extra.get("problems") or [rec.error or "job.json cannot be read"]
    lines = "\n".join(f"- {md(p)}" for p in problems)
    folder = code(rec.extra.get("folder", ""))
    return (f"**This job's job.json is damaged** (folder {folder}):\n\n{lines}\n\n"
            "**Repair** rebuilds job.json from the job's events.jsonl and config.toml (its samples, "
            "checkpoints and LoRA files stay as they are); **Delete…** removes the whole folder.")


class DamagedPanel:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def build(self) -> None:
        with gr.Row(visible=False, elem_id="damaged-job") as self.row:
            self.text = gr.Markdown("", elem_id="damaged-job-text")
            self.repair_btn = gr.Button("Repair job.json", variant="primary", size="sm", scale=0,
                                        min_width=150, elem_id="repair-job")

    def wire(self, job_id: gr.State, timer: gr.Timer) -> None:
        job_id.change(self.show, inputs=job_id, outputs=[self.row, self.text], show_progress="hidden",
                      api_visibility="private")
        self.repair_btn.click(self.repair, inputs=job_id, outputs=[self.row, self.text, timer],
                              api_visibility="private")

    @user_errors
    def show(self, job_id: str | None) -> list:
        """Visible with the problems when the shown job is damaged; hidden otherwise."""
        rec = self.ctx.supervisor.record(job_id) if job_id else None
        if rec is None or not rec.damaged:
            return [gr.Row(visible=False), ""]
        return [gr.Row(visible=True), panel_text(rec)]

    @user_errors
    def repair(self, job_id: str | None) -> list:
        if not job_id:
            raise gr.Error("Select a job first.")
        rec = self.ctx.supervisor.repair(job_id)
        info(f"Repaired {rec.name}: job.json rebuilt ({rec.kind} job, {rec.status}).")
        return [gr.Row(visible=False), "", gr.Timer(value=1.0, active=True)]
