"""A fast, exact engine for residual-scaling sweeps.

The method. A sweep asks, for many rows ``(prompt p, layer L, factor f)``, for the model's
output at the scored positions when ``blocks.L.hook_resid_post`` is multiplied by ``f``.
The naive way runs one full forward pass per row. This engine:

1. runs each prompt **clean once** and keeps its residual stream after every block;
2. sorts rows by layer and walks the blocks once: before block ``l`` the rows with
   ``L = l - 1`` **join the batch** with ``f * clean_resid_post[L]`` as their state, so a row
   only pays for the blocks after its layer, and all rows share each block's weights in one
   batched matmul;
3. in the **last block** computes queries, attention output and MLP only at the scored
   positions (keys and values still use every position);
4. applies the final norm and the **unembedding only at the scored positions**.

It computes the blocks from the model's own weights with plain torch ops (GPT-2 family:
LayerNorm, learned positions, GELU; Llama family: RMSNorm, rotary, SwiGLU, grouped-query
attention). Prompts of different lengths are right-padded: with a causal mask no real token
ever attends to a pad, so each prompt's numbers equal its own unpadded run.

Safety net: before a sweep the engine recomputes each prompt's clean logits and compares them
with the bridge's own forward pass; any disagreement (edited weights, an unusual config),
an unsupported architecture, another site than ``resid_post``, or user hooks on the model
make :func:`interp.sweep` fall back to the plain hook path, which gives identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


class EngineUnsupported(Exception):
    """The fast path cannot run this model; the caller falls back to hooks. ``str`` says why."""


# ----------------------------------------------------------------------------- weights


def _hf_state(model: Any) -> dict[str, Tensor]:
    """The bridge's weights under their transformers names (``._original_component`` removed)."""
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise EngineUnsupported("the model has no original_model (not a TransformerBridge?)")
    state: dict[str, Tensor] = {}
    # keep_vars: the live parameters (not copies); state_dict lists shared tensors under
    # every name, which named_parameters() would de-duplicate away.
    for name, tensor in hf.state_dict(keep_vars=True).items():
        key = name.replace("._original_component", "")
        state.setdefault(key, tensor.detach())
    return state


