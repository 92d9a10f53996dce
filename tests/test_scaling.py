"""Scaling hooks: exactness, the live dict, layer indexing, per-row factors, hook hygiene and
validation. All checks are invariants on seeded random models (no stored outputs)."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp._scaling import normalize_layer

PROMPT = interp.CHALLENGE_PROMPT


def prompt_ids(model, prompt: str = PROMPT) -> torch.Tensor:
    """``[1, pos]`` ids of the prompt, tokenized the toolkit's way."""
    return interp.encode(model, prompt, " curious").tokens()


def clean_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)


def run(model, ids, scales, site="resid_post"):
    return interp.run_with_scaling(model, ids, scales, site=site)


def n_hooks(census: dict[str, int]) -> int:
    return sum(census.values())


# ----------------------------------------------------------------------------- exactness


def test_factor_one_is_bit_for_bit_clean(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    clean = clean_logits(model, ids)
    n = model.cfg.n_layers
    assert torch.equal(run(model, ids, {layer: 1.0 for layer in range(n)}), clean)
    assert torch.equal(run(model, ids, {}), clean)
    with torch.inference_mode(), interp.scaling_hooks(model, {1: 1.0, -1: 1}):
        assert torch.equal(model(ids), clean)


def test_scaling_changes_logits(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    clean = clean_logits(model, ids)
    scaled = run(model, ids, {1: 0.6})
    assert scaled.shape == clean.shape
    assert (scaled - clean).abs().max() > 1e-3 * clean.abs().max()


def test_resid_post_hook_matches_an_independent_hf_forward_hook(tiny):
    """blocks.L.hook_resid_post is the output of HF block L: scaling it == scaling that output
    with a plain torch hook on the untouched transformers model."""
    model, hf = tiny
    ids = prompt_ids(model)
    blocks = hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers

    def scale_output(module, args, output):
        if isinstance(output, tuple):
            return (output[0] * 0.6,) + tuple(output[1:])
        return output * 0.6

    handle = blocks[1].register_forward_hook(scale_output)
    try:
        with torch.inference_mode():
            expected = hf(ids).logits
    finally:
        handle.remove()
    torch.testing.assert_close(run(model, ids, {1: 0.6}), expected, atol=1e-5, rtol=0)


def test_resid_post_of_layer_equals_resid_pre_of_next_layer(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    post = run(model, ids, {1: 0.6}, site="resid_post")
    pre = run(model, ids, {2: 0.6}, site="resid_pre")
    torch.testing.assert_close(pre, post, atol=1e-6, rtol=0)
    # Layer 0's resid_pre shares its hook point with the live-dict validator.
    assert not torch.equal(run(model, ids, {0: 0.6}, site="resid_pre"), clean_logits(model, ids))


def test_hook_name_and_unknown_site():
    assert interp.hook_name(2) == "blocks.2.hook_resid_post"
    assert interp.hook_name(0, "mlp_out") == "blocks.0.hook_mlp_out"
    with pytest.raises(interp.InterpError, match="use one of"):
        interp.hook_name(0, "resid_everywhere")


# ----------------------------------------------------------------------------- the live dict


def test_dict_is_read_live(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    scales = {1: 0.6}
    with torch.inference_mode(), interp.scaling_hooks(model, scales) as live:
        assert live is scales
        a = model(ids)
        scales[1] = 1.5
        b = model(ids)
        scales[2] = 0.7  # a key that did not exist when the hooks were attached
        c = model(ids)
        scales.clear()
        d = model(ids)
    assert torch.equal(a, run(model, ids, {1: 0.6}))
    assert torch.equal(b, run(model, ids, {1: 1.5}))
    assert torch.equal(c, run(model, ids, {1: 1.5, 2: 0.7}))
    assert torch.equal(d, clean_logits(model, ids))
    assert not torch.equal(a, b) and not torch.equal(b, c)


def test_make_scaling_hooks_are_live_too(tiny_gpt2):
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    scales = {2: 0.6}
    hooks = interp.make_scaling_hooks(model, scales)
    assert len(hooks) == model.cfg.n_layers + 1
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        a = model(ids)
        scales[2] = 0.9
        b = model(ids)
    assert torch.equal(a, run(model, ids, {2: 0.6}))
    assert torch.equal(b, run(model, ids, {2: 0.9}))


def test_run_with_scaling_accepts_1d_ids_and_rejects_empty(tiny_gpt2):
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    flat = run(model, ids[0].tolist(), {1: 0.6})
    assert flat.shape == (1, ids.shape[1], model.cfg.d_vocab)
    assert torch.equal(flat, run(model, ids, {1: 0.6}))
    with pytest.raises(interp.InterpError, match="pass ids"):
        run(model, [], {})


# ----------------------------------------------------------------------------- layers


def test_scaling_the_last_layer_leaves_logits_unchanged(tiny):
    """The final norm is scale invariant, so scaling the last block's output cannot matter
    (the tiny models use eps=1e-12, see conftest); scaling layer 0 matters a lot."""
    model = tiny.bridge
    ids = prompt_ids(model)
    clean = clean_logits(model, ids)
    scale = clean.abs().max().item()
    n = model.cfg.n_layers
    for layer in (n - 1, -1):
        for factor in (0.6, 1.7):
            diff = (run(model, ids, {layer: factor}) - clean).abs().max().item()
            assert diff <= 1e-4 * scale, (layer, factor, diff, scale)
    first = (run(model, ids, {0: 0.6}) - clean).abs().max().item()
    assert first > 1e-2 * scale


@pytest.mark.embedded
def test_scaling_the_last_layer_leaves_logits_unchanged_embedded(embedded):
    model = embedded
    ids = prompt_ids(model)
    clean = clean_logits(model, ids)
    scale = clean.abs().max().item()
    last = (run(model, ids, {-1: 0.6}) - clean).abs().max().item()
    first = (run(model, ids, {0: 0.6}) - clean).abs().max().item()
    assert last <= 1e-4 * scale, (last, scale)
    assert first > 1e-2 * scale


def test_negative_layers_equal_positive_ones(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    n = model.cfg.n_layers
    for layer in range(n):
        assert torch.equal(run(model, ids, {layer - n: 0.6}), run(model, ids, {layer: 0.6})), layer


def test_normalize_layer():
    assert [normalize_layer(i, 4) for i in range(-4, 4)] == [0, 1, 2, 3, 0, 1, 2, 3]
    # Digit strings are accepted (the CLI passes strings).
    assert normalize_layer("2", 4) == 2
    assert normalize_layer(" -1 ", 4) == 3
    for bad in (4, -5, 2.0, True, "x", "", None):
        with pytest.raises(interp.LayerOutOfRangeError):
            normalize_layer(bad, 4)


def test_malformed_numeric_layer_string_is_an_interp_error():
    # "--2" looks numeric to a naive check; it must be a one-line InterpError, not a ValueError.
    with pytest.raises(interp.LayerOutOfRangeError, match="use"):
        interp.validate_scales({"--2": 0.6}, 4)


def test_string_layer_keys_normalise_in_validate_scales():
    assert interp.validate_scales({"2": 0.6}, 4) == {2: 0.6}
    assert interp.validate_scales({"-1": 0.6}, 4) == {3: 0.6}


def test_string_layer_key_is_applied_by_the_hooks(tiny_gpt2):
    """validate_scales accepts {"2": 0.6}; the hooks must apply it too, not silently skip it."""
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    assert torch.equal(run(model, ids, {"2": 0.6}), run(model, ids, {2: 0.6}))


# ----------------------------------------------------------------------------- per-row factors


@pytest.mark.parametrize("as_tensor", [False, True])
def test_per_row_factors_equal_separate_runs(tiny, as_tensor):
    model = tiny.bridge
    ids = prompt_ids(model)
    factors = [1.0, 0.6, 1.5]
    vec = torch.tensor(factors) if as_tensor else factors
    batched = run(model, ids.expand(3, -1), {1: vec})
    for row, factor in enumerate(factors):
        torch.testing.assert_close(batched[row], run(model, ids, {1: factor})[0], atol=1e-5, rtol=0)
    assert not torch.allclose(batched[1], batched[2], atol=1e-3)


def test_per_row_factor_of_wrong_length(tiny_gpt2):
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    before = interp.hook_census(model)
    with pytest.raises(interp.BadFactorError, match="one factor per row") as info:
        run(model, ids.expand(3, -1), {1: [1.0, 0.6]})
    assert "\n" not in str(info.value)
    assert interp.hook_census(model) == before


# ----------------------------------------------------------------------------- hook hygiene


def test_census_sees_our_hooks_and_they_go_away(tiny):
    model = tiny.bridge
    ids = prompt_ids(model)
    before = interp.hook_census(model)
    with torch.inference_mode(), interp.scaling_hooks(model, {1: 0.6}):
        inside = interp.hook_census(model)
        model(ids)
    assert n_hooks(inside) > n_hooks(before)  # the census does see our hooks
    assert interp.hook_census(model) == before
    run(model, ids, {2: 0.6})
    interp.compare_scaling(model, PROMPT, " curious", {2: 0.6})
    interp.sweep_layers(model, PROMPT, " curious", 0.6, batch_size=3)
    assert interp.hook_census(model) == before
    assert torch.equal(clean_logits(model, ids), run(model, ids, {}))


@pytest.mark.parametrize(
    "bad, error",
    [
        ({1: float("nan")}, interp.BadFactorError),
        ({1: "abc"}, interp.BadFactorError),
        ({7: 0.5}, interp.LayerOutOfRangeError),
        ({1: 0.5, -3: 0.5}, interp.LayerOutOfRangeError),  # the same layer twice
    ],
    ids=["nan", "not-numeric", "layer-out-of-range", "layer-twice"],
)
def test_live_edit_that_breaks_the_dict_raises_and_leaves_no_hooks(tiny_gpt2, bad, error):
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    clean = clean_logits(model, ids)
    before = interp.hook_census(model)
    scales: dict = {}
    with pytest.raises(error):
        with torch.inference_mode(), interp.scaling_hooks(model, scales):
            scales.update(bad)
            model(ids)
    assert isinstance(error("x"), interp.InterpError)
    assert interp.hook_census(model) == before
    assert torch.equal(clean_logits(model, ids), clean)


def test_bad_dict_at_entry_attaches_nothing(tiny_gpt2):
    model = tiny_gpt2.bridge
    before = interp.hook_census(model)
    with pytest.raises(interp.LayerOutOfRangeError):
        with interp.scaling_hooks(model, {9: 0.6}):
            pytest.fail("the body must not run")  # pragma: no cover
    assert interp.hook_census(model) == before


def test_user_hook_survives_our_context_manager(tiny_gpt2):
    model = tiny_gpt2.bridge
    ids = prompt_ids(model)
    before = interp.hook_census(model)
    seen: list[torch.Tensor] = []
    model.add_hook("blocks.1.hook_resid_post", lambda act, hook: seen.append(act.detach().clone()))
    try:
        with_user = interp.hook_census(model)
        assert n_hooks(with_user) == n_hooks(before) + 1
        with torch.inference_mode(), interp.scaling_hooks(model, {1: 0.5}):
            model(ids)
        assert len(seen) == 1
        assert interp.hook_census(model) == with_user
        with torch.inference_mode():
            model(ids)
        assert len(seen) == 2  # still attached and firing
    finally:
        model.reset_hooks()
    assert interp.hook_census(model) == before


def test_weights_unchanged_by_experiments(tiny):
    model = tiny.bridge
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    interp.compare_scaling(model, PROMPT, " curiously curious", {0: 0.6, 2: 1.4})
    interp.sweep_layers(model, PROMPT, " curious", factor=0.6, batch_size=3)
    after = model.state_dict()
    assert after.keys() == snapshot.keys()
    changed = [k for k, v in snapshot.items() if not torch.equal(v, after[k])]
    assert changed == []


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "scales, error, fix",
    [
        ({4: 0.6}, interp.LayerOutOfRangeError, "use 0..3"),
        ({-5: 0.6}, interp.LayerOutOfRangeError, "use 0..3"),
        ({2.0: 0.6}, interp.LayerOutOfRangeError, "use a block index"),
        ({"two": 0.6}, interp.LayerOutOfRangeError, "use a block index"),
        ({1: float("nan")}, interp.BadFactorError, "such as 0.6"),
        ({1: float("inf")}, interp.BadFactorError, "such as 0.6"),
        ({1: -math.inf}, interp.BadFactorError, "such as 0.6"),
        ({1: "abc"}, interp.BadFactorError, "use a finite number"),
        ({1: True}, interp.BadFactorError, "use a finite number"),
        ({1: None}, interp.BadFactorError, "use a finite number"),
        ({1: ["a", "b"]}, interp.BadFactorError, "use a number or one number per row"),
        ({1: [[0.5, 0.6]]}, interp.BadFactorError, "use a 1-D vector"),
        ({1: []}, interp.BadFactorError, "use a 1-D vector"),
        ({1: [0.5, float("nan")]}, interp.BadFactorError, "use finite numbers"),
        ({1: 0.6, -3: 0.6}, interp.LayerOutOfRangeError, "name each layer once"),
    ],
    ids=[
        "layer-4", "layer-minus-5", "float-layer", "word-layer", "nan", "inf", "minus-inf",
        "abc", "bool", "none", "non-numeric-vector", "2d-vector", "empty-vector",
        "vector-with-nan", "layer-twice",
    ],
)
def test_validation_errors_name_the_fix(tiny_gpt2, scales, error, fix):
    model = tiny_gpt2.bridge
    with pytest.raises(error) as info:
        interp.validate_scales(scales, 4)
    message = str(info.value)
    assert fix in message
    assert "\n" not in message
    assert isinstance(info.value, interp.InterpError) and isinstance(info.value, ValueError)
    # The same error surfaces from every entry point, and no hook is left behind.
    before = interp.hook_census(model)
    with pytest.raises(error):
        run(model, prompt_ids(model), scales)
    with pytest.raises(error):
        with interp.scaling_hooks(model, scales):
            pass  # pragma: no cover
    assert interp.hook_census(model) == before


def test_scales_must_be_a_mapping(tiny_gpt2):
    with pytest.raises(interp.BadFactorError, match=r"e\.g\. \{2: 0\.6\}"):
        interp.validate_scales([(1, 0.6)], 4)
    with pytest.raises(interp.BadFactorError):
        with interp.scaling_hooks(tiny_gpt2.bridge, [(1, 0.6)]):
            pass  # pragma: no cover


def test_validate_scales_normalises_and_keeps_vectors():
    out = interp.validate_scales({-1: 1, 0: 0.5, 2: [1.0, 2.0]}, 4)
    assert set(out) == {3, 0, 2}
    assert out[3] == 1.0 and isinstance(out[3], float)
    assert torch.equal(out[2], torch.tensor([1.0, 2.0]))
    # A 0-d tensor is a scalar factor.
    assert interp.validate_scales({1: torch.tensor(0.5)}, 4) == {1: 0.5}
