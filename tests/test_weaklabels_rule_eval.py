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
    assert head["auc"]["decisive_cells"] == 4
    # committed verdicts (3 of 4) scored against each cell's own realised sign: 2 right, the gold-only one wrong
    assert head["auc"]["committed_cells"] == 3
    assert head["auc"]["hit_rate_committed"]["value"] == pytest.approx(2 / 3)
    assert head["auc"]["wide_cells"] == 4 and head["auc"]["pick_rate_wide"]["value"] == pytest.approx(0.75)
    vs = head["auc"]["vs_trivial"]
    assert vs["baseline"] == "always-weak" and vs["value"] == pytest.approx(0.11 / 4)
    r = head["auc"]["regret"]
    assert r["lo"] <= r["value"] <= r["hi"] and r["hi"] > r["lo"]  # seeds resampled: a real interval
    assert ev["best_rule"] == "auc" and ev["best_trivial"] == "always-weak" and ev["headline_m"] == 20
    assert len(cells) == 4 * 3  # 4 seeds x (auc, always-weak, always-gold)
    assert "Over every n_gold of the grid (20)" in conclusion(ev) and "always-weak" in conclusion(ev)


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


def test_pool_rules_are_scored_with_the_labeler_fallback_from_the_auc_rule_rows():
    """Uncertain cv-delta verdicts act as the weak labels where the labeler ranked the gold items acceptably (its AUC
    on them, the auc rule's number, ≥ 0.7 or above the gold-only estimate) and as gold only elsewhere."""
    res = _sweep({20: [0.10, 0.12, -0.09, -0.11]})  # weak labels help on seeds 0, 1 and hurt on 2, 3
    lab_auc = {0: 0.9, 1: 0.62, 2: 0.55, 3: 0.69}  # seed 1: below 0.7 but above its gold-only 0.6
    gold = {0: 0.8, 1: 0.6, 2: 0.8, 3: 0.75}
    cv = _rules({(20, s): ("uncertain", "gold-only") for s in range(4)}).assign(rule="cv-delta")
    auc = _rules({(20, s): ("uncertain", "gold-only") for s in range(4)}).assign(
        labeler_value=[lab_auc[s] for s in range(4)], gold_auc=[gold[s] for s in range(4)])
    cv = cv.assign(labeler_value=0.5, gold_auc=[gold[s] for s in range(4)])
    ev, cells = evaluate(res, pd.concat([cv, auc], ignore_index=True), {"s": "raw"}, [0, 1, 2, 3])
    got = cells[cells.policy == "cv-delta (uncertain→labeler)"].sort_values("seed").choice.tolist()
    assert got == ["use-weak-labels", "use-weak-labels", "gold-only", "gold-only"]
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["cv-delta (uncertain→labeler)"]["regret"]["value"] == pytest.approx(0.0)
    assert head["cv-delta (uncertain→weak)"]["regret"]["value"] == pytest.approx((0.09 + 0.11) / 4)


