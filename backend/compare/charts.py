"""The loss and learning-rate charts (plotly figures), shared by the Compare tab and the HTML export.

The x axis is the optimizer step, or the images seen (step × images per step) so runs with different
batch sizes, accumulation or GPU counts line up by how much data they consumed.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from backend.compare.runs import RunData, Series, ema_smooth, run_labels

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
MAX_POINTS = 4000   # per trace drawn; longer series are thinned evenly (the smoothing uses them all)
X_AXES = {"step": "Step", "images": "Images seen"}


def _x(run: RunData, steps: list[int], x_axis: str) -> list[int]:
    if x_axis not in X_AXES:
        raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, got {x_axis!r}")
    k = run.images_per_step if x_axis == "images" else 1
    return [s * k for s in steps]


def _thin(xs: list, ys: list) -> tuple[list, list]:
    if len(xs) <= MAX_POINTS:
        return xs, ys
    stride = -(-len(xs) // MAX_POINTS)
    idx = list(range(0, len(xs), stride))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _layout(fig: go.Figure, title: str, x_axis: str, y_title: str, empty: str | None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=X_AXES[x_axis], yaxis_title=y_title, hovermode="x unified",
                      template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    if empty:
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def loss_figure(runs: list[RunData], smoothing: float = 0.6, x_axis: str = "step") -> go.Figure:
    """Every run's loss: the raw values faint, the smoothed curve (`ema_smooth`) bold, same colour."""
    fig = go.Figure()
    labels = run_labels(runs)
    any_points = False
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        series = run.loss_series()
        if not series.values:
            continue
        any_points = True
        color = PALETTE[i % len(PALETTE)]
        xs = _x(run, series.steps, x_axis)
        raw_x, raw_y = _thin(xs, series.values)
        sm_x, sm_y = _thin(xs, ema_smooth(series.values, smoothing))
        fig.add_trace(go.Scatter(x=raw_x, y=raw_y, mode="lines", name=f"{label} (raw)", legendgroup=run.id,
                                 showlegend=False, opacity=0.25, line={"color": color, "width": 1},
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=sm_x, y=sm_y, mode="lines", name=label, legendgroup=run.id,
                                 line={"color": color, "width": 2.5}))
    return _layout(fig, f"Loss (smoothing {smoothing:g})", x_axis, "loss",
                   None if any_points else "no loss logged yet")


def lr_figure(runs: list[RunData], x_axis: str = "step") -> go.Figure:
    """Every run's learning rate(s); a run with several (UNet, text encoder) gets one dash style each."""
    fig = go.Figure()
    labels = run_labels(runs)
    dashes = ("solid", "dash", "dot", "dashdot")
    top = 0.0
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = PALETTE[i % len(PALETTE)]
        lrs: dict[str, Series] = run.lr_series()
        for j, (name, series) in enumerate(sorted(lrs.items())):
            if not series.values:
                continue
            top = max([top, *(v for v in series.values if math.isfinite(v))])
            xs, ys = _thin(_x(run, series.steps, x_axis), series.values)
            trace_name = label if len(lrs) == 1 else f"{label} · {name}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=trace_name, legendgroup=run.id,
                                     line={"color": color, "width": 2, "dash": dashes[j % len(dashes)]}))
    fig = _layout(fig, "Learning rate", x_axis, "learning rate", None if fig.data else "no learning rate logged yet")
    # From 0: a constant rate would otherwise get plotly's ±1 range and sit flat on "0".
    fig.update_yaxes(exponentformat="e", range=[0, top * 1.15] if top > 0 else None)
    return fig
