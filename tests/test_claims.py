"""assess_claims turns numbers into verdicts; check it against hand-built sweeps."""

from __future__ import annotations

import copy

import interp


def _run(tiny_llama):
    model = tiny_llama.bridge
    comparison = interp.compare_scaling(model, "One two three four", " five", {1: 0.6})
    sweep = interp.sweep_layers(model, "One two three four", " five", 0.6)
    return comparison, sweep


def _verdicts(comparison, sweep):
    return {c["claim"]: c["verdict"] for c in interp.assess_claims(comparison, sweep)}


def test_verdicts_follow_the_numbers(tiny_llama):
    comparison, sweep = _run(tiny_llama)
    # Force "most layers lower the loss" and "loss rises with depth".
    rising = copy.deepcopy(sweep)
    for i, row in enumerate(rising.rows):
        row["target_loss"] = sweep.clean.target_loss - 1.0 + 0.1 * i
        row["delta_loss"] = row["target_loss"] - sweep.clean.target_loss
    v = _verdicts(comparison, rising)
    assert v["scaling most layers by 0.6 lowers the target loss"] == "holds"
    assert v["the target loss rises with the depth of the scaled layer"].startswith("holds")
    # And the opposite.
    falling = copy.deepcopy(sweep)
    for i, row in enumerate(falling.rows):
        row["target_loss"] = sweep.clean.target_loss + 1.0 - 0.1 * i
        row["delta_loss"] = row["target_loss"] - sweep.clean.target_loss
    v = _verdicts(comparison, falling)
    assert v["scaling most layers by 0.6 lowers the target loss"] == "does not hold here"
    assert "falls with depth" in v["the target loss rises with the depth of the scaled layer"]


def test_float_noise_is_not_a_lower_loss(tiny_llama):
    comparison, sweep = _run(tiny_llama)
    noisy = copy.deepcopy(sweep)
    for row in noisy.rows:
        row["delta_loss"] = -1e-7  # e.g. the last block, undone by the final norm
    measured = {c["claim"]: c["measured"] for c in interp.assess_claims(comparison, noisy)}
    assert measured["scaling most layers by 0.6 lowers the target loss"].startswith("0 of")


def test_last_block_check_uses_the_real_last_layer(tiny_llama):
    comparison, sweep = _run(tiny_llama)
    claims = interp.assess_claims(comparison, sweep)
    check = [c for c in claims if c["claim"].startswith("(check)")]
    assert len(check) == 1 and check[0]["verdict"] == "holds"  # tiny models use eps=1e-12
    partial = interp.sweep_layers(tiny_llama.bridge, "One two three four", " five", 0.6, "0-1")
    assert not [c for c in interp.assess_claims(comparison, partial) if c["claim"].startswith("(check)")]
