"""Tokenization (BOS, teacher forcing, context limits) and model loading.

The only hard-coded numbers are GPT-2 tokenizer ids, which are fixed by the tokenizer files.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

import interp

PROMPT = interp.CHALLENGE_PROMPT
PROMPT_IDS = [40, 423, 645, 2041, 18054, 13, 314, 716, 691, 43136]
CURIOUS = 11040
GPT2_BOS = 50256


def plain_logits(hf, ids) -> torch.Tensor:
    with torch.inference_mode():
        return hf(torch.as_tensor(ids, dtype=torch.long)).logits


def bridge_logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.as_tensor(ids, dtype=torch.long))


def words(n: int) -> str:
    """A prompt of exactly ``n`` GPT-2 tokens ("the", " the", " the", ...)."""
    return "the" + " the" * (n - 1)


# ----------------------------------------------------------------------------- BOS convention


def test_default_tokenization_has_no_bos(gpt2_medium_shape, gpt2_tokenizer):
    model = gpt2_medium_shape.bridge
    for prepend_bos in (None, False):
        ex = interp.encode(model, PROMPT, " curious", prepend_bos=prepend_bos)
        assert list(ex.prompt_ids) == PROMPT_IDS
        assert ex.target_ids == (CURIOUS,)
        assert ex.prepend_bos is False
        assert ex.final_pos == len(PROMPT_IDS) - 1
        assert ex.input_ids == ex.prompt_ids  # one target token: nothing is teacher-forced
        assert ex.tokens().tolist() == [PROMPT_IDS]
    # The default is what plain transformers does, although the bridge's own tokenizer
    # (model.tokenizer) prepends BOS.
    assert list(gpt2_tokenizer(PROMPT)["input_ids"]) == PROMPT_IDS
    assert list(interp.tokenizer_of(model)(PROMPT)["input_ids"]) == PROMPT_IDS


def test_prepend_bos_true_puts_bos_first(gpt2_medium_shape):
    model = gpt2_medium_shape.bridge
    ex = interp.encode(model, PROMPT, " curious", prepend_bos=True)
    assert list(ex.prompt_ids) == [GPT2_BOS] + PROMPT_IDS
    assert ex.prepend_bos is True
    assert ex.final_pos == len(PROMPT_IDS)
    res = interp.compare_scaling(model, PROMPT, CURIOUS, {2: 0.6}, prepend_bos=True)
    assert res.prepend_bos is True and res.prompt_token_ids[0] == GPT2_BOS
    assert res.target == " curious"  # decoded from the id
    assert res.clean.per_token[0].position == len(PROMPT_IDS)


def test_gpt2_medium_shape(gpt2_medium_shape):
    model = gpt2_medium_shape.bridge
    assert model.cfg.n_layers == 24 and model.cfg.d_model == 1024
    assert model.interp_info.n_layers == 24 and model.interp_info.source == "in-memory"
    assert "blocks.23.hook_resid_post" in model.hook_dict
    assert "blocks.24.hook_resid_post" not in model.hook_dict
    assert interp.validate_scales({-1: 0.5, 2: 0.6}, model.cfg.n_layers) == {23: 0.5, 2: 0.6}


def test_multi_token_target_is_teacher_forced(gpt2_medium_shape):
    """Per-token logprobs at positions final_pos.., summing to target_logprob, equal to a manual
    computation from plain transformers' logits on prompt + target[:-1], clean and scaled."""
    model, hf = gpt2_medium_shape
    res = interp.compare_scaling(model, PROMPT, " curiously curious", {2: 0.6})
    target = res.target_token_ids
    assert len(target) == 2 and target[-1] == CURIOUS
    assert res.prompt_token_ids == PROMPT_IDS
    final_pos = len(PROMPT_IDS) - 1
    inputs = [PROMPT_IDS + target[:-1]]

    def scale_block_2(module, args, output):
        if isinstance(output, tuple):
            return (output[0] * 0.6,) + tuple(output[1:])
        return output * 0.6

    clean_lp = torch.log_softmax(plain_logits(hf, inputs)[0].double(), -1)
    handle = hf.transformer.h[2].register_forward_hook(scale_block_2)
    try:
        scaled_lp = torch.log_softmax(plain_logits(hf, inputs)[0].double(), -1)
    finally:
        handle.remove()

    for summary, lp in ((res.clean, clean_lp), (res.intervened, scaled_lp)):
        assert len(summary.per_token) == len(target)
        assert [t.position for t in summary.per_token] == [final_pos, final_pos + 1]
        assert [t.id for t in summary.per_token] == target
        manual = [float(lp[final_pos + j, t]) for j, t in enumerate(target)]
        for score, value in zip(summary.per_token, manual):
            assert score.logprob == pytest.approx(value, abs=1e-4)
        assert summary.target_logprob == pytest.approx(sum(t.logprob for t in summary.per_token), abs=1e-9)
        assert summary.target_logprob == pytest.approx(sum(manual), abs=2e-4)
    assert res.intervened.target_logprob != pytest.approx(res.clean.target_logprob, abs=1e-3)