def test_pool_rules_are_scored_with_the_auto_fallback_from_the_rarer_class_count():
    """Uncertain cv-delta verdicts under ``auto``: the stored lean (the rows' choice) where the gold set held 20 or
    more items of its rarer class; below that the weak labels iff the pool's agreement > 0.52 or the labeler's AUC on
    the gold items is more than 0.1 above the gold-only estimate."""
    res = _sweep({20: [0.10, 0.12, -0.09, -0.11]})  # weak labels help on seeds 0, 1 and hurt on 2, 3
    lab_auc = {0: 0.4, 1: 0.4, 2: 0.85, 3: 0.9}
    agree = {0: 0.6, 1: 0.5, 2: 0.51, 3: 0.6}
    gold = {0: 0.8, 1: 0.8, 2: 0.8, 3: 0.8}
    rare = {0: 4, 1: 25, 2: 10, 3: 20}  # seeds 1 and 3 follow the lean: weak labels on 1, gold only on 3
    lean = {0: "gold-only", 1: "use-weak-labels", 2: "use-weak-labels", 3: "gold-only"}
    cv = _rules({(20, s): ("uncertain", lean[s]) for s in range(4)}).assign(rule="cv-delta")
    auc = _rules({(20, s): ("uncertain", "gold-only") for s in range(4)}).assign(
        labeler_value=[lab_auc[s] for s in range(4)])
    rows = pd.concat([cv.assign(labeler_value=0.5), auc], ignore_index=True).assign(
        gold_auc=lambda d: d.seed.map(gold), gold_min_class=lambda d: d.seed.map(rare),
        agreement=lambda d: d.seed.map(agree))
    ev, cells = evaluate(res, rows, {"s": "raw"}, [0, 1, 2, 3])
    got = cells[cells.policy == "cv-delta (uncertain→auto)"].sort_values("seed").choice.tolist()
    # seed 0: 4 rare, agreement 0.6 -> weak; 1: lean; 2: 10 rare, agreement 0.51, AUC 0.05 above gold -> gold; 3: lean
    assert got == ["use-weak-labels", "use-weak-labels", "gold-only", "gold-only"]
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}
    assert head["cv-delta (uncertain→auto)"]["regret"]["value"] == pytest.approx(0.0)
    # the labeler fallback (bar 0.7 at every m) drops the helpful labels of seeds 0, 1 and keeps the harmful ones of 2, 3
    assert head["cv-delta (uncertain→labeler)"]["regret"]["value"] == pytest.approx((0.10 + 0.12 + 0.09 + 0.11) / 4)
    assert ev["default_policy"] == "delta-worth (uncertain→auto)"


def test_tiny_differences_are_not_printed_as_zero():
    from fmgauge.weaklabels.rule_eval import _auc

    assert _auc(0.0) == "+0.0000" and _auc(0.0123) == "+0.0123" and _auc(-0.0123, "") == "-0.0123"
    assert _auc(2e-5) == "+2.0e-05" and _auc(-3e-6) == "-3.0e-06"  # not "+0.0000" for a nonzero difference


def test_a_rule_that_copies_a_trivial_policy_gets_a_bound_not_a_zero_width_interval():
    """Two policies that agree on every cell: the seed bootstrap would say [0, 0] and MDE 0; the comparison says
    they never disagreed and bounds the difference by the rule of three instead, with the MDE undefined."""
    res = _sweep({20: [0.10, 0.12, 0.09, -0.05]})
    rules = _rules({(20, s): ("uncertain", "use-weak-labels") for s in range(4)})
    ev, _ = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    vs = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == 20}["auc"]["vs_trivial"]
    assert vs["baseline"] == "always-weak" and vs["identical"] and vs["disagree"] == 0
    assert vs["value"] == 0.0 and vs["mde"] is None
    assert vs["hi"] == pytest.approx(3 / 4 * 0.12) and vs["lo"] == -vs["hi"]
    assert "same choice as always-weak on all 4 cells" in conclusion(ev)


def test_every_grid_size_is_scored_and_the_suite_pools_clusters():
    from fmgauge.weaklabels.rule_eval import score_cells, score_policies

    res = _sweep({10: [0.1, 0.1, 0.1, 0.1], 1000: [-0.03, -0.02, -0.04, -0.03]})
    rules = _rules({**{(10, s): ("uncertain", "use-weak-labels") for s in range(4)},
                    **{(1000, s): ("gold-only", "gold-only") for s in range(4)}})
    ev, cells = evaluate(res, rules, {"s": "raw"}, [0, 1, 2, 3])
    assert ev["grid"] == [10, 1000]
    assert {r["n_gold"] for r in ev["scores"]} == {"all", 10, 1000}
    # two studies pooled: clusters are (study, seed), so 8 resampling units
    both = pd.concat([cells.assign(study="a"), cells.assign(study="b")]).drop(columns=["target", "hit"])
    both = score_cells(both.assign(cluster=lambda d: d.study + ":" + d.seed.astype(str)))
    rows = score_policies(both, scope_col="study")
    overall = {r["policy"]: r for r in rows if r["scope"] == "all" and r["n_gold"] == "all"}
    assert overall["auc"]["cells"] == 16 and overall["auc"]["regret"]["value"] == pytest.approx(0.0)
    assert overall["auc"]["vs_trivial"]["hi"] < 0  # beats both trivial policies on every resample
