"""Does the decision rule work? Every calibration sweep operates ``decide`` and scores it against what happened.

For each labeler, **every** gold-set size m of the grid (up to ``rule_max_gold`` when set) and seed s, a **rule
trial** runs :func:`fmgauge.weaklabels.decide.decide` exactly as a user would: on seed s's m gold items (the
sweep's own gold set for (m, s)), the labeler's outputs on them, and the weak-labelled rest of the pool — nothing
from the test set. Its verdicts are then compared with the sweep's realised ΔAUC(m, s) = AUC(gold+weak) −
AUC(gold) of every student that reads the same inputs (the rule's proxy sees the student's representation). Rule
trials of several labelers on one gold set share its gold-only side (cached by content, :mod:`.gold_auc`).

Scores per policy — each rule acting on its lean when uncertain, the pool rules also with "uncertain → use the
weak labels" (``<rule> (uncertain→weak)``), "uncertain → the weak labels if the labeler ranks the gold items
acceptably" (``<rule> (uncertain→labeler)``, :func:`fmgauge.weaklabels.rules.labeler_ranks`) and "uncertain → the
lean once the gold set holds 20 items of its rarer class, else the weak labels iff they agree with a gold-trained
model across the pool" (``<rule> (uncertain→auto)``, decide's default; :func:`fmgauge.weaklabels.rules.ranks_bar`), and the trivial policies **always-weak** and **always-gold**:

- **regret**: mean over cells (labeler × student × m × seed) of max(AUC_gold, AUC_gold+weak) − the AUC of the
  condition the policy chose; **abstention**: the share of uncertain verdicts;
- **committed verdicts right**: every verdict that is not ``uncertain``, over all cells, against that cell's own
  realised sign of ΔAUC (ΔAUC = 0 counts as right);
- **hit rate on decisive cells**: cells (labeler, student, m) whose seed-mean ΔAUC has a 95% t-interval excluding 0;
  the target is that sign, and every seed's choice there is a hit or a miss;
- **better side where it matters**: on cells where the two trivial policies differ by more than ``WIDE`` AUC, the
  share where the policy chose the better condition;
- intervals by resampling **clusters** — seeds within a study (cells of one seed share its gold set and noise draw),
  (study, seed) across studies — 2,000 times; the regret difference to the better trivial policy is paired over the
  same resamples, with the minimum difference the run could detect, (z₀.₉₇₅ + z₀.₈) × its standard error. When the
  two policies chose alike on every cell there is nothing to resample: :func:`compare` then gives a rule-of-three
  bound and leaves the MDE undefined instead of printing [0, 0].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from fmgauge.core.stats import mean_ci
from fmgauge.weaklabels.decide import DEFAULT_FALLBACK, DEFAULT_PRIMARY, Pool, decide
from fmgauge.weaklabels.verdicts import COMMIT_FROM, POOL_RULES, RULES, fallback_choice

TRIVIAL = ("always-weak", "always-gold")
WEAK_FALLBACK = " (uncertain→weak)"  # a rule whose uncertain verdicts use the weak labels instead of its lean
LABELER_FALLBACK = " (uncertain→labeler)"  # ... the weak labels if the labeler ranks the gold items acceptably
AUTO_FALLBACK = " (uncertain→auto)"  # ... the lean from LEAN_FROM rarer-class items, else the pool's agreement
SUFFIX = {"lean": "", "weak": WEAK_FALLBACK, "labeler": LABELER_FALLBACK, "auto": AUTO_FALLBACK}
DEFAULT_POLICY = DEFAULT_PRIMARY + SUFFIX[DEFAULT_FALLBACK]  # what decide() does
N_BOOT = 2000
WIDE = 0.02  # cells where the two trivial policies differ by more than this (AUC): a rule must pick the right side


def proxy_features(features: str) -> str:
    """The representation the rule's proxy student reads for a student with ``features`` (texts: TF-IDF)."""
    return "tfidf" if features == "text" else features


