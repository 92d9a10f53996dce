"""Layer × factor × prompt sweeps, as a tidy DataFrame.

:func:`sweep` scales one layer's residual stream by one factor per row, for every
``(prompt, layer, factor)``, and returns one row per intervention with the clean baseline
alongside. It runs on the fast engine (:mod:`interp._engine`: clean prefix computed once,
rows join the batch after their layer, only scored positions unembedded) when it can, and on
the plain hook path otherwise; both give the same numbers as one forward pass per
intervention (tests check this to 1e-4).
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ._engine import EngineUnsupported, Row, architecture, clean_states, run_rows
from ._errors import BadFactorError, InterpError, TargetError
from ._scaling import SITES, check_factor, model_device, scaling_hooks
from ._temperature import fit_temperature
from ._tokens import Example, encode, tokenizer_of

ENGINES = ("auto", "fast", "hooks")


def parse_factors(spec: str | float | Iterable[float]) -> list[float]:
    """``0.6`` / ``"0.6"`` / ``"0.5,1,1.5"`` / ``"0:2:0.1"`` (start:stop:step, stop included
    when it lands on the grid) / an iterable of numbers -> a list of finite floats."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return [float(check_factor(spec))]
    if isinstance(spec, str):
        text = spec.strip()
        fix = "use e.g. 0.6, 0.5,1,1.5 or 0:2:0.1 (start:stop:step)"
        try:
            parts = [float(p) for p in text.split(":")] if ":" in text else None
            values = [float(p) for p in text.split(",") if p.strip()] if parts is None else []
        except ValueError:
            raise BadFactorError(f"factors {spec!r} are malformed; {fix}") from None
        if parts is not None:
            if len(parts) != 3:
                raise BadFactorError(f"factors {spec!r} are malformed; {fix}")
            start, stop, step = parts
            if not all(math.isfinite(v) for v in parts):
                raise BadFactorError(f"factor range {spec!r} is not finite; {fix}")
            if step <= 0 or stop < start:
                raise BadFactorError(
                    f"factor range {spec!r} is empty (need step > 0 and start <= stop); {fix}"
                )
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 12) for i in range(n)]
        if not values:
            raise BadFactorError(f"no factors in {spec!r}; {fix}")
        return list(dict.fromkeys(float(check_factor(v)) for v in values))
    values = list(dict.fromkeys(float(check_factor(v)) for v in spec))
    if not values:
        raise BadFactorError("no factors given; pass at least one, e.g. [0.6]")
    return values


@dataclass
class _Prepared:
    examples: list[Example]
    ids: Int[Tensor, "n pos"]  # right-padded prompt+target[:-1]
    scored: Int[Tensor, "n q"]  # positions scored per prompt (padded by repeating the first)
    targets: Int[Tensor, "n q"]  # target ids per scored position (padded with the first)
    n_scored: list[int]


