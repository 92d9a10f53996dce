"""Benchmark: the naive TransformerLens loop vs interp's sweep engine, side by side.

For each case it times, on the same machine in one run:

* naive: one ``model.run_with_hooks`` per intervention (a hook on ``blocks.L.hook_resid_post``
  that multiplies by the factor), under ``torch.inference_mode()``, metrics from the logits;
* engine: ``interp.sweep(..., engine="fast")`` (prefix reuse, rows join after their layer,
  scored positions only);
* hooks: ``interp.sweep(..., engine="hooks")`` (batched per-row factors through the bridge),

and prints wall time (min / median of --repeats runs), speed-up over naive, peak RSS of a
process that ran only that method, achieved GFLOP/s against a matmul peak measured in the
same process, and max |Δ| of every metric against the naive loop.

The naive loop is slow (~0.4 s per intervention for GPT-2 Medium on 2 cores), so by default
it runs on a seeded random sample of the interventions (``--naive-sample``) and its per-
intervention time is extrapolated to the full grid (stated in the table; the clean runs, one
per prompt, are timed once and not extrapolated); ``--naive-sample 0`` runs all of them.

    python benchmarks/sweep.py                                # all cases, CPU, fp32
    python benchmarks/sweep.py --cases gpt2-medium --naive-sample 0
    python benchmarks/sweep.py --device cuda --dtypes float32,tf32,bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ["target_loss", "entropy", "pearson_r", "kl", "mean_logit_shift", "logit_std_ratio"]
TOKENIZER = Path(os.environ.get("INTERP_GPT2_TOKENIZER",
                                Path(__file__).resolve().parents[1] / "tests" / "data" / "gpt2-tokenizer"))
CHALLENGE = "I have no special talents. I am only passionately"

# Sentences cut at different lengths for the mixed-length case; the next word is the target.
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us, we were all going direct "
    "to Heaven, we were all going direct the other way"
)


def _cases():
    return {
        "gpt2-medium": dict(model="gpt2-medium-shape", prompts="challenge", layers="all",
                            factors="0:2:0.1"),
        "smollm2": dict(model="smollm2-135m-instruct", prompts="challenge", layers="all",
                        factors="0:2:0.1"),
        "mixed": dict(model="gpt2-medium-shape", prompts="mixed32", layers="all",
                      factors="0.0,0.5,1.0,1.5,2.0"),
    }


def build_model(name, device, dtype):
    import torch

    import interp

    if name == "gpt2-medium-shape":
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
        torch.manual_seed(0)
        cfg = GPT2Config(n_layer=24, n_embd=1024, n_head=16, n_positions=1024,
                         attn_implementation="eager")
        return interp.from_hf(GPT2LMHeadModel(cfg), tok, name=name, device=device, dtype=dtype)
    return interp.load_model(name, device=device, dtype=dtype)


def build_prompts(kind, model):
    import interp

    if kind == "challenge":
        return [CHALLENGE], [" curious"]
    tok = interp.tokenizer_of(model)
    words = TEXT.split(" ")
    prompts, targets = [], []
    for i in range(32):
        cut = 3 + (i * 7) % 16  # 3..18 words (about 4..22 tokens), spread
        prompts.append(" ".join(words[:cut]))
        targets.append(" " + words[cut])
    for t in targets:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) >= 1
    return prompts, targets


def flops_per_row(model, n_pos, layer, full):
    """Forward FLOPs (2 per multiply-add) for one intervention row."""
    cfg = model.original_model.config
    d = model.cfg.d_model
    vocab = model.cfg.d_vocab
    if cfg.model_type == "gpt2":
        h, hd, kv, mlp, mlp_mats = cfg.n_head, d // cfg.n_head, cfg.n_head, 4 * d, 2
    else:
        h = cfg.num_attention_heads
        hd = getattr(cfg, "head_dim", None) or d // h
        kv, mlp, mlp_mats = cfg.num_key_value_heads, cfg.intermediate_size, 3
    qo = 2 * 2 * d * h * hd
    kvf = 2 * 2 * d * kv * hd
    ffn = 2 * mlp_mats * d * mlp
    attn = lambda q: 2 * 2 * q * n_pos * h * hd  # scores and weighted sum (upper bound)
    per_block_all = n_pos * (qo + kvf + ffn) + attn(n_pos)
    n_layers = model.cfg.n_layers
    if full:
        return n_layers * per_block_all + n_pos * 2 * d * vocab
    after = n_layers - 1 - layer
    if after == 0:
        return 2 * d * vocab
    last = n_pos * kvf + (qo + ffn) + attn(1)
    return (after - 1) * per_block_all + last + 2 * d * vocab


def matmul_peak(device, dtype):
    import torch

    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return best


def naive_setup(model, prompts, targets):
    """The naive loop's clean runs, once per prompt (outside the timed, extrapolated part)."""
    import torch

    import interp
    from interp._sweep import _clean_stats

    device = next(model.parameters()).device
    examples = [interp.encode(model, p, t) for p, t in zip(prompts, targets)]
    with torch.inference_mode():
        cleans = [model(e.tokens(device))[0, e.target_positions] for e in examples]
    return examples, [_clean_stats(c[None, 0]) for c in cleans]


