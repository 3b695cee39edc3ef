"""End to end on a tiny Llama saved to disk: quantize -> save -> reload with transformers (same logits), the
perplexity protocol, and the CLI (run / eval / compare / sensitivity, bad input refused)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import SHARED_DATA
from fmgauge.cli import app
from fmgauge.quantization.text_data import eval_windows

runner = CliRunner()


def save_tiny_llama(path, *, hidden: int = 64, zero_head: bool = False):
    """A tiny Llama + a word-level tokenizer over WikiText-2's 255 commonest words (+ [UNK]), saved to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Counter((SHARED_DATA / "wikitext2_tokenized" / "valid.txt").read_text(encoding="utf-8").split())
    vocab = {"[UNK]": 0, **{w: i + 1 for i, (w, _) in enumerate(words.most_common(255))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[UNK]")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if zero_head:
        model.lm_head.weight.data.zero_()
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _env(fmgauge_env):
    return fmgauge_env


def test_eval_windows_score_every_token_once():
    stream = torch.arange(103)
    for context, stride in [(16, 16), (16, 5), (16, 1), (200, 200)]:
        w = eval_windows(stream, context, stride)
        # sliding: every token but the very first is scored once; non-overlapping: each window's first is not
        want = len(stream) - (len(w) if stride == context else 1)
        assert sum(n for _, _, n in w) == want, (context, stride)
        assert all(e - b <= context and n <= e - b - 1 for b, e, n in w)
    assert eval_windows(stream, 16, 16)[:2] == [(0, 16, 15), (16, 32, 15)]


def test_uniform_model_has_perplexity_equal_to_vocab(tmp_path):
    from fmgauge.core.text_models import load_text_model
    from fmgauge.quantization.evaluate import EvalConfig, perplexity
    from fmgauge.quantization.text_data import TextSource, token_stream

    tm = load_text_model(str(save_tiny_llama(tmp_path / "u", zero_head=True)))
    stream = token_stream(tm.tokenizer, TextSource("wikitext2", "test"))
    res = perplexity(tm.model, stream, EvalConfig(context=64, stride=32, max_windows=3), progress=False)
    assert res.ppl == pytest.approx(256, rel=1e-4) and res.n_windows == 3 and res.total_windows > 1000
    assert "context 64, stride 32, first 3 of" in res.protocol


@pytest.mark.parametrize("method", ["awq", "sens-gptq"])
def test_saved_model_reloads_with_transformers_and_same_logits(tiny_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    from fmgauge.quantization.pipeline import RunConfig, load_packed, run_quantization

    cfg = RunConfig.model_validate({"model": str(tiny_dir), "quant": {"method": method, "bits": 3, "group_size": 32},
                                    "calib": {"n_samples": 4, "seqlen": 32}, "format": "fmgauge"})
    res = run_quantization(cfg, tmp_path / "q", progress=False)
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = res.model(ids).logits
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "q").eval()(ids).logits
    assert torch.equal(want, got)
    packed = load_packed(tmp_path / "q")
    weights = dict(res.model.named_parameters())
    assert len(packed) == 14
    for n, qw in packed.items():
        assert torch.allclose(qw.dequantize(), weights[f"{n}.weight"], atol=1e-6)
        assert int(qw.codes.max()) <= 7
    rec = json.loads((tmp_path / "q" / "quantization.json").read_text())
    assert rec["config"]["method"] == method and rec["calibration"]["n_sequences"] == 4
    assert rec["size"]["code_bits_per_weight"] == 3 and rec["quantization_usage"]["seconds"] > 0
    qc = json.loads((tmp_path / "q" / "quantization_config.json").read_text())
    assert qc["bits"] == 3 and qc["quant_method"] == f"fmgauge-{method}"


def test_sequential_mixed_precision_end_to_end(tiny_dir, tmp_path):
    """mixed = sens-GPTQ block by block with the FP capture's bit allocation: some groups at 4 bits, the rest at 3."""
    from fmgauge.quantization.pipeline import RunConfig, run_quantization

    cfg = RunConfig.model_validate({"model": str(tiny_dir), "quant": {"method": "mixed", "bits": 3, "group_size": 32,
                                                                       "mixed_fraction": 0.25},
                                    "calib": {"n_samples": 4, "seqlen": 32}, "format": "fmgauge"})
    res = run_quantization(cfg, tmp_path / "m", progress=False, use_cache=False)
    rec = res.record
    assert rec["calibration"]["sequential"] and rec["calibration"]["gradients"]
    bits = torch.cat([qw.bits for qw in res.qweights.values()])
    assert set(bits.tolist()) == {3, 4}
    assert 3 < rec["size"]["code_bits_per_weight"] < 4 and len(res.qweights) == 14


def test_cli_run_eval_and_bad_input(tiny_dir, tmp_path):
    out = tmp_path / "q"
    r = runner.invoke(app, ["quantize", "run", "--model", str(tiny_dir), "--method", "gptq", "--bits", "4",
                            "--group-size", "32", "--n-samples", "4", "--seqlen", "32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
    r = runner.invoke(app, ["quantize", "eval", str(out), "--context", "64", "--max-windows", "2", "--kl-windows", "2",
                            "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "e.json").read_text())
    assert row["kl"] > 0 and row["reference"] == str(tiny_dir) and row["bits"] == 4 and row["n_windows"] == 2
    assert row["format"] == "compressed-tensors" and "compressed-tensors" in row["loader"] and row["on_disk_mb"] > 0
    for args, msg in [(["--bits", "9"], "bits must be an integer in 2..8"),
                      (["--group-size", "64", "--no-ragged"], "does not divide the input width"),
                      (["--method", "gtpq"], "Did you mean 'gptq'")]:
        r = runner.invoke(app, ["quantize", "run", "--model", str(tiny_dir), "--out", str(tmp_path / "x"), *args])
        assert r.exit_code != 0 and msg in str(r.exception), (args, r.exception)


def test_cli_compare_resumes_and_reports(tiny_dir, tmp_path):
    args = ["quantize", "compare", "--model", str(tiny_dir), "--methods", "rtn,sens-awq", "--bits", "2,4",
            "--group-size", "32", "--n-samples", "4", "--seqlen", "32", "--context", "64", "--max-windows", "3",
            "--kl-windows", "2", "--out", str(tmp_path / "c")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    import pandas as pd

    df = pd.read_parquet(tmp_path / "c" / "results.parquet")
    assert sorted(df.method) == ["fp", "rtn", "rtn", "sens-awq", "sens-awq"]
    q = df[df.method != "fp"].set_index(["method", "bits"])
    assert (q.kl > 0).all()
    assert q.loc[("rtn", 2), "kl"] > q.loc[("rtn", 4), "kl"]  # fewer bits move the model further from FP
    # every row's deployable file was written and measured: compressed-tensors, smaller at 2 bits than at 4
    assert (q.file_format == "compressed-tensors").all() and (q.on_disk_mb > 0).all()
    assert q.loc[("rtn", 2), "on_disk_mb"] < q.loc[("rtn", 4), "on_disk_mb"]
    assert (tmp_path / "c" / "report.html").exists() and (tmp_path / "c" / "figures" / "ppl_vs_bits.png").exists()
    # paired per-window tests: one per method pair per setting, on the same 3 windows, from the stored window NLLs
    pairs = json.loads((tmp_path / "c" / "summary.json").read_text())["paired"]
    assert sorted((p["bits"], p["windows"]) for p in pairs) == [(2, 3), (4, 3)]
    for p in pairs:
        wa, wb = (json.loads((tmp_path / "c" / "windows" / f"{m}-w{p['bits']}-g32.json").read_text())
                  for m in (p["a"], p["b"]))
        assert p["mean_dnll"] == pytest.approx(sum(a - b for a, b in zip(wa, wb, strict=True)) / 3)
        assert p["p_sign_flip"] >= 0.25  # 3 windows: the smallest attainable two-sided p is 2/2**3
    assert "Paired comparisons" in (tmp_path / "c" / "report.md").read_text()
    before = pd.read_sql_query("SELECT id, finished_at FROM trials", __import__("sqlite3").connect(
        tmp_path / "c" / "trials.sqlite"))
    assert runner.invoke(app, args).exit_code == 0  # resume: nothing recomputed
    after = pd.read_sql_query("SELECT id, finished_at FROM trials", __import__("sqlite3").connect(
        tmp_path / "c" / "trials.sqlite"))
    assert before.sort_values("id").equals(after.sort_values("id"))


def test_cli_sensitivity_writes_report(tiny_dir, tmp_path):
    r = runner.invoke(app, ["quantize", "sensitivity", "--model", str(tiny_dir), "--n-samples", "4", "--seqlen", "32",
                            "--blocks", "1", "--gt-group", "32", "--heldout-windows", "2", "--heldout-len", "32",
                            "--n-boot", "100", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert s["meta"]["gt_layers"] and all(".1." in n for n in s["meta"]["gt_layers"])
    assert (tmp_path / "s" / "figures" / "heatmap_layers.png").exists()
    assert "Spearman" in (tmp_path / "s" / "report.md").read_text()


def test_shipped_configs_validate():
    from fmgauge.core.config import load_config
    from fmgauge.quantization.compare import CompareConfig
    from fmgauge.quantization.pipeline import RunConfig
    from fmgauge.quantization.study import SensitivityConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "quantization"
    kinds = {"compare": CompareConfig, "sensitivity": SensitivityConfig, "run": RunConfig}
    paths = sorted(root.glob("*.yaml"))
    assert len(paths) >= 3
    for p in paths:
        cfg = load_config(kinds[p.stem.split("-")[0]], p)
        assert cfg.model == "smollm2-135m"


def test_paired_tests_find_a_planted_difference_and_not_a_null(tmp_path):
    import numpy as np
    import pandas as pd

    from fmgauge.core.store import RunStore
    from fmgauge.quantization.compare import _save_windows, paired_tests

    store = RunStore(tmp_path)
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.3, 40)  # per-window NLL varies a lot more than the effect
    _save_windows(store, "x-w3-g128", list(base - 0.02 + rng.normal(0, 0.005, 40)))  # planted: x better by 0.02
    _save_windows(store, "y-w3-g128", list(base))
    _save_windows(store, "z-w3-g128", list(base + rng.normal(0, 0.005, 40)))  # null vs y
    df = pd.DataFrame({"method": ["x", "y", "z"], "bits": 3, "group_size": 128, "ppl": [19.6, 20.0, 20.01]})
    pairs = paired_tests(tmp_path, df).set_index(["a", "b"])
    xy = pairs.loc[("x", "y")]
    assert xy.dnll_hi < 0 and xy.p_sign_flip < 0.001 and xy.mde_nll < 0.02
    yz = pairs.loc[("y", "z")]
    assert yz.dnll_lo < 0 < yz.dnll_hi
