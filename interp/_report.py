"""The whole hidden-state-scaling experiment as one call, and what it writes to disk.

:func:`run_hidden_state_scaling` does the code challenge end to end: clean vs a scaling dict
(default ``{2: 0.6}``), a sweep of one factor over layers (default 0.6, all layers), and a
verdict on each of the challenge's claims. :func:`write_outputs` saves ``results.json`` (with a
run manifest), ``sweep.csv`` and the plotly figures as HTML.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ._claims import assess_claims
from ._experiment import LayerSweep, ScalingComparison, compare_scaling, sweep_layers
from ._format import format_comparison, format_sweep, table
from ._models import model_info


def run_manifest(model: Any, **extra: Any) -> dict[str, Any]:
    """Package versions, model provenance and time: enough to reproduce a result."""
    versions = {}
    for pkg in ("interp", "torch", "transformers", "transformer-lens", "plotly", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "model": model_info(model).to_dict(),
        **extra,
    }


@dataclass
class HiddenStateScalingRun:
    comparison: ScalingComparison
    sweep: LayerSweep
    claims: list[dict[str, Any]]
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "comparison": self.comparison.to_dict(),
            "sweep": self.sweep.to_dict(),
            "claims": self.claims,
        }

    def format(self) -> str:
        claims = table(
            ["claim", "measured", "verdict"],
            [[c["claim"], c["measured"], c["verdict"]] for c in self.claims],
        )
        return "\n\n".join(
            [
                "== clean vs scaled ==",
                format_comparison(self.comparison),
                "== " + "layer sweep" + " ==",
                format_sweep(self.sweep),
                "== the challenge's claims, measured on this model ==",
                claims,
            ]
        )


def run_hidden_state_scaling(
    model: Any,
    prompt: str,
    target: str | int | Sequence[int],
    scales: Mapping[int, float],
    sweep_factor: float = 0.6,
    layers: str | Iterable[int] | None = None,
    *,
    prepend_bos: bool | None = None,
    k: int = 10,
    batch_size: int = 8,
) -> HiddenStateScalingRun:
    comparison = compare_scaling(model, prompt, target, scales, prepend_bos=prepend_bos, k=k)
    sweep = sweep_layers(
        model, prompt, target, sweep_factor, layers,
        prepend_bos=prepend_bos, batch_size=batch_size, k=k,
    )
    manifest = run_manifest(
        model,
        prompt=prompt,
        target=comparison.target,
        prepend_bos=comparison.prepend_bos,
        scales={str(k_): v for k_, v in comparison.scales.items()},
        sweep_factor=sweep_factor,
        seed=None,  # deterministic: no sampling anywhere
    )
    return HiddenStateScalingRun(comparison, sweep, assess_claims(comparison, sweep), manifest)


def write_outputs(run: HiddenStateScalingRun, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``results.json``, ``sweep.csv`` and (if ``plots``) the figures; return the paths."""
    from ._plots import logit_scatter, sweep_figure, topk_figure, write_figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    results = out / "results.json"
    results.write_text(json.dumps(run.to_dict(), indent=2))
    paths.append(results)
    csv = out / "sweep.csv"
    run.sweep.to_frame().to_csv(csv, index=False)
    paths.append(csv)
    if plots:
        paths += write_figures(
            {
                "logit_scatter": logit_scatter(run.comparison),
                "topk": topk_figure(run.comparison),
                "sweep": sweep_figure(run.sweep),
            },
            out,
        )
    return paths