def _prepare(examples: list[Example], device: torch.device) -> _Prepared:
    n_pos = max(len(e.input_ids) for e in examples)
    n_q = max(len(e.target_ids) for e in examples)
    ids = torch.zeros(len(examples), n_pos, dtype=torch.long)
    scored = torch.zeros(len(examples), n_q, dtype=torch.long)
    targets = torch.zeros(len(examples), n_q, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        pos = e.target_positions + [e.final_pos] * (n_q - len(e.target_ids))
        scored[i] = torch.tensor(pos)
        targets[i] = torch.tensor(list(e.target_ids) + [e.target_ids[0]] * (n_q - len(e.target_ids)))
    return _Prepared(
        examples, ids.to(device), scored.to(device), targets.to(device),
        [len(e.target_ids) for e in examples],
    )


def _gather_scored(logits: Float[Tensor, "b pos vocab"], scored: Int[Tensor, "b q"]) -> Tensor:
    return torch.gather(logits, 1, scored[:, :, None].expand(-1, -1, logits.shape[-1]))


@torch.inference_mode()
def _bridge_clean(model: Any, prep: _Prepared) -> Float[Tensor, "n q vocab"]:
    """Each prompt's clean scored logits from the bridge itself, one prompt at a time."""
    out = []
    for i, e in enumerate(prep.examples):
        logits = model(e.tokens(prep.ids.device))
        out.append(_gather_scored(logits, prep.scored[i : i + 1])[0])
    return torch.stack(out)


@dataclass
class _CleanStats:
    """Per-prompt quantities of the clean final-position logits, computed once (float64)."""

    lse: Tensor  # [n]
    p: Tensor  # softmax, [n, vocab]
    p_dot_c: Tensor  # Σ p·c, [n]
    centered: Tensor  # c - mean(c), [n, vocab]
    mean: Tensor  # [n]
    norm: Tensor  # ||c - mean(c)||, [n]


def _clean_stats(clean_final: Float[Tensor, "n vocab"]) -> _CleanStats:
    c = clean_final.double()
    lse = torch.logsumexp(c, dim=-1)
    p = torch.exp(c - lse[:, None])
    mean = c.mean(1)
    centered = c - mean[:, None]
    return _CleanStats(lse, p, (p * c).sum(1), centered, mean, centered.norm(dim=1))


def stats_clean_rows(stats: _CleanStats, prompt_idx: Tensor) -> Tensor:
    """The clean final logits for each row (float64), rebuilt from the per-prompt stats."""
    return stats.centered[prompt_idx] + stats.mean[prompt_idx, None]


def _per_prompt_dot(x: Tensor, vectors: Tensor, prompt_idx: Tensor) -> Tensor:
    """``out[i] = x[i] · vectors[prompt_idx[i]]`` with one matvec per distinct prompt."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for p in torch.unique(prompt_idx).tolist():
        rows = (prompt_idx == p).nonzero()[:, 0]
        out[rows] = x[rows] @ vectors[p]
    return out


def _metrics(
    logits: Float[Tensor, "r q vocab"],
    stats: _CleanStats,
    prompt_idx: Int[Tensor, "r"],
    targets: Int[Tensor, "r q"],
    n_scored: Int[Tensor, "r"],
    chunk: int = 64,
) -> dict[str, Tensor]:
    """Vectorised metrics per row in float64 (definitions in :mod:`interp._metrics`).

    Written with log-sum-exp identities so each row's vocabulary vector is read a few times,
    in chunks of rows, and the clean side is computed once per prompt:
    ``log p_t = x_t - lse(x)``, ``H = lse(x) - Σ softmax(x)·x``,
    ``KL(c||x) = Σ p_c·c - Σ p_c·x - lse(c) + lse(x)``, ``r = x·(c - c̄) / (|x - x̄| |c - c̄|)``.
    """
    parts: list[dict[str, Tensor]] = []
    for start in range(0, logits.shape[0], chunk):
        sl = slice(start, start + chunk)
        parts.append(_metrics_chunk(logits[sl], stats, prompt_idx[sl], targets[sl], n_scored[sl]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _metrics_chunk(logits, stats, prompt_idx, targets, n_scored) -> dict[str, Tensor]:
    valid = torch.arange(targets.shape[1], device=targets.device)[None] < n_scored[:, None]
    lse_all = torch.logsumexp(logits.double(), dim=-1)  # [r, q]
    tgt = torch.gather(logits, 2, targets[:, :, None])[..., 0].double()
    target_logprob = ((tgt - lse_all) * valid).sum(1)
    x = logits[:, 0].double()  # final position: [r, vocab]
    lse_x = lse_all[:, 0]
    entropy = lse_x - (torch.softmax(x, dim=-1) * x).sum(1)
    kl = stats.p_dot_c[prompt_idx] - _per_prompt_dot(x, stats.p, prompt_idx) - stats.lse[prompt_idx] + lse_x
    mean_x = x.mean(1)
    norm_x = (x - mean_x[:, None]).norm(dim=1)
    pearson = _per_prompt_dot(x, stats.centered, prompt_idx) / (norm_x * stats.norm[prompt_idx])
    final = logits[:, 0]
    rank = (final > torch.gather(final, 1, targets[:, :1])).sum(1) + 1
    temp = fit_temperature(stats_clean_rows(stats, prompt_idx), x)
    return {
        "temp_t_star": temp["t_star"],
        "temp_kl_at_t_star": temp["kl_at_t_star"],
        "temp_kl_at_1": temp["kl_at_1"],
        "temp_explained": temp["explained"],
        "target_logprob": target_logprob,
        "target_loss": -target_logprob,
        "target_rank": rank,
        "entropy": entropy,
        "kl": kl.clamp_min(0.0),  # KL >= 0; rounding can leave -1e-16
        "pearson_r": pearson,
        "mean_logit_shift": mean_x - stats.mean[prompt_idx],
        "logit_std_ratio": norm_x / stats.norm[prompt_idx],  # the (n - 1) of both stds cancels
        "top1_id": final.argmax(1),
    }


def _user_hooks(model: Any) -> list[str]:
    names = []
    for name, hp in getattr(model, "hook_dict", {}).items():
        if getattr(hp, "fwd_hooks", None) or getattr(hp, "bwd_hooks", None):
            names.append(name)
    return names


def _default_max_batch(
    n_pos: int, n_q: int, d_model: int, d_vocab: int, budget: int, full_logits: bool
) -> int:
    # Per row: activations (~12 d_model floats per position, MLP included), the scored
    # logits with their float64 metric temporaries, and on the hook path the bridge's
    # logits at every position.
    per_row = 4 * n_pos * 12 * d_model + 8 * 4 * n_q * d_vocab
    if full_logits:
        per_row += 4 * n_pos * d_vocab
    return max(1, min(1024, budget // per_row))


def _progress(total: int, enabled: bool | None, desc: str):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return None
    return tqdm(total=total, desc=desc, unit="row", leave=False, file=sys.stderr)


def sweep(
    model: Any,
    prompts: str | Sequence[str],
    targets: str | Sequence[str] | Sequence[int],
    layers: str | Iterable[int] | None = "all",
    factors: str | float | Iterable[float] = 0.6,
    *,
    site: str = "resid_post",
    prepend_bos: bool | None = None,
    max_batch: int | None = None,
    memory_budget: int = 2 << 30,
    engine: str = "auto",
    progress: bool | None = None,
    verbose: bool = True,
):
    """Scale each ``(prompt, layer, factor)`` in turn; one DataFrame row per intervention.

    Args:
        model: a TransformerBridge.
        prompts: one prompt or a list.
        targets: one target for all prompts, or one per prompt (text or a token id).
        layers: ``"all"``, a spec like ``"0-5,9"``, or ints (negative count from the end).
        factors: a number, ``"0.5,1"``, ``"0:2:0.1"``, or an iterable of numbers.
        site: where to scale (the fast engine handles ``"resid_post"``; others use hooks).
        prepend_bos: ``None`` follows the tokenizer; ``True``/``False`` force it.
        max_batch: rows per batched pass (default: from ``memory_budget`` bytes).
        engine: ``"auto"`` (fast when possible, else hooks), ``"fast"`` (error if it cannot
            run), ``"hooks"`` (always the hook path).
        progress: a progress bar on stderr (default: only when stderr is a terminal).
        verbose: say once on stderr when ``"auto"`` falls back to hooks, and why.

    Returns:
        ``pandas.DataFrame`` with columns ``prompt_index, prompt, target, layer, factor,
        target_logprob, target_loss, clean_loss, delta_loss, target_rank, clean_rank, entropy,
        clean_entropy, pearson_r, kl, mean_logit_shift, logit_std_ratio, temp_t_star,
        temp_kl_at_t_star, temp_kl_at_1, temp_explained, top1_id, top1_token, clean_top1_token``
        (``temp_*``: the softmax temperature that best turns the clean distribution into the
        intervened one, see :func:`interp.fit_temperature`), and ``frame.attrs["engine"]`` (``"fast"`` or ``"hooks"``) and
        ``frame.attrs["fallback_reason"]``.
    """
    import pandas as pd

    from ._experiment import parse_layers

    if engine not in ENGINES:
        raise InterpError(f"engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")
    if site not in SITES:
        raise InterpError(f"unknown site {site!r}; use one of {', '.join(SITES)}")
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise InterpError("no prompts given; pass at least one prompt")
    if isinstance(prompts, str) or isinstance(targets, (str, int, numbers.Integral)):
        # One prompt: its target may itself be a list of ids (a multi-token target).
        target_list = [targets] * len(prompt_list)
    else:
        target_list = list(targets)
        if len(target_list) != len(prompt_list):
            raise TargetError(
                f"{len(target_list)} targets for {len(prompt_list)} prompts; give one target "
                "per prompt, or a single target for all"
            )
    n_layers = int(model.cfg.n_layers)
    layer_list = parse_layers(layers, n_layers)
    factor_list = parse_factors(factors)
    examples = [encode(model, p, t, prepend_bos) for p, t in zip(prompt_list, target_list)]
    device = model_device(model)
    prep = _prepare(examples, device)
    rows = [
        Row(p, layer, f)
        for p, layer, f in itertools.product(range(len(examples)), layer_list, factor_list)
    ]
    # Rows sorted by prompt length, so each chunk pads to nearly its own length; within a
    # chunk, by layer (the engine lets rows join the batch in layer order).
    lengths = [len(e.input_ids) for e in examples]
    rows.sort(key=lambda r: (lengths[r.prompt], r.prompt, r.layer))
    if max_batch is not None and max_batch < 1:
        raise InterpError(f"max_batch must be at least 1, got {max_batch}; use e.g. 64")

    clean = _bridge_clean(model, prep)  # the baseline every path is compared with
    path, reason, arch, states, ctx = "hooks", None, None, None, None
    if engine != "hooks":
        try:
            if site != "resid_post":
                raise EngineUnsupported(f"site {site!r} (the fast path scales resid_post)")
            hooked = _user_hooks(model)
            if hooked:
                raise EngineUnsupported(f"hooks are attached to the model ({', '.join(hooked[:3])})")
            arch = architecture(model)
            states, engine_clean, ctx = clean_states(arch, prep.ids, prep.scored)
            err = (engine_clean.float() - clean.float()).abs().max().item()
            scale = max(1.0, clean.float().abs().max().item())
            rel = {torch.float64: 1e-9, torch.float32: 1e-4}.get(clean.dtype, 2e-2)
            tol = rel * scale
            if not err <= tol:
                raise EngineUnsupported(
                    f"its clean logits differ from the bridge's by {err:.2e} (> {tol:.1e})"
                )
            path = "fast"
        except Exception as why:  # noqa: BLE001 - any engine failure means: use the hooks
            if not isinstance(why, EngineUnsupported):
                why = EngineUnsupported(f"the engine failed ({type(why).__name__}: {why})")
            if engine == "fast":
                raise InterpError(
                    f"the fast sweep engine cannot run here: {why}; use engine='auto' or 'hooks'"
                ) from None
            reason = str(why)
            if verbose:
                print(f"[interp] sweep: using the hook path: {reason}", file=sys.stderr)

    if max_batch is None:
        cfg = model.cfg
        max_batch = _default_max_batch(
            prep.ids.shape[1], prep.scored.shape[1], int(cfg.d_model), int(cfg.d_vocab),
            memory_budget, full_logits=path == "hooks",
        )

    def _run(sub: Sequence[Row], idx: Tensor) -> Tensor:
        if path == "fast":
            return run_rows(arch, states, ctx, prep.scored, sub,
                            n_pos=max(lengths[r.prompt] for r in sub))
        return _hook_rows(model, prep, sub, idx, site)

    stats = _clean_stats(clean[:, 0])
    done: list[Row] = []  # rows in the order their results were appended
    bar = _progress(len(rows), progress, f"sweep ({path})")
    results: dict[str, list] = {}
    n_scored = torch.tensor(prep.n_scored, device=device)
    try:
        for start in range(0, len(rows), max_batch):
            chunk = sorted(rows[start : start + max_batch], key=lambda r: (r.layer, r.prompt))
            prompt_idx = torch.tensor([r.prompt for r in chunk], device=device)
            # Factor 1.0 is the identity: those rows *are* the clean run, exactly.
            active = [i for i, r in enumerate(chunk) if r.factor != 1.0]
            if len(active) == len(chunk):
                logits = _run(chunk, prompt_idx)
            else:
                logits = clean[prompt_idx]
                if active:
                    logits = logits.clone()
                    logits[active] = _run([chunk[i] for i in active], prompt_idx[active]).to(logits.dtype)
            m = _metrics(logits, stats, prompt_idx, prep.targets[prompt_idx], n_scored[prompt_idx])
            for key, value in m.items():
                results.setdefault(key, []).extend(value.tolist())
            done.extend(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

    assert len(done) == len(rows)
    tok = tokenizer_of(model)
    clean_m = _metrics(clean, stats, torch.arange(len(examples), device=device), prep.targets, n_scored)
    frame = pd.DataFrame(
        {
            "prompt_index": [r.prompt for r in done],
            "prompt": [examples[r.prompt].prompt for r in done],
            "target": [examples[r.prompt].target for r in done],
            "layer": [r.layer for r in done],
            "factor": [r.factor for r in done],
            **{k: results[k] for k in ("target_logprob", "target_loss")},
            "clean_loss": [clean_m["target_loss"][r.prompt].item() for r in done],
            "target_rank": results["target_rank"],
            "clean_rank": [int(clean_m["target_rank"][r.prompt]) for r in done],
            "entropy": results["entropy"],
            "clean_entropy": [clean_m["entropy"][r.prompt].item() for r in done],
            **{k: results[k] for k in ("pearson_r", "kl", "mean_logit_shift", "logit_std_ratio",
                                       "temp_t_star", "temp_kl_at_t_star", "temp_kl_at_1",
                                       "temp_explained")},
            "top1_id": results["top1_id"],
        }
    )
    frame.insert(frame.columns.get_loc("clean_loss") + 1, "delta_loss",
                 frame["target_loss"] - frame["clean_loss"])
    frame["top1_token"] = [tok.decode([int(i)]) for i in frame["top1_id"]]
    clean_top1 = [tok.decode([int(i)]) for i in clean_m["top1_id"].tolist()]
    frame["clean_top1_token"] = [clean_top1[r.prompt] for r in done]
    # Back to the caller's order: prompt, then layer, then factor as given.
    order = {(p, l, f): i for i, (p, l, f) in enumerate(
        itertools.product(range(len(examples)), layer_list, factor_list))}
    frame["_order"] = [order[(r.prompt, r.layer, r.factor)] for r in done]
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    frame.attrs["engine"] = path
    frame.attrs["fallback_reason"] = reason
    frame.attrs["prepend_bos"] = [e.prepend_bos for e in examples]
    return frame


@torch.inference_mode()
def _hook_rows(
    model: Any, prep: _Prepared, chunk: Sequence[Row], prompt_idx: Tensor, site: str
) -> Float[Tensor, "r q vocab"]:
    """The plain path: one batched forward pass with per-row factors on the hooks."""
    live: dict[int, Tensor] = {}
    for i, row in enumerate(chunk):
        live.setdefault(row.layer, torch.ones(len(chunk)))[i] = row.factor
    tokens = prep.ids[prompt_idx]
    with scaling_hooks(model, live, site):
        logits = model(tokens)
    return _gather_scored(logits, prep.scored[prompt_idx])


COMPARED_METRICS = ("target_loss", "entropy", "pearson_r", "kl", "mean_logit_shift", "logit_std_ratio")


def max_abs_diff(frame, reference) -> dict[str, float]:
    """Max |Δ| per metric between two sweeps of the same grid (e.g. bf16 vs fp32), plus the
    fraction of rows whose top-1 token differs. NaNs on both sides are ignored."""
    keys = ["prompt_index", "layer", "factor"]
    merged = frame.merge(reference, on=keys, suffixes=("", "_ref"))
    if len(merged) != len(frame):
        raise InterpError("the two sweeps cover different grids; run both with the same arguments")
    out = {}
    for key in COMPARED_METRICS:
        a, b = merged[key], merged[key + "_ref"]
        if (a.isna() != b.isna()).any():
            out[key] = float("inf")  # nan/inf on one side only: never hide it
        else:
            out[key] = float((a - b).abs().max()) if len(a) else 0.0
            if out[key] != out[key]:
                out[key] = 0.0  # both sides nan everywhere (e.g. constant logits)
    out["target_rank"] = float((merged["target_rank"] - merged["target_rank_ref"]).abs().max())
    out["top1_changed_frac"] = float((merged["top1_id"] != merged["top1_id_ref"]).mean())
    return out
