"""Plotly figures for scaling results. Each function returns a ``go.Figure`` (shows inline in
Jupyter); :func:`write_figures` saves several as HTML that open offline."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._experiment import LayerSweep, ScalingComparison


def _scales_label(scales: Mapping[int, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in scales.items()) + "}"


def logit_scatter(result: ScalingComparison, max_points: int | None = None) -> go.Figure:
    """Clean vs scaled logits over the whole vocabulary, with the identity line.

    Args:
        result: from :func:`interp.compare_scaling`.
        max_points: draw at most this many tokens (evenly strided; the target and the
            top-k tokens are always drawn). Statistics in the title use every token.
    """
    clean = result.clean_logits.double()
    scaled = result.intervened_logits.double()
    n = clean.numel()
    idx = list(range(n))
    if max_points is not None and n > max_points:
        stride = -(-n // max_points)
        keep = set(range(0, n, stride))
        keep |= {t.id for t in result.clean.topk} | {t.id for t in result.intervened.topk}
        keep |= set(result.target_token_ids[:1])
        idx = sorted(keep)
    x = clean[idx].tolist()
    y = scaled[idx].tolist()
    lo = float(min(clean.min(), scaled.min()))
    hi = float(max(clean.max(), scaled.max()))
    fig = go.Figure()
    fig.add_trace(
        go.Scattergl(
            x=x,
            y=y,
            mode="markers",
            marker=dict(size=3, opacity=0.35),
            name=f"tokens ({len(idx)} of {n})",
            hovertemplate="clean %{x:.3f}<br>scaled %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash"))
    )
    shift = result.mean_logit_shift
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo + shift, hi + shift],
            mode="lines",
            name=f"y = x {shift:+.2f} (mean shift)",
            line=dict(dash="dot"),
        )
    )
    tid = result.target_token_ids[0]
    fig.add_trace(
        go.Scatter(
            x=[float(clean[tid])],
            y=[float(scaled[tid])],
            mode="markers+text",
            marker=dict(size=11, symbol="star", color="crimson"),
            text=[repr(result.target)],
            textposition="top center",
            name="target",
        )
    )
    fig.update_layout(
        title=(
            f"{result.model}: logits at the final position, clean vs {_scales_label(result.scales)}"
            f"<br><sup>Pearson r = {result.pearson_r:.4f} · mean shift = {shift:+.3f} · "
            f"KL = {result.kl:.4f} nats · Δloss = {result.delta_loss:+.3f}</sup>"
        ),
        xaxis_title="clean logit",
        yaxis_title="scaled logit",
        template="plotly_white",
    )
    return fig


def topk_figure(result: ScalingComparison) -> go.Figure:
    """The top-k next tokens with probabilities, clean and scaled, side by side."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("clean", f"scaled {_scales_label(result.scales)}")
    )
    for col, summary in ((1, result.clean), (2, result.intervened)):
        toks = [repr(t.token) for t in summary.topk][::-1]
        probs = [t.prob for t in summary.topk][::-1]
        colors = [
            "crimson" if t.id == result.target_token_ids[0] else "steelblue"
            for t in summary.topk
        ][::-1]
        fig.add_trace(
            go.Bar(x=probs, y=toks, orientation="h", marker_color=colors, showlegend=False),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="probability", row=1, col=col)
    fig.update_layout(
        title=f"{result.model}: top-{len(result.clean.topk)} next tokens after {result.prompt!r}",
        template="plotly_white",
    )
    return fig


def sweep_figure(sweep: LayerSweep) -> go.Figure:
    """Target loss and rank by layer, each with the clean baseline."""
    layers = [r["layer"] for r in sweep.rows]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("target loss (nats)", "target rank (1 = top, log scale)"),
        vertical_spacing=0.12,
    )
    fig.add_trace(
        go.Scatter(x=layers, y=[r["target_loss"] for r in sweep.rows], mode="lines+markers",
                   name=f"layer × {sweep.factor:g}"),
        row=1,
        col=1,
    )
    fig.add_hline(y=sweep.clean.target_loss, line_dash="dash", annotation_text="clean", row=1, col=1)
    fig.add_trace(
        go.Scatter(x=layers, y=[r["target_rank"] for r in sweep.rows], mode="lines+markers",
                   name="rank", showlegend=False),
        row=2,
        col=1,
    )
    fig.add_hline(y=sweep.clean.target_rank, line_dash="dash", annotation_text="clean", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_xaxes(title_text="layer scaled", row=2, col=1)
    fig.update_layout(
        title=f"{sweep.model}: scaling one layer's {sweep.site} by {sweep.factor:g}, "
        f"target {sweep.target!r}",
        template="plotly_white",
    )
    return fig


def write_figures(figures: Mapping[str, go.Figure], out_dir: str | Path) -> list[Path]:
    """Write each figure to ``out_dir/<name>.html``; plotly.js is written once beside them
    (``plotly.min.js``), so the pages open offline without a CDN."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory", full_html=True)
        paths.append(path)
    return paths
