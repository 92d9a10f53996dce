"""Scaling the residual stream with a live ``{layer: factor}`` dict.

The method (from the "hidden-state scaling and token loss" code challenge): a hook on
``blocks.{L}.hook_resid_post`` multiplies the residual stream leaving block ``L`` by a
factor. Everything downstream (later blocks, the final norm, the unembedding) sees the
scaled stream.

The hooks read the dict *live*. One hook is attached to every layer and looks its factor up
in the dict at each forward pass, so changing the dict changes the next run without
removing or re-adding hooks::

    scales = {2: 0.6}
    with scaling_hooks(model, scales):
        a = model(tokens)        # layer 2 x 0.6
        scales[2] = 1.5
        b = model(tokens)        # layer 2 x 1.5, same hooks
        scales.clear()
        c = model(tokens)        # clean

Layers: ``0 <= L < n_layers``; negative indices count from the end (``-1`` = last block),
as in Python. A layer named twice (``2`` and ``-22`` on a 24-layer model) is an error.

Factors: finite real numbers, or a per-row vector of shape ``[batch]`` so that each row of a
batch carries its own factor (a batched sweep puts one intervention per row). A layer with no
entry, or factor exactly 1.0, is left untouched, so factor 1.0 reproduces the clean run
bit for bit.

Validation happens when the hooks are attached and again at the start of every forward pass
(a live edit can introduce a bad layer or factor): the forward pass then raises a
:class:`~interp.InterpError`, and the context manager still removes its hooks.

Gotcha — symptom: ``model.run_with_hooks(tokens, fwd_hooks=make_scaling_hooks(...))`` and
then editing the dict has no effect on later ``model(tokens)`` calls.
Cause: ``run_with_hooks`` removes its hooks when it returns.
Wrong: ``model.run_with_hooks(...); scales[2] = 0.9; model(tokens)``.
Right: ``with scaling_hooks(model, scales): ...`` around every run that should see the dict.
"""

from __future__ import annotations

import math
import numbers
import re
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ._errors import BadFactorError, InterpError, LayerOutOfRangeError

Factor = Union[float, Sequence[float], Tensor]
"""A scalar factor, or one factor per batch row (shape ``[batch]``)."""

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
"""Where in a block a factor can be applied; the challenge uses ``resid_post``."""


def hook_name(layer: int, site: str = "resid_post") -> str:
    """TransformerLens hook name, e.g. ``hook_name(2) == "blocks.2.hook_resid_post"``."""
    if site not in SITES:
        raise InterpError(f"unknown site {site!r}; use one of {', '.join(SITES)}")
    return f"blocks.{layer}.hook_{site}"


