"""The ``interp`` command line.

    interp scale --model M --prompt P --target T --scale 2=0.6 [--scale L=F ...] [--json]
    interp sweep --model M --prompt P --target T --factor 0.6 [--layers all|0-5,9] [--out F]
    interp sweep --prompts-file prompts.tsv --factors 0:2:0.1 --out rows.parquet
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

    sweep = sub.add_parser("sweep", help="scale each layer (x each factor, x each prompt) in turn")
    _add_common(sweep)
    sweep.add_argument("--factor", default=None, help="one factor (default 0.6)")
    sweep.add_argument("--factors", default=None,
                       help="several factors: 0.5,1,1.5 or start:stop:step, e.g. 0:2:0.1")
    sweep.add_argument("--layers", default="all", help="all | e.g. 0-5,9 (inclusive ranges; default all)")
    sweep.add_argument("--prompts-file", default=None,
                       help="one 'prompt<TAB>target' per line, or JSON lines {\"prompt\": ..., \"target\": ...}")
    sweep.add_argument("--out", default=None, help="write all rows to .csv, .json or .parquet")
    sweep.add_argument("--max-batch", type=int, default=None,
                       help="interventions per batched pass (default: from a 2 GiB budget)")
    sweep.add_argument("--engine", default="auto", choices=["auto", "fast", "hooks"],
                       help="auto (fast engine when possible), fast, or hooks")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar or notes on stderr")
    sweep.add_argument("--no-fp32-check", action="store_true",
                       help="with --dtype bfloat16/float16, skip the fp32 rerun that measures their error")

    sub.add_parser("models", help="list the model names this tool knows")
    return parser


def _check_common(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise InterpError(f"--top-k {args.top_k} must be at least 1; use e.g. --top-k 10")


def _check_writable(out: str) -> None:
    """Fail before a long sweep, not after it, when --out cannot be written."""
    path = Path(out)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise InterpError(f"cannot write --out {out!r} ({err.strerror}); pass a writable path") from None


def _load(args: argparse.Namespace):
    from ._models import load_model

    _check_common(args)

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


def read_prompts_file(path: str) -> tuple[list[str], list[str]]:
    """``prompt<TAB>target`` lines or JSON lines; blank lines and ``#`` comments are skipped."""
    file = Path(path)
    if not file.is_file():
        raise InterpError(f"--prompts-file {path!r} does not exist; pass a text or JSON-lines file")
    prompts, targets = [], []
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InterpError(f"--prompts-file {path!r} is not UTF-8 text; save it as UTF-8") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.lstrip().startswith("{"):
            try:
                item = json.loads(line)
                prompt, target = item["prompt"], item["target"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InterpError(
                    f"{path}:{number} is not a JSON object with 'prompt' and 'target'; "
                    'write {"prompt": "...", "target": " word"}'
                ) from None
        else:
            if "\t" not in line:
                raise InterpError(
                    f"{path}:{number} has no tab between prompt and target; "
                    "write 'prompt<TAB>target' (the target keeps its leading space)"
                )
            prompt, target = line.split("\t", 1)
        prompts.append(prompt)
        targets.append(target)
    if not prompts:
        raise InterpError(f"--prompts-file {path!r} holds no prompts; add 'prompt<TAB>target' lines")
    return prompts, targets


_OUT_FORMATS = (".csv", ".json", ".parquet")


def write_frame(frame: Any, path: Path, meta: dict[str, Any]) -> None:
    """Write sweep rows by extension: .csv, .json (with ``meta``) or .parquet."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".json":
        path.write_text(json.dumps({**meta, "rows": frame.to_dict("records")}, indent=2))
    elif suffix == ".parquet":
        try:
            frame.to_parquet(path, index=False)
        except ImportError:
            raise InterpError(
                "writing .parquet needs pyarrow; `pip install pyarrow`, or use .csv/.json"
            ) from None
    else:
        raise InterpError(f"--out {str(path)!r} has an unknown extension; use .csv, .json or .parquet")


def _sweep_table(frame: Any) -> str:
    from ._format import table

    multi_prompt = frame["prompt_index"].nunique() > 1
    if len(frame) > 240:
        grouped = frame.groupby(["layer", "factor"], sort=True).agg(
            delta_loss=("delta_loss", "mean"), lower=("delta_loss", lambda d: float((d < 0).mean())),
            pearson_r=("pearson_r", "mean"), kl=("kl", "mean"), n=("delta_loss", "size"),
        ).reset_index()
        rows = [[int(r.layer), r.factor, r.delta_loss, r.lower, r.pearson_r, r.kl, int(r.n)]
                for r in grouped.itertuples()]
        return "mean over prompts (all rows in --out / --json)\n" + table(
            ["layer", "factor", "mean Δloss", "frac lower", "mean r", "mean KL", "n"], rows,
            [None, "g", "+.4f", ".2f", ".4f", ".4f", None])
    headers = (["prompt"] if multi_prompt else []) + [
        "layer", "factor", "loss", "Δloss", "rank", "r", "KL", "top-1"]
    rows = [
        ([int(r.prompt_index)] if multi_prompt else []) + [
            int(r.layer), r.factor, r.target_loss, r.delta_loss, int(r.target_rank),
            r.pearson_r, r.kl, repr(r.top1_token)[1:-1]]
        for r in frame.itertuples()
    ]
    fmts = ([None] if multi_prompt else []) + [None, "g", ".4f", "+.4f", None, ".4f", ".4f", None]
    first = frame.iloc[0]
    head = (f"clean loss {first.clean_loss:.4f}, clean rank {int(first.clean_rank)}\n"
            if not multi_prompt else "")
    return head + table(headers, rows, fmts)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ._sweep import parse_factors, sweep

    if args.factors is not None and args.factor is not None:
        raise InterpError("give --factor or --factors, not both; e.g. --factors 0.5,1,1.5")
    spec = args.factors if args.factors is not None else (args.factor or "0.6")
    if args.factors is None:
        try:
            value = float(spec)
        except ValueError:
            raise BadFactorError(f"--factor {spec!r} is not a number; use e.g. --factor 0.6") from None
        if not math.isfinite(value):
            raise BadFactorError(f"--factor {spec} is not finite; use e.g. --factor 0.6")
    factors = parse_factors(spec)
    if args.max_batch is not None and args.max_batch < 1:
        raise InterpError(f"--max-batch {args.max_batch} must be at least 1; use e.g. --max-batch 64")
    if args.out and Path(args.out).suffix.lower() not in _OUT_FORMATS:
        raise InterpError(f"--out {args.out!r} has an unknown extension; use .csv, .json or .parquet")
    if args.out:
        _check_writable(args.out)
    if args.prompts_file:
        prompts, targets = read_prompts_file(args.prompts_file)
    else:
        prompts, targets = [args.prompt], [args.target]
    model = _load(args)
    frame = sweep(
        model, prompts, targets, args.layers, factors,
        prepend_bos=True if args.prepend_bos else None, max_batch=args.max_batch,
        engine=args.engine, progress=False if args.quiet else None, verbose=not args.quiet,
    )
    from ._models import model_info, resolve_dtype

    meta = {
        "model": model_info(model).name,
        "dtype": model_info(model).dtype,
        "engine": frame.attrs["engine"],
        "prepend_bos": frame.attrs["prepend_bos"],
        "factors": factors,
        "n_rows": len(frame),
    }
    import torch

    if resolve_dtype(args.dtype) in (torch.bfloat16, torch.float16) and not args.no_fp32_check:
        # Reduced precision reports its error against fp32 instead of hiding it.
        from ._models import load_model
        from ._sweep import max_abs_diff

        del model
        model32 = load_model(args.model, device=args.device, dtype="float32")
        frame32 = sweep(
            model32, prompts, targets, args.layers, factors,
            prepend_bos=True if args.prepend_bos else None, max_batch=args.max_batch,
            engine=args.engine, progress=False if args.quiet else None, verbose=not args.quiet,
        )
        meta["max_abs_diff_vs_float32"] = max_abs_diff(frame, frame32)
    if args.out:
        write_frame(frame, Path(args.out), meta)
    if args.json:
        print(json.dumps({**meta, "rows": frame.to_dict("records")}, indent=2))
    else:
        print(f"model {meta['model']} | {meta['dtype']} | engine {meta['engine']} | "
              f"{len(frame)} interventions")
        print(_sweep_table(frame))
        if "max_abs_diff_vs_float32" in meta:
            err = meta["max_abs_diff_vs_float32"]
            print(f"{meta['dtype']} vs float32 (same sweep rerun in fp32): max |Δ| "
                  + ", ".join(f"{k} {v:.2e}" for k, v in err.items() if k != "top1_changed_frac")
                  + f"; top-1 token differs in {err['top1_changed_frac']:.1%} of rows")
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


_NEGATIVE_OK = ("--scale", "--layers", "--factor", "--factors")


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
        if args.command != "models":
            _check_common(args)
        return handler(args)
    except (_UsageError, InterpError) as err:
        print(f"interp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
