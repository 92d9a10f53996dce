"""Next-token metrics on one logit vector, and clean-vs-intervened comparisons.

All quantities are computed in float64 from the logits at one position (the final prompt
position unless asked otherwise), whatever the model's dtype:

* ``target_logprob``: ``log_softmax(logits)[target]``; for a multi-token target the sum over
  its tokens under teacher forcing, with a per-token breakdown.
* ``target_loss``: ``-target_logprob`` (natural log, nats).
* ``target_rank``: 1 + the number of tokens with a strictly larger logit (1 = most likely).
* ``entropy``: of ``softmax(logits)``, in nats.
* ``pearson_r``: correlation of the two full-vocabulary logit vectors.
* ``mean_logit_shift``: ``mean(intervened - clean)`` over the vocabulary (the challenge's
  "global downward shift"; note softmax ignores it).
* ``kl``: ``KL(clean || intervened)`` in nats.
* ``logit_std_ratio``: ``std(intervened) / std(clean)``: < 1 means a flatter distribution, the
  signature a temperature > 1 would leave; it is a hint, not a temperature fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class TokenProb:
    token: str
    id: int
    prob: float
    logit: float


@dataclass(frozen=True)
class TokenScore:
    """One target token under teacher forcing."""

    token: str
    id: int
    position: int
    logprob: float
    loss: float
    rank: int


@dataclass(frozen=True)
class DistributionSummary:
    """What one run predicts for the target, at the final prompt position."""

    target_logprob: float
    target_loss: float
    target_prob: float
    target_rank: int  # of the first target token
    entropy: float
    topk: list[TokenProb]
    per_token: list[TokenScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f64(logits: Tensor) -> Tensor:
    return logits.detach().to(torch.float64)


def log_probs(logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "... d_vocab"]:
    return torch.log_softmax(_f64(logits), dim=-1)


def token_rank(logits: Float[Tensor, "d_vocab"], token_id: int) -> int:
    """1 + number of tokens with a strictly larger logit (1 = the argmax)."""
    assert logits.ndim == 1, logits.shape
    return int((logits > logits[token_id]).sum().item()) + 1


def entropy(logits: Float[Tensor, "d_vocab"]) -> float:
    lp = log_probs(logits)
    return float(-torch.special.xlogy(lp.exp(), lp.exp()).sum().item())  # 0·log 0 = 0


def top_k(logits: Float[Tensor, "d_vocab"], tokenizer: Any, k: int = 10) -> list[TokenProb]:
    lp = log_probs(logits)
    values, ids = torch.topk(lp, k)
    raw = _f64(logits)
    return [
        TokenProb(tokenizer.decode([int(i)]), int(i), float(v.exp()), float(raw[int(i)]))
        for v, i in zip(values, ids)
    ]


def pearson_r(a: Float[Tensor, "d_vocab"], b: Float[Tensor, "d_vocab"]) -> float:
    a, b = _f64(a).flatten(), _f64(b).flatten()
    a = a - a.mean()
    b = b - b.mean()
    denom = a.norm() * b.norm()
    if denom == 0:
        return float("nan")  # a constant vector has no correlation
    return float((a @ b / denom).item())


def kl_divergence(p_logits: Float[Tensor, "d_vocab"], q_logits: Float[Tensor, "d_vocab"]) -> float:
    """``KL(p || q)`` in nats, for distributions given as logits."""
    lp, lq = log_probs(p_logits), log_probs(q_logits)
    p = lp.exp()
    # Tokens with p = 0 (masked, -inf logit) contribute 0, not nan.
    return float(torch.where(p > 0, p * (lp - lq), torch.zeros_like(p)).sum().item())


def mean_logit_shift(clean: Float[Tensor, "d_vocab"], intervened: Float[Tensor, "d_vocab"]) -> float:
    return float((_f64(intervened) - _f64(clean)).mean().item())


def logit_std_ratio(clean: Float[Tensor, "d_vocab"], intervened: Float[Tensor, "d_vocab"]) -> float:
    return float((_f64(intervened).std() / _f64(clean).std()).item())


def summarize(
    logits: Float[Tensor, "pos d_vocab"],
    target_ids: Sequence[int],
    final_pos: int,
    tokenizer: Any,
    k: int = 10,
) -> DistributionSummary:
    """Summarise one sequence's logits for a (possibly multi-token) target.

    Args:
        logits: ``[pos, d_vocab]`` for one sequence.
        target_ids: the target's ids; token ``j`` is predicted at ``final_pos + j``.
        final_pos: the last prompt position.
        tokenizer: to decode token strings.
        k: how many top tokens to list.
    """
    assert logits.ndim == 2, f"expected [pos, d_vocab], got {tuple(logits.shape)}"
    assert final_pos + len(target_ids) <= logits.shape[0], (final_pos, len(target_ids), logits.shape)
    lp = log_probs(logits[final_pos : final_pos + len(target_ids)])
    per_token = []
    for j, tid in enumerate(target_ids):
        logprob = float(lp[j, tid].item())
        per_token.append(
            TokenScore(
                token=tokenizer.decode([int(tid)]),
                id=int(tid),
                position=final_pos + j,
                logprob=logprob,
                loss=-logprob,
                rank=token_rank(logits[final_pos + j], int(tid)),
            )
        )
    total = sum(t.logprob for t in per_token)
    final = logits[final_pos]
    return DistributionSummary(
        target_logprob=total,
        target_loss=-total,
        target_prob=float(torch.tensor(total, dtype=torch.float64).exp().item()),
        target_rank=per_token[0].rank,
        entropy=entropy(final),
        topk=top_k(final, tokenizer, k),
        per_token=per_token,
    )


def compare_logits(
    clean: Float[Tensor, "d_vocab"], intervened: Float[Tensor, "d_vocab"]
) -> dict[str, float]:
    """The clean-vs-intervened numbers for one position's logits."""
    assert clean.shape == intervened.shape and clean.ndim == 1, (clean.shape, intervened.shape)
    return {
        "pearson_r": pearson_r(clean, intervened),
        "mean_logit_shift": mean_logit_shift(clean, intervened),
        "kl": kl_divergence(clean, intervened),
        "logit_std_ratio": logit_std_ratio(clean, intervened),
    }
