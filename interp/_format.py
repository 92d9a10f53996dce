"""Plain-text tables for terminals and logs (no dependencies beyond the standard library)."""

from __future__ import annotations

from typing import Any, Sequence

from ._experiment import LayerSweep, ScalingComparison


def _cell(value: Any, fmt: str | None) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and fmt and fmt.endswith("f"):
        return format(value, "+d" if fmt.startswith("+") else "d")  # ranks stay integers
    return format(value, fmt) if fmt else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmts: Sequence[str | None] | None = None) -> str:
    """Render rows as an aligned text table; numbers right-aligned."""
    fmts = fmts or [None] * len(headers)
    cells = [[_cell(v, f) for v, f in zip(row, fmts)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _tok(token: str) -> str:
    return repr(token)[1:-1] if token else "''"


def format_comparison(result: ScalingComparison) -> str:
    """Side-by-side top-k and the metric table for one clean-vs-scaled comparison."""
    scales = ", ".join(f"{k}: {v:g}" for k, v in result.scales.items()) or "none"
    head = [
        f"model {result.model} | prompt {result.prompt!r} | target {result.target!r} "
        f"(ids {result.target_token_ids}) | BOS {'prepended' if result.prepend_bos else 'not prepended'}",
        f"intervention: {{{scales}}} on {result.site}",
        "",
    ]
    k = max(len(result.clean.topk), len(result.intervened.topk))
    rows = []
    for i in range(k):
        c = result.clean.topk[i] if i < len(result.clean.topk) else None
        s = result.intervened.topk[i] if i < len(result.intervened.topk) else None
        rows.append(
            [
                i + 1,
                _tok(c.token) if c else "",
                c.prob if c else "",
                _tok(s.token) if s else "",
                s.prob if s else "",
            ]
        )
    top = table(
        ["#", "clean token", "p", "scaled token", "p"], rows, [None, None, ".4f", None, ".4f"]
    )
    c, s = result.clean, result.intervened
    metric_rows = [
        ["target log p", c.target_logprob, s.target_logprob, s.target_logprob - c.target_logprob],
        ["target loss (nats)", c.target_loss, s.target_loss, s.target_loss - c.target_loss],
        ["target p", c.target_prob, s.target_prob, s.target_prob - c.target_prob],
        ["target rank", c.target_rank, s.target_rank, s.target_rank - c.target_rank],
        ["entropy (nats)", c.entropy, s.entropy, s.entropy - c.entropy],
    ]
    metrics = table(["metric", "clean", "scaled", "delta"], metric_rows, [None, ".4f", ".4f", "+.4f"])
    compare = table(
        ["comparison (final position)", "value"],
        [
            ["pearson r (full-vocab logits)", result.pearson_r],
            ["mean logit shift (scaled - clean)", result.mean_logit_shift],
            ["KL(clean || scaled) (nats)", result.kl],
            ["logit std ratio (scaled / clean)", result.logit_std_ratio],
        ],
        [None, ".5f"],
    )
    parts = head + [top, "", metrics, "", compare]
    if len(result.target_token_ids) > 1:
        per = table(
            ["target token", "id", "clean loss", "scaled loss"],
            [
                [_tok(a.token), a.id, a.loss, b.loss]
                for a, b in zip(c.per_token, s.per_token)
            ],
            [None, None, ".4f", ".4f"],
        )
        parts += ["", per]
    return "\n".join(parts)


def format_sweep(sweep: LayerSweep) -> str:
    """The layer sweep as a table: layer, loss, delta loss, rank, r, KL, top-1."""
    head = (
        f"layer sweep: each layer's {sweep.site} x {sweep.factor:g}, one at a time | "
        f"clean loss {sweep.clean.target_loss:.4f}, clean rank {sweep.clean.target_rank} | "
        f"engine {sweep.engine}"
    )
    rows = [
        [
            r["layer"],
            r["target_loss"],
            r["delta_loss"],
            r["target_rank"],
            r["pearson_r"],
            r["kl"],
            r["mean_logit_shift"],
            r.get("temp_t_star", float("nan")),
            _tok(r["top1_token"]),
        ]
        for r in sweep.rows
    ]
    body = table(
        ["layer", "loss", "Δloss", "rank", "r", "KL", "shift", "T*", "top-1"],
        rows,
        [None, ".4f", "+.4f", None, ".4f", ".4f", "+.3f", ".3f", None],
    )
    return head + "\n" + body
