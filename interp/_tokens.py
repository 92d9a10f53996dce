"""Turning a (prompt, target) pair into tokens, with BOS made explicit.

BOS convention. By default the prompt is tokenized the way the tokenizer itself does it
(``tokenizer(prompt)``), which is what plain transformers does and what the code challenge
did: GPT-2 and SmolLM2 add no BOS. ``prepend_bos=True`` puts the tokenizer's BOS token first;
``prepend_bos=False`` guarantees there is none. Every result records which was used.

Gotcha — symptom: your numbers differ from a TransformerLens notebook by a lot.
Cause: ``model.to_tokens(prompt)`` *prepends BOS by default* for GPT-2, plain transformers
does not. Wrong: comparing ``model.to_tokens(p)`` runs with ``tokenizer(p)`` runs.
Right: ``encode(model, p, t, prepend_bos=True)`` on both sides (or ``False`` on both).

Multi-token targets are scored by teacher forcing: the model reads
``prompt + target[:-1]`` and the target's j-th token is predicted at position
``len(prompt) - 1 + j``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from ._errors import PromptError, TargetError


@dataclass(frozen=True)
class Example:
    """One tokenized prompt/target pair.

    Attributes:
        prompt, target: the texts (``target`` is decoded from ids when ids were given).
        prompt_ids: prompt token ids, including BOS when one was used.
        target_ids: target token ids (at least one).
        prepend_bos: whether the sequence starts with a BOS token.
    """

    prompt: str
    target: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    prepend_bos: bool

    @property
    def input_ids(self) -> tuple[int, ...]:
        """What the model reads: the prompt and all but the last target token."""
        return self.prompt_ids + self.target_ids[:-1]

    @property
    def final_pos(self) -> int:
        """Position of the prompt's last token: its logits predict the first target token."""
        return len(self.prompt_ids) - 1

    @property
    def target_positions(self) -> list[int]:
        """Positions whose logits predict each target token (teacher forcing)."""
        return [self.final_pos + j for j in range(len(self.target_ids))]

    def tokens(self, device: torch.device | str = "cpu") -> Int[Tensor, "1 seq"]:
        return torch.tensor([self.input_ids], dtype=torch.long, device=device)


def tokenizer_of(model: Any) -> Any:
    """The model's tokenizer *as the user gave it*.

    Gotcha — symptom: ``model.tokenizer("text")`` starts with BOS on a bridge although
    ``AutoTokenizer.from_pretrained(...)("text")`` does not. Cause: ``boot_transformers``
    swaps in a copy reloaded with ``add_bos_token=True``. :func:`interp.from_hf` keeps the
    original as ``model.interp_tokenizer``; this returns it (or ``model.tokenizer`` for a
    bridge built elsewhere).
    """
    return getattr(model, "interp_tokenizer", None) or model.tokenizer


def _bos_id(tokenizer: Any) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos) if bos is not None else None


def encode_prompt(
    tokenizer: Any, prompt: str, prepend_bos: bool | None = None
) -> tuple[tuple[int, ...], bool]:
    """Tokenize a prompt. Returns ``(ids, bos_used)``; see the module docstring for BOS."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(
            f"the prompt is empty ({prompt!r}); pass the text whose next token you want to "
            "study, e.g. --prompt \"I have no special talents. I am only passionately\""
        )
    bos = _bos_id(tokenizer)
    if prepend_bos is None:
        ids = list(tokenizer(prompt)["input_ids"])
    else:
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if prepend_bos:
            if bos is None:
                raise PromptError(
                    "prepend_bos=True but this tokenizer has no BOS token; "
                    "leave prepend_bos unset (the tokenizer's own convention)"
                )
            ids = [bos] + ids
    if not ids:
        raise PromptError(f"the prompt {prompt!r} tokenizes to nothing; pass visible text")
    return tuple(int(i) for i in ids), bool(bos is not None and ids[0] == bos)


def encode_target(tokenizer: Any, target: str | int | Sequence[int]) -> tuple[int, ...]:
    """Tokenize a target continuation (no special tokens), or accept token id(s) as given."""
    if isinstance(target, bool):
        raise TargetError(f"target must be text or token ids, got {target!r}")
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, numbers.Integral):
        ids: list[int] = [int(target)]
    elif isinstance(target, str):
        if target == "":
            raise TargetError(
                "the target is empty; pass the continuation to score, usually with its leading "
                "space, e.g. --target \" curious\""
            )
        ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        if not ids:
            raise TargetError(f"the target {target!r} tokenizes to nothing; pass visible text")
    else:
        try:
            ids = [int(i) for i in target]
        except (TypeError, ValueError):
            raise TargetError(
                f"target {target!r} is neither text nor token ids; pass e.g. \" curious\" or [11040]"
            ) from None
        if not ids:
            raise TargetError("the target id list is empty; pass at least one token id")
    vocab = len(tokenizer)
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise TargetError(
            f"target token id(s) {bad} are outside the vocabulary [0, {vocab}); "
            "pass ids from this model's tokenizer"
        )
    return tuple(ids)


def encode(
    model: Any,
    prompt: str,
    target: str | int | Sequence[int],
    prepend_bos: bool | None = None,
) -> Example:
    """Tokenize a prompt/target pair for ``model`` (a bridge) and check it fits the context.

    Args:
        model: a TransformerBridge (its ``tokenizer`` and ``cfg.n_ctx`` are used).
        prompt: non-empty text.
        target: text (may be several tokens), a token id, or a list of ids.
        prepend_bos: ``None`` = the tokenizer's convention; ``True``/``False`` to force.

    Raises:
        PromptError: empty prompt, or prompt + target longer than the context.
        TargetError: empty target or ids outside the vocabulary.
    """
    tokenizer = tokenizer_of(model)
    prompt_ids, bos_used = encode_prompt(tokenizer, prompt, prepend_bos)
    target_ids = encode_target(tokenizer, target)
    d_vocab = int(model.cfg.d_vocab)
    if max(target_ids) >= d_vocab:
        raise TargetError(
            f"target token id {max(target_ids)} is outside the model's vocabulary of {d_vocab}; "
            "pass ids from this model's tokenizer"
        )
    n_ctx = int(model.cfg.n_ctx)
    length = len(prompt_ids) + len(target_ids) - 1
    if length > n_ctx:
        raise PromptError(
            f"the prompt is {len(prompt_ids)} tokens (+{len(target_ids) - 1} teacher-forced "
            f"target tokens) but the model's context is {n_ctx} tokens; shorten the prompt"
        )
    target_text = target if isinstance(target, str) else tokenizer.decode(list(target_ids))
    return Example(prompt, target_text, prompt_ids, target_ids, bos_used)
