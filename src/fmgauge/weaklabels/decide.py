"""``decide``: from 10+ gold labels, will the labeler's weak labels help a classifier or hurt it?

Notation: m gold items, K classes; ``x`` (m, ...) inputs of the gold items (features (m, D), sparse rows, or
images); ``y`` (m,) their true labels; ``probs`` (m, K) the labeler's class probabilities on them and ``labels``
(m,) its hard labels; optionally the **pool** (:class:`Pool`: inputs and weak labels of the N items the labeler
labelled for free, gold items excluded) and ``weights`` (m,) design weights of a stratified gold sample
(:mod:`.sample_gold`).

One decision = the gold-only AUC (:mod:`.gold_auc`, leave-pair-out with a converged proxy, :mod:`.proxy`), the
labeler's confusion (:mod:`.confusion`), and the rules (:mod:`.rules`), each with a verdict (:mod:`.verdicts`). The
default rule and fallback are what the evaluation over the whole study suite favours (docs/benchmarks.md §8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmgauge.core.stats import Estimate, auc_score_interval
from fmgauge.core.validation import FmgaugeError, check_finite, check_same_length
from fmgauge.weaklabels.confusion import labeler_summary
from fmgauge.weaklabels.gold_auc import (
    boot_weights,
    crossover_interval,
    effective_n,
    extrapolate_crossover,
    gold_only_auc,
    gold_pairs,
    learning_curve,
    problems,
    weighted_aucs,
)
from fmgauge.weaklabels.proxy import PROXY_KINDS, Proxy, dense, proxy_student, stack_rows, standardiser
from fmgauge.weaklabels.rules import (
    crossover_verdict,
    interval_verdict,
    labeler_ranks,
    mixed_oof,
    paired_difference,
    paired_verdict,
    pool_agreement,
    ranks_bar,
    worth_verdict,
)
from fmgauge.weaklabels.student_config import StudentConfig, budget_steps
from fmgauge.weaklabels.verdicts import (
    FALLBACKS,
    POOL_RULES,
    RULES,
    Decision,
    Fallback,
    Lean,
    RuleVerdict,
)

__all__ = ["Pool", "decide", "check_gold", "DEFAULT_PRIMARY", "DEFAULT_FALLBACK", "RULES_VERSION", "PROXY_KINDS"]

DEFAULT_PRIMARY = "delta-worth"  # the evaluation over the whole study suite picks it (docs/benchmarks.md §8)
DEFAULT_FALLBACK: Fallback = "auto"  # ... an uncertain verdict: the lean from 20 rarer-class items, else the pool
RULES_VERSION = 12  # bump when a rule's computation changes: the study's rule trials carry it, so stale ones rerun


@dataclass(frozen=True)
class Pool:
    """The weak-labelled pool: ``x`` (N, ...) inputs like the gold set's (dense, sparse or images) and ``labels``
    (N,) the labeler's hard labels, gold items excluded."""

    x: Any
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.x.shape[0] != len(self.labels):
            raise FmgaugeError(f"pool inputs have {self.x.shape[0]} rows but {len(self.labels)} weak labels.")


def check_gold(y: np.ndarray, n_classes: int, class_names: tuple[str, ...] | None = None) -> np.ndarray:
    """Refuse a gold set with fewer than 10 items, a single class, or fewer than 2 items of some class."""
    counts = np.bincount(y, minlength=n_classes)
    names = class_names or tuple(str(k) for k in range(n_classes))
    if len(y) < 10:
        raise FmgaugeError(f"decide needs at least 10 gold labels, got {len(y)}.")
    thin = [k for k in range(n_classes) if counts[k] < 2]
    if thin:
        have = {names[k]: int(counts[k]) for k in range(n_classes)}
        raise FmgaugeError(
            f"the gold set needs at least 2 items of every class; class(es) {[names[k] for k in thin]} have "
            f"{[int(counts[k]) for k in thin]} (all counts: {have}). Label more items of those classes."
        )
    return counts