def naive_loop(model, setup, rows):
    """One run_with_hooks per intervention; returns {(p, layer, factor): metrics}."""
    import torch

    from interp._sweep import _metrics

    def scale(resid, hook, factor):
        return resid * factor

    out = {}
    device = next(model.parameters()).device
    examples, stats = setup
    with torch.inference_mode():
        for p, layer, factor in rows:
            e = examples[p]
            logits = model.run_with_hooks(
                e.tokens(device),
                fwd_hooks=[(f"blocks.{layer}.hook_resid_post", partial(scale, factor=factor))],
            )[0, e.target_positions]
            m = _metrics(logits[None], stats[p], torch.tensor([0], device=device),
                         torch.tensor([e.target_ids], device=device),
                         torch.tensor([len(e.target_ids)], device=device))
            out[(p, layer, factor)] = {k: float(m[k][0]) for k in METRICS}
    return out


def child(args):
    """Run one method for one case and dtype; write timings and metrics as JSON."""
    import torch

    import interp

    torch.manual_seed(0)
    if args.dtype == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        dtype = "float32"
    else:
        dtype = args.dtype
    case = _cases()[args.case]
    model = build_model(case["model"], args.device, dtype)
    prompts, targets = build_prompts(case["prompts"], model)
    layers = interp.parse_layers(case["layers"], model.cfg.n_layers)
    factors = interp.parse_factors(case["factors"])
    grid = [(p, l, f) for p in range(len(prompts)) for l in layers for f in factors]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    examples = [interp.encode(model, p, t) for p, t in zip(prompts, targets)]
    lengths = [len(e.input_ids) for e in examples]
    result = {"n_rows": len(grid), "times": [], "metrics": {}}
    if args.method == "naive":
        # A seeded random sample: a fixed stride could hit the same factor every time.
        rows = grid if args.naive_sample == 0 else sorted(
            random.Random(0).sample(grid, min(args.naive_sample, len(grid))))
        result["n_timed"] = len(rows)
        naive_loop(model, naive_setup(model, prompts, targets), rows[:2])  # warm-up
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            setup = naive_setup(model, prompts, targets)  # once per prompt: not extrapolated
            sync()
            setup_s = time.perf_counter() - start
            metrics = naive_loop(model, setup, rows)
            sync()
            loop_s = time.perf_counter() - start - setup_s
            result["times"].append(setup_s + loop_s * len(grid) / len(rows))
        result["flops"] = sum(flops_per_row(model, lengths[p], l, True) for p, l, _ in grid)
    else:
        interp.sweep(model, prompts, targets, layers[:2], factors[:2], engine=args.method,
                     progress=False, verbose=False)  # warm-up
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            frame = interp.sweep(model, prompts, targets, layers, factors, engine=args.method,
                                 progress=False, verbose=False, max_batch=args.max_batch)
            sync()
            result["times"].append(time.perf_counter() - start)
        result["engine"] = frame.attrs["engine"]
        metrics = {(r.prompt_index, r.layer, r.factor): {k: getattr(r, k) for k in METRICS}
                   for r in frame.itertuples()}
        result["flops"] = sum(flops_per_row(model, lengths[p], l, args.method == "hooks")
                              for p, l, _ in grid)
    result["metrics"] = {json.dumps(list(k)): v for k, v in metrics.items()}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result["matmul_peak_gflops"] = matmul_peak(args.device, torch.float32 if dtype == "float32"
                                               else getattr(torch, dtype))
    Path(args.result).write_text(json.dumps(result))


