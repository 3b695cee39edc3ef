"""Sensitivity metrics on a tiny Llama with a planted hot channel: the case all metrics agree on, and the case
(large activations, zero downstream gradient) that separates S_j from activation magnitude."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmgauge.core.stats import rank_correlation_ci
from fmgauge.quantization.calibration import capture
from fmgauge.quantization.sensitivity import METRICS, analyse, channel_metrics, correlation_table

HOT_TOKEN, HOT_DIM, HIDDEN = 7, 5, 64
ATTN_IN = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj")


def planted_model():
    """Tiny Llama whose token HOT_TOKEN lights up only input channel HOT_DIM of block 0 (which no other token uses)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    emb = model.get_input_embeddings().weight.data
    emb[:, HOT_DIM] = 0
    emb[HOT_TOKEN] = 0
    emb[HOT_TOKEN, HOT_DIM] = emb[8:].norm(dim=1).mean()  # same residual norm as other tokens: same gradient scale
    return model


def sequences(hot_at: str, n: int = 8, t: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 64, (n, t), generator=g)
    if hot_at == "middle":
        ids[:, 2:-2:3] = HOT_TOKEN  # every third position, never the last one
    else:
        ids[:, -1] = HOT_TOKEN  # only the last position: its output never reaches any loss term
    return ids


@pytest.fixture(scope="module")
def model():
    return planted_model()


def metrics_of(model, stats, name):
    w = dict(model.named_modules())[name].weight.data
    return {k: v.numpy() for k, v in channel_metrics(w, stats.layers[name]).items()}


def test_hot_channel_with_gradient_is_ranked_first_by_every_metric(model):
    stats = capture(model, sequences("middle"), full_hessian=False, progress=False)
    for name in ATTN_IN:
        m = metrics_of(model, stats, name)
        for metric in METRICS:
            assert int(np.argmax(m[metric])) == HOT_DIM, (name, metric)


def test_hot_channel_without_gradient_separates_fisher_from_act_magnitude(model):
    stats = capture(model, sequences("last", n=32, t=4), full_hessian=False, progress=False)  # short: hot 1 in 4
    for name in ATTN_IN:
        m = metrics_of(model, stats, name)
        assert int(np.argmax(m["act_magnitude"])) == HOT_DIM  # AWQ's metric: the hottest channel
        assert int(np.argmax(m["hessian_diag"])) == HOT_DIM
        rank = int((m["fisher"] > m["fisher"][HOT_DIM]).sum())  # 0 = most sensitive
        assert m["fisher"][HOT_DIM] < 1e-12 * m["fisher"].max() and rank == HIDDEN - 1, (name, rank)


def test_ground_truth_finds_the_hot_group_and_correlations_have_cis(model):
    seqs = sequences("middle")
    stats = capture(model, seqs, full_hessian=False, progress=False)
    heldout = sequences("middle", n=4, t=24) % 64
    res = analyse(model, stats, heldout, gt_blocks=[0], gt_group=16, gt_bits=2, progress=False, n_boot=50)
    t = res.truth
    assert set(t["block"]) == {0} and len(t) == 6 * (HIDDEN // 16) + 96 // 16
    for name in ATTN_IN:  # quantizing the group holding the hot channel moves the token losses most
        rows = t[t.layer == name]
        assert int(rows.loc[rows.delta_loss_rms.idxmax(), "group"]) == HOT_DIM // 16, name
    c = res.correlations
    assert set(c["metric"]) == set(METRICS) and "all" in set(c["type"]) and set(c["target"]) == {"delta_loss",
                                                                                                 "delta_loss_rms"}
    ok = c.dropna(subset=["spearman_lo"])
    assert ((ok.spearman_lo <= ok.spearman) & (ok.spearman <= ok.spearman_hi)).all()
    assert len(res.layers) == 14 and res.layers["top_fisher"].iloc[0] == HOT_DIM


def test_rank_correlation_ci_known_answers():
    x = np.arange(30.0)
    e = rank_correlation_ci(x, x**3, method="spearman", n_boot=200)
    assert e.value == pytest.approx(1.0) and e.lo == pytest.approx(1.0)
    k = rank_correlation_ci(x, -x, method="kendall", n_boot=200)
    assert k.value == pytest.approx(-1.0) and k.hi < -0.99
    rng0 = np.random.default_rng(1)
    k0 = rank_correlation_ci(rng0.normal(size=100), rng0.normal(size=100), method="kendall")
    assert k0.lo < k0.value < k0.hi and k0.lo < 0 < k0.hi and k0.hi - k0.lo < 0.35
    rng = np.random.default_rng(0)
    r = rank_correlation_ci(rng.normal(size=200), rng.normal(size=200), n_boot=300)
    assert r.lo < 0 < r.hi
    df = correlation_table(__import__("pandas").DataFrame(
        {"type": ["a"] * 30, "delta_loss": x, "fisher": x**2, "act_magnitude": -x}), metrics=("fisher", "act_magnitude"),
        targets=("delta_loss",), n_boot=100)
    assert df.set_index(["type", "metric"]).loc[("a", "fisher"), "spearman"] == pytest.approx(1.0)
    assert df.set_index(["type", "metric"]).loc[("a", "act_magnitude"), "kendall"] == pytest.approx(-1.0)