def _check_weights(weights: Any, m: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = check_finite("gold weights", np.asarray(weights, dtype=float))
    if w.shape != (m,) or (w <= 0).any():
        raise FmgaugeError(f"gold weights must be {m} positive numbers (one per gold item), got shape {w.shape} "
                           f"with minimum {w.min() if w.size else 'n/a'}.")
    return w * (m / w.sum())


def _labeler_auc(y: np.ndarray, k: int, probs: np.ndarray, w: np.ndarray, level: float) -> Estimate:
    """The labeler's (weighted) AUC on the gold items with Newcombe's interval at the effective class sizes."""
    point = float(weighted_aucs(y, k, w[None], scores=probs)[0])
    parts = [auc_score_interval(point, max(1, round(effective_n(w[y == c]))),
                                max(1, round(effective_n(w[y != c]))), level=level) for c in problems(k)]
    return Estimate(point, float(np.mean([p.lo for p in parts])), float(np.mean([p.hi for p in parts])), level)


def decide(
    x: Any, y: np.ndarray, probs: np.ndarray, labels: np.ndarray | None = None, *, pool: Pool | None = None,
    weights: np.ndarray | None = None, max_pairs: int = 120, pool_repeats: int = 2, pool_max: int | None = 2000,
    n_boot: int = 1000, level: float = 0.95, seed: int = 0, primary: str | None = None,
    rules: tuple[str, ...] | None = None, class_names: tuple[str, ...] | None = None,
    proxy: StudentConfig | dict | None = None, curve: bool = True, fallback: Fallback = DEFAULT_FALLBACK,
    gold_cache: dict | None = None,
) -> Decision:
    """Decide from a gold set whether the labeler's weak labels will help.

    Parameters
    ----------
    x : (m, D) features, sparse rows, or (m, C, H, W) images of the gold items.
    y : (m,) int true labels in 0..K-1 (K = probs.shape[1]); at least 10 items and 2 per class.
    probs : (m, K) the labeler's class probabilities on the gold items.
    labels : (m,) the labeler's hard labels (default: argmax of ``probs``).
    pool : the weak-labelled pool (inputs like ``x``, gold items excluded); enables the population estimate of the
        labeler's quality and the pool rules ``cv-delta``, ``weak-student``, ``projection``.
    weights : (m,) design weights of the gold items (a stratified sample from ``sample-gold``: inverse inclusion
        probabilities); AUCs then weigh pair (i, j) by w_i·w_j and bootstraps resample within weak-label strata.
    max_pairs : leave-pair-out fits for the gold-only AUC (all pairs when there are fewer).
    pool_repeats : repeats of stratified K-fold for the gold+weak side of ``cv-delta``.
    pool_max : pool items the pool rules train on (a seeded random subset; None: all).
    primary : the rule giving :attr:`Decision.verdict` (default: ``cv-delta`` with a pool, else ``auc``).
    rules : which rules to run (default: all that the inputs allow).
    proxy : the student every rule trains (a StudentConfig or its dict; default sk-logreg, :mod:`.proxy`).
    curve : fit the gold-only learning curve for n* (2 more leave-pair-out runs on nested subsets).
    fallback : what an ``uncertain`` verdict acts as: ``auto`` (default), the side its point estimate favours once
        the gold set holds 20 items of its rarer class, below that the weak labels when they agree with a
        gold-trained model across the pool (agreement > 0.52, :func:`.rules.pool_agreement`) or the labeler ranks
        the gold items more than 0.1 above the gold-only estimate (:func:`.rules.labeler_ranks`), else gold only;
        ``labeler``, the labeler's ranking at every m with the bar 0.7; ``weak``, the weak labels; ``lean``, the
        side its point estimate favours. docs/benchmarks.md §8 holds the evaluation
        that picked the default.
    gold_cache : a description of (inputs, gold set) under which the leave-pair-out outcomes are cached by
        content (rule trials of several labelers on one gold set share them); None: no cache.
    """
    if fallback not in FALLBACKS:
        raise FmgaugeError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}.")
    y = np.asarray(y).astype(np.int64)
    probs = check_finite("labeler probs", np.asarray(probs, dtype=float))
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise FmgaugeError(f"labeler probs must be (m, K) with K >= 2 classes, got shape {probs.shape}.")
    k = probs.shape[1]
    labels = probs.argmax(1) if labels is None else np.asarray(labels).astype(np.int64)
    check_same_length(x=x, y=y, probs=probs, labels=labels)
    if y.min() < 0 or y.max() >= k:
        raise FmgaugeError(f"gold labels must be class indices in 0..{k - 1}, got {np.unique(y).tolist()}.")
    wanted = rules or (RULES if pool is not None else ("accuracy", "auc"))
    bad = [r for r in (*wanted, *([primary] if primary else [])) if r not in RULES]
    if bad:
        raise FmgaugeError(f"rules must be among {list(RULES)}, got {bad}.")
    if pool is None and any(r in POOL_RULES for r in wanted):
        raise FmgaugeError(f"rules {[r for r in wanted if r in POOL_RULES]} need the weak-labelled pool: give "
                           "pool inputs and weak labels (decide_from_files: a labeler file and features that "
                           "cover items beyond the gold set).")
    primary = primary or (DEFAULT_PRIMARY if DEFAULT_PRIMARY in wanted else wanted[-1])
    if primary not in wanted:
        raise FmgaugeError(f"primary rule {primary!r} is not among the rules run {list(wanted)}.")
    w = _check_weights(weights, len(y))
    images = not hasattr(x, "toarray") and np.asarray(x).ndim > 2  # pixels: standardised; feature vectors: as given
    xg = dense(x)
    if not hasattr(xg, "toarray"):
        check_finite("features", xg)
    counts = check_gold(y, k, class_names)
    xp, pool_labels, all_pool_labels = None, None, None
    if pool is not None:
        xp = dense(pool.x)
        pool_labels = all_pool_labels = np.asarray(pool.labels).astype(np.int64)
        if pool_max is not None and xp.shape[0] > pool_max:
            keep = np.sort(np.random.default_rng([seed, 17]).permutation(xp.shape[0])[:pool_max])
            xp, pool_labels = xp[keep], pool_labels[keep]
        if images:
            scale = standardiser(xp)
            xg, xp = scale(xg), scale(xp)
    elif images:
        xg = standardiser(xg)(xg)
    cfg = proxy_student(x, proxy)  # by the inputs as given: images get the image proxy
    # torch proxies get the budget a study with this pool gives them (without a pool: as if it held pool_max items)
    student = Proxy(cfg, budget_steps(cfg, xp.shape[0] if xp is not None else max(pool_max or 0, len(y))), seed)
    wg = np.ones(len(y)) if w is None else w
    pairs = gold_pairs(student, xg, y, k, max_pairs=max_pairs, seed=seed, cache=gold_cache)
    gold = gold_only_auc(pairs, y, k, level, wg)
    need_curve = curve or "projection" in wanted
    lc = learning_curve(student, xg, y, k, pairs, seed=seed, weights=wg, level=level,
                        cache=gold_cache) if need_curve else []
    summary = labeler_summary(y, labels, k, pool_labels=all_pool_labels, class_names=class_names, level=level,
                              seed=seed)
    lab_auc = _labeler_auc(y, k, probs, wg, level)
    zp = zg = None
    agreement = float("nan")
    if pool is not None:
        both = student.coordinates(stack_rows(xp, xg))  # every pool fit trains on pool and gold rows, scores gold
        zp, zg = both[:xp.shape[0]], both[xp.shape[0]:]
        agreement = pool_agreement(student, zg, y, k, zp, pool_labels)
    ranks = labeler_ranks(lab_auc.value, gold.value, agreement, **ranks_bar(fallback))  # fallbacks labeler, auto
    rare = int(counts.min())  # gold items of the rarer class: fallback "auto" follows the lean from LEAN_FROM
    out: dict[str, RuleVerdict] = {}
    for rule in ("accuracy", "auc"):
        if rule not in wanted:
            continue
        if rule == "accuracy":
            est = summary.accuracy if not summary.unusable else labeler_summary(
                y, labels, k, class_names=class_names, level=level, seed=seed).accuracy  # the gold set's own
        else:
            est = lab_auc
        verdict, more = interval_verdict(gold, est, len(y))
        lean: Lean = "gold-only" if gold.value > est.value else "use-weak-labels"
        out[rule] = RuleVerdict(rule, verdict, lean, est, gold.value - est.value, None, more,
                                extrapolate_crossover(lc, est.value), fallback, ranks=ranks, min_class=rare)
    n_star, n_star_ci = None, None
    if pool is not None and any(r in POOL_RULES for r in wanted):
        warm = student.warm_model(zp, pool_labels)
        weak_only = student.fit_predict([zp], [pool_labels], zg, k, init=warm)[0]
        sides = {"weak-student": weak_only}
        if "cv-delta" in wanted or "delta-worth" in wanted:
            sides["cv-delta"] = mixed_oof(student, zg, y, k, zp, pool_labels, n_repeats=pool_repeats, seed=seed,
                                          init=warm)
        bw = boot_weights(len(y), n_boot, seed, w, strata=None if w is None else labels)
        for rule, side in sides.items():
            diff, lo, hi = paired_difference(y, k, bw, pairs, side, level=level)
            est = _labeler_auc(y, k, side, wg, level)
            if rule == "weak-student":
                n_star = extrapolate_crossover(lc, est.value)
                n_star_ci = crossover_interval(lc, est, seed=seed)
            verdict, more = paired_verdict(diff, lo, hi, len(y), rare)
            lean = "use-weak-labels" if diff >= 0 else "gold-only"
            xo = extrapolate_crossover(lc, est.value)
            if rule == "cv-delta" and "delta-worth" in wanted:
                v, ln, worthless = worth_verdict((verdict, lean), summary.youden.hi, rare)
                out["delta-worth"] = RuleVerdict("delta-worth", v, ln, est, -diff, (-hi, -lo),  # type: ignore[arg-type]
                                                 more if v == "uncertain" else None, xo, fallback, worthless, ranks,
                                                 rare)
            if rule not in wanted:
                continue
            out[rule] = RuleVerdict(rule, verdict, lean, est, -diff, (-hi, -lo), more, xo, fallback, ranks=ranks,
                                    min_class=rare)
        if "projection" in wanted:
            verdict, lean = crossover_verdict(n_star, n_star_ci, len(y))
            gap = float(np.log(len(y) / n_star)) if n_star else float("-inf")
            out["projection"] = RuleVerdict("projection", verdict, lean, out["weak-student"].labeler
                                            if "weak-student" in out else _labeler_auc(y, k, weak_only, wg, level),
                                            gap, None, None, n_star, fallback, ranks=ranks, min_class=rare)
    n_eff = None
    if pool is not None and not summary.unusable:
        f = summary.factor
        n_eff = Estimate(summary.population * f.value, summary.population * f.lo, summary.population * f.hi, level)
    return Decision(len(y), counts.tolist(), gold, {r: out[r] for r in RULES if r in out}, primary, lc,
                    pool_size=0 if xp is None else int(xp.shape[0]),
                    population=summary.population, labeler_summary=summary, n_eff=n_eff,
                    crossover=n_star, crossover_ci=n_star_ci, weighted=w is not None,
                    agreement=None if math.isnan(agreement) else agreement)
