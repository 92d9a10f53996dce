"""How much of an intervention is just a change of softmax temperature?

For clean logits ``c`` and intervened logits ``x``, fit the temperature ``T*`` for which
``softmax(c / T)`` is closest to ``p = softmax(x)`` in ``KL(p || softmax(c / T))``, and report
how much of the divergence at ``T = 1`` that temperature explains.

With ``β = 1/T`` the objective is ``f(β) = lse(β c) - β E_p[c] + const``: convex in ``β``
(``f' = E_{q_β}[c] - E_p[c]``, ``f'' = Var_{q_β}[c] ≥ 0``), so Newton's method on ``β`` finds
the global minimum in a few steps. ``T* < 1`` means the intervention sharpened the clean
distribution like a lower temperature; ``T* > 1`` flattened it.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


# T* is searched in [1e-3, 1e3]: when the best fit is the uniform distribution (the
# intervened distribution is unrelated to the clean one), T* reports 1000, "infinitely hot".
BETA_MIN, BETA_MAX = 1e-3, 1e3


@torch.no_grad()
def fit_temperature(
    clean: Float[Tensor, "... vocab"],
    intervened: Float[Tensor, "... vocab"],
    steps: int = 50,
) -> dict[str, Tensor]:
    """Fit ``T*`` per row (float64).

    Args:
        clean, intervened: logits with the same shape ``[..., vocab]``.
        steps: Newton iterations at most (it stops once every row has converged).

    Returns:
        ``{"t_star", "kl_at_t_star", "kl_at_1", "explained"}``, each of shape ``[...]``, where
        KL is ``KL(softmax(intervened) || softmax(clean / T))`` in nats and ``explained`` is
        ``1 - kl_at_t_star / kl_at_1`` (1.0 when both are 0).
    """
    assert clean.shape == intervened.shape, (clean.shape, intervened.shape)
    c = clean.double()
    lp = torch.log_softmax(intervened.double(), dim=-1)
    p = lp.exp()
    target_mean = (p * c).sum(-1)  # E_p[c]
    neg_entropy = (p * lp).sum(-1)

    def kl_at(beta: Tensor) -> Tensor:
        lq = torch.log_softmax(beta[..., None] * c, dim=-1)
        return (neg_entropy - (p * lq).sum(-1)).clamp_min(0.0)

    beta = torch.ones_like(target_mean)
    for _ in range(steps):
        q = torch.softmax(beta[..., None] * c, dim=-1)
        mean = (q * c).sum(-1)
        var = (q * c * c).sum(-1) - mean * mean
        step = (mean - target_mean) / var.clamp_min(1e-12)
        # Damped: never move beta by more than a factor of 4 in one step, keep it positive.
        new = torch.clamp(beta - step, min=beta / 4, max=beta * 4).clamp(BETA_MIN, BETA_MAX)
        converged = (new - beta).abs() <= 1e-10 * beta
        beta = new
        if bool(converged.all()):
            break
    kl_star = kl_at(beta)
    kl_one = kl_at(torch.ones_like(beta))
    explained = torch.where(kl_one > 0, 1 - kl_star / kl_one.clamp_min(1e-300), torch.ones_like(kl_one))
    return {"t_star": 1 / beta, "kl_at_t_star": kl_star, "kl_at_1": kl_one, "explained": explained}
