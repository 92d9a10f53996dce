"""The hidden-state-scaling experiment: clean vs scaled, and a sweep over layers.

:func:`compare_scaling` runs the prompt twice, clean (the challenge's ``pure_logits``) and
with a scaling dict, and compares the two at the final prompt position.

:func:`sweep_layers` scales one layer at a time by the same factor. It runs on
:func:`interp.sweep` (the fast engine when it can, batched hooks otherwise), whose numbers
equal the one-at-a-time loop (tests check this).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ._errors import BadFactorError, InterpError
from ._metrics import DistributionSummary, compare_logits, summarize
from ._models import model_info
from ._scaling import (
    check_factor,
    model_device,
    normalize_layer,
    scaling_hooks,
    validate_scales,
)
from ._tokens import encode, tokenizer_of


@dataclass
class ScalingComparison:
    """Clean vs intervened for one prompt/target and one scaling dict."""

    model: str
    prompt: str
    target: str
    prepend_bos: bool
    prompt_token_ids: list[int]
    target_token_ids: list[int]
    scales: dict[int, float]
    site: str
    clean: DistributionSummary
    intervened: DistributionSummary
    pearson_r: float
    mean_logit_shift: float
    kl: float
    logit_std_ratio: float
    # Final-position logits, for plots; not serialised.
    clean_logits: Float[Tensor, "d_vocab"] = field(repr=False, default=None)
    intervened_logits: Float[Tensor, "d_vocab"] = field(repr=False, default=None)

    @property
    def delta_loss(self) -> float:
        return self.intervened.target_loss - self.clean.target_loss

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "target": self.target,
            "prepend_bos": self.prepend_bos,
            "prompt_token_ids": self.prompt_token_ids,
            "target_token_ids": self.target_token_ids,
            "site": self.site,
            "scales": {str(k): v for k, v in self.scales.items()},
            "clean": self.clean.to_dict(),
            "intervened": self.intervened.to_dict(),
            "delta_loss": self.delta_loss,
            "pearson_r": self.pearson_r,
            "mean_logit_shift": self.mean_logit_shift,
            "kl": self.kl,
            "logit_std_ratio": self.logit_std_ratio,
        }


def _forward(model: Any, tokens: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(tokens)


def compare_scaling(
    model: Any,
    prompt: str,
    target: str | int | Sequence[int],
    scales: Mapping[int, float],
    *,
    prepend_bos: bool | None = None,
    site: str = "resid_post",
    k: int = 10,
) -> ScalingComparison:
    """Run ``prompt`` clean and with ``scales``; compare at the final prompt position.

    Args:
        model: a TransformerBridge (see :func:`interp.load_model`).
        prompt: text; target: text (may be several tokens) or token id(s).
        scales: ``{layer: factor}``, scalar factors.
        prepend_bos: ``None`` follows the tokenizer; ``True``/``False`` force it.
        site: where to scale (default ``"resid_post"``).
        k: size of the top-k lists.

    Returns:
        A :class:`ScalingComparison`; ``.to_dict()`` is JSON-ready.
    """
    n_layers = int(model.cfg.n_layers)
    checked = validate_scales(scales, n_layers)
    for layer, factor in checked.items():
        if not isinstance(factor, float):
            raise BadFactorError(
                f"compare_scaling takes one number per layer, got a vector for layer {layer}; "
                "use interp.sweep or run_with_scaling for per-row factors"
            )
    example = encode(model, prompt, target, prepend_bos)
    tokens = example.tokens(model_device(model))
    clean_logits = _forward(model, tokens)[0]  # "pure_logits": [pos, d_vocab]
    live = dict(checked)
    with scaling_hooks(model, live, site):
        scaled_logits = _forward(model, tokens)[0]
    tok = tokenizer_of(model)
    clean = summarize(clean_logits, example.target_ids, example.final_pos, tok, k)
    intervened = summarize(scaled_logits, example.target_ids, example.final_pos, tok, k)
    final_clean = clean_logits[example.final_pos].detach().float().cpu()
    final_scaled = scaled_logits[example.final_pos].detach().float().cpu()
    return ScalingComparison(
        model=model_info(model).name,
        prompt=example.prompt,
        target=example.target,
        prepend_bos=example.prepend_bos,
        prompt_token_ids=list(example.prompt_ids),
        target_token_ids=list(example.target_ids),
        scales=dict(sorted(checked.items())),
        site=site,
        clean=clean,
        intervened=intervened,
        clean_logits=final_clean,
        intervened_logits=final_scaled,
        **compare_logits(clean_logits[example.final_pos], scaled_logits[example.final_pos]),
    )


# ----------------------------------------------------------------------------- layer sweep


@dataclass
class LayerSweep:
    """One factor applied to each layer in turn, with the clean baseline."""

    model: str
    prompt: str
    target: str
    prepend_bos: bool
    prompt_token_ids: list[int]
    target_token_ids: list[int]
    factor: float
    site: str
    n_layers: int
    clean: DistributionSummary
    rows: list[dict[str, Any]]  # one per layer, see sweep_layers
    engine: str = "hooks"  # which path computed the rows: "fast" or "hooks"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "target": self.target,
            "prepend_bos": self.prepend_bos,
            "prompt_token_ids": self.prompt_token_ids,
            "target_token_ids": self.target_token_ids,
            "factor": self.factor,
            "site": self.site,
            "n_layers": self.n_layers,
            "clean": self.clean.to_dict(),
            "rows": self.rows,
            "engine": self.engine,
            "created": self.created,
        }


def parse_layers(spec: str | Iterable[int] | None, n_layers: int) -> list[int]:
    """``None``/``"all"`` -> every layer; ``"0-5,9,-1"`` -> ``[0..5, 9, n_layers-1]``.

    Ranges are inclusive. Duplicates are dropped, order kept.
    """
    from ._errors import LayerOutOfRangeError

    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(n_layers))
    items: list[int] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo_s, hi_s = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                try:
                    lo, hi = int(lo_s), int(hi_s)
                except ValueError:
                    raise LayerOutOfRangeError(
                        f"layer range {part!r} is malformed; use e.g. 0-5,9 or all"
                    ) from None
                lo, hi = normalize_layer(lo, n_layers), normalize_layer(hi, n_layers)
                if lo > hi:
                    raise LayerOutOfRangeError(
                        f"layer range {part!r} is empty (start > end); write it low-high, e.g. 0-5"
                    )
                items.extend(range(lo, hi + 1))
            else:
                items.append(normalize_layer(part, n_layers))
    else:
        items = [normalize_layer(x, n_layers) for x in spec]
    if not items:
        raise LayerOutOfRangeError(f"no layers selected by {spec!r}; use e.g. 0-5,9 or all")
    return list(dict.fromkeys(items))


def sweep_layers(
    model: Any,
    prompt: str,
    target: str | int | Sequence[int],
    factor: float = 0.6,
    layers: str | Iterable[int] | None = None,
    *,
    prepend_bos: bool | None = None,
    site: str = "resid_post",
    batch_size: int = 64,
    k: int = 10,
    engine: str = "auto",
    verbose: bool = True,
) -> LayerSweep:
    """Scale each layer in ``layers`` (default all) by ``factor``, one at a time.

    Args:
        model: a TransformerBridge.
        prompt, target: as in :func:`compare_scaling`.
        factor: the scale applied to one layer per run (finite).
        layers: ``None``/``"all"``, a spec like ``"0-5,9"``, or an iterable of ints.
        batch_size: interventions per batched pass.
        engine: ``"auto"`` | ``"fast"`` | ``"hooks"`` (see :func:`interp.sweep`).

    Returns:
        A :class:`LayerSweep`; ``rows[i]`` has ``layer, factor, target_logprob, target_loss,
        delta_loss, target_rank, entropy, top1_token, top1_id, pearson_r, mean_logit_shift,
        kl, logit_std_ratio``.
    """
    from ._sweep import sweep

    n_layers = int(model.cfg.n_layers)
    factor = check_factor(factor)
    if not isinstance(factor, float):
        raise BadFactorError("sweep_layers takes one number as factor; use interp.sweep for several")
    if batch_size < 1:
        raise InterpError(f"batch_size must be at least 1, got {batch_size}; use e.g. 8")
    chosen = parse_layers(layers, n_layers)
    example = encode(model, prompt, target, prepend_bos)
    clean_logits = _forward(model, example.tokens(model_device(model)))[0]
    clean = summarize(clean_logits, example.target_ids, example.final_pos, tokenizer_of(model), k)
    frame = sweep(
        model, prompt, target, chosen, [factor], site=site, prepend_bos=prepend_bos,
        max_batch=batch_size, engine=engine, verbose=verbose,
    )
    keep = ["layer", "factor", "target_logprob", "target_loss", "delta_loss", "target_rank",
            "entropy", "top1_token", "top1_id", "pearson_r", "mean_logit_shift", "kl",
            "logit_std_ratio", "temp_t_star", "temp_explained"]
    rows = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[keep].to_dict("records")
    ]
    return LayerSweep(
        model=model_info(model).name,
        prompt=example.prompt,
        target=example.target,
        prepend_bos=example.prepend_bos,
        prompt_token_ids=list(example.prompt_ids),
        target_token_ids=list(example.target_ids),
        factor=factor,
        site=site,
        n_layers=n_layers,
        clean=clean,
        rows=rows,
        engine=frame.attrs["engine"],
    )