def run_rule_trial(config: dict) -> list[dict]:
    """Trial function: operate ``decide`` on one seed's first m gold items and the weak-labelled rest of the pool.

    ``config`` keys: dataset, pool_split, test_split, features, labeler, weak_key (the seed's labeler outputs),
    n_gold (m), seed, pool_max, pool_repeats, proxy (a StudentConfig dict or None for decide's default). Returns
    one row per rule: verdict, lean, choice and the numbers.
    """
    import time

    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.sweep import _dataset, gold_order, labeler_arrays

    cpu0 = time.process_time()
    ds = _dataset(config["dataset"])
    pool = ds.split(config["pool_split"])
    x_pool, _ = represent(ds, config["features"], config["pool_split"], config["test_split"])
    probs, labels = labeler_arrays(config["weak_key"])
    m, seed = int(config["n_gold"]), int(config["seed"])
    gold = gold_order(pool.y, seed, ds.n_classes)[:m]
    rest = np.setdiff1d(np.arange(len(pool.y)), gold)
    d = decide(x_pool[gold], pool.y[gold], probs[gold], labels[gold], pool=Pool(x_pool[rest], labels[rest]),
               pool_max=config["pool_max"], pool_repeats=config["pool_repeats"], seed=seed, n_boot=500,
               max_pairs=120 if m <= 100 else 60,  # past 100 gold items the fits cost more and ΔAUC is small
               class_names=tuple(ds.class_names), curve=True, proxy=config.get("proxy"),
               fallback="lean",  # rows keep the lean; the evaluation derives the other fallbacks itself
               gold_cache={"dataset": ds.source, "name": ds.name, "split": config["pool_split"],
                           "features": config["features"], "gold": gold.tolist(),
                           "pool": len(pool.y)})  # labelers of one study share the gold side
    s = d.labeler_summary
    rows = []
    for name, r in d.rules.items():
        rows.append({"kind": "rule", "labeler": config["labeler"], "features": config["features"], "n_gold": m,
                     "seed": seed, "rule": name, "verdict": r.verdict, "lean": r.lean, "choice": r.choice,
                     "gap": r.gap, "gap_lo": None if r.gap_ci is None else r.gap_ci[0],
                     "gap_hi": None if r.gap_ci is None else r.gap_ci[1], "labeler_value": r.labeler.value,
                     "gold_auc": d.gold_auc.value, "gold_auc_lo": d.gold_auc.lo, "gold_auc_hi": d.gold_auc.hi,
                     "crossover": r.crossover, "n_star": d.crossover,
                     "n_star_lo": None if d.crossover_ci is None else d.crossover_ci[0],
                     "n_star_hi": None if d.crossover_ci is None else d.crossover_ci[1],
                     "n_eff": None if d.n_eff is None else d.n_eff.value,
                     "lab_accuracy": s.accuracy.value, "lab_balanced": s.balanced_accuracy.value,
                     "lab_majority": s.majority_rate.value, "lab_unusable": s.unusable is not None,
                     "lab_youden": s.youden.value, "lab_youden_lo": s.youden.lo, "lab_youden_hi": s.youden.hi,
                     "gold_min_class": int(min(np.bincount(pool.y[gold], minlength=ds.n_classes))),
                     "agreement": d.agreement,
                     "cpu_seconds": time.process_time() - cpu0})
    return rows


def _projection_verdicts(rules: pd.DataFrame) -> pd.DataFrame:
    """The projection rule's verdict and lean from each trial's n* and its interval, by the function ``decide``
    uses (:func:`fmgauge.weaklabels.rules.crossover_verdict`), so trials stored before a fix of that comparison
    (n* = m exactly, read through exp(ln m)) are scored as decide now decides."""
    if "n_star" not in rules or not (rules.rule == "projection").any():
        return rules
    from fmgauge.weaklabels.rules import crossover_verdict

    rules = rules.copy()
    sel = rules.rule == "projection"
    out = []
    for _, row in rules[sel].iterrows():
        ci = None if pd.isna(row.n_star_lo) else (float(row.n_star_lo), float(row.n_star_hi))
        v, lean = crossover_verdict(None if pd.isna(row.n_star) else float(row.n_star), ci, int(row.n_gold))
        out.append((v, lean, lean if v == "uncertain" else v))
    rules.loc[sel, ["verdict", "lean", "choice"]] = out
    return rules


