"""compare_scaling and sweep_layers: batched sweep == looped comparisons, layer specs, the clean
identity, and the JSON shape of results."""

from __future__ import annotations

import json
import math

import pytest
import torch

import interp

PROMPT = interp.CHALLENGE_PROMPT
TARGET = " curiously curious"  # two tokens: the sweep's teacher forcing is exercised too
METRICS = ("target_logprob", "target_loss", "pearson_r", "kl", "mean_logit_shift", "logit_std_ratio")


@pytest.fixture(scope="module")
def sweeps(request):
    """Per architecture: the sweep at several batch sizes and the per-layer comparisons."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            model = request.getfixturevalue(arch).bridge
            by_batch = {
                bs: interp.sweep_layers(model, PROMPT, TARGET, factor=0.6, batch_size=bs)
                for bs in (1, 3, 8)
            }
            loop = [
                interp.compare_scaling(model, PROMPT, TARGET, {layer: 0.6})
                for layer in range(model.cfg.n_layers)
            ]
            cache[arch] = (model, by_batch, loop)
        return cache[arch]

    return get


ARCHS = ["tiny_gpt2", "tiny_llama"]


# ----------------------------------------------------------------------------- sweep == loop


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_sweep_equals_a_loop_of_compare_scaling(sweeps, arch):
    model, by_batch, loop = sweeps(arch)
    sweep = by_batch[3]  # 4 layers in batches of 3: one full batch and a batch of one
    assert [row["layer"] for row in sweep.rows] == list(range(model.cfg.n_layers))
    assert sweep.factor == 0.6 and all(row["factor"] == 0.6 for row in sweep.rows)
    assert sweep.clean.target_logprob == loop[0].clean.target_logprob
    assert sweep.target_token_ids == loop[0].target_token_ids and len(sweep.target_token_ids) == 2
    for row, res in zip(sweep.rows, loop):
        expected = {
            "target_logprob": res.intervened.target_logprob,
            "target_loss": res.intervened.target_loss,
            "pearson_r": res.pearson_r,
            "kl": res.kl,
            "mean_logit_shift": res.mean_logit_shift,
            "logit_std_ratio": res.logit_std_ratio,
        }
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-5), (row["layer"], key)
        assert row["target_rank"] == res.intervened.target_rank
        assert row["delta_loss"] == pytest.approx(res.delta_loss, abs=1e-5)
        assert row["delta_loss"] == pytest.approx(row["target_loss"] - sweep.clean.target_loss, abs=1e-12)
        assert row["entropy"] == pytest.approx(res.intervened.entropy, abs=1e-5)
        assert row["top1_id"] == res.intervened.topk[0].id
        assert row["top1_token"] == res.intervened.topk[0].token


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_does_not_change_results(sweeps, arch):
    _, by_batch, _ = sweeps(arch)
    reference = by_batch[1].rows
    for bs, sweep in by_batch.items():
        assert len(sweep.rows) == len(reference)
        for row, ref in zip(sweep.rows, reference):
            assert row["layer"] == ref["layer"] and row["target_rank"] == ref["target_rank"]
            for key in METRICS:
                assert row[key] == pytest.approx(ref[key], abs=1e-5), (bs, row["layer"], key)


def test_sweep_rows_differ_between_layers(sweeps):
    _, by_batch, _ = sweeps("tiny_gpt2")
    losses = [row["target_loss"] for row in by_batch[3].rows]
    assert len(set(round(x, 6) for x in losses[:-1])) == len(losses) - 1  # each row its own layer
    # The final norm is scale invariant: scaling the last layer is a no-op.
    assert abs(by_batch[3].rows[-1]["delta_loss"]) < 1e-4


def test_sweep_selected_layers(tiny_gpt2):
    model = tiny_gpt2.bridge
    full = interp.sweep_layers(model, PROMPT, " curious", factor=1.3, batch_size=2)
    part = interp.sweep_layers(model, PROMPT, " curious", factor=1.3, layers="-1,1", batch_size=2)
    assert [row["layer"] for row in part.rows] == [3, 1]
    by_layer = {row["layer"]: row for row in full.rows}
    for row in part.rows:
        for key in METRICS:
            assert row[key] == pytest.approx(by_layer[row["layer"]][key], abs=1e-5)
    listed = interp.sweep_layers(model, PROMPT, " curious", factor=1.3, layers=[0, -1])
    assert [row["layer"] for row in listed.rows] == [0, 3]


def test_sweep_with_factor_one_is_the_clean_run(tiny_llama):
    sweep = interp.sweep_layers(tiny_llama.bridge, PROMPT, TARGET, factor=1.0, batch_size=3)
    for row in sweep.rows:
        assert row["delta_loss"] == pytest.approx(0.0, abs=1e-5)
        assert row["kl"] == pytest.approx(0.0, abs=1e-9)
        assert row["pearson_r"] == pytest.approx(1.0, abs=1e-9)


def test_sweep_argument_errors(tiny_gpt2):
    model = tiny_gpt2.bridge
    with pytest.raises(interp.BadFactorError):
        interp.sweep_layers(model, PROMPT, " curious", factor=float("nan"))
    with pytest.raises(interp.LayerOutOfRangeError):
        interp.sweep_layers(model, PROMPT, " curious", layers="0-4")
    with pytest.raises(ValueError, match="batch_size"):
        interp.sweep_layers(model, PROMPT, " curious", batch_size=0)


def test_sweep_serialises(sweeps):
    _, by_batch, _ = sweeps("tiny_gpt2")
    sweep = by_batch[3]
    data = json.loads(json.dumps(sweep.to_dict(), allow_nan=False))
    assert data["factor"] == 0.6 and len(data["rows"]) == 4
    assert data["prompt_token_ids"] == sweep.prompt_token_ids
    assert data["clean"]["target_logprob"] == sweep.clean.target_logprob
    frame = sweep.to_frame()
    assert list(frame["layer"]) == [0, 1, 2, 3]
    assert {"layer", "delta_loss", "kl", "pearson_r", "target_rank"} <= set(frame.columns)


# ----------------------------------------------------------------------------- parse_layers


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0-2,3", [0, 1, 2, 3]),
        ("all", [0, 1, 2, 3]),
        (" ALL ", [0, 1, 2, 3]),
        (None, [0, 1, 2, 3]),
        ("-1", [3]),
        ("3,1,3", [3, 1]),  # duplicates dropped, order kept
        ("-2--1", [2, 3]),
        ("1-1", [1]),
        ("2, 0", [2, 0]),
        ([0, -1, 3], [0, 3]),
        (range(2), [0, 1]),
    ],
)
def test_parse_layers(spec, expected):
    assert interp.parse_layers(spec, 4) == expected


@pytest.mark.parametrize(
    "spec, fix",
    [
        ("4", "use 0..3"),
        ("-5", "use 0..3"),
        ("0-4", "use 0..3"),
        ("2-1", "write it low-high"),
        ("a-b", "use e.g. 0-5,9"),
        ("1-", "use e.g. 0-5,9"),
        ("x", "use a block index"),
        ("", "use e.g. 0-5,9"),
        (",", "use e.g. 0-5,9"),
        ([], "use e.g. 0-5,9"),
        ([1.5], "use a block index"),
    ],
)
def test_parse_layers_errors(spec, fix):
    with pytest.raises(interp.LayerOutOfRangeError) as info:
        interp.parse_layers(spec, 4)
    assert fix in str(info.value)


# ----------------------------------------------------------------------------- compare_scaling


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_scales_is_the_clean_run(request, arch):
    model = request.getfixturevalue(arch).bridge
    res = interp.compare_scaling(model, PROMPT, TARGET, {})
    assert res.delta_loss == 0.0
    assert res.intervened.target_logprob == res.clean.target_logprob
    assert res.intervened.target_rank == res.clean.target_rank
    assert res.pearson_r == pytest.approx(1.0, abs=1e-12)
    assert res.kl == pytest.approx(0.0, abs=1e-12)
    assert res.mean_logit_shift == 0.0
    assert res.logit_std_ratio == pytest.approx(1.0, abs=1e-12)
    assert res.intervened.topk == res.clean.topk
    assert torch.equal(res.clean_logits, res.intervened_logits)


def test_compare_scaling_matches_run_with_scaling(tiny_gpt2):
    model = tiny_gpt2.bridge
    res = interp.compare_scaling(model, PROMPT, " curious", {-3: 0.6, 2: 1.2}, k=5)
    assert res.scales == {1: 0.6, 2: 1.2}  # normalised and sorted
    assert len(res.clean.topk) == len(res.intervened.topk) == 5
    ex = interp.encode(model, PROMPT, " curious")
    with torch.inference_mode():
        clean = model(ex.tokens())[0, ex.final_pos]
    scaled = interp.run_with_scaling(model, ex.tokens(), {1: 0.6, 2: 1.2})[0, ex.final_pos]
    assert torch.equal(res.clean_logits, clean)
    assert torch.equal(res.intervened_logits, scaled)
    assert res.kl == pytest.approx(interp.kl_divergence(clean, scaled), abs=1e-12)
    assert res.pearson_r == pytest.approx(interp.pearson_r(clean, scaled), abs=1e-12)
    assert res.delta_loss > -math.inf and res.kl > 0
    lp = torch.log_softmax(scaled.double(), -1)
    assert res.intervened.target_logprob == pytest.approx(float(lp[ex.target_ids[0]]), abs=1e-9)


def test_compare_scaling_rejects_bad_scales(tiny_gpt2):
    model = tiny_gpt2.bridge
    with pytest.raises(interp.LayerOutOfRangeError):
        interp.compare_scaling(model, PROMPT, " curious", {4: 0.6})
    with pytest.raises(interp.BadFactorError):
        interp.compare_scaling(model, PROMPT, " curious", {1: float("inf")})


def test_compare_scaling_per_row_factor_is_an_interp_error(tiny_gpt2):
    """A per-row vector is bad input for a single comparison: an InterpError naming the fix."""
    with pytest.raises(interp.InterpError, match="per-row"):
        interp.compare_scaling(tiny_gpt2.bridge, PROMPT, " curious", {1: [0.5, 0.6]})


def test_to_dict_is_json_and_complete(tiny_llama):
    res = interp.compare_scaling(tiny_llama.bridge, PROMPT, TARGET, {2: 0.6, -1: 1.5})
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    required = {
        "model", "prepend_bos", "prompt_token_ids", "target_token_ids", "scales", "clean",
        "intervened", "pearson_r", "mean_logit_shift", "kl",
    }
    assert required <= set(data)
    assert data["model"] == "tiny-llama"
    assert data["prepend_bos"] is False
    assert data["prompt_token_ids"] == res.prompt_token_ids and all(isinstance(i, int) for i in data["prompt_token_ids"])
    assert data["target_token_ids"] == res.target_token_ids and len(data["target_token_ids"]) == 2
    assert data["scales"] == {"2": 0.6, "3": 1.5}
    for key in ("clean", "intervened"):
        summary = data[key]
        assert {"target_logprob", "target_loss", "target_rank", "topk"} <= set(summary)
        assert summary["target_loss"] == pytest.approx(-summary["target_logprob"])
        assert isinstance(summary["target_rank"], int) and summary["target_rank"] >= 1
        assert len(summary["topk"]) == 10
        for entry in summary["topk"]:
            assert {"token", "id", "prob"} <= set(entry)
            assert isinstance(entry["token"], str) and isinstance(entry["id"], int)
            assert 0.0 <= entry["prob"] <= 1.0
        assert len(summary["per_token"]) == 2
    for key in ("pearson_r", "mean_logit_shift", "kl"):
        assert data[key] == getattr(res, key)
    assert data["delta_loss"] == pytest.approx(res.intervened.target_loss - res.clean.target_loss)