def normalize_layer(layer: Any, n_layers: int) -> int:
    """Return ``layer`` as an index in ``[0, n_layers)``; negative counts from the end."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        if isinstance(layer, str) and re.fullmatch(r"\s*-?\d+\s*", layer, re.ASCII):
            layer = int(layer)
        else:
            raise LayerOutOfRangeError(
                f"layer {layer!r} is not an integer; use a block index 0..{n_layers - 1} "
                "(negative counts from the end)"
            )
    layer = int(layer)
    if not -n_layers <= layer < n_layers:
        raise LayerOutOfRangeError(
            f"layer {layer} is out of range for a {n_layers}-layer model; use 0..{n_layers - 1} "
            f"(or -{n_layers}..-1 from the end)"
        )
    return layer % n_layers


def check_factor(factor: Any, layer: Any = None) -> float | Tensor:
    """Return a validated factor: a Python float, or a 1-D float tensor of per-row factors."""
    where = f" for layer {layer}" if layer is not None else ""
    if isinstance(factor, bool):
        raise BadFactorError(f"factor{where} is {factor!r}; use a finite number such as 0.6")
    if isinstance(factor, numbers.Real):
        value = float(factor)
        if not math.isfinite(value):
            raise BadFactorError(
                f"factor{where} is {value}; use a finite number such as 0.6"
            )
        return value
    if isinstance(factor, Tensor) and factor.ndim == 0:
        return check_factor(factor.item(), layer)
    if isinstance(factor, (Tensor, Sequence)) and not isinstance(factor, (str, bytes)):
        try:
            vec = torch.as_tensor(factor, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise BadFactorError(
                f"factor{where} {factor!r} is not numeric; use a number or one number per row"
            ) from None
        if vec.ndim != 1 or vec.numel() == 0:
            raise BadFactorError(
                f"per-row factor{where} has shape {tuple(vec.shape)}; use a 1-D vector with "
                "one factor per batch row"
            )
        if not torch.isfinite(vec).all():
            raise BadFactorError(
                f"per-row factor{where} contains non-finite values; use finite numbers only"
            )
        return vec
    raise BadFactorError(
        f"factor{where} is {factor!r} ({type(factor).__name__}); use a finite number such as 0.6"
    )


def validate_scales(scales: Mapping[Any, Any], n_layers: int) -> dict[int, float | Tensor]:
    """Check a scaling dict and return it with layers normalised to ``[0, n_layers)``."""
    if not isinstance(scales, Mapping):
        raise BadFactorError(
            f"scales must be a dict {{layer: factor}}, got {type(scales).__name__}; "
            "e.g. {2: 0.6}"
        )
    out: dict[int, float | Tensor] = {}
    for key, factor in list(scales.items()):
        layer = normalize_layer(key, n_layers)
        if layer in out:
            raise LayerOutOfRangeError(
                f"layer {layer} is named twice in the scaling dict (as {key!r} and as another "
                "index); name each layer once"
            )
        out[layer] = check_factor(factor, key)
    return out


def _lookup(scales: Mapping[Any, Any], layer: int, n_layers: int) -> Any:
    """The live factor for ``layer``, whatever index form the key uses (2, -22, "2")."""
    if layer in scales:
        return scales[layer]
    for key, factor in list(scales.items()):
        if key != layer and normalize_layer(key, n_layers) == layer:
            return factor
    return None


# ----------------------------------------------------------------------------- hook functions


def scale_resid_hook(
    resid: Float[Tensor, "batch pos d_model"],
    hook: Any,
    *,
    scales: Mapping[Any, Any],
    layer: int,
    n_layers: int,
) -> Float[Tensor, "batch pos d_model"] | None:
    """Multiply the activation by ``scales[layer]`` as it is *now*; ``None`` = untouched."""
    factor = _lookup(scales, layer, n_layers)
    if factor is None:
        return None
    factor = check_factor(factor, layer)
    if isinstance(factor, Tensor):
        if factor.shape[0] != resid.shape[0]:
            raise BadFactorError(
                f"per-row factor for layer {layer} has {factor.shape[0]} entries but the batch "
                f"has {resid.shape[0]} rows; give one factor per row"
            )
        vec = factor.to(device=resid.device, dtype=torch.float32)[:, None, None]
        if resid.dtype == torch.float32:
            return resid * vec
        return (resid.float() * vec).to(resid.dtype)  # keep the factor's precision in bf16/fp16
    if factor == 1.0:
        return None  # exact clean run, and no copy
    if resid.dtype in (torch.float32, torch.float64):
        return resid * factor
    return (resid.float() * factor).to(resid.dtype)


def validate_scales_hook(
    activation: Tensor, hook: Any, *, scales: Mapping[Any, Any], n_layers: int
) -> None:
    """Fires first in every forward pass: re-checks the live dict before any layer reads it."""
    validate_scales(scales, n_layers)
    return None


def make_scaling_hooks(
    model: Any, scales: MutableMapping[Any, Any], site: str = "resid_post"
) -> list[tuple[str, Callable]]:
    """Hooks for ``model.hooks`` / ``run_with_hooks`` / your own patching runs.

    Args:
        model: a TransformerBridge (``model.cfg.n_layers`` is used).
        scales: the live dict ``{layer: factor}``; it is read at every forward pass.
        site: one of :data:`SITES` (default ``"resid_post"``, as in the challenge).

    Returns:
        ``[(hook_name, hook_fn), ...]``: a validator on the first block's input, then one
        scaling hook per layer (all layers, so keys added later take effect).
    """
    n_layers = int(model.cfg.n_layers)
    validate_scales(scales, n_layers)
    hooks: list[tuple[str, Callable]] = [
        (hook_name(0, "resid_pre"), partial(validate_scales_hook, scales=scales, n_layers=n_layers))
    ]
    for layer in range(n_layers):
        fn = partial(scale_resid_hook, scales=scales, layer=layer, n_layers=n_layers)
        hooks.append((hook_name(layer, site), fn))
    return hooks


@contextmanager
def scaling_hooks(
    model: Any, scales: MutableMapping[Any, Any], site: str = "resid_post"
) -> Iterator[MutableMapping[Any, Any]]:
    """Attach live scaling hooks for the duration of a ``with`` block; yields ``scales``.

    The hooks are removed when the block exits, normally or by an exception. Hooks the user
    attached before are left alone.
    """
    hooks = make_scaling_hooks(model, scales, site)
    with model.hooks(fwd_hooks=hooks):
        yield scales


def as_tokens(tokens: Int[Tensor, "batch pos"] | Sequence[int], device: Any) -> Int[Tensor, "batch pos"]:
    """Accept ``[pos]`` or ``[batch, pos]`` ids and return a long tensor ``[batch, pos]``."""
    t = torch.as_tensor(tokens, dtype=torch.long)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] == 0:
        raise InterpError(
            f"tokens have shape {tuple(t.shape)}; pass ids of shape [pos] or [batch, pos]"
        )
    return t.to(device)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def run_with_scaling(
    model: Any,
    tokens: Int[Tensor, "batch pos"] | Sequence[int],
    scales: Mapping[Any, Factor],
    site: str = "resid_post",
) -> Float[Tensor, "batch pos d_vocab"]:
    """One forward pass with ``scales`` applied; no hooks remain afterwards.

    Args:
        model: a TransformerBridge.
        tokens: ids of shape ``[pos]`` or ``[batch, pos]``.
        scales: ``{layer: factor}``; a factor may be a ``[batch]`` vector (one per row).
        site: where to scale (default ``"resid_post"``).

    Returns:
        Logits ``[batch, pos, d_vocab]`` (no grad).

    Example:
        >>> logits = run_with_scaling(model, tokens, {2: 0.6})
    """
    toks = as_tokens(tokens, model_device(model))
    with torch.inference_mode(), scaling_hooks(model, dict(scales), site):
        logits = model(toks)
    assert logits.shape[:2] == toks.shape, (logits.shape, toks.shape)
    return logits


# ----------------------------------------------------------------------------- hook hygiene


def hook_census(model: Any) -> dict[str, int]:
    """Count hooks on the model: TransformerLens handles per hook point and raw torch hooks.

    Two censuses that compare equal mean no hook was added or left behind in between.
    """
    census: dict[str, int] = {}
    for name, module in model.named_modules():
        n = (
            len(module._forward_hooks)
            + len(module._forward_pre_hooks)
            + len(module._backward_hooks)
            + len(getattr(module, "_backward_pre_hooks", {}))
        )
        if n:
            census[name or "<root>"] = n
    return census
