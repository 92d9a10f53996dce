"""interp.sweep: the fast engine and the hook path both equal one forward pass per
intervention (the loop), on both architectures, with prompts of different lengths."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import _sweep

PROMPTS = ["The cat sat on the", "Once upon a time there was a little", "Hi"]
TARGETS = [" mat", " girl who", " there"]  # the second is two tokens (teacher forcing)
METRICS = ["target_logprob", "target_loss", "delta_loss", "entropy", "pearson_r", "kl",
           "mean_logit_shift", "logit_std_ratio"]
TOL = 1e-4


def loop_reference(model, prompts, targets, layers, factors, site="resid_post"):
    """One plain forward pass per intervention, through compare_scaling."""
    out = {}
    for p, (prompt, target) in enumerate(zip(prompts, targets)):
        for layer in layers:
            for factor in factors:
                res = interp.compare_scaling(model, prompt, target, {layer: factor}, site=site)
                out[(p, layer, factor)] = res
    return out


def assert_matches_loop(frame, ref, tol=TOL):
    assert len(frame) == len(ref)
    for row in frame.itertuples():
        res = ref[(row.prompt_index, row.layer, row.factor)]
        want = {
            "target_logprob": res.intervened.target_logprob,
            "target_loss": res.intervened.target_loss,
            "delta_loss": res.delta_loss,
            "entropy": res.intervened.entropy,
            "pearson_r": res.pearson_r,
            "kl": res.kl,
            "mean_logit_shift": res.mean_logit_shift,
            "logit_std_ratio": res.logit_std_ratio,
        }
        for key, value in want.items():
            got = getattr(row, key)
            if value != value:  # nan (constant logits, e.g. factor 0 on a random model)
                assert got != got, (key, row)
            else:
                assert got == pytest.approx(value, abs=tol), (key, row.layer, row.factor, got, value)
        # Rank is an integer count: allow a neighbour swap only for a float-level tie.
        assert abs(row.target_rank - res.intervened.target_rank) <= 1
        assert row.clean_loss == pytest.approx(res.clean.target_loss, abs=1e-9)


@pytest.fixture(scope="module")
def loops(tiny_gpt2, tiny_llama):
    factors = [0.0, 0.6, 1.0, 1.5]
    return {
        name: (m.bridge, loop_reference(m.bridge, PROMPTS, TARGETS, range(4), factors))
        for name, m in (("gpt2", tiny_gpt2), ("llama", tiny_llama))
    }


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_sweep_equals_the_loop(loops, arch, engine):
    model, ref = loops[arch]
    frame = interp.sweep(model, PROMPTS, TARGETS, "all", [0.0, 0.6, 1.0, 1.5], engine=engine,
                         max_batch=5)
    assert frame.attrs["engine"] == engine
    assert_matches_loop(frame, ref)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_mixed_lengths_equal_each_prompt_alone(loops, arch):
    model, _ = loops[arch]
    together = interp.sweep(model, PROMPTS, TARGETS, [0, 3], [0.6, 1.5], engine="fast")
    for p, (prompt, target) in enumerate(zip(PROMPTS, TARGETS)):
        alone = interp.sweep(model, prompt, target, [0, 3], [0.6, 1.5], engine="fast")
        mine = together[together.prompt_index == p].reset_index(drop=True)
        for key in METRICS:
            assert torch.allclose(torch.tensor(mine[key].values), torch.tensor(alone[key].values),
                                  atol=1e-5, equal_nan=True), key


def test_max_batch_and_order_do_not_change_results(tiny_llama):
    model = tiny_llama.bridge
    a = interp.sweep(model, PROMPTS, TARGETS, "all", "0:2:0.5", engine="fast", max_batch=1)
    b = interp.sweep(model, PROMPTS, TARGETS, "all", "0:2:0.5", engine="fast", max_batch=1000)
    assert list(a.layer) == list(b.layer) and list(a.factor) == list(b.factor)
    assert list(a.factor[:5]) == [0.0, 0.5, 1.0, 1.5, 2.0]  # caller's order: prompt, layer, factor
    for key in METRICS:
        assert torch.allclose(torch.tensor(a[key].values), torch.tensor(b[key].values),
                              atol=1e-6, equal_nan=True), key


def test_factor_one_rows_are_the_clean_run_exactly(tiny_gpt2):
    frame = interp.sweep(tiny_gpt2.bridge, PROMPTS, TARGETS, "all", [1.0, 0.5], engine="fast")
    ones = frame[frame.factor == 1.0]
    assert (ones.delta_loss == 0).all() and (ones.kl == 0).all()
    assert (ones.target_rank == ones.clean_rank).all()
    # ... while 0.5 changes the output (except at the last block, which the final norm undoes)
    assert (frame[(frame.factor == 0.5) & (frame.layer < 3)].kl > 1e-6).all()


def test_gpt2_medium_shape_fast_equals_loop(gpt2_medium_shape):
    model = gpt2_medium_shape.bridge
    prompt = "I have no special talents. I am only passionately"
    layers, factors = [0, 11, 22, 23], [0.6, 1.4]
    ref = loop_reference(model, [prompt], [" curious"], layers, factors)
    frame = interp.sweep(model, prompt, " curious", layers, factors, engine="fast")
    assert frame.attrs["engine"] == "fast"
    assert_matches_loop(frame, ref)


def test_user_hooks_force_the_hook_path_with_a_note(tiny_gpt2, capsys):
    model = tiny_gpt2.bridge
    seen = []
    model.add_hook("blocks.1.hook_resid_post", lambda x, hook: seen.append(1))
    try:
        frame = interp.sweep(model, PROMPTS[0], TARGETS[0], [0, 2], [0.6])
        assert frame.attrs["engine"] == "hooks"
        assert "hooks are attached" in frame.attrs["fallback_reason"]
        assert "using the hook path" in capsys.readouterr().err
        assert seen, "the user's hook must run on the hook path"
        with pytest.raises(interp.InterpError, match="fast sweep engine cannot run"):
            interp.sweep(model, PROMPTS[0], TARGETS[0], [0], [0.6], engine="fast")
    finally:
        model.reset_hooks()


def test_other_sites_use_hooks_and_match_the_loop(tiny_llama):
    model = tiny_llama.bridge
    frame = interp.sweep(model, PROMPTS[:2], TARGETS[:2], [1, 2], [0.5], site="mlp_out", verbose=False)
    assert frame.attrs["engine"] == "hooks"
    ref = loop_reference(model, PROMPTS[:2], TARGETS[:2], [1, 2], [0.5], site="mlp_out")
    assert_matches_loop(frame, ref)


def test_engine_self_check_falls_back_when_the_mirror_is_wrong(tiny_gpt2, monkeypatch):
    real = _sweep.architecture

    def broken(model):
        arch = real(model)
        unembed = arch.unembed
        arch.unembed = lambda x: unembed(x) + 0.5  # a mirror that disagrees with the bridge
        return arch

    monkeypatch.setattr(_sweep, "architecture", broken)
    frame = interp.sweep(tiny_gpt2.bridge, PROMPTS[0], TARGETS[0], [1], [0.6], verbose=False)
    assert frame.attrs["engine"] == "hooks"
    assert "differ from the bridge" in frame.attrs["fallback_reason"]


def test_sweep_leaves_no_hooks_and_no_weight_changes(tiny_llama):
    model = tiny_llama.bridge
    before = interp.hook_census(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    interp.sweep(model, PROMPTS, TARGETS, "all", [0.6, 2.0], engine="fast")
    interp.sweep(model, PROMPTS, TARGETS, "all", [0.6, 2.0], engine="hooks")
    with pytest.raises(interp.InterpError):
        interp.sweep(model, PROMPTS, TARGETS, "all", [0.6], engine="bogus")
    assert interp.hook_census(model) == before
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


@pytest.mark.parametrize(
    "spec, want",
    [
        ("0:2:0.5", [0.0, 0.5, 1.0, 1.5, 2.0]),
        ("0:1:0.3", [0.0, 0.3, 0.6, 0.9]),
        ("0.5,1,1.5", [0.5, 1.0, 1.5]),
        ("0.6", [0.6]),
        (0.6, [0.6]),
        ([1, 0.5, 1], [1.0, 0.5]),
    ],
)
def test_parse_factors(spec, want):
    assert interp.parse_factors(spec) == pytest.approx(want)


def test_parse_factors_grid_has_21_points():
    assert len(interp.parse_factors("0:2:0.1")) == 21


@pytest.mark.parametrize("spec", ["", "a,b", "0:1", "1:0:0.1", "0:1:0", "0:inf:1", "nan", [], [float("inf")]])
def test_parse_factors_rejects(spec):
    with pytest.raises(interp.BadFactorError):
        interp.parse_factors(spec)


def test_targets_must_match_prompts(tiny_gpt2):
    with pytest.raises(interp.TargetError, match="one target per prompt"):
        interp.sweep(tiny_gpt2.bridge, PROMPTS, TARGETS[:2], [0], [0.6])


@pytest.mark.embedded
def test_embedded_fast_equals_hook_path(embedded):
    prompts = ["I have no special talents. I am only passionately", "The capital of France is"]
    targets = [" curious", " Paris"]
    fast = interp.sweep(embedded, prompts, targets, [0, 2, 15, 28, 29], [0.6, 1.5], engine="fast")
    hooks = interp.sweep(embedded, prompts, targets, [0, 2, 15, 28, 29], [0.6, 1.5], engine="hooks")
    assert fast.attrs["engine"] == "fast"
    for key in METRICS:
        diff = (fast[key] - hooks[key]).abs().max()
        assert diff < TOL, (key, diff)
    assert (fast.target_rank == hooks.target_rank).all()


def test_reduced_precision_error_is_measured_not_hidden(gpt2_tokenizer):
    """A bf16 sweep runs, and max_abs_diff reports its error against the fp32 sweep."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=50257,
                      max_position_embeddings=64, attn_implementation="eager")
    torch.manual_seed(1)
    hf = LlamaForCausalLM(cfg)
    hf16 = LlamaForCausalLM(cfg)
    hf16.load_state_dict(hf.state_dict())
    m32 = interp.from_hf(hf, gpt2_tokenizer, device="cpu")
    m16 = interp.from_hf(hf16, gpt2_tokenizer, device="cpu", dtype="bfloat16")
    f32 = interp.sweep(m32, PROMPTS, TARGETS, "all", [0.5, 1.5], verbose=False)
    f16 = interp.sweep(m16, PROMPTS, TARGETS, "all", [0.5, 1.5], verbose=False)
    same = interp.max_abs_diff(f32, f32)
    assert all(v == 0 for v in same.values())
    err = interp.max_abs_diff(f16, f32)
    assert 0 < err["target_loss"] < 1.0  # bf16 is visibly, but boundedly, off
    assert set(err) >= {"target_loss", "kl", "pearson_r", "top1_changed_frac"}


