"""Does the decision rule work? Every calibration sweep operates ``decide`` and scores it against what happened.

For each labeler, gold-set size m ≤ ``max_gold`` in the grid and seed s, a **rule trial** runs
:func:`fmgauge.weaklabels.decide.decide` exactly as a user would: on seed s's m gold items (the sweep's own gold
set for (m, s)), the labeler's outputs on them, and the weak-labelled rest of the pool — nothing from the test
set. Its verdicts are then compared with the sweep's realised ΔAUC(m, s) = AUC(gold+weak) − AUC(gold) of every
student that reads the same inputs (the rule's proxy sees the student's representation).

Scores per policy — each rule, and the trivial policies **always-weak** and **always-gold**:

- **regret**: mean over cells (labeler × student × m × seed) of max(AUC_gold, AUC_gold+weak) − the AUC of the
  condition the policy chose; an ``uncertain`` verdict acts as the rule's fallback, the side its point estimate
  leans to, and the share of such cells is reported as **abstention**. The pool rules are also scored with the
  other fallback a user may state, "uncertain → use the weak labels" (policy ``<rule> (uncertain→weak)``: the
  weak labels are free, so switch to gold-only only when they are shown to hurt);
- **hit rate on decisive cells**: cells (labeler, student, m) whose seed-mean ΔAUC has a 95% t-interval over
  seeds excluding 0; the target is that sign, and every seed's choice there is a hit or a miss;
- intervals by resampling **seeds** (the sweep's independent unit; cells of one seed share its gold set and
  noise draw), 2,000 times; the regret difference to the better trivial policy is paired over the same resamples,
  with the minimum difference the run could detect, (z₀.₉₇₅ + z₀.₈) × its standard error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from fmgauge.core.stats import mean_ci
from fmgauge.weaklabels.decide import DEFAULT_FALLBACK, DEFAULT_PRIMARY, POOL_RULES, RULES, Pool, decide

TRIVIAL = ("always-weak", "always-gold")
WEAK_FALLBACK = " (uncertain→weak)"  # a rule whose uncertain verdicts use the weak labels instead of its lean
DEFAULT_POLICY = DEFAULT_PRIMARY + (WEAK_FALLBACK if DEFAULT_FALLBACK == "weak" else "")  # what decide() does
N_BOOT = 2000


def proxy_features(features: str) -> str:
    """The representation the rule's proxy student reads for a student with ``features`` (texts: TF-IDF)."""
    return "tfidf" if features == "text" else features


def run_rule_trial(config: dict) -> list[dict]:
    """Trial function: operate ``decide`` on one seed's first m gold items and the weak-labelled rest of the pool.

    ``config`` keys: dataset, pool_split, test_split, features, labeler, weak_key (the seed's labeler outputs),
    n_gold (m), seed, pool_max, pool_repeats, proxy (a StudentConfig dict or None for decide's default). Returns
    one row per rule: verdict, lean, choice and the numbers.
    """
    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.sweep import _dataset, gold_order, labeler_arrays

    ds = _dataset(config["dataset"])
    pool = ds.split(config["pool_split"])
    x_pool, _ = represent(ds, config["features"], config["pool_split"], config["test_split"])
    probs, labels = labeler_arrays(config["weak_key"])
    m, seed = int(config["n_gold"]), int(config["seed"])
    gold = gold_order(pool.y, seed, ds.n_classes)[:m]
    rest = np.setdiff1d(np.arange(len(pool.y)), gold)
    d = decide(x_pool[gold], pool.y[gold], probs[gold], labels[gold], pool=Pool(x_pool[rest], labels[rest]),
               pool_max=config["pool_max"], pool_repeats=config["pool_repeats"], seed=seed, n_boot=500,
               class_names=tuple(ds.class_names), curve=False, proxy=config.get("proxy"),
               fallback="lean")  # rows keep the lean; the evaluation derives the weak fallback itself
    rows = []
    for name, r in d.rules.items():
        rows.append({"kind": "rule", "labeler": config["labeler"], "features": config["features"], "n_gold": m,
                     "seed": seed, "rule": name, "verdict": r.verdict, "lean": r.lean, "choice": r.choice,
                     "gap": r.gap, "gap_lo": None if r.gap_ci is None else r.gap_ci[0],
                     "gap_hi": None if r.gap_ci is None else r.gap_ci[1], "labeler_value": r.labeler.value,
                     "gold_auc": d.gold_auc.value,
                     "crossover": r.crossover})
    return rows