def test_bridge_equals_transformers_gpt2_medium_shape(gpt2_medium_shape):
    model, hf = gpt2_medium_shape
    ids = [PROMPT_IDS]
    torch.testing.assert_close(bridge_logits(model, ids), plain_logits(hf, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["tiny_gpt2", "tiny_llama"])
def test_bridge_equals_transformers_tiny(request, arch):
    model, hf = request.getfixturevalue(arch)
    ids = [PROMPT_IDS, PROMPT_IDS[::-1]]  # a batch of two different rows
    torch.testing.assert_close(bridge_logits(model, ids), plain_logits(hf, ids), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt(tiny_gpt2, prompt):
    with pytest.raises(interp.PromptError, match="pass the text"):
        interp.encode(tiny_gpt2.bridge, prompt, " curious")
    with pytest.raises(interp.PromptError):
        interp.compare_scaling(tiny_gpt2.bridge, prompt, " curious", {1: 0.6})


def test_prompt_longer_than_the_context(tiny_gpt2):
    model = tiny_gpt2.bridge
    assert model.cfg.n_ctx == 64
    long_prompt = " ".join(["word"] * 100)
    for call in (
        lambda: interp.encode(model, long_prompt, " curious"),
        lambda: interp.compare_scaling(model, long_prompt, " curious", {1: 0.6}),
        lambda: interp.sweep_layers(model, long_prompt, " curious"),
    ):
        with pytest.raises(interp.PromptError) as info:
            call()
        message = str(info.value)
        assert "context is 64 tokens" in message and "shorten the prompt" in message


def test_context_limit_counts_teacher_forced_tokens(tiny_gpt2):
    """The model reads prompt + target[:-1]: exactly 64 positions fit, 65 do not."""
    model = tiny_gpt2.bridge
    two_tokens = [CURIOUS, CURIOUS]
    assert len(interp.encode(model, words(64), " curious").input_ids) == 64
    assert len(interp.encode(model, words(63), two_tokens).input_ids) == 64
    with pytest.raises(interp.PromptError, match="context is 64"):
        interp.encode(model, words(64), two_tokens)
    with pytest.raises(interp.PromptError, match="context is 64"):
        interp.encode(model, words(65), " curious")
    # The longest input that fits also runs.
    res = interp.compare_scaling(model, words(63), two_tokens, {1: 0.6})
    assert [t.position for t in res.clean.per_token] == [62, 63]


@pytest.mark.parametrize(
    "target, fix",
    [
        ("", "pass the continuation"),
        ([], "pass at least one token id"),
        (50257, "pass ids from this model's tokenizer"),
        ([CURIOUS, -1], "pass ids from this model's tokenizer"),
        (True, "text or token ids"),
    ],
    ids=["empty-text", "empty-ids", "id-past-vocab", "negative-id", "bool"],
)
def test_bad_target(tiny_gpt2, target, fix):
    with pytest.raises(interp.TargetError) as info:
        interp.encode(tiny_gpt2.bridge, PROMPT, target)
    assert fix in str(info.value) and "\n" not in str(info.value)


def test_target_as_text_or_ids_gives_the_same_result(tiny_gpt2):
    model = tiny_gpt2.bridge
    by_text = interp.compare_scaling(model, PROMPT, " curious", {1: 0.6})
    by_id = interp.compare_scaling(model, PROMPT, CURIOUS, {1: 0.6})
    by_ids = interp.compare_scaling(model, PROMPT, [CURIOUS], {1: 0.6})
    for res in (by_id, by_ids):
        assert res.target_token_ids == [CURIOUS] and res.target == " curious"
        assert res.intervened.target_logprob == by_text.intervened.target_logprob
        assert res.clean.target_logprob == by_text.clean.target_logprob


# ----------------------------------------------------------------------------- load_model


def test_unknown_model_is_refused_quickly():
    start = time.perf_counter()
    with pytest.raises(interp.UnknownModelError) as info:
        interp.load_model("no-such-model", device="cpu")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "no-such-model" in message and "use one of" in message
    assert interp.EMBEDDED_MODEL in message
    for empty in ("", "   "):
        with pytest.raises(interp.UnknownModelError):
            interp.load_model(empty, device="cpu")


@pytest.fixture
def offline_empty_hf_cache(tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache, for this test only.

    huggingface_hub reads HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE once, at import, so the
    module constants are patched along with the environment.
    """
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.chdir(tmp_path)  # so no folder named like the model can shadow it
    return cache


@pytest.mark.parametrize("name", ["gpt2-medium", "GPT2-Medium", "openai-community/gpt2-medium"])
def test_offline_uncached_alias_names_the_embedded_model(offline_empty_hf_cache, name):
    start = time.perf_counter()
    with pytest.raises(interp.ModelNotAvailableError) as info:
        interp.load_model(name, device="cpu")
    assert time.perf_counter() - start < 15  # no retry loop
    message = str(info.value)
    assert "smollm2-135m-instruct" in message and "openai-community/gpt2-medium" in message
    assert "\n" not in message


def test_offline_unknown_hub_id(offline_empty_hf_cache):
    with pytest.raises(interp.ModelNotAvailableError, match="smollm2-135m-instruct"):
        interp.load_model("some/folder-that-does-not-exist-xyz", device="cpu")


def test_local_folder(tiny_gpt2, gpt2_tokenizer, tmp_path):
    model, hf = tiny_gpt2
    folder = tmp_path / "tiny-gpt2"
    hf.save_pretrained(folder)
    gpt2_tokenizer.save_pretrained(folder)
    loaded = interp.load_model(str(folder), device="cpu")
    info = loaded.interp_info
    assert info.source == "local" and info.path == str(folder.resolve())
    assert info.n_layers == 4 and info.n_ctx == 64 and info.dtype == "float32"
    ids = [PROMPT_IDS]
    torch.testing.assert_close(bridge_logits(loaded, ids), bridge_logits(model, ids), atol=1e-6, rtol=0)
    torch.testing.assert_close(bridge_logits(loaded, ids), plain_logits(hf, ids), atol=1e-5, rtol=0)
    assert list(interp.encode(loaded, PROMPT, " curious").prompt_ids) == PROMPT_IDS


def test_path_without_config_json(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(interp.UnknownModelError, match="config.json"):
        interp.load_model(str(tmp_path), device="cpu")


def test_bad_dtype_and_device_are_refused_before_loading():
    with pytest.raises(interp.ModelNotAvailableError, match="use one of float32"):
        interp.load_model("gpt2-medium", device="cpu", dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(interp.ModelNotAvailableError, match="use device='cpu'"):
            interp.load_model("gpt2-medium", device="cuda")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "interp-cache"))
    assert interp.cache_dir() == tmp_path / "interp-cache"
    monkeypatch.delenv("INTERP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert interp.cache_dir() == tmp_path / "xdg" / "interp"


# ----------------------------------------------------------------------------- embedded model


@pytest.mark.embedded
def test_embedded_model(embedded):
    info = embedded.interp_info
    assert embedded.cfg.n_layers == 30 and info.n_layers == 30
    assert info.source == "embedded-gguf" and info.name == interp.EMBEDDED_MODEL
    assert info.hub_id == interp.MODEL_ALIASES[interp.EMBEDDED_MODEL]
    assert re.fullmatch(r"[0-9a-f]{64}", info.weights_sha256 or "")
    assert Path(info.path).parent == interp.cache_dir()
    assert (Path(info.path) / "config.json").is_file()
    # SmolLM2's tokenizer adds no BOS by default; prepend_bos=True adds it.
    ex = interp.encode(embedded, PROMPT, " curious")
    assert ex.prepend_bos is False
    bos = interp.encode(embedded, PROMPT, " curious", prepend_bos=True)
    assert bos.prompt_ids[1:] == ex.prompt_ids and bos.prepend_bos is True


@pytest.mark.embedded
def test_embedded_bridge_equals_transformers(embedded):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        embedded.interp_info.path, attn_implementation="eager", dtype=torch.float32
    ).eval()
    ids = [list(interp.encode(embedded, PROMPT, " curious").prompt_ids)]
    expected = plain_logits(hf, ids)
    got = bridge_logits(embedded, ids)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, atol=1e-5 * scale, rtol=0)