def _commit_verdicts(rules: pd.DataFrame) -> pd.DataFrame:
    """The paired rules' verdicts (cv-delta, weak-student) as :func:`fmgauge.weaklabels.rules.paired_verdict` now
    gives them: uncertain, acting on the lean, on gold sets with fewer than ``COMMIT_FROM`` items of the rarer class
    (trials stored before RULES_VERSION 12 committed there)."""
    if "gold_min_class" not in rules:
        return rules
    rules = rules.copy()
    sel = rules.rule.isin(("cv-delta", "weak-student")) & (rules.gold_min_class < COMMIT_FROM)
    rules.loc[sel, "verdict"] = "uncertain"  # its choice, the lean, is the side a committed verdict took
    return rules


def _worth_verdicts(rules: pd.DataFrame) -> pd.DataFrame:
    """delta-worth rows re-derived from the cv-delta rows (its verdict and the upper end of the interval of the
    labeler's Youden's J) by the function ``decide`` uses (:func:`fmgauge.weaklabels.rules.worth_verdict`),
    replacing stored ones: the rule is a pure function of those, so trials stored before a change of it are scored
    as decide now decides (trials without the interval, RULES_VERSION < 6, rerun)."""
    if "lab_youden_hi" not in rules.columns or not (rules.rule == "cv-delta").any():
        return rules
    from fmgauge.weaklabels.rules import worth_verdict

    cv = rules[rules.rule == "cv-delta"].copy()
    mc = cv.gold_min_class.fillna(COMMIT_FROM) if "gold_min_class" in cv else pd.Series(COMMIT_FROM, index=cv.index)
    got = [worth_verdict((v, ln), float(b), int(n))
           for v, ln, b, n in zip(cv.verdict, cv.lean, cv.lab_youden_hi, mc, strict=True)]
    cv["rule"] = "delta-worth"
    cv["verdict"] = [g[0] for g in got]
    cv["lean"] = [g[1] for g in got]
    cv["choice"] = [g[1] if g[0] == "uncertain" else g[0] for g in got]
    return pd.concat([rules[rules.rule != "delta-worth"], cv], ignore_index=True)


def as_decided(rules: pd.DataFrame) -> pd.DataFrame:
    """Stored rule rows with the verdicts that are pure functions of their numbers re-derived as ``decide`` now
    derives them (projection, the paired rules' commit bar, delta-worth): one place for every reader of trials."""
    return _worth_verdicts(_commit_verdicts(_projection_verdicts(rules)))


def labeler_ranks_of(rules: pd.DataFrame, key: list[str]) -> pd.DataFrame | None:
    """Per trial (``key`` columns): ``lab_auc``, the labeler's AUC on the gold items (the ``auc`` rule's number),
    ``ranks`` and ``ranks_auto``, whether it clears the ``labeler`` and the ``auto`` fallback's bar
    (:func:`fmgauge.weaklabels.rules.labeler_ranks`), and ``min_class``, the gold set's rarer-class count (NaN in
    trials stored before RULES_VERSION 6); None when the rows carry no auc rule."""
    if not (rules.rule == "auc").any() or not {"labeler_value", "gold_auc"} <= set(rules.columns):
        return None
    from fmgauge.weaklabels.rules import labeler_ranks, ranks_bar

    auc = rules[rules.rule == "auc"].drop_duplicates(key)
    agree = auc.agreement.astype(float) if "agreement" in auc else pd.Series(np.nan, index=auc.index)
    pairs = list(zip(auc.labeler_value.astype(float), auc.gold_auc.astype(float), agree, strict=True))
    return auc[key].assign(lab_auc=auc.labeler_value.to_numpy(), agreement=agree.to_numpy(),
                           ranks=[labeler_ranks(a, g, e, **ranks_bar("labeler")) for a, g, e in pairs],
                           ranks_auto=[labeler_ranks(a, g, e, **ranks_bar("auto")) for a, g, e in pairs],
                           min_class=auc.gold_min_class.to_numpy(float) if "gold_min_class" in auc
                           else np.full(len(auc), np.nan))