def _cells(results: pd.DataFrame, rules: pd.DataFrame, student_features: dict[str, str]) -> pd.DataFrame:
    """One row per (labeler, student, m, seed, policy): AUCs of both conditions and the policy's choice."""
    gold = results[results.condition == "gold"][["student", "n_gold", "seed", "auc"]]
    mixed = results[results.condition == "gold+weak"][["labeler", "student", "n_gold", "seed", "auc"]]
    paired = mixed.merge(gold, on=["student", "n_gold", "seed"], suffixes=("_gw", "_g"))
    paired["features"] = paired.student.map(lambda s: proxy_features(student_features[s]))
    # the cells the rules were operated on (labelers and sizes with rule trials), the same for every policy
    ran = rules[["labeler", "features", "n_gold", "seed"]].drop_duplicates()
    paired = paired.merge(ran, on=["labeler", "features", "n_gold", "seed"])
    r = rules[["labeler", "features", "n_gold", "seed", "rule", "verdict", "choice"]].rename(columns={"rule": "policy"})
    weak_fb = r[r.policy.isin(POOL_RULES)].assign(policy=lambda d: d.policy + WEAK_FALLBACK)
    weak_fb.loc[weak_fb.verdict == "uncertain", "choice"] = "use-weak-labels"
    cells = paired.merge(pd.concat([r, weak_fb], ignore_index=True), on=["labeler", "features", "n_gold", "seed"])
    trivial = [paired.assign(policy=p, verdict="use-weak-labels" if p == "always-weak" else "gold-only",
                             choice="use-weak-labels" if p == "always-weak" else "gold-only") for p in TRIVIAL]
    cells = pd.concat([cells, *trivial], ignore_index=True)
    cells["delta"] = cells.auc_gw - cells.auc_g
    cells["regret"] = np.maximum(cells.auc_gw, cells.auc_g) - np.where(
        cells.choice == "use-weak-labels", cells.auc_gw, cells.auc_g)
    cells["abstain"] = cells.verdict == "uncertain"
    # decisive (labeler, student, m): the seed-mean ΔAUC's t-interval excludes 0
    sign = {}
    for key, g in paired.assign(delta=paired.auc_gw - paired.auc_g).groupby(["labeler", "student", "n_gold"]):
        ci = mean_ci(g.delta.to_numpy())
        sign[key] = 1 if ci.lo > 0 else (-1 if ci.hi < 0 else 0)
    cells["target"] = [sign[k] for k in zip(cells.labeler, cells.student, cells.n_gold, strict=True)]
    agree = (cells.choice == "use-weak-labels") == (cells.target > 0)
    cells["hit"] = np.where(cells.target == 0, np.nan, agree.astype(float))
    return cells


def _seed_boot(values: np.ndarray, seeds: np.ndarray, seed_list: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means of ``values`` (n,) under seed resamples: ``weights`` (B, S) = how often each seed is drawn."""
    ok = np.isfinite(values)
    sums = np.array([values[ok & (seeds == s)].sum() for s in seed_list])
    counts = np.array([(ok & (seeds == s)).sum() for s in seed_list], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ counts)


def _interval(point: float, boots: np.ndarray) -> dict[str, float]:
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(point) or len(boots) == 0:
        return {"value": float(point), "lo": float("nan"), "hi": float("nan")}
    return {"value": float(point), "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975))}


def score_policies(cells: pd.DataFrame, seed_list: list[int], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per (scope, m, policy): regret, hit rate on decisive cells, abstention, each with a seed-bootstrap CI, and
    the regret difference to the better trivial policy (paired over the same resamples) with its MDE.

    ``scope`` is each labeler and ``all`` (every labeler pooled); ``m`` is each gold-set size and ``all``.
    """
    seeds_arr = np.asarray(seed_list)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(seeds_arr), np.full(len(seeds_arr), 1 / len(seeds_arr)), size=N_BOOT).astype(float)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    out = []
    scopes = [("all", cells)] + [(lab, g) for lab, g in cells.groupby("labeler", sort=False)]
    for scope, part in scopes:
        for m in ["all", *sorted(part.n_gold.unique())]:
            sub = part if m == "all" else part[part.n_gold == m]
            boot_regret: dict[str, np.ndarray] = {}
            rows = {}
            for policy, g in sub.groupby("policy", sort=False):
                s = g.seed.to_numpy()
                reg = g.regret.to_numpy(dtype=float)
                hit = g.hit.to_numpy(dtype=float)
                boot_regret[policy] = _seed_boot(reg, s, seeds_arr, weights)
                committed = hit[~g.abstain.to_numpy()]
                rows[policy] = {
                    "scope": scope, "n_gold": m if m == "all" else int(m), "policy": policy,
                    "cells": int(len(g)), "decisive_cells": int(np.isfinite(hit).sum()),
                    "regret": _interval(reg.mean(), boot_regret[policy]),
                    "hit_rate": _interval(np.nanmean(hit) if np.isfinite(hit).any() else np.nan,
                                          _seed_boot(hit, s, seeds_arr, weights)),
                    "hit_rate_committed": float(np.nanmean(committed)) if np.isfinite(committed).any() else None,
                    "abstain": _interval(g.abstain.mean(), _seed_boot(g.abstain.to_numpy(float), s, seeds_arr,
                                                                      weights)),
                }
            best_trivial = min((p for p in TRIVIAL if p in rows), key=lambda p: rows[p]["regret"]["value"],
                               default=None)
            for policy, row in rows.items():
                if best_trivial is not None and policy not in TRIVIAL:
                    diff = boot_regret[policy] - boot_regret[best_trivial]
                    se = float(np.nanstd(diff))
                    row["vs_trivial"] = {"baseline": best_trivial, **_interval(
                        row["regret"]["value"] - rows[best_trivial]["regret"]["value"], diff), "mde": z * se}
                out.append(row)
    return out