def test_engine_itself_reproduces_factor_one(tiny_llama, tiny_gpt2):
    """sweep() shortcuts factor 1.0 to the clean run; the engine must agree without it."""
    from interp._engine import Row, architecture, clean_states, run_rows

    for m in (tiny_gpt2, tiny_llama):
        model = m.bridge
        prep = _sweep._prepare([interp.encode(model, p, t) for p, t in zip(PROMPTS, TARGETS)], "cpu")
        arch = architecture(model)
        states, clean, ctx = clean_states(arch, prep.ids, prep.scored)
        rows = [Row(p, layer, 1.0) for layer in range(4) for p in range(3)]
        rows.sort(key=lambda r: r.layer)
        out = run_rows(arch, states, ctx, prep.scored, rows)
        want = clean[torch.tensor([r.prompt for r in rows])]
        assert torch.allclose(out, want, atol=1e-5), (out - want).abs().max()


def test_max_abs_diff_never_hides_nan(tiny_gpt2):
    frame = interp.sweep(tiny_gpt2.bridge, PROMPTS[0], TARGETS[0], [0, 1], [0.5])
    broken = frame.copy()
    broken.loc[0, "kl"] = float("nan")
    assert interp.max_abs_diff(broken, frame)["kl"] == float("inf")


def test_single_prompt_with_a_multi_token_id_target(tiny_gpt2):
    model = tiny_gpt2.bridge
    ids = interp.tokenizer_of(model)(" girl who", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    by_ids = interp.sweep(model, PROMPTS[1], ids, [0, 2], [0.6])
    by_text = interp.sweep(model, PROMPTS[1], " girl who", [0, 2], [0.6])
    assert list(by_ids.target_loss) == pytest.approx(list(by_text.target_loss), abs=1e-9)
    sweep = interp.sweep_layers(model, PROMPTS[1], ids, 0.6)
    assert sweep.target_token_ids == ids


def test_unexpected_engine_failure_falls_back(tiny_gpt2, monkeypatch):
    def explode(model):
        raise AttributeError("config has no attribute rope_theta")

    monkeypatch.setattr(_sweep, "architecture", explode)
    frame = interp.sweep(tiny_gpt2.bridge, PROMPTS[0], TARGETS[0], [1], [0.6], verbose=False)
    assert frame.attrs["engine"] == "hooks"
    assert "AttributeError" in frame.attrs["fallback_reason"]
