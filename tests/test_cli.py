"""The `interp` command line: output shape, files, and one-line errors with exit code 2.

Most cases run `interp.cli.main` in-process with the model loader pointed at a session
fixture (loading is tested elsewhere); a few run the real executable to prove that bad input
prints one line, no traceback.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

import interp
from interp import cli


@pytest.fixture
def cli_on(monkeypatch):
    """Run the CLI in-process against a given bridge; returns (rc, stdout, stderr)."""

    def run(model, *argv, capsys):
        monkeypatch.setattr(cli, "_load", lambda args: model)
        rc = cli.main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def test_scale_json_has_the_documented_fields(tiny_gpt2, cli_on, capsys):
    rc, out, err = cli_on(
        tiny_gpt2.bridge, "scale", "--prompt", "The cat sat on the", "--target", " mat",
        "--scale", "1=0.6", "--scale", "-1=2", "--json", capsys=capsys,
    )
    assert rc == 0, err
    data = json.loads(out)
    for key in ("model", "prepend_bos", "prompt_token_ids", "target_token_ids", "scales",
                "clean", "intervened", "pearson_r", "mean_logit_shift", "kl"):
        assert key in data, key
    assert data["scales"] == {"1": 0.6, "3": 2.0}  # -1 normalised to the last of 4 layers
    assert data["target_token_ids"] == tiny_gpt2.bridge.interp_tokenizer(" mat")["input_ids"]
    for run in ("clean", "intervened"):
        summary = data[run]
        assert set(summary) >= {"target_logprob", "target_loss", "target_rank", "topk"}
        assert summary["target_loss"] == pytest.approx(-summary["target_logprob"])
        assert len(summary["topk"]) == 10
        assert all(set(t) >= {"token", "id", "prob"} for t in summary["topk"])
        probs = [t["prob"] for t in summary["topk"]]
        assert probs == sorted(probs, reverse=True)
    # The CLI's numbers are the API's numbers.
    api = interp.compare_scaling(tiny_gpt2.bridge, "The cat sat on the", " mat", {1: 0.6, -1: 2})
    assert data["kl"] == pytest.approx(api.kl, abs=1e-9)
    assert data["intervened"]["target_loss"] == pytest.approx(api.intervened.target_loss, abs=1e-9)


def test_scale_prepend_bos_is_recorded(tiny_gpt2, cli_on, capsys):
    rc, out, _ = cli_on(tiny_gpt2.bridge, "scale", "--prompt", "Hello there", "--target", " friend",
                        "--scale", "0=0.5", "--prepend-bos", "--json", capsys=capsys)
    data = json.loads(out)
    assert rc == 0
    assert data["prepend_bos"] is True
    assert data["prompt_token_ids"][0] == tiny_gpt2.bridge.interp_tokenizer.bos_token_id
    rc, out, _ = cli_on(tiny_gpt2.bridge, "scale", "--prompt", "Hello there", "--target", " friend",
                        "--scale", "0=0.5", "--json", capsys=capsys)
    assert json.loads(out)["prepend_bos"] is False


def test_scale_table_shows_both_top10_lists(tiny_llama, cli_on, capsys):
    rc, out, _ = cli_on(tiny_llama.bridge, "scale", "--prompt", "One two three", "--target", " four",
                        "--scale", "2=0.6", capsys=capsys)
    assert rc == 0
    assert "clean token" in out and "scaled token" in out
    assert "pearson r" in out and "KL(clean || scaled)" in out
    top_rows = [line for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert len(top_rows) >= 10


def test_sweep_writes_csv_and_json(tiny_llama, cli_on, capsys, tmp_path):
    out_csv = tmp_path / "rows.csv"
    rc, out, err = cli_on(tiny_llama.bridge, "sweep", "--prompt", "One two three", "--target", " four",
                          "--factor", "0.6", "--layers", "0-1,3", "--out", str(out_csv), capsys=capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(out_csv.open()))
    assert [int(r["layer"]) for r in rows] == [0, 1, 3]
    assert all(float(r["factor"]) == 0.6 for r in rows)
    api = interp.sweep_layers(tiny_llama.bridge, "One two three", " four", 0.6, [0, 1, 3])
    for row, ref in zip(rows, api.rows):
        assert float(row["target_loss"]) == pytest.approx(ref["target_loss"], abs=1e-6)
        assert float(row["kl"]) == pytest.approx(ref["kl"], abs=1e-6)
    out_json = tmp_path / "rows.json"
    rc, out, _ = cli_on(tiny_llama.bridge, "sweep", "--prompt", "One two three", "--target", " four",
                        "--layers", "all", "--out", str(out_json), "--json", capsys=capsys)
    assert rc == 0
    assert len(json.loads(out_json.read_text())["rows"]) == 4
    assert json.loads(out)["factors"] == [0.6]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["scale", "--scale", "4=0.6"], "out of range"),
        (["scale", "--scale", "-5=0.6"], "out of range"),
        (["scale", "--scale", "1=nan"], "not finite"),
        (["scale", "--scale", "1=inf"], "not finite"),
        (["scale", "--scale", "1:0.6"], "malformed"),
        (["scale", "--scale", "1=abc"], "not a number"),
        (["scale", "--scale", "x=0.6"], "not an integer"),
        (["scale", "--scale", "1=0.5", "--scale", "1=0.7"], "twice"),
        (["scale"], "no --scale"),
        (["scale", "--scale", "1=0.5", "--prompt", ""], "prompt is empty"),
        (["scale", "--scale", "1=0.5", "--prompt", "   "], "prompt is empty"),
        (["scale", "--scale", "1=0.5", "--prompt", "word " * 80], "context is 64 tokens"),
        (["scale", "--scale", "1=0.5", "--target", ""], "target is empty"),
        (["sweep", "--factor", "nan"], "not finite"),
        (["sweep", "--factor", "big"], "not a number"),
        (["sweep", "--layers", "2-9"], "out of range"),
        (["sweep", "--layers", "3-1"], "empty"),
        (["sweep", "--out", "rows.xlsx"], "extension"),
        (["sweep", "--factors", "2:0:0.1"], "empty"),
        (["sweep", "--factors", "0:1"], "malformed"),
        (["sweep", "--factors", "0.5,nan"], "finite"),
        (["sweep", "--factor", "0.5", "--factors", "1,2"], "not both"),
        (["sweep", "--max-batch", "0"], "at least 1"),
        (["sweep", "--prompts-file", "/nonexistent/prompts.tsv"], "does not exist"),
        (["scale", "--scale", "1=0.5", "--top-k", "0"], "at least 1"),
        (["sweep", "--out", "/proc/no-such-dir/rows.csv"], "cannot write"),
        (["scale", "--scale", "1=0.5", "--bogus"], "unrecognized"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_gpt2, cli_on, capsys, argv, needle):
    rc, out, err = cli_on(tiny_gpt2.bridge, *argv, capsys=capsys)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("interp: error: ")
    assert needle in lines[0]
    # Every message names a fix, not just the problem.
    assert any(word in lines[0] for word in ("use", "pass", "give", "add", "shorten", "see", "write")), lines[0]


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "interp", *argv], capture_output=True, text=True,
                          env=env, timeout=300)


def test_executable_unknown_model_offline_is_one_line(tmp_path):
    proc = _run_cli("scale", "--model", "no-such-model", "--scale", "2=0.6")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown model 'no-such-model'" in proc.stderr


def test_executable_missing_weights_offline_names_the_embedded_model(tmp_path):
    env_home = {"HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "interp", "scale", "--model", "gpt2-medium", "--scale", "2=0.6"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env_home},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not available offline" in proc.stderr
    assert "smollm2-135m-instruct" in proc.stderr


@pytest.mark.embedded
def test_executable_layer_out_of_range_on_the_embedded_model(embedded):
    proc = _run_cli("scale", "--scale", "30=0.6", "--device", "cpu")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "layer 30 is out of range for a 30-layer model" in proc.stderr


def test_sweep_factors_and_prompts_file(tiny_gpt2, cli_on, capsys, tmp_path):
    prompts = tmp_path / "prompts.tsv"
    prompts.write_text(
        "# comment lines and blank lines are skipped\n\n"
        "The cat sat on the\t mat\n"
        '{"prompt": "Once upon a", "target": " time"}\n'
    )
    out = tmp_path / "rows.csv"
    rc, stdout, err = cli_on(tiny_gpt2.bridge, "sweep", "--prompts-file", str(prompts), "--factors",
                             "0:1:0.5", "--layers", "0,2", "--out", str(out), "--quiet", capsys=capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 2 * 3
    assert sorted({r["target"] for r in rows}) == [" mat", " time"]
    assert sorted({float(r["factor"]) for r in rows}) == [0.0, 0.5, 1.0]
    # factor 1.0 is the clean run exactly
    for r in rows:
        if float(r["factor"]) == 1.0:
            assert float(r["delta_loss"]) == 0.0 and float(r["kl"]) == 0.0
    assert "engine fast" in stdout


def test_sweep_prompts_file_errors_name_the_line(tiny_gpt2, cli_on, capsys, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("The cat sat on the mat\n")
    rc, _, err = cli_on(tiny_gpt2.bridge, "sweep", "--prompts-file", str(bad), capsys=capsys)
    assert rc == 2 and f"{bad}:1" in err and "tab" in err


def test_negative_factors_and_layers_reach_the_parser(tiny_gpt2, cli_on, capsys):
    rc, out, err = cli_on(tiny_gpt2.bridge, "sweep", "--factors", "-1:1:1", "--layers", "-1",
                          "--json", "--quiet", capsys=capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert data["factors"] == [-1.0, 0.0, 1.0]
    assert {r["layer"] for r in data["rows"]} == {3}
