"""The decision-rule evaluation: regret, hit rates on decisive cells and abstention against the trivial policies,
on a hand-built sweep with known answers, with intervals that resample seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmgauge.weaklabels.rule_eval import conclusion, evaluate


def _sweep(delta: dict[int, list[float]], seeds=(0, 1, 2, 3)) -> pd.DataFrame:
    """Sweep rows for one student ``s`` and labeler ``L``: gold AUC 0.7 (+0.01·seed), gold+weak = gold + delta."""
    rows = []
    for n, ds in delta.items():
        for s, d in zip(seeds, ds, strict=True):
            g = 0.7 + 0.01 * s
            rows += [{"student": "s", "labeler": None, "condition": "gold", "n_gold": n, "seed": s, "auc": g},
                     {"student": "s", "labeler": "L", "condition": "gold+weak", "n_gold": n, "seed": s,
                      "auc": g + d}]
    return pd.DataFrame(rows)


def _rules(choices: dict[tuple[int, int], tuple[str, str]]) -> pd.DataFrame:
    """Rule rows of the ``auc`` rule: (n_gold, seed) -> (verdict, choice)."""
    return pd.DataFrame([{"kind": "rule", "labeler": "L", "features": "raw", "n_gold": n, "seed": s, "rule": "auc",
                          "verdict": v, "choice": c} for (n, s), (v, c) in choices.items()])


def test_known_regret_hit_rate_and_abstention():
    res = _sweep({20: [0.10, 0.12, 0.09, 0.11]})  # weak labels clearly help at n_gold = 20 (decisive, +)
    rules = _rules({(20, 0): ("use-weak-labels", "use-weak-labels"), (20, 1): ("use-weak-labels", "use-weak-labels"),
                    (20, 2): ("uncertain", "use-weak-labels"), (20, 3): ("gold-only", "gold-only")})
    ev, cells = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["auc"]["regret"]["value"] == pytest.approx(0.11 / 4)
    assert head["always-weak"]["regret"]["value"] == pytest.approx(0.0)
    assert head["always-gold"]["regret"]["value"] == pytest.approx((0.10 + 0.12 + 0.09 + 0.11) / 4)
    assert head["auc"]["hit_rate"]["value"] == pytest.approx(0.75)
    assert head["auc"]["abstain"]["value"] == pytest.approx(0.25)
    assert head["auc"]["decisive_cells"] == 4 and head["auc"]["hit_rate_committed"] == pytest.approx(2 / 3)
    vs = head["auc"]["vs_trivial"]
    assert vs["baseline"] == "always-weak" and vs["value"] == pytest.approx(0.11 / 4)
    r = head["auc"]["regret"]
    assert r["lo"] <= r["value"] <= r["hi"] and r["hi"] > r["lo"]  # seeds resampled: a real interval
    assert ev["best_rule"] == "auc" and ev["best_trivial"] == "always-weak" and ev["headline_m"] == 20
    assert len(cells) == 4 * 3  # 4 seeds x (auc, always-weak, always-gold)
    assert "With 20 gold labels" in conclusion(ev) and "always-weak" in conclusion(ev)


def test_cells_within_noise_are_not_decisive():
    res = _sweep({20: [0.01, -0.01, 0.02, -0.02]})  # seed-mean 0, CI straddles 0
    rules = _rules({(20, s): ("use-weak-labels", "use-weak-labels") for s in range(4)})
    ev, cells = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["auc"]["decisive_cells"] == 0 and np.isnan(head["auc"]["hit_rate"]["value"])
    assert (cells.target == 0).all()


def test_a_rule_that_follows_the_sign_has_zero_regret_and_beats_both_trivial_policies():
    res = _sweep({10: [0.1, 0.1, 0.1, 0.1], 50: [-0.1, -0.1, -0.1, -0.1]})
    rules = _rules({**{(10, s): ("use-weak-labels", "use-weak-labels") for s in range(4)},
                    **{(50, s): ("gold-only", "gold-only") for s in range(4)}})
    ev, _ = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    overall = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == "all"}
    assert overall["auc"]["regret"]["value"] == pytest.approx(0.0)
    assert overall["always-weak"]["regret"]["value"] == pytest.approx(0.05)
    assert overall["always-gold"]["regret"]["value"] == pytest.approx(0.05)
    assert overall["auc"]["hit_rate"]["value"] == 1.0


def test_trivial_policies_are_scored_on_the_cells_the_rules_ran_on():
    """A labeler without rule trials (a matched-rate control) must not enter the trivial policies' scores."""
    res = _sweep({20: [0.1, 0.1, 0.1, 0.1]})
    other = res[res.condition == "gold+weak"].assign(labeler="control", auc=lambda d: d.auc - 0.3)
    rules = _rules({(20, s): ("use-weak-labels", "use-weak-labels") for s in range(4)})
    ev, cells = evaluate(pd.concat([res, other]), rules, {"s": "raw"}, [0, 1, 2, 3])
    assert set(cells.labeler) == {"L"}
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["always-weak"]["cells"] == head["auc"]["cells"] == 4
    assert head["always-weak"]["regret"]["value"] == pytest.approx(0.0)


def test_pool_rules_are_also_scored_with_the_weak_fallback():
    res = _sweep({20: [0.10, 0.12, 0.09, 0.11]})
    rules = _rules({(20, s): ("uncertain", "gold-only") for s in range(4)}).assign(rule="cv-delta")
    ev, _ = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["cv-delta"]["regret"]["value"] == pytest.approx(0.105)  # the lean: gold-only, wrong every time
    assert head["cv-delta (uncertain→weak)"]["regret"]["value"] == pytest.approx(0.0)
    assert ev["best_rule"] == "cv-delta (uncertain→weak)"
