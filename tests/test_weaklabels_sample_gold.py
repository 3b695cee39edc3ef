"""sample-gold: a stratified gold design labels a rare weak class, its weights make weighted AUCs unbiased, and
``decide`` reads them back from the gold file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmgauge.cli import app
from fmgauge.weaklabels.gold_auc import weighted_aucs
from fmgauge.weaklabels.sample_gold import allocate, sample_gold


def test_allocation_sums_to_m_and_gives_a_rare_stratum_its_share():
    n = allocate(np.array([960, 40]), 20, "sqrt")
    assert n.sum() == 20 and n[1] >= 3  # √40/(√960+√40) ≈ 0.17 of 20; proportional would give 1
    assert allocate(np.array([960, 40]), 20, "proportional").tolist() == [18, 2]  # the floor of 2 lifts it
    assert allocate(np.array([960, 40]), 20, "equal").tolist() == [10, 10]
    assert allocate(np.array([960, 3, 0]), 10, "equal").tolist() == [7, 3, 0]  # a stratum holds only 3


def test_a_rare_weak_class_is_labelled_where_a_random_draw_misses_it():
    weak = np.array([0] * 960 + [1] * 40)
    misses = [np.bincount(weak[np.random.default_rng(s).choice(1000, 20, replace=False)], minlength=2)[1] == 0
              for s in range(200)]
    assert np.mean(misses) > 0.35  # a random gold set of 20 holds no item of the 4% class ~44% of the time
    for s in range(20):
        d = sample_gold(weak, 20, 2, seed=s)
        assert len(set(d.index)) == 20 and (weak[d.index] == d.stratum).all()
        assert (d.stratum == 1).sum() >= 3
    assert d.weights.mean() == pytest.approx(1.0)
    w0, w1 = d.weights[d.stratum == 0][0], d.weights[d.stratum == 1][0]
    assert w0 / w1 == pytest.approx((960 / d.drawn[0]) / (40 / d.drawn[1]))  # inverse inclusion probabilities


def test_weighted_auc_of_a_stratified_sample_is_unbiased_for_the_population():
    """A score whose AUC differs between the weak strata: the unweighted AUC of a stratified sample is biased
    towards the over-sampled stratum; the design-weighted one recovers the population AUC on average."""
    rng = np.random.default_rng(0)
    n = 4000
    weak = (rng.random(n) < 0.1).astype(int)
    y = np.where(weak == 1, rng.random(n) < 0.5, rng.random(n) < 0.05).astype(int)
    s = y * np.where(weak == 1, 0.3, 2.0) + rng.normal(size=n)  # ranks well among weak-0, poorly among weak-1
    truth = float(weighted_aucs(y, 2, np.ones((1, n)), scores=np.c_[-s, s])[0])
    plain, weighted = [], []
    for seed in range(150):
        d = sample_gold(weak, 200, 2, allocation="equal", seed=seed)
        yy, sc = y[d.index], np.c_[-s[d.index], s[d.index]]
        if yy.min() == yy.max():
            continue
        plain.append(weighted_aucs(yy, 2, np.ones((1, len(yy))), scores=sc)[0])
        weighted.append(weighted_aucs(yy, 2, d.weights[None], scores=sc)[0])
    assert abs(np.mean(weighted) - truth) < 0.01 < abs(np.mean(plain) - truth)


def test_cli_round_trip_sample_label_decide(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.15).astype(int)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2.5 * y
    weak = np.where(rng.random(n) < 0.85, y, 1 - y)
    ids = np.array([f"t{i}" for i in range(n)])
    names = np.array(["no", "yes"])
    pd.DataFrame({"id": ids, "label": names[weak]}).to_csv(tmp_path / "out.csv", index=False)
    np.savez(tmp_path / "x.npz", ids=ids, features=x)
    res = CliRunner().invoke(app, ["weak-labels", "sample-gold", "--labeler-outputs", str(tmp_path / "out.csv"),
                                   "--m", "24", "--out", str(tmp_path / "gold.csv")])
    assert res.exit_code == 0, res.output
    gold = pd.read_csv(tmp_path / "gold.csv")
    assert list(gold.columns) == ["id", "weak_label", "weight", "label"] and len(gold) == 24
    assert gold.weight.mean() == pytest.approx(1.0, abs=1e-4) and gold.label.isna().all()
    pos = dict(zip(ids, y, strict=True))
    gold["label"] = [names[pos[i]] for i in gold.id]  # the user labels them
    gold.to_csv(tmp_path / "gold.csv", index=False)
    res = CliRunner().invoke(app, ["weak-labels", "decide", "--gold", str(tmp_path / "gold.csv"),
                                   "--labeler-outputs", str(tmp_path / "out.csv"), "--features",
                                   str(tmp_path / "x.npz"), "--no-curve", "--max-pairs", "40", "--json",
                                   str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    d = pd.read_json(tmp_path / "d.json", typ="series")
    assert d["weighted"] and d["pool_size"] == n - 24
    assert abs(d["labeler_summary"]["prior"][1]["value"] - y.mean()) < 0.1
    assert "weighted (stratified gold set)" in " ".join(res.output.split())
