"""The code challenge's claims, as measurable hypotheses.

The challenge (GPT-2 Medium, one prompt) reported: r ≈ 0.995 between clean and
``{2: 0.6}`` logits, a global downward shift of the logits, that scaling most layers by 0.6
lowers the target loss, that the loss rises with depth, and that down-scaling acts like
lowering the softmax temperature. :func:`assess_claims` turns a comparison and a layer
sweep into a verdict per claim, computed from the numbers, never assumed.

Lowering the temperature (T < 1) sharpens the distribution: entropy falls and the logit
spread grows. So the temperature claim predicts lower entropy and a std ratio above 1.
"""

from __future__ import annotations

from typing import Any

import torch

from ._experiment import LayerSweep, ScalingComparison

NOISE = 1e-4  # nats: below this a loss or entropy change is float noise, not an effect


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = torch.argsort(t)
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        # average ranks of ties
        for value in torch.unique(t):
            mask = t == value
            if mask.sum() > 1:
                r[mask] = r[mask].mean()
        return r

    if len(x) < 3:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = rx.norm() * ry.norm()
    return float((rx @ ry / denom).item()) if denom > 0 else float("nan")


def assess_claims(comparison: ScalingComparison, sweep: LayerSweep) -> list[dict[str, Any]]:
    """One dict per claim: ``claim``, ``measured`` (text with numbers), ``verdict``."""
    out: list[dict[str, Any]] = []
    r = comparison.pearson_r
    out.append(
        {
            "claim": f"r ≈ 0.995 between clean and {comparison.scales} logits",
            "measured": f"r = {r:.4f}",
            "verdict": "holds" if abs(r - 0.995) <= 0.005 else "does not hold here",
        }
    )
    shift = comparison.mean_logit_shift
    out.append(
        {
            "claim": "scaling shifts the logits globally downward",
            "measured": f"mean shift = {shift:+.3f} (softmax ignores a uniform shift)",
            "verdict": "holds" if shift < 0 else "does not hold here (the shift is upward)",
        }
    )
    rows = sweep.rows
    # A change smaller than float noise (e.g. scaling the last block) is no change.
    lower = sum(1 for row in rows if row["delta_loss"] < -NOISE)
    out.append(
        {
            "claim": f"scaling most layers by {sweep.factor:g} lowers the target loss",
            "measured": f"{lower} of {len(rows)} layers lower it",
            "verdict": "holds" if lower > len(rows) / 2 else "does not hold here",
        }
    )
    layers = [float(row["layer"]) for row in rows]
    losses = [float(row["target_loss"]) for row in rows]
    rho = _spearman(layers, losses)
    if rho != rho:  # nan
        verdict = "not measurable (fewer than 3 layers)"
    elif rho > 0.3:
        verdict = "holds (loss rises with depth)"
    elif rho < -0.3:
        verdict = "does not hold here: the loss falls with depth"
    else:
        verdict = "does not hold here: no monotone trend"
    out.append(
        {
            "claim": "the target loss rises with the depth of the scaled layer",
            "measured": f"Spearman ρ(layer, loss) = {rho:+.3f}",
            "verdict": verdict,
        }
    )
    sharper = sum(1 for row in rows if row["entropy"] < sweep.clean.entropy - NOISE)
    fitted = [row for row in rows if "temp_t_star" in row and row.get("kl", 0) > NOISE]
    if fitted:
        colder = sum(1 for row in fitted if row["temp_t_star"] < 1)
        t_values = sorted(row["temp_t_star"] for row in fitted)
        median_t = t_values[len(t_values) // 2]
        explained = sorted(row["temp_explained"] for row in fitted)[len(fitted) // 2]
        measured = (
            f"fitted T* < 1 for {colder} of {len(fitted)} layers (median T* {median_t:.2f}, "
            f"explaining a median {explained:.0%} of the KL); entropy falls for {sharper}"
        )
        verdict = (
            "holds" if colder > len(fitted) / 2 and explained > 0.5
            else "does not hold here" + (" (it acts like a higher temperature)" if median_t > 1 else "")
        )
    else:
        mean_std = sum(row["logit_std_ratio"] for row in rows) / max(len(rows), 1)
        measured = f"entropy falls for {sharper} of {len(rows)} layers; mean logit std ratio {mean_std:.3f}"
        verdict = "holds" if sharper > len(rows) / 2 and mean_std > 1 else "does not hold here"
    out.append(
        {
            "claim": "down-scaling acts like lowering the softmax temperature (sharper output)",
            "measured": measured,
            "verdict": verdict,
        }
    )
    # Only a positive factor is undone by the final norm (0 erases, < 0 flips the stream).
    last = [row for row in rows if row["layer"] == sweep.n_layers - 1 and sweep.factor > 0]
    if last:
        d = last[0]["delta_loss"]
        out.append(
            {
                "claim": "(check) scaling the last block changes nothing: the final norm is scale-invariant",
                "measured": f"layer {last[0]['layer']}: Δloss = {d:+.2e}, KL = {last[0]['kl']:.2e}",
                "verdict": "holds" if abs(d) < 1e-3 else "does not hold",
            }
        )
    return out
