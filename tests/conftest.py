"""Shared, session-scoped models for the test suite.

Every model here is built once per session. The tiny models have random weights (seeded), so
tests assert invariants (bridge == plain transformers, factor 1.0 == clean, batched == looped,
...) and never hard-coded outputs.

Each model fixture returns ``Models(bridge, hf)``:

* ``bridge``: the ``TransformerBridge`` from :func:`interp.from_hf` / :func:`interp.load_model`.
* ``hf``: a *plain* transformers model with the same weights, in eval mode, eager attention.
  It is a separate module tree on purpose: ``TransformerBridge.boot_transformers`` rewires the
  module tree of the model it wraps (its blocks become bridge components), so calling the
  wrapped object would not be an independent reference.

Each bridge has run one forward pass before it is handed out: the bridge registers some of its
own torch hooks lazily on the first forward, and a hook census taken before that first pass
would differ from one taken after it for reasons that have nothing to do with ``interp``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

import interp

SHARED_GPT2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "gpt2-tokenizer"
VENDORED_GPT2_TOKENIZER = Path(__file__).resolve().parent / "data" / "gpt2-tokenizer"

# The tiny models use a negligible norm epsilon. With random init the residual stream's
# variance is ~1e-3, close to the default eps (1e-5 / 1e-6), which would make the final norm
# visibly *not* scale invariant; with eps=1e-12 it is invariant to float precision, as it is
# for a trained model, whose residual stream is large.
TINY_EPS = 1e-12

WARMUP_TEXT = "Hello world, this is a warm-up."


class Models(NamedTuple):
    bridge: Any
    hf: Any


def _warm_up(bridge: Any, tokenizer: Any) -> None:
    ids = torch.tensor([tokenizer(WARMUP_TEXT)["input_ids"]], dtype=torch.long)
    with torch.inference_mode():
        bridge(ids)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """GPT-2's real BPE tokenizer: $INTERP_GPT2_TOKENIZER, else ../shared, else the copy in
    tests/data (so a bare clone runs every test; nothing is skipped)."""
    from transformers import AutoTokenizer

    candidates = [os.environ.get("INTERP_GPT2_TOKENIZER"), SHARED_GPT2_TOKENIZER, VENDORED_GPT2_TOKENIZER]
    for candidate in candidates:
        if candidate and (Path(candidate) / "vocab.json").is_file():
            return AutoTokenizer.from_pretrained(str(candidate))
    raise FileNotFoundError(f"no GPT-2 tokenizer found in {candidates}")


def _wrap(hf_model: Any, tokenizer: Any, name: str) -> Models:
    reference = copy.deepcopy(hf_model).eval()
    bridge = interp.from_hf(hf_model, tokenizer, name=name, device="cpu")
    _warm_up(bridge, tokenizer)
    return Models(bridge, reference)


@pytest.fixture(scope="session")
def tiny_gpt2(gpt2_tokenizer) -> Models:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=4,
        n_embd=64,
        n_head=4,
        n_positions=64,
        vocab_size=50257,
        layer_norm_epsilon=TINY_EPS,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config)
    assert hf.config._attn_implementation == "eager"
    return _wrap(hf, gpt2_tokenizer, "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama(gpt2_tokenizer) -> Models:
    from transformers import LlamaConfig, LlamaForCausalLM

    # LlamaConfig defaults to bos=1, eos=2, pad=None; only the tokenizer's ids matter here
    # (they are all < vocab_size), the config's special ids are never used by a forward pass.
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50257,
        max_position_embeddings=64,
        rms_norm_eps=TINY_EPS,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config)
    assert hf.config._attn_implementation == "eager"
    return _wrap(hf, gpt2_tokenizer, "tiny-llama")


@pytest.fixture(scope="session", params=["tiny_gpt2", "tiny_llama"])
def tiny(request) -> Models:
    """Each tiny architecture in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def gpt2_medium_shape(gpt2_tokenizer) -> Models:
    """GPT-2-Medium's shape (24 layers, 355M parameters), random weights.

    Big: the plain reference shares its weight tensors with the bridged model instead of
    holding a copy (the bridge reads the weights, it does not write them).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=24,
        n_embd=1024,
        n_head=16,
        n_positions=1024,
        vocab_size=50257,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config)
    with torch.device("meta"):
        reference = GPT2LMHeadModel(config)
    reference.load_state_dict(hf.state_dict(), assign=True)
    reference.tie_weights()
    reference.eval()
    bridge = interp.from_hf(hf, gpt2_tokenizer, name="gpt2-medium-shape", device="cpu")
    _warm_up(bridge, gpt2_tokenizer)
    return Models(bridge, reference)


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (converted from its GGUF once, then cached)."""
    # No skip: `make test` installs the embedded weights, so a failure here is a real one.
    bridge = interp.load_model(interp.EMBEDDED_MODEL, device="cpu")
    _warm_up(bridge, bridge.tokenizer)
    return bridge
