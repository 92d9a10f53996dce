"""`interp scale --json` on the embedded model vs an independent plain-transformers
implementation of the same experiment: no TransformerLens, no interp code, numpy metrics.

The reference scales the output of ``model.model.layers[L]`` (the decoder layer's output is
the residual stream after the block, i.e. TransformerLens's ``blocks.L.hook_resid_post``)
with a torch forward hook, and computes every metric from scratch in float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

PROMPT = "I have no special talents. I am only passionately"
SCALES = {2: 0.6, 7: 1.3}
TOL = 1e-4


def reference_experiment(folder: str, prompt: str, target: str, scales: dict[int, float], k: int = 10):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    prompt_ids = tok(prompt)["input_ids"]
    target_ids = tok(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids[:-1]])

    def run(scale_map):
        handles = []
        for layer, factor in scale_map.items():
            def hook(module, inputs, output, factor=factor):
                if isinstance(output, tuple):
                    return (output[0] * factor,) + tuple(output[1:])
                return output * factor

            handles.append(model.model.layers[layer].register_forward_hook(hook))
        try:
            with torch.no_grad():
                return model(ids).logits[0].double().numpy()
        finally:
            for h in handles:
                h.remove()

    def log_softmax(x):
        x = x - x.max()
        return x - np.log(np.exp(x).sum())

    def summary(logits):
        final = len(prompt_ids) - 1
        lps = [log_softmax(logits[final + j]) for j in range(len(target_ids))]
        total = float(sum(lp[t] for lp, t in zip(lps, target_ids)))
        lp0 = lps[0]
        order = np.argsort(-lp0)[:k]
        return {
            "target_logprob": total,
            "target_loss": -total,
            "target_rank": int((logits[final] > logits[final][target_ids[0]]).sum()) + 1,
            "entropy": float(-(np.exp(lp0) * lp0).sum()),
            "topk": [{"id": int(i), "prob": float(np.exp(lp0[i]))} for i in order],
        }

    clean, scaled = run({}), run(scales)
    final = len(prompt_ids) - 1
    c, s = clean[final], scaled[final]
    lc, ls = log_softmax(c), log_softmax(s)
    return {
        "prompt_token_ids": prompt_ids,
        "target_token_ids": target_ids,
        "clean": summary(clean),
        "intervened": summary(scaled),
        "pearson_r": float(np.corrcoef(c, s)[0, 1]),
        "mean_logit_shift": float((s - c).mean()),
        "kl": float((np.exp(lc) * (lc - ls)).sum()),
    }


def _cli_json(*args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "interp", "scale", *args, "--json", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.embedded
@pytest.mark.parametrize("target", [" curious", " curious and creative"])
def test_cli_json_matches_plain_transformers(embedded, target):
    scale_args = [a for layer, f in SCALES.items() for a in ("--scale", f"{layer}={f}")]
    got = _cli_json("--model", "smollm2-135m-instruct", "--prompt", PROMPT, "--target", target, *scale_args)
    ref = reference_experiment(embedded.interp_info.path, PROMPT, target, SCALES)

    assert got["model"] == "smollm2-135m-instruct"
    assert got["prepend_bos"] is False  # the tokenizer's own convention: no BOS
    assert got["prompt_token_ids"] == ref["prompt_token_ids"]
    assert got["target_token_ids"] == ref["target_token_ids"]
    assert {int(k): v for k, v in got["scales"].items()} == SCALES
    for key in ("pearson_r", "mean_logit_shift", "kl"):
        assert got[key] == pytest.approx(ref[key], abs=TOL), key
    for run in ("clean", "intervened"):
        for key in ("target_logprob", "target_loss", "entropy"):
            assert got[run][key] == pytest.approx(ref[run][key], abs=TOL), (run, key)
        assert got[run]["target_rank"] == ref[run]["target_rank"]
        assert [t["id"] for t in got[run]["topk"]] == [t["id"] for t in ref[run]["topk"]]
        for g, r in zip(got[run]["topk"], ref[run]["topk"]):
            assert g["prob"] == pytest.approx(r["prob"], abs=TOL)
            assert isinstance(g["token"], str)
    # The intervention must actually do something, or the comparison above proves nothing.
    assert abs(got["intervened"]["target_loss"] - got["clean"]["target_loss"]) > 1e-3
    if len(got["target_token_ids"]) > 1:
        per = got["clean"]["per_token"]
        assert len(per) == len(got["target_token_ids"])
        assert sum(t["logprob"] for t in per) == pytest.approx(got["clean"]["target_logprob"], abs=1e-9)
