"""The experiment's outputs: results.json with a manifest, sweep.csv, offline HTML figures."""

from __future__ import annotations

import csv
import json

import pytest

import interp


def test_write_outputs(tiny_gpt2, tmp_path):
    model = tiny_gpt2.bridge
    run = interp.run_hidden_state_scaling(model, "The cat sat on the", " mat", {1: 0.6}, 0.6)
    paths = interp.write_outputs(run, tmp_path)
    names = {p.name for p in paths}
    assert names == {"results.json", "sweep.csv", "logit_scatter.html", "topk.html", "sweep.html"}
    data = json.loads((tmp_path / "results.json").read_text())
    manifest = data["manifest"]
    assert manifest["model"]["n_layers"] == 4
    assert manifest["versions"]["torch"] and manifest["versions"]["transformer-lens"].startswith("4.3")
    assert manifest["prepend_bos"] is False
    assert data["comparison"]["scales"] == {"1": 0.6}
    assert len(data["sweep"]["rows"]) == 4 and len(data["claims"]) >= 5
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [int(r["layer"]) for r in rows] == [0, 1, 2, 3]
    # Offline: plotly.js sits beside the pages, referenced by relative path, no CDN.
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    html = (tmp_path / "sweep.html").read_text()
    assert 'src="plotly.min.js"' in html and "cdn.plot.ly" not in html
    text = run.format()
    assert "layer sweep" in text and "claims" in text


def test_logit_scatter_uses_every_token_and_marks_the_target(tiny_llama):
    res = interp.compare_scaling(tiny_llama.bridge, "One two three", " four", {2: 0.6})
    fig = interp.logit_scatter(res)
    tokens, identity, shift, target = fig.data
    assert len(tokens.x) == res.clean_logits.numel()
    assert list(identity.x) == list(identity.y)
    assert shift.y[0] - shift.x[0] == pytest.approx(res.mean_logit_shift, abs=1e-9)
    assert target.x[0] == float(res.clean_logits[res.target_token_ids[0]])
    small = interp.logit_scatter(res, max_points=1000)
    assert len(small.data[0].x) <= 1000 + 30
    assert f"{res.pearson_r:.4f}" in fig.layout.title.text
