"""The loss and learning-rate charts (plotly figures): the one loss figure of the Runs tab (one run,
its learning rate on a second axis), the Compare tab and the HTML export.

The x axis is the optimizer step, or the images seen (step × images per step) so runs with different
batch sizes, accumulation or GPU counts line up by how much data they consumed.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from backend.compare.runs import DEFAULT_SMOOTHING, RunData, Series, ema_smooth, run_labels

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
LR_COLOR = "#d9822b"
MAX_POINTS = 4000   # per trace drawn; longer series are thinned evenly (the smoothing uses them all)
X_AXES = {"step": "Step", "images": "Images seen"}


def _x(run: RunData, steps: list[int], x_axis: str) -> list[int]:
    if x_axis not in X_AXES:
        raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, got {x_axis!r}")
    k = run.images_per_step if x_axis == "images" else 1
    return [s * k for s in steps]


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """At most about `limit` points, evenly strided, the last point always kept: the one
    downsampling of every chart (smoothing runs on the full series before it)."""
    if len(xs) <= limit:
        return xs, ys
    stride = -(-len(xs) // limit)
    idx = list(range(0, len(xs), stride))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _layout(fig: go.Figure, title: str, x_axis: str, y_title: str, empty: str | None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=X_AXES[x_axis], yaxis_title=y_title, hovermode="x unified",
                      template="plotly_white", height=380, margin={"l": 60, "r": 60, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2},
                      uirevision="keep")  # a zoom survives the redraws of a running job
    if empty:
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def loss_figure(runs: list[RunData], smoothing: float = DEFAULT_SMOOTHING, x_axis: str = "step",
                with_lr: bool = False) -> go.Figure:
    """Every run's loss: the raw values faint, the smoothed curve (`ema_smooth`) bold, same colour.
    `with_lr` (the Runs tab, one run): its learning rates on a second y axis, and the traces named
    "loss", "loss (smoothed)" rather than by run."""
    fig = go.Figure()
    labels = ["loss"] if with_lr and len(runs) == 1 else run_labels(runs)
    any_points = False
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        series = run.loss_series()
        if not series.values:
            continue
        any_points = True
        color = PALETTE[i % len(PALETTE)]
        xs = _x(run, series.steps, x_axis)
        raw_x, raw_y = thin(xs, series.values)
        sm_x, sm_y = thin(xs, ema_smooth(series.values, smoothing))
        single = with_lr and len(runs) == 1
        fig.add_trace(go.Scatter(x=raw_x, y=raw_y, mode="lines", name=label if single else f"{label} (raw)",
                                 legendgroup=run.id, showlegend=single, opacity=0.35, hoverinfo="skip",
                                 line={"color": color, "width": 1}))
        fig.add_trace(go.Scatter(x=sm_x, y=sm_y, mode="lines", name=f"{label} (smoothed)" if single else label,
                                 legendgroup=run.id, line={"color": color, "width": 2.5}))
    fig = _layout(fig, f"Loss (smoothing {smoothing:g})", x_axis, "loss",
                  None if any_points else "no loss logged yet")
    if with_lr:
        _add_lr_axis(fig, runs, x_axis)
    return fig


def _add_lr_axis(fig: go.Figure, runs: list[RunData], x_axis: str) -> None:
    """The runs' learning rates as dotted lines on a second y axis, from 0."""
    top = 0.0
    dashes = ("dot", "dash", "dashdot", "longdash")
    for run in runs:
        lrs = run.lr_series()
        for j, (name, series) in enumerate(sorted(lrs.items())):
            if not series.values:
                continue
            top = max([top, *(v for v in series.values if math.isfinite(v))])
            xs, ys = thin(_x(run, series.steps, x_axis), series.values)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", yaxis="y2", legendgroup="lr",
                                     name="learning rate" if len(lrs) == 1 else f"learning rate · {name}",
                                     line={"color": LR_COLOR, "width": 1.5, "dash": dashes[j % len(dashes)]}))
    # From 0: a constant rate would otherwise be centred in an axis running from -1 to 1.
    fig.update_layout(yaxis2={"title": "learning rate", "overlaying": "y", "side": "right", "showgrid": False,
                              "exponentformat": "e", **({"range": [0, top * 1.15]} if top > 0 else {})})


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
            xs, ys = thin(_x(run, series.steps, x_axis), series.values)
            trace_name = label if len(lrs) == 1 else f"{label} · {name}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=trace_name, legendgroup=run.id,
                                     line={"color": color, "width": 2, "dash": dashes[j % len(dashes)]}))
    fig = _layout(fig, "Learning rate", x_axis, "learning rate", None if fig.data else "no learning rate logged yet")
    # From 0: a constant rate would otherwise get plotly's ±1 range and sit flat on "0".
    fig.update_yaxes(exponentformat="e", range=[0, top * 1.15] if top > 0 else None)
    return fig