def policy_cells(results: pd.DataFrame, rules: pd.DataFrame, student_features: dict[str, str]) -> pd.DataFrame:
    """One row per (labeler, student, m, seed, policy): AUCs of both conditions, the policy's choice, its regret,
    whether it committed, and whether it was right."""
    gold = results[results.condition == "gold"][["student", "n_gold", "seed", "auc"]]
    mixed = results[results.condition == "gold+weak"][["labeler", "student", "n_gold", "seed", "auc"]]
    paired = mixed.merge(gold, on=["student", "n_gold", "seed"], suffixes=("_gw", "_g"))
    paired["features"] = paired.student.map(lambda s: proxy_features(student_features[s]))
    # the cells the rules were operated on (labelers and sizes with rule trials), the same for every policy
    ran = rules[["labeler", "features", "n_gold", "seed"]].drop_duplicates()
    paired = paired.merge(ran, on=["labeler", "features", "n_gold", "seed"])
    rules = as_decided(rules)
    key = ["labeler", "features", "n_gold", "seed"]
    r = rules[[*key, "rule", "verdict", "choice"]].rename(columns={"rule": "policy"})  # choice: the lean if unsure
    # the pool rules under the other fallbacks, as decide acts on an uncertain verdict (verdicts.fallback_choice)
    pool = r[r.policy.isin(POOL_RULES)]
    ranks = labeler_ranks_of(rules, key)
    ranked = None if ranks is None else pool.merge(ranks, on=key)
    fallbacks = [r]
    for fb in ("weak", "labeler", "auto"):
        got = pool if fb == "weak" else ranked
        if got is None or (fb == "auto" and got.min_class.isna().any()):  # min_class: stored from RULES_VERSION 6
            continue
        rk = got.ranks_auto if fb == "auto" else got.get("ranks", pd.Series(False, index=got.index))
        mc = got.get("min_class", pd.Series(0, index=got.index))
        acts = [c if v != "uncertain" else fallback_choice(fb, c, bool(k), int(n)) for v, c, k, n in zip(
            got.verdict, got.choice, rk, mc.fillna(0), strict=True)]  # a stored uncertain row's choice is its lean
        fallbacks.append(got[[*key, "policy", "verdict"]].assign(policy=got.policy + SUFFIX[fb], choice=acts))
    cells = paired.merge(pd.concat(fallbacks, ignore_index=True), on=key)
    trivial = [paired.assign(policy=p, verdict="use-weak-labels" if p == "always-weak" else "gold-only",
                             choice="use-weak-labels" if p == "always-weak" else "gold-only") for p in TRIVIAL]
    cells = pd.concat([cells, *trivial], ignore_index=True)
    return score_cells(cells)