def evaluate(results: pd.DataFrame, rule_rows: pd.DataFrame, student_features: dict[str, str],
             seed_list: list[int], *, headline_m: int = 20) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The rule evaluation of one study: per-policy scores (:func:`score_policies`), the headline at
    ``headline_m`` gold labels (or the grid size nearest to it) and the rule a user should follow; and the
    per-cell table (labeler × student × m × seed × policy) they were computed from."""
    if rule_rows.empty:
        return {}, None
    cells = _cells(results, rule_rows, student_features)
    scores = score_policies(cells, seed_list)
    grid = sorted(rule_rows.n_gold.unique())
    m = min(grid, key=lambda v: abs(np.log(v) - np.log(headline_m)))
    head = {r["policy"]: r for r in scores if r["scope"] == "all" and r["n_gold"] == m}
    rules = [p for p in [*RULES, *(r + WEAK_FALLBACK for r in POOL_RULES)] if p in head]
    best = min(rules, key=lambda p: (round(head[p]["regret"]["value"], 10), p != DEFAULT_POLICY)) if rules else None
    trivial = min((p for p in TRIVIAL if p in head), key=lambda p: head[p]["regret"]["value"])
    summary = {"scores": scores, "headline_m": int(m), "best_rule": best, "best_trivial": trivial,
               "grid": [int(v) for v in grid]}
    return summary, cells[["labeler", "student", "n_gold", "seed", "policy", "verdict", "choice", "auc_g",
                           "auc_gw", "delta", "regret", "target", "hit"]]


def conclusion(ev: dict[str, Any]) -> str:
    """Plain words: which rule to follow at the headline budget, and whether it beats the trivial policies."""
    if not ev:
        return "The decision rules were not evaluated (no gold+weak condition, or no gold-set size ≤ the limit)."
    m = ev["headline_m"]
    head = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == m}
    best, trivial = ev["best_rule"], ev["best_trivial"]
    b, t = head[best], head[trivial]
    vs = b.get("vs_trivial", {})
    parts = [f"With {m} gold labels, the rule with the least regret is {best}: "
             f"{b['regret']['value']:.4f} AUC [{b['regret']['lo']:.4f}, {b['regret']['hi']:.4f}] lost against "
             f"the per-cell best choice, next to {t['regret']['value']:.4f} for {trivial}, the better trivial "
             f"policy."]
    hit = b["hit_rate"]
    if np.isfinite(hit["value"]):
        parts.append(f"On the {b['decisive_cells']} decisive cells its hit rate is {hit['value']:.2f} "
                     f"[{hit['lo']:.2f}, {hit['hi']:.2f}]; it abstains on {b['abstain']['value']:.0%} of cells.")
    d = head.get(DEFAULT_POLICY)
    if d is not None and best != DEFAULT_POLICY:
        parts.append(f"fmgauge's default ({DEFAULT_POLICY}) loses {d['regret']['value']:.4f} AUC and abstains on "
                     f"{d['abstain']['value']:.0%} of cells.")
    if vs:
        if vs["hi"] < 0:
            parts.append(f"It beats {trivial} by {-vs['value']:.4f} AUC [{-vs['hi']:.4f}, {-vs['lo']:.4f}].")
        elif vs["lo"] > 0:
            parts.append(f"It does worse than {trivial} by {vs['value']:.4f} AUC [{vs['lo']:.4f}, {vs['hi']:.4f}]: "
                         f"no rule beats the trivial policy here; follow {trivial}.")
        else:
            parts.append(f"Its difference to {trivial}, {vs['value']:+.4f} AUC [{vs['lo']:+.4f}, {vs['hi']:+.4f}], "
                         f"is within what these seeds can resolve (minimum detectable difference "
                         f"{vs['mde']:.4f}): no rule is shown to beat {trivial}.")
    return " ".join(parts)