def run_child(case, method, dtype, opts):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    cmd = [sys.executable, __file__, "--child", "--case", case, "--method", method,
           "--dtype", dtype, "--device", opts.device, "--repeats", str(opts.repeats),
           "--naive-sample", str(opts.naive_sample), "--result", path]
    if opts.max_batch:
        cmd += ["--max-batch", str(opts.max_batch)]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    data = json.loads(Path(path).read_text())
    os.unlink(path)
    return data


def max_diffs(a, b):
    out = {}
    for key in METRICS:
        diffs = [abs(a[k][key] - b[k][key]) for k in a if k in b
                 and a[k][key] == a[k][key] and b[k][key] == b[k][key]]
        out[key] = max(diffs) if diffs else float("nan")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="gpt2-medium,smollm2,mixed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default="float32", help="float32,tf32,bfloat16,float16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-sample", type=int, default=48,
                   help="time the naive loop on this many randomly sampled interventions (0 = all)")
    p.add_argument("--methods", default="naive,fast,hooks")
    p.add_argument("--max-batch", type=int, default=None)
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    import torch

    from interp._format import table

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    for case in args.cases.split(","):
        spec = _cases()[case]
        results = {}
        for dtype in args.dtypes.split(","):
            for method in args.methods.split(","):
                if method == "naive" and dtype != args.dtypes.split(",")[0]:
                    continue  # the naive baseline runs once, in the first dtype
                results[(method, dtype)] = run_child(case, method, dtype, args)
        base_key = ("naive", args.dtypes.split(",")[0])
        base = results.get(base_key)
        ref32 = results.get(("fast", "float32"))
        rows = []
        for (method, dtype), r in results.items():
            t = r["times"]
            diffs = max_diffs(r["metrics"], base["metrics"]) if base and (method, dtype) != base_key else {}
            diffs32 = (max_diffs(r["metrics"], ref32["metrics"])
                       if ref32 and dtype not in ("float32", "tf32") else {})
            label = method + (f" ({r['n_timed']} of {r['n_rows']} timed, extrapolated)"
                              if method == "naive" and r.get("n_timed", r["n_rows"]) < r["n_rows"] else "")
            rows.append([
                label, dtype, min(t), statistics.median(t),
                (min(base["times"]) / min(t)) if base else float("nan"),
                r["peak_rss_gb"], r["flops"] / min(t) / 1e9, r["matmul_peak_gflops"],
                max(diffs.values()) if diffs else float("nan"),
                (max(diffs32.values()) if diffs32 else float("nan")),
            ])
        print(f"\n== {case}: model {spec['model']}, prompts {spec['prompts']}, layers {spec['layers']}, "
              f"factors {spec['factors']}: {results[base_key]['n_rows'] if base else '?'} interventions ==")
        print(table(
            ["method", "dtype", "min s", "median s", "speed-up", "peak RSS GB", "GFLOP/s",
             "matmul peak", "max |Δ| vs naive", "max |Δ| vs fp32 engine"],
            rows, [None, None, ".2f", ".2f", ".1f", ".2f", ".1f", ".1f", ".2e", ".2e"]))
        if base:
            for (method, dtype), r in results.items():
                if (method, dtype) != base_key:
                    d = max_diffs(r["metrics"], base["metrics"])
                    print(f"  {method}/{dtype} max |Δ| per metric vs naive: "
                          + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))


if __name__ == "__main__":
    sys.exit(main())
