"""The comparison as one standalone HTML file: it opens offline, years later, on another machine.

plotly.js is included inline once; every sample image is embedded as a base64 data URI; the only
script besides plotly's is a click-to-enlarge overlay. Every text from a job folder is escaped.
"""

from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path

from plotly.offline import get_plotlyjs

from backend.compare.charts import loss_figure, lr_figure
from backend.compare.grid import Grid, build_grid
from backend.compare.runs import DEFAULT_SMOOTHING, RunData, run_labels
from backend.compare.summary import diff_rows, outcome_table
from backend.files import atomic_write_text

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
th{background:#f3f3f3}
.grid img{max-width:256px;max-height:256px;cursor:zoom-in;display:block}
.muted{color:#666}
#overlay{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);align-items:center;
justify-content:center;cursor:zoom-out}
#overlay img{max-width:95vw;max-height:95vh}
"""

# Click a sample to see it full size; click again (or Escape) to close.
JS = """
document.addEventListener('click', function (e) {
  var o = document.getElementById('overlay');
  if (e.target.matches('.grid img')) {
    o.querySelector('img').src = e.target.src; o.style.display = 'flex';
  } else if (o.contains(e.target)) { o.style.display = 'none'; }
});
document.addEventListener('keydown', function (e) {
  if (e.key === 'Escape') { document.getElementById('overlay').style.display = 'none'; }
});
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{_esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def data_uri(path: Path) -> str | None:
    """The image at `path` as a data URI, or None if it cannot be read."""
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _grid_html(grid: Grid) -> str:
    if grid.empty:
        return f'<p class="muted">{_esc(grid.reason or "No samples.")}</p>'
    head = "<th>Prompt</th><th>Seed</th>" + "".join(f"<th>{_esc(label)}</th>" for label in grid.labels)
    rows = []
    for (prompt, seed), cells in zip(grid.rows, grid.cells, strict=True):
        tds = []
        for ref in cells:
            uri = data_uri(ref.path) if ref else None
            if ref is None:
                tds.append('<td class="muted">no sample</td>')
            elif uri is None:
                tds.append(f'<td class="muted">image missing (step {ref.step})</td>')
            else:
                tds.append(f'<td><img src="{uri}" alt="{_esc(prompt)}, step {ref.step}">'
                           f'<span class="muted">step {ref.step}</span></td>')
        rows.append(f"<tr><td>{_esc(prompt)}</td><td>{_esc('' if seed is None else seed)}</td>{''.join(tds)}</tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_html(runs: list[RunData], smoothing: float = DEFAULT_SMOOTHING, x_axis: str = "step",
                step: int | None = None, title: str | None = None) -> str:
    """The whole report as one HTML document (string)."""
    labels = run_labels(runs)
    title = title or "LoRA Dash comparison: " + " vs ".join(labels)
    grid = build_grid(runs, step)
    chart_cfg = {"displaylogo": False, "responsive": True}
    charts = (loss_figure(runs, smoothing, x_axis).to_html(full_html=False, include_plotlyjs=False,
                                                             div_id="loss-chart", config=chart_cfg)
              + lr_figure(runs, x_axis).to_html(full_html=False, include_plotlyjs=False, div_id="lr-chart",
                                                config=chart_cfg))
    oh, orows = outcome_table(runs, smoothing)
    dh, drows = diff_rows(runs)
    ids = ", ".join(f"{label} = {r.id}" for label, r in zip(labels, runs, strict=True))
    step_note = f" at step {grid.step} (each run: its nearest sample)" if grid.step is not None else ""
    diff_html = _table(dh, drows, "diff") if drows else '<p class="muted">The runs have the same settings.</p>'
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_esc(title)}</title><style>{CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">Exported {_esc(time.strftime("%Y-%m-%d %H:%M"))} · jobs: {_esc(ids)}</p>',
        "<h2>Outcome</h2>", _table(oh, orows, "outcome"),
        "<h2>Loss and learning rate</h2>", charts,
        "<h2>Settings that differ</h2>", diff_html,
        f"<h2>Samples{_esc(step_note)}</h2>", _grid_html(grid),
        '<div id="overlay"><img alt="full size"></div>',
        f"<script>{JS}</script></body></html>\n",
    ])


def export_html(runs: list[RunData], path: str | os.PathLike, smoothing: float = DEFAULT_SMOOTHING, x_axis: str = "step",
                step: int | None = None, title: str | None = None) -> Path:
    """Write the standalone report (atomically) and return its path."""
    path = Path(path)
    atomic_write_text(path, render_html(runs, smoothing, x_axis, step, title))
    return path