def score_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Add to cells (auc_g, auc_gw, verdict, choice per row): delta, regret, abstain, the decisive target of the
    (labeler, student, m) group (sign of the seed-mean ΔAUC when its 95% t-interval excludes 0, else 0), ``hit``
    (the choice on a decisive cell: 1 right, 0 wrong, NaN elsewhere) and ``hit_committed`` (a committed verdict
    against that cell's own realised sign: 1 right — or ΔAUC exactly 0 —, 0 wrong, NaN when it abstained)."""
    cells = cells.copy()
    cells["delta"] = cells.auc_gw - cells.auc_g
    weak = cells.choice == "use-weak-labels"
    cells["regret"] = np.maximum(cells.auc_gw, cells.auc_g) - np.where(weak, cells.auc_gw, cells.auc_g)
    cells["abstain"] = cells.verdict == "uncertain"
    key = [c for c in ("study", "labeler", "student", "n_gold") if c in cells]
    base = cells.drop_duplicates([*key, "seed"])
    sign = {}
    for k, g in base.groupby(key):
        ci = mean_ci(g.delta.to_numpy())
        sign[k] = 1 if ci.lo > 0 else (-1 if ci.hi < 0 else 0)
    cells["target"] = [sign[k] for k in zip(*(cells[c] for c in key), strict=True)]
    agree = weak == (cells.target > 0)
    cells["hit"] = np.where(cells.target == 0, np.nan, agree.astype(float))
    right = np.where(cells.delta == 0, True, weak == (cells.delta > 0))
    cells["hit_committed"] = np.where(cells.abstain, np.nan, right.astype(float))
    cells["wide"] = cells.delta.abs() > WIDE  # the trivial policies differ by more than WIDE AUC here
    return cells


def _cluster_boot(values: np.ndarray, clusters: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means of ``values`` (n,) under cluster resamples: ``weights`` (B, C) = how often each cluster is drawn."""
    ok = np.isfinite(values)
    idx = np.searchsorted(ids, clusters)
    sums = np.bincount(idx[ok], weights=values[ok], minlength=len(ids))
    counts = np.bincount(idx[ok], minlength=len(ids)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ counts)


def _interval(point: float, boots: np.ndarray) -> dict[str, float]:
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(point) or len(boots) == 0:
        return {"value": float(point), "lo": float("nan"), "hi": float("nan")}
    return {"value": float(point), "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975))}


def cluster_weights(n_clusters: int, seed: int = 0) -> np.ndarray:
    """(N_BOOT, C) multiplicities of a cluster bootstrap."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=N_BOOT).astype(float)


def compare(a: pd.DataFrame, b: pd.DataFrame, weights: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """Regret of policy rows ``a`` minus policy rows ``b`` on the same cells (aligned by position), paired over
    the same cluster resamples, with the minimum detectable difference (z₀.₉₇₅ + z₀.₈)·SE.

    When the two policies chose the same side on every cell the bootstrap has nothing to resample (every draw is
    0): the interval is then the rule-of-three bound ±(3/C)·max|ΔAUC| — at 95% the policies disagree on at most a
    share 3/C of new clusters (C = clusters seen), each disagreement costing at most the largest |ΔAUC| seen — and
    the MDE is undefined (``None``; there is no variation to scale it by)."""
    diff_cells = a.regret.to_numpy(float) - b.regret.to_numpy(float)
    point = float(diff_cells.mean())
    disagree = int((a.choice.to_numpy() != b.choice.to_numpy()).sum())
    if disagree == 0:
        bound = 3.0 / len(ids) * float(a.delta.abs().max())
        return {"value": point, "lo": -bound, "hi": bound, "mde": None, "disagree": 0, "cells": int(len(a)),
                "identical": True}
    boots = _cluster_boot(diff_cells, a.cluster.to_numpy(), ids, weights)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    return {**_interval(point, boots), "mde": float(z * np.nanstd(boots)), "disagree": disagree,
            "cells": int(len(a)), "identical": False}


def policy_row(g: pd.DataFrame, weights: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """Regret, hit rates and abstention of one policy's cells, with cluster-bootstrap intervals."""
    cl = g.cluster.to_numpy()
    hit, hc = g.hit.to_numpy(float), g.hit_committed.to_numpy(float)
    wide = g.wide.to_numpy(bool)
    pick = np.where(wide, (g.regret.to_numpy(float) == 0).astype(float), np.nan)
    return {
        "cells": int(len(g)), "decisive_cells": int(np.isfinite(hit).sum()),
        "committed_cells": int(np.isfinite(hc).sum()), "wide_cells": int(wide.sum()),
        "regret": _interval(float(g.regret.mean()), _cluster_boot(g.regret.to_numpy(float), cl, ids, weights)),
        "hit_rate": _interval(np.nanmean(hit) if np.isfinite(hit).any() else np.nan,
                              _cluster_boot(hit, cl, ids, weights)),
        "hit_rate_committed": _interval(np.nanmean(hc) if np.isfinite(hc).any() else np.nan,
                                        _cluster_boot(hc, cl, ids, weights)),
        "pick_rate_wide": _interval(np.nanmean(pick) if wide.any() else np.nan,
                                    _cluster_boot(pick, cl, ids, weights)),
        "abstain": _interval(float(g.abstain.mean()), _cluster_boot(g.abstain.to_numpy(float), cl, ids, weights)),
    }


def score_policies(cells: pd.DataFrame, *, seed: int = 0, scope_col: str = "labeler") -> list[dict[str, Any]]:
    """Per (scope, m, policy): regret, hit rate on decisive cells, hit rate of committed verdicts over all cells,
    the share of cells with |ΔAUC| > WIDE where it picked the better side, abstention — each with a cluster-bootstrap
    CI — and the regret difference to the better trivial policy (paired, :func:`compare`).

    ``cells`` needs a ``cluster`` column (the resampling unit: the seed within a study; (study, seed) across
    studies). ``scope`` is each value of ``scope_col`` and ``all``; ``m`` is each gold-set size and ``all``.
    """
    ids = np.unique(cells.cluster.to_numpy())
    weights = cluster_weights(len(ids), seed)
    out = []
    scopes = [("all", cells)] + [(lab, g) for lab, g in cells.groupby(scope_col, sort=False)]
    order = [c for c in ("study", "labeler", "student", "n_gold", "seed") if c in cells]
    for scope, part in scopes:
        for m in ["all", *sorted(part.n_gold.unique())]:
            sub = part if m == "all" else part[part.n_gold == m]
            groups = {p: g.sort_values(order) for p, g in sub.groupby("policy", sort=False)}
            rows = {p: {"scope": scope, "n_gold": m if m == "all" else int(m), "policy": p,
                        **policy_row(g, weights, ids)} for p, g in groups.items()}
            best = min((p for p in TRIVIAL if p in rows), key=lambda p: rows[p]["regret"]["value"], default=None)
            for p, row in rows.items():
                if best is not None and p not in TRIVIAL:
                    row["vs_trivial"] = {"baseline": best, **compare(groups[p], groups[best], weights, ids)}
                out.append(row)
    return out


def gold_bias(rules: pd.DataFrame, results: pd.DataFrame, student_features: dict[str, str]) -> list[dict[str, Any]]:
    """How far the rule's gold-only AUC estimate (from the m gold items) lands from each student's realised
    gold-only test AUC on the same gold set: per (student, m), the mean error over seeds with a t-interval, and the
    median |error| (``abs_median``)."""
    if "gold_auc" not in rules:
        return []
    est = rules.drop_duplicates(["features", "n_gold", "seed"])[["features", "n_gold", "seed", "gold_auc"]]
    gold = results[results.condition == "gold"][["student", "n_gold", "seed", "auc"]].copy()
    gold["features"] = gold.student.map(lambda s: proxy_features(student_features[s]))
    d = gold.merge(est, on=["features", "n_gold", "seed"])
    d["err"] = d.gold_auc - d.auc
    out = []
    for (st, m), g in d.groupby(["student", "n_gold"]):
        ci = mean_ci(g.err.to_numpy())
        out.append({"student": st, "n_gold": int(m), "bias": ci.to_dict(), "abs_median": float(g.err.abs().median()),
                    "realised": float(g.auc.mean()), "estimate": float(g.gold_auc.mean()), "seeds": int(len(g))})
    return out


def evaluate(results: pd.DataFrame, rule_rows: pd.DataFrame, student_features: dict[str, str],
             seed_list: list[int], *, headline_m: int = 20) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The rule evaluation of one study: per-policy scores (:func:`score_policies`, resampling seeds), the headline
    at ``headline_m`` gold labels (or the grid size nearest to it), the rule with the least regret over every
    n_gold, the gold-only estimator's bias; and the per-cell table they were computed from."""
    if rule_rows.empty:
        return {}, None
    cells = policy_cells(results, rule_rows, student_features).assign(cluster=lambda d: d.seed.astype(str))
    scores = score_policies(cells)
    grid = sorted(rule_rows.n_gold.unique())
    m = min(grid, key=lambda v: abs(np.log(v) - np.log(headline_m)))
    every = {r["policy"]: r for r in scores if r["scope"] == "all" and r["n_gold"] == "all"}
    rules = [p for p in [*RULES, *(r + sfx for sfx in (WEAK_FALLBACK, LABELER_FALLBACK, AUTO_FALLBACK)
                                   for r in POOL_RULES)]
             if p in every]
    best = min(rules, key=lambda p: (round(every[p]["regret"]["value"], 10), p != DEFAULT_POLICY)) if rules else None
    trivial = min((p for p in TRIVIAL if p in every), key=lambda p: every[p]["regret"]["value"])
    summary = {"scores": scores, "headline_m": int(m), "best_rule": best, "best_trivial": trivial,
               "default_policy": DEFAULT_POLICY, "grid": [int(v) for v in grid],
               "gold_bias": gold_bias(rule_rows, results, student_features)}
    return summary, cells[["labeler", "student", "n_gold", "seed", "policy", "verdict", "choice", "auc_g",
                           "auc_gw", "delta", "regret", "abstain", "target", "hit", "hit_committed", "wide"]]


def _auc(v: float, sign: str = "+") -> str:
    """An AUC difference: 4 decimals, or 2 significant digits when that would print a nonzero value as 0.0000."""
    return f"{v:{sign}.4f}" if v == 0 or abs(v) >= 5e-5 else f"{v:{sign}.1e}"


def _fmt_vs(vs: dict[str, Any]) -> str:
    if vs.get("identical"):
        return (f"{_auc(vs['value'])}: the same choice as {vs['baseline']} on all {vs['cells']} cells (95% bound "
                f"±{_auc(vs['hi'], '')} from disagreeing on at most 3 in {vs['cells']} new seeds; MDE undefined)")
    return (f"{_auc(vs['value'])} [{_auc(vs['lo'])}, {_auc(vs['hi'])}] (MDE {_auc(vs['mde'], '')}; "
            f"{vs['disagree']} of {vs['cells']} cells chosen differently)")


def conclusion(ev: dict[str, Any]) -> str:
    """Plain words: which rule to follow over every gold budget, and whether it beats the trivial policies."""
    if not ev:
        return "The decision rules were not evaluated (no gold+weak condition, or no gold-set size in range)."
    every = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == "all"}
    best, trivial = ev["best_rule"], ev["best_trivial"]
    b, t = every[best], every[trivial]
    parts = [f"Over every n_gold of the grid ({', '.join(map(str, ev['grid']))}), the rule with the least regret is "
             f"{best}: {b['regret']['value']:.4f} AUC [{b['regret']['lo']:.4f}, {b['regret']['hi']:.4f}] lost "
             f"against the per-cell best choice, next to {t['regret']['value']:.4f} for {trivial}, the better "
             f"trivial policy."]
    hit, hc = b["hit_rate"], b["hit_rate_committed"]
    if np.isfinite(hit["value"]):
        parts.append(f"On the {b['decisive_cells']} decisive cells its choice is right {hit['value']:.0%} "
                     f"[{hit['lo']:.0%}, {hit['hi']:.0%}] of the time;")
    if np.isfinite(hc["value"]):
        parts.append(f"its {b['committed_cells']} committed verdicts are right {hc['value']:.0%} on their own "
                     f"cells; it abstains on {b['abstain']['value']:.0%} of cells.")
    parts.append(_against_trivial(b.get("vs_trivial"), "It", trivial, best=True))
    default = ev.get("default_policy", DEFAULT_POLICY)
    d = every.get(default)
    if d is not None and best != default:
        parts.append(f"fmgauge's default ({default}) loses {d['regret']['value']:.4f} AUC and abstains on "
                     f"{d['abstain']['value']:.0%} of cells.")
        parts.append(_against_trivial(d.get("vs_trivial"), "The default", trivial, best=False))
    return " ".join(p for p in parts if p)


def _against_trivial(vs: dict[str, Any] | None, who: str, trivial: str, *, best: bool) -> str:
    """One sentence: ``who`` (a policy's name or pronoun) against the better trivial policy."""
    if not vs:
        return ""
    if vs.get("identical"):
        return f"{who} chose as {trivial} did on every cell: {_fmt_vs(vs)}."
    if vs["hi"] < 0:
        return f"{who} beats {trivial} by {_auc(-vs['value'], '')} AUC [{_auc(-vs['hi'], '')}, {_auc(-vs['lo'], '')}]."
    if vs["lo"] > 0:
        return (f"{who} does worse than {trivial} by {_auc(vs['value'], '')} AUC [{_auc(vs['lo'], '')}, "
                f"{_auc(vs['hi'], '')}]" + (f": no rule beats the trivial policy here; follow {trivial}." if best
                                             else "."))
    whose = "Its" if who == "It" else f"{who}'s"
    return (f"{whose} difference to {trivial}, {_fmt_vs(vs)}, is within what these seeds can resolve"
            + (f": no rule is shown to beat {trivial}." if best else "."))
