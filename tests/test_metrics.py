"""Next-token metrics on hand-made logit vectors (no model needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import interp


class StubTokenizer:
    """Just enough of a tokenizer for ``summarize`` / ``top_k``: ``decode`` of one id."""

    def decode(self, ids):
        return "".join(f"<{int(i)}>" for i in ids)


TOK = StubTokenizer()


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- rank


def test_token_rank_counts_strictly_larger_logits():
    logits = torch.tensor([1.0, 3.0, 3.0, 0.0, 2.0])
    assert interp.token_rank(logits, 1) == 1  # a tie for the argmax shares rank 1
    assert interp.token_rank(logits, 2) == 1
    assert interp.token_rank(logits, 4) == 3  # two tokens are strictly larger
    assert interp.token_rank(logits, 0) == 4
    assert interp.token_rank(logits, 3) == 5
    x = torch.tensor([-1.0, 5.0, 2.0])
    assert interp.token_rank(x, int(torch.argmax(x))) == 1


# ----------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("vocab", [2, 7, 50257])
def test_entropy_of_uniform_is_log_vocab(vocab):
    assert interp.entropy(torch.zeros(vocab)) == pytest.approx(math.log(vocab), abs=1e-9)
    # Shifting all logits does not change the distribution.
    assert interp.entropy(torch.full((vocab,), 4.25)) == pytest.approx(math.log(vocab), abs=1e-9)


def test_entropy_matches_numpy_and_vanishes_for_a_peak():
    x = np.array([0.3, -1.2, 2.0, 0.0, 0.7])
    lp = np_log_softmax(x)
    assert interp.entropy(torch.tensor(x, dtype=torch.float32)) == pytest.approx(
        float(-(np.exp(lp) * lp).sum()), abs=1e-6
    )
    peak = torch.tensor([0.0, 60.0, 0.0, 0.0])
    assert 0.0 <= interp.entropy(peak) < 1e-20


def test_entropy_and_kl_with_a_masked_token():
    """A token with logit -inf has p = 0 and contributes 0 * log 0 = 0, not nan."""
    masked = torch.tensor([0.0, 0.0, -math.inf])
    assert interp.entropy(masked) == pytest.approx(math.log(2), abs=1e-12)
    assert interp.kl_divergence(masked, masked) == pytest.approx(0.0, abs=1e-12)
    assert interp.kl_divergence(masked, torch.zeros(3)) == pytest.approx(math.log(3 / 2), abs=1e-12)


# ----------------------------------------------------------------------------- KL


def test_kl_of_a_distribution_with_itself_is_zero():
    x = torch.tensor([0.5, -2.0, 1.5, 3.0, 0.0])
    assert interp.kl_divergence(x, x) == pytest.approx(0.0, abs=1e-12)
    # Logits that differ by a constant are the same distribution.
    assert interp.kl_divergence(x, x + 7.0) == pytest.approx(0.0, abs=1e-6)


def test_kl_matches_a_manual_numpy_computation():
    p = np.array([0.5, -2.0, 1.5, 3.0, 0.0])
    q = np.array([1.0, 0.0, -1.0, 2.5, 0.25])
    lp, lq = np_log_softmax(p), np_log_softmax(q)
    expected_pq = float((np.exp(lp) * (lp - lq)).sum())
    expected_qp = float((np.exp(lq) * (lq - lp)).sum())
    got_pq = interp.kl_divergence(torch.tensor(p), torch.tensor(q))
    got_qp = interp.kl_divergence(torch.tensor(q), torch.tensor(p))
    assert got_pq == pytest.approx(expected_pq, rel=1e-12)
    assert got_qp == pytest.approx(expected_qp, rel=1e-12)
    assert got_pq > 0 and got_qp > 0
    assert got_pq != pytest.approx(got_qp)  # KL is not symmetric: the argument order matters


# ----------------------------------------------------------------------------- comparisons


def test_pearson_r():
    x = torch.tensor([0.1, -2.0, 3.5, 0.7, 1.1, -0.4])
    assert interp.pearson_r(x, 2.5 * x + 4.0) == pytest.approx(1.0, abs=1e-12)
    assert interp.pearson_r(x, 0.3 * x - 9.0) == pytest.approx(1.0, abs=1e-12)
    assert interp.pearson_r(x, -x) == pytest.approx(-1.0, abs=1e-12)
    y = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, 0.5])
    expected = float(np.corrcoef(x.double().numpy(), y.double().numpy())[0, 1])
    assert interp.pearson_r(x, y) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(interp.pearson_r(x, torch.full_like(x, 3.0)))  # no correlation defined


def test_mean_logit_shift_and_std_ratio():
    x = torch.tensor([0.1, -2.0, 3.5, 0.7])
    assert interp.mean_logit_shift(x, x + 3.0) == pytest.approx(3.0, abs=1e-6)
    assert interp.mean_logit_shift(x + 3.0, x) == pytest.approx(-3.0, abs=1e-6)
    from interp._metrics import logit_std_ratio

    assert logit_std_ratio(x, 0.5 * x) == pytest.approx(0.5, abs=1e-7)


def test_compare_logits_bundles_the_same_numbers():
    clean = torch.tensor([0.1, -2.0, 3.5, 0.7])
    scaled = 0.5 * clean - 1.0
    out = interp.compare_logits(clean, scaled)
    assert out["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert out["mean_logit_shift"] == pytest.approx(interp.mean_logit_shift(clean, scaled))
    assert out["kl"] == pytest.approx(interp.kl_divergence(clean, scaled))
    assert out["kl"] > 0  # a flatter distribution, although perfectly correlated
    assert out["logit_std_ratio"] == pytest.approx(0.5, abs=1e-7)


# ----------------------------------------------------------------------------- top-k


def test_top_k_order_probs_and_tokens():
    logits = torch.tensor([0.0, 2.0, -1.0, 5.0, 1.0, 2.5])
    probs = torch.softmax(logits.double(), -1)
    top = interp.top_k(logits, TOK, k=3)
    assert [t.id for t in top] == [3, 5, 1]
    assert [t.token for t in top] == ["<3>", "<5>", "<1>"]
    assert all(a.prob >= b.prob for a, b in zip(top, top[1:]))
    assert sum(t.prob for t in top) <= 1.0
    for t in top:
        assert t.prob == pytest.approx(float(probs[t.id]), rel=1e-12)
        assert t.logit == float(logits[t.id])
    everything = interp.top_k(logits, TOK, k=len(logits))
    assert sum(t.prob for t in everything) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- summarize


def test_summarize_multi_token_target_by_teacher_forcing():
    torch.manual_seed(1)
    pos, vocab = 6, 9
    logits = torch.randn(pos, vocab)
    final_pos = 2
    target_ids = [4, 7, 4]
    # Make the second target token the argmax at its position, and the first one tied for 2nd.
    logits[3, 7] = logits[3].max() + 1.0
    logits[2, 4] = logits[2].max()
    logits[2, 0] = logits[2, 4] + 0.5
    s = interp.summarize(logits, target_ids, final_pos, TOK, k=4)

    lp = np_log_softmax(logits.double().numpy())
    expected = [lp[final_pos + j, t] for j, t in enumerate(target_ids)]
    assert [t.position for t in s.per_token] == [2, 3, 4]
    assert [t.id for t in s.per_token] == target_ids
    assert [t.token for t in s.per_token] == ["<4>", "<7>", "<4>"]
    for score, value in zip(s.per_token, expected):
        assert score.logprob == pytest.approx(value, abs=1e-6)
        assert score.loss == pytest.approx(-value, abs=1e-6)
    assert s.target_logprob == pytest.approx(sum(t.logprob for t in s.per_token), abs=1e-12)
    assert s.target_logprob == pytest.approx(sum(expected), abs=1e-6)
    assert s.target_loss == pytest.approx(-s.target_logprob, abs=1e-12)
    assert s.target_prob == pytest.approx(math.exp(s.target_logprob), rel=1e-9)
    ranks = [interp.token_rank(logits[final_pos + j], t) for j, t in enumerate(target_ids)]
    assert [t.rank for t in s.per_token] == ranks
    assert ranks[0] == 2 and ranks[1] == 1
    assert s.target_rank == ranks[0]  # the rank is the first target token's
    # Entropy and top-k describe the final prompt position only.
    assert s.entropy == pytest.approx(interp.entropy(logits[final_pos]), abs=1e-12)
    assert [t.id for t in s.topk] == [t.id for t in interp.top_k(logits[final_pos], TOK, 4)]
    assert s.topk[0].id == 0
    json.dumps(s.to_dict(), allow_nan=False)
    assert s.to_dict()["per_token"][1]["position"] == 3


def test_summarize_single_token_and_low_precision_logits():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], dtype=torch.float16)
    s = interp.summarize(logits, [1], 1, TOK, k=2)
    lp = np_log_softmax(logits.double().numpy())
    assert len(s.per_token) == 1 and s.per_token[0].position == 1
    assert s.target_logprob == pytest.approx(lp[1, 1], abs=1e-12)  # computed in float64
    assert s.target_rank == 3
    assert isinstance(s.target_logprob, float) and isinstance(s.topk[0].prob, float)


def test_summarize_rejects_a_target_past_the_end():
    with pytest.raises(AssertionError):
        interp.summarize(torch.zeros(3, 5), [1, 2], 2, TOK)
