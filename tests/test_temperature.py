"""fit_temperature recovers a known temperature and explains nothing it should not."""

from __future__ import annotations

import pytest
import torch

import interp


@pytest.mark.parametrize("temperature", [0.25, 0.6, 1.0, 1.7, 4.0])
def test_recovers_an_exact_temperature(temperature):
    torch.manual_seed(0)
    clean = torch.randn(3, 5000) * 3
    fit = interp.fit_temperature(clean, clean / temperature)
    assert torch.allclose(fit["t_star"], torch.full((3,), temperature, dtype=torch.float64), rtol=1e-6)
    assert (fit["kl_at_t_star"] < 1e-10).all()
    if temperature != 1.0:
        assert (fit["kl_at_1"] > 1e-3).all()
        assert torch.allclose(fit["explained"], torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_a_shift_is_not_a_temperature():
    clean = torch.randn(2, 1000)
    fit = interp.fit_temperature(clean, clean + 5.0)  # softmax ignores a uniform shift
    assert torch.allclose(fit["t_star"], torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert (fit["kl_at_1"] < 1e-10).all()


def test_unrelated_logits_are_not_a_temperature():
    torch.manual_seed(1)
    clean, other = torch.randn(4, 2000) * 2, torch.randn(4, 2000) * 2
    fit = interp.fit_temperature(clean, other)
    # The best a temperature can do is flatten towards uniform; a lot of divergence remains.
    assert (fit["kl_at_t_star"] > 1.0).all()
    assert (fit["t_star"] > 5).all() and (fit["t_star"] <= 1000 + 1e-9).all()
    assert (fit["kl_at_t_star"] <= fit["kl_at_1"] + 1e-12).all()  # the fit never does worse


def test_sweep_rows_carry_the_fit(tiny_llama):
    frame = interp.sweep(tiny_llama.bridge, "One two three", " four", "all", [0.5, 1.0, 2.0])
    for col in ("temp_t_star", "temp_kl_at_t_star", "temp_kl_at_1", "temp_explained"):
        assert col in frame
    ones = frame[frame.factor == 1.0]
    assert (ones.temp_kl_at_1 == 0).all()
    assert (frame.temp_kl_at_t_star <= frame.temp_kl_at_1 + 1e-12).all()