def _get(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise EngineUnsupported(f"weight {key!r} not found")
    return state[key]


# ----------------------------------------------------------------------------- architectures


@dataclass
class _Context:
    """Per-prompt tensors shared by every row of that prompt."""

    positions: Int[Tensor, "n_prompts pos"]
    rotary: tuple[Tensor, Tensor] | None  # cos, sin: [n_prompts, pos, head_dim]


class _Arch:
    n_layers: int
    d_model: int

    def embed(self, ids: Int[Tensor, "b pos"]) -> Float[Tensor, "b pos d"]:
        raise NotImplementedError

    def context(self, n_prompts: int, n_pos: int, device: torch.device) -> _Context:
        positions = torch.arange(n_pos, device=device).expand(n_prompts, n_pos)
        return _Context(positions, None)

    def block(
        self,
        layer: int,
        x: Float[Tensor, "r pos d"],
        rotary: tuple[Tensor, Tensor] | None,
        query_pos: Int[Tensor, "r q"] | None = None,
    ) -> Float[Tensor, "r q d"]:
        raise NotImplementedError

    def unembed(self, x: Float[Tensor, "r q d"]) -> Float[Tensor, "r q vocab"]:
        raise NotImplementedError


def _attention(
    q: Float[Tensor, "r h q hd"],
    k: Float[Tensor, "r h pos hd"],
    v: Float[Tensor, "r h pos hd"],
    scale: float,
    query_pos: Int[Tensor, "r q"] | None,
) -> Float[Tensor, "r h q hd"]:
    """Causal attention; ``query_pos`` gives each query's position when not all are computed."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if query_pos is None:
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
    else:
        keys = torch.arange(n_k, device=q.device)
        mask = (keys[None, None, :] <= query_pos[:, :, None])[:, None]  # [r, 1, q, k]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(weights, v)


def _take(x: Float[Tensor, "r pos d"], query_pos: Int[Tensor, "r q"] | None) -> Tensor:
    if query_pos is None:
        return x
    return torch.gather(x, 1, query_pos[:, :, None].expand(-1, -1, x.shape[-1]))


# In place: the argument is always a fresh matmul output, and in-place GELU runs about twice
# as fast on CPU as the out-of-place op (bit-identical results).
_GELU = {
    "gelu_new": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "gelu": lambda x: torch.ops.aten.gelu_(x),
    "relu": lambda x: F.relu(x, inplace=True),
    "silu": lambda x: F.silu(x, inplace=True),
    "swish": lambda x: F.silu(x, inplace=True),
}


class _GPT2(_Arch):
    def __init__(self, model: Any, cfg: Any):
        if getattr(cfg, "reorder_and_upcast_attn", False):
            raise EngineUnsupported("GPT-2 with reorder_and_upcast_attn")
        if getattr(cfg, "add_cross_attention", False):
            raise EngineUnsupported("GPT-2 with cross attention")
        act = getattr(cfg, "activation_function", "gelu_new")
        if act not in _GELU:
            raise EngineUnsupported(f"activation {act!r}")
        self.act = _GELU[act]
        s = _hf_state(model)
        self.n_layers, self.d_model = cfg.n_layer, cfg.n_embd
        self.n_heads = cfg.n_head
        self.head_dim = self.d_model // self.n_heads
        self.eps = cfg.layer_norm_epsilon
        self.scale_weights = getattr(cfg, "scale_attn_weights", True)
        self.by_layer = getattr(cfg, "scale_attn_by_inverse_layer_idx", False)
        self.wte, self.wpe = _get(s, "transformer.wte.weight"), _get(s, "transformer.wpe.weight")
        self.ln_f = (_get(s, "transformer.ln_f.weight"), _get(s, "transformer.ln_f.bias"))
        self.lm_head = s.get("lm_head.weight", self.wte)
        self.layers = []
        for i in range(self.n_layers):
            p = f"transformer.h.{i}."
            self.layers.append(
                {
                    name: _get(s, p + name)
                    for name in (
                        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
                    )
                }
            )

    def embed(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.wte[ids] + self.wpe[pos][None]

    def _ln(self, x, w, b):
        return F.layer_norm(x, (self.d_model,), w, b, self.eps)

    def block(self, layer, x, rotary, query_pos=None):
        w = self.layers[layer]
        r, n_pos, d = x.shape
        h = self._ln(x, w["ln_1.weight"], w["ln_1.bias"])
        # Conv1D: y = x @ W + b with W [in, out]
        heads = (self.n_heads, self.head_dim)
        if query_pos is None:
            # One GEMM for q, k and v: fewer, larger matmuls run closer to peak.
            qkv = torch.addmm(w["attn.c_attn.bias"], h.reshape(-1, d), w["attn.c_attn.weight"])
            q, k, v = (t.view(r, n_pos, *heads) for t in qkv.view(r, n_pos, 3 * d).split(d, dim=2))
            n_q = n_pos
        else:
            wq, wkv = w["attn.c_attn.weight"][:, :d], w["attn.c_attn.weight"][:, d:]
            bq, bkv = w["attn.c_attn.bias"][:d], w["attn.c_attn.bias"][d:]
            kv = torch.addmm(bkv, h.reshape(-1, d), wkv).view(r, n_pos, 2 * d)
            k, v = (t.reshape(r, n_pos, *heads) for t in kv.split(d, dim=2))
            hq = _take(h, query_pos)
            n_q = hq.shape[1]
            q = torch.addmm(bq, hq.reshape(-1, d), wq).view(r, n_q, *heads)
        scale = self.head_dim ** -0.5 if self.scale_weights else 1.0
        if self.by_layer:
            scale /= float(layer + 1)
        a = _attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, query_pos)
        a = a.transpose(1, 2).reshape(-1, d)
        # In-place residual adds: the sums are the same, without another [rows, pos, d] buffer.
        x = torch.addmm(w["attn.c_proj.bias"], a, w["attn.c_proj.weight"]).view(r, n_q, d).add_(
            _take(x, query_pos)
        )
        h = self._ln(x, w["ln_2.weight"], w["ln_2.bias"]).reshape(-1, d)
        h = self.act(torch.addmm(w["mlp.c_fc.bias"], h, w["mlp.c_fc.weight"]))
        return torch.addmm(w["mlp.c_proj.bias"], h, w["mlp.c_proj.weight"]).view(r, n_q, d).add_(x)

    def unembed(self, x):
        return F.linear(self._ln(x, *self.ln_f), self.lm_head)


class _Llama(_Arch):
    def __init__(self, model: Any, cfg: Any):
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type != "default":
            raise EngineUnsupported(f"rotary scaling {rope_type!r}")
        self.theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        if getattr(cfg, "pretraining_tp", 1) != 1:
            raise EngineUnsupported("pretraining_tp > 1")
        if getattr(cfg, "sliding_window", None):
            raise EngineUnsupported("sliding-window attention")
        act = getattr(cfg, "hidden_act", "silu")
        if act not in _GELU:
            raise EngineUnsupported(f"activation {act!r}")
        self.act = _GELU[act]
        s = _hf_state(model)
        self.n_layers, self.d_model = cfg.num_hidden_layers, cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.embed_w = _get(s, "model.embed_tokens.weight")
        self.norm = _get(s, "model.norm.weight")
        self.lm_head = s.get("lm_head.weight", self.embed_w)
        names = (
            "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
            "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
        )
        optional = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                    "self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias",
                    "mlp.down_proj.bias")
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            layer = {name: _get(s, p + name) for name in names}
            layer.update({name: s[p + name] for name in optional if p + name in s})
            self.layers.append(layer)

    def embed(self, ids):
        return self.embed_w[ids]

    def context(self, n_prompts, n_pos, device):
        positions = torch.arange(n_pos, device=device).expand(n_prompts, n_pos)
        # As transformers' default rotary embedding: inv_freq in fp32, cos/sin in fp32.
        inv_freq = 1.0 / (
            self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim)
        )
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        dtype = self.embed_w.dtype
        return _Context(positions, (emb.cos().to(dtype), emb.sin().to(dtype)))

    def _rms(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(x.dtype)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @staticmethod
    def _lin(x, w, b=None):
        return F.linear(x, w, b)

    def block(self, layer, x, rotary, query_pos=None):
        w = self.layers[layer]
        r, n_pos, d = x.shape
        cos, sin = rotary  # [r, pos, hd]
        h = self._rms(x, w["input_layernorm.weight"])
        k = self._lin(h, w["self_attn.k_proj.weight"], w.get("self_attn.k_proj.bias"))
        v = self._lin(h, w["self_attn.v_proj.weight"], w.get("self_attn.v_proj.bias"))
        k = k.view(r, n_pos, self.n_kv, self.head_dim).transpose(1, 2)
        v = v.view(r, n_pos, self.n_kv, self.head_dim).transpose(1, 2)
        k = self._rotate(k, cos[:, None], sin[:, None])
        hq = _take(h, query_pos)
        n_q = hq.shape[1]
        q = self._lin(hq, w["self_attn.q_proj.weight"], w.get("self_attn.q_proj.bias"))
        q = q.view(r, n_q, self.n_heads, self.head_dim).transpose(1, 2)
        qcos, qsin = (_take(cos, query_pos), _take(sin, query_pos))
        q = self._rotate(q, qcos[:, None], qsin[:, None])
        groups = self.n_heads // self.n_kv
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        a = _attention(q, k, v, self.head_dim ** -0.5, query_pos)
        a = a.transpose(1, 2).reshape(r, n_q, self.n_heads * self.head_dim)
        x = _take(x, query_pos) + self._lin(a, w["self_attn.o_proj.weight"], w.get("self_attn.o_proj.bias"))
        h = self._rms(x, w["post_attention_layernorm.weight"])
        gate = self.act(self._lin(h, w["mlp.gate_proj.weight"], w.get("mlp.gate_proj.bias")))
        up = self._lin(h, w["mlp.up_proj.weight"], w.get("mlp.up_proj.bias"))
        return self._lin(gate.mul_(up), w["mlp.down_proj.weight"], w.get("mlp.down_proj.bias")).add_(x)

    def unembed(self, x):
        return F.linear(self._rms(x, self.norm), self.lm_head)


_ARCHS: dict[str, Callable[[Any, Any], _Arch]] = {
    "gpt2": _GPT2,
    "llama": _Llama,
}


def architecture(model: Any) -> _Arch:
    """The pure-torch mirror of ``model``; raises :class:`EngineUnsupported` if there is none."""
    hf = getattr(model, "original_model", None)
    cfg = getattr(hf, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if model_type not in _ARCHS:
        raise EngineUnsupported(f"no fast path for architecture {model_type!r}")
    if getattr(hf, "training", False):
        raise EngineUnsupported("the model is in training mode (dropout)")
    return _ARCHS[model_type](model, cfg)


# ----------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class Row:
    """One intervention: scale prompt ``prompt``'s ``resid_post`` after ``layer`` by ``factor``."""

    prompt: int
    layer: int
    factor: float


@torch.inference_mode()
def clean_states(
    arch: _Arch, ids: Int[Tensor, "n pos"], scored: Int[Tensor, "n q"]
) -> tuple[list[Tensor], Tensor, _Context]:
    """Clean run of every prompt: ``resid_post`` after each block and the scored logits."""
    ctx = arch.context(ids.shape[0], ids.shape[1], ids.device)
    x = arch.embed(ids)
    states = []
    for layer in range(arch.n_layers):
        x = arch.block(layer, x, ctx.rotary)
        states.append(x)
    logits = arch.unembed(_take(x, scored))
    return states, logits, ctx


@torch.inference_mode()
def run_rows(
    arch: _Arch,
    states: Sequence[Tensor],
    ctx: _Context,
    scored: Int[Tensor, "n q"],
    rows: Sequence[Row],
    n_pos: int | None = None,
) -> Float[Tensor, "r q vocab"]:
    """Scored-position logits for each row (rows must be sorted by layer).

    ``n_pos``: compute only the first ``n_pos`` positions (the longest input among these
    rows' prompts); right padding beyond it is never read under a causal mask.
    """
    assert all(a.layer <= b.layer for a, b in zip(rows, rows[1:])), "rows must be sorted by layer"
    if n_pos is not None and n_pos < states[0].shape[1]:
        assert int(scored.max()) < n_pos or all(
            int(scored[r.prompt].max()) < n_pos for r in rows
        ), "scored positions beyond n_pos"
        states = [s[:, :n_pos] for s in states]
        if ctx.rotary is not None:
            ctx = _Context(ctx.positions[:, :n_pos], tuple(t[:, :n_pos] for t in ctx.rotary))
    n_layers = arch.n_layers
    device = states[0].device
    prompt_of = torch.tensor([r.prompt for r in rows], device=device)
    layer_of = [r.layer for r in rows]
    # Factors stay in fp32 (0.6 in bf16 would be 0.6015625); the product is cast back.
    factor_of = torch.tensor([r.factor for r in rows], dtype=torch.float32, device=device)

    def scaled(state: Tensor, f: Tensor) -> Tensor:
        return (state.float() * f[:, None, None]).to(state.dtype)

    x = states[0].new_empty((0,) + tuple(states[0].shape[1:]))
    joined = 0
    first = layer_of[0] + 1
    last_block = n_layers - 1
    # Rows whose layer is the last block never run a block: they join after the loop.
    for layer in range(first, n_layers):
        end = joined
        while end < len(rows) and layer_of[end] == layer - 1:
            end += 1
        if end > joined:
            idx = slice(joined, end)
            new = scaled(states[layer - 1][prompt_of[idx]], factor_of[idx])
            x = torch.cat([x, new]) if x.shape[0] else new
            joined = end
        if x.shape[0] == 0:
            continue
        rotary = None
        if ctx.rotary is not None:
            rotary = tuple(t[prompt_of[: x.shape[0]]] for t in ctx.rotary)
        if layer == last_block:
            x = arch.block(layer, x, rotary, scored[prompt_of[: x.shape[0]]])
        else:
            x = arch.block(layer, x, rotary)
    # x now holds the scored positions only (the last block computed just those).
    if joined < len(rows):
        # The remaining rows scale the last block's output; nothing runs after it.
        idx = slice(joined, len(rows))
        new = scaled(states[n_layers - 1][prompt_of[idx]], factor_of[idx])
        new = _take(new, scored[prompt_of[idx]])
        x = torch.cat([x, new]) if x.shape[0] else new
    assert x.shape[:2] == (len(rows), scored.shape[1]), (x.shape, len(rows), scored.shape)
    return arch.unembed(x)
