"""The ``interp`` command line.

    interp scale --model M --prompt P --target T --scale 2=0.6 [--scale L=F ...] [--json]
    interp sweep --model M --prompt P --target T --factor 0.6 [--layers all|0-5,9] [--out F]
    interp models

Bad input prints one line, ``interp: error: <problem>; <fix>``, and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from ._errors import BadFactorError, InterpError

_CHALLENGE_PROMPT = "I have no special talents. I am only passionately"
_CHALLENGE_TARGET = " curious"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message}; see `{self.prog} --help`")


def parse_scale(text: str) -> tuple[int, float]:
    """``"2=0.6"`` -> ``(2, 0.6)``; layer range is checked later against the model."""
    fix = "use --scale LAYER=FACTOR, e.g. --scale 2=0.6"
    if text.count("=") != 1:
        raise BadFactorError(f"--scale {text!r} is malformed; {fix}")
    layer_s, factor_s = (part.strip() for part in text.split("="))
    try:
        layer = int(layer_s)
    except ValueError:
        raise BadFactorError(f"--scale {text!r}: layer {layer_s!r} is not an integer; {fix}") from None
    try:
        factor = float(factor_s)
    except ValueError:
        raise BadFactorError(f"--scale {text!r}: factor {factor_s!r} is not a number; {fix}") from None
    if not math.isfinite(factor):
        raise BadFactorError(f"--scale {text!r}: factor {factor_s} is not finite; {fix}")
    return layer, factor


def _add_common(p: argparse.ArgumentParser) -> None:
    from ._models import EMBEDDED_MODEL

    p.add_argument("--model", default=EMBEDDED_MODEL,
                   help=f"alias (see `interp models`), hub id or local folder (default {EMBEDDED_MODEL})")
    p.add_argument("--prompt", default=_CHALLENGE_PROMPT, help="text before the target (default: the challenge's)")
    p.add_argument("--target", default=_CHALLENGE_TARGET,
                   help="continuation to score, usually with a leading space (default ' curious'); "
                   "several tokens are scored by teacher forcing")
    p.add_argument("--prepend-bos", action="store_true",
                   help="put the tokenizer's BOS token first (default: the tokenizer's own convention)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default float32)")
    p.add_argument("--top-k", type=int, default=10, help="how many top tokens to list (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="interp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    scale = sub.add_parser("scale", help="clean vs scaled run for one scaling dict")
    _add_common(scale)
    scale.add_argument("--scale", action="append", default=[], metavar="L=F",
                       help="scale layer L's resid_post by F; repeat for several layers")

    sweep = sub.add_parser("sweep", help="scale each layer in turn by one factor")
    _add_common(sweep)
    sweep.add_argument("--factor", default="0.6", help="the factor (default 0.6)")
    sweep.add_argument("--layers", default="all", help="all | e.g. 0-5,9 (inclusive ranges; default all)")
    sweep.add_argument("--out", default=None, help="write rows to .csv or .json")
    sweep.add_argument("--batch-size", type=int, default=8, help="interventions per forward pass")

    sub.add_parser("models", help="list the model names this tool knows")
    return parser


def _load(args: argparse.Namespace):
    from ._models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


def _cmd_scale(args: argparse.Namespace) -> int:
    from ._experiment import compare_scaling
    from ._format import format_comparison

    if not args.scale:
        raise BadFactorError("no --scale given; add at least one, e.g. --scale 2=0.6")
    scales: dict[int, float] = {}
    for text in args.scale:
        layer, factor = parse_scale(text)
        if layer in scales:
            raise BadFactorError(f"layer {layer} is given twice in --scale; give each layer once")
        scales[layer] = factor
    model = _load(args)
    result = compare_scaling(
        model, args.prompt, args.target, scales,
        prepend_bos=True if args.prepend_bos else None, k=args.top_k,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_comparison(result))
    return 0


def _write_rows(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for key in ("model", "prompt", "target", "prepend_bos"):
        frame.insert(0, key, meta[key]) if key not in frame else None
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".json":
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2))
    else:
        raise InterpError(f"--out {str(path)!r} has an unknown extension; use .csv or .json")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ._experiment import sweep_layers
    from ._format import format_sweep

    try:
        factor = float(args.factor)
    except ValueError:
        raise BadFactorError(f"--factor {args.factor!r} is not a number; use e.g. --factor 0.6") from None
    if not math.isfinite(factor):
        raise BadFactorError(f"--factor {args.factor} is not finite; use e.g. --factor 0.6")
    if args.batch_size < 1:
        raise InterpError(f"--batch-size {args.batch_size} must be at least 1")
    if args.out and Path(args.out).suffix.lower() not in {".csv", ".json"}:
        raise InterpError(f"--out {args.out!r} has an unknown extension; use .csv or .json")
    model = _load(args)
    sweep = sweep_layers(
        model, args.prompt, args.target, factor, args.layers,
        prepend_bos=True if args.prepend_bos else None, batch_size=args.batch_size, k=args.top_k,
    )
    payload = sweep.to_dict()
    if args.out:
        _write_rows(sweep.rows, Path(args.out), payload)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(format_sweep(sweep))
        if args.out:
            print(f"wrote {args.out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from ._models import EMBEDDED_MODEL, MODEL_ALIASES

    for alias, hub_id in MODEL_ALIASES.items():
        note = "embedded, works offline" if alias == EMBEDDED_MODEL else "needs the hub or a local cache"
        print(f"{alias:24s} {hub_id:40s} {note}")
    print("also: any hub id owner/name, or a local folder saved with save_pretrained")
    return 0


_NEGATIVE_OK = ("--scale", "--layers", "--factor")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """Let ``--scale -1=0.6`` and ``--layers -3--1`` through: argparse would take a value that
    starts with '-' for an option, so glue it to its flag (``--scale=-1=0.6``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in _NEGATIVE_OK and nxt and nxt.startswith("-") and nxt[1:2].isdigit():
            out.append(f"{arg}={nxt}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(_join_negative_values(argv))
        handler = {"scale": _cmd_scale, "sweep": _cmd_sweep, "models": _cmd_models}[args.command]
        return handler(args)
    except (_UsageError, InterpError) as err:
        print(f"interp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
