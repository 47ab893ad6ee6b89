"""The VRAM estimate on the Training tab: a button next to Start and what it found.

The estimate is computed by the backend's command line (`python -m backend validate FILE --estimate
--json`) in a subprocess: the UI process never imports torch. The first estimate for a model
architecture and a set of network/precision settings measures a step on the meta device (seconds to a
minute on a busy machine); later ones come from the workspace cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from backend.paths import PROJECT_ROOT
from webui.handlers import user_errors
from webui.text import md

GIB = 2**30
TIMEOUT_S = 600
UNCALIBRATED = ("An estimate, not yet calibrated against peaks measured on real GPUs: expect it to be "
                "off by up to ±{pct} %.")
MARK = {"fits": "✓", "tight": "≈", "does not fit": "✗"}


def run_estimate(config_toml: str, workspace: Path) -> dict:
    """The backend's estimate for a config (TOML text); EstimateError with its message when it fails."""
    with tempfile.TemporaryDirectory(prefix="estimate-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_toml, encoding="utf-8")
        # --schema-only: the estimate needs the options and the model's architecture, not a dataset yet
        # (Validate and Start run the whole gate).
        argv = [sys.executable, "-m", "backend", "validate", str(path), "--estimate", "--json", "--schema-only",
                "--workspace", str(workspace)]
        try:
            proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise EstimateError(f"the estimate took longer than {TIMEOUT_S} s") from err
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1]
        raise EstimateError(detail.removeprefix("error: "))
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise EstimateError(f"unreadable answer from validate --estimate: {lines[-1][:200]}") from None
    if not result.get("valid"):
        raise EstimateError("; ".join(f"{p['path']}: {p['message']}" for p in result.get("problems", [])))
    return result["estimate"]


class EstimateError(Exception):
    pass


def to_markdown(r: dict) -> str:
    """The estimate as the tab shows it: the peak, the verdict per card, fixes where it does not fit."""
    pct = int(r["expected_error"] * 100)
    lines = [f"**Estimated peak VRAM: {r['peak_gib']:.1f} GiB** ({r['family']}, batch {r['batch_size']}, "
             f"{r['resolution']} px). *{UNCALIBRATED.format(pct=pct)}*", ""]
    parts = ", ".join(f"{name} {b / GIB:.1f}" for name, b in r["parts"].items() if b >= GIB / 20)
    lines.append(f"Parts (GiB): {parts}.")
    lines.append("")
    lines.append("| GPU memory | verdict | to make it fit |")
    lines.append("|---|---|---|")
    for row in r["cards"]:
        fixes = row.get("fixes") or []
        how = "; ".join(f"`{f['setting']} = {_value(f['value'])}` (−{f['saving_bytes'] / GIB:.1f} GiB, {f['note']})"
                        for f in fixes)
        if fixes and not row.get("fits_with_fixes"):
            how += " — still does not fit"
        lines.append(f"| {row['gb']} GB | {MARK.get(row['verdict'], '')} {row['verdict']} | {how} |")
    return "\n".join(lines)


def _value(v: Any) -> str:
    return "true" if v is True else str(v)


class EstimateView:
    """The button and the result; `wire` connects them to the form's inputs."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def render_button(self) -> None:
        self.button = gr.Button("Estimate VRAM", scale=1, elem_id="estimate-btn")

    def render_output(self) -> None:
        self.output = gr.Markdown("", elem_id="vram-estimate")

    def wire(self, form: Any, inputs: set, resolved_toml: Any) -> None:
        """`resolved_toml(cfg)`: the config as the job would store it."""
        self.form, self.resolved_toml = form, resolved_toml
        self.button.click(self.estimate, inputs=inputs, outputs=self.output, api_visibility="private")

    @user_errors
    def estimate(self, data: dict) -> str:
        cfg = self.form.config(data)
        try:
            return to_markdown(run_estimate(self.resolved_toml(cfg), self.ctx.paths.root))
        except EstimateError as err:
            return f"⚠ Could not estimate the VRAM: {md(err)}"
