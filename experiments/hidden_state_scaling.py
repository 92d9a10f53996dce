"""The "hidden-state scaling and token loss" code challenge, end to end.

Clean run vs ``{2: 0.6}`` on ``blocks.2.hook_resid_post`` (side-by-side top-10 and metrics),
then every layer scaled by 0.6 in turn, then a verdict on each of the challenge's claims.
Writes results.json, sweep.csv and plotly figures (HTML, offline) into --out.

    python experiments/hidden_state_scaling.py                       # embedded SmolLM2, offline
    python experiments/hidden_state_scaling.py --model gpt2-medium   # the challenge's model
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

import interp  # noqa: E402
from interp.cli import parse_scale  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=interp.EMBEDDED_MODEL)
    p.add_argument("--prompt", default=interp.CHALLENGE_PROMPT)
    p.add_argument("--target", default=interp.CHALLENGE_TARGET)
    p.add_argument("--scale", action="append", default=None, metavar="L=F",
                   help="the comparison's scaling dict (default 2=0.6); repeatable")
    p.add_argument("--factor", type=float, default=0.6, help="the sweep's factor (default 0.6)")
    p.add_argument("--layers", default="all", help="layers to sweep (default all)")
    p.add_argument("--prepend-bos", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="outputs/hidden_state_scaling")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)

    try:
        pairs = [parse_scale(s) for s in (args.scale or ["2=0.6"])]
        scales = dict(pairs)
        if len(scales) != len(pairs):
            raise interp.BadFactorError("a layer is given twice in --scale; give each layer once")
        start = time.perf_counter()
        model = interp.load_model(args.model, device=args.device, dtype=args.dtype)
        loaded = time.perf_counter()
        run = interp.run_hidden_state_scaling(
            model, args.prompt, args.target, scales, args.factor, args.layers,
            prepend_bos=True if args.prepend_bos else None,
        )
        paths = interp.write_outputs(run, args.out, plots=not args.no_plots)
    except interp.InterpError as err:
        print(f"hidden_state_scaling: error: {err}", file=sys.stderr)
        return 2
    done = time.perf_counter()
    print(run.format())
    print(f"\nloaded the model in {loaded - start:.1f} s, ran the experiment in {done - loaded:.1f} s")
    print("wrote:\n" + "\n".join(f"  {path}" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
