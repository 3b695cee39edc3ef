"""The decision rules: from the gold-only side (:mod:`.gold_auc`) and the labeler side (:mod:`.confusion`, the
weak-labelled pool), a verdict per rule.

- ``accuracy`` — the paper's rule (Xu, James, Ryu 2026): gold-only AUC against the labeler's accuracy on the
  population (post-stratified, :mod:`.confusion`; the gold set's accuracy when that estimate is unusable).
- ``auc`` — like-for-like: the labeler's AUC from its scores on the gold items against the gold-only AUC.
- ``cv-delta`` — what the weak labels do (needs the pool): the proxy trained on the weak-labelled pool + the training
  folds of repeated stratified K-fold over the gold items scores the held-out folds; its AUC against the gold-only
  AUC on the same items is ΔAUC = AUC(gold+weak) − AUC(gold), with a paired bootstrap CI over gold items.
- ``delta-worth`` — ``cv-delta``, unless the labeler's estimated confusion shows its labels carry no class
  information or the inverse: the 95% interval of Youden's J = 1 − ρ0 − ρ1 (for a binary task 2·balanced accuracy
  − 1; for K > 2 the mean J over one-vs-rest problems) lies at or below 0 — by the label-space projection they are
  then worth no clean labels at all. Then ``gold-only``, unless cv-delta commits to the weak labels. The guard
  reads J's interval, not its point: with 2 positives in a gold set a point estimate of −0.14 was made for a
  labeler whose J is 0.45 (docs/benchmarks.md §8).
- ``weak-student`` — the proxy trained on the weak-labelled pool alone, scored on the gold items, against the
  gold-only AUC on the same items (paired CI).
- ``projection`` — where the weak labels stop helping: n*, the n at which the gold-only learning curve (leave-pair-out
  AUC at nested subsets, a + b·ln n) reaches the weak-trained proxy's AUC, with an interval (:func:`.gold_auc.
  crossover_interval`); ``use-weak-labels`` when the whole interval lies above the user's m, ``gold-only`` when
  below.

The unpaired rules compare intervals; the paired ones read the CI of the difference. ``uncertain`` says roughly how
many more gold labels would settle it, assuming the half-widths shrink like 1/√m: m' = m·(half-width / |gap|)².

**What an uncertain verdict acts as** (``decide``'s fallback, :mod:`.verdicts`). By default (``auto``): once the
gold set holds ``LEAN_FROM`` (20) items of its rarer class, the side the rule's paired estimate leans to; below that,
where the paired ΔAUC is mostly noise, the weak labels when they agree with the gold labels across the pool — a
proxy trained on the gold items alone scores the pool, and its AUC against the weak labels exceeds ``AGREE_BAR``
(0.52; :func:`pool_agreement`) — or when the labeler ranks the user's gold items clearly better than a model trained
on them (its AUC on them above the gold-only estimate by ``AUTO_MARGIN``, 0.1), else gold only (:func:`labeler_ranks`).
Agreement reads the N pool items where the labeler's AUC on the gold items reads 2–5 of the rarer class: a chance
labeler agrees at 0.5, one that labels another concept below it. The paired rules commit to a side only from
``COMMIT_FROM`` (3) items of the rarer class (:func:`paired_verdict`).
``labeler`` applies the labeler's ranking at every m with the bar ``ACCEPTABLE_AUC`` (0.7, the conventional lower end
of "acceptable discrimination", Hosmer, Lemeshow & Sturdivant, *Applied Logistic Regression*, 3rd ed., 2013): the
previous default, which dropped labels that help from labelers near that bar. docs/benchmarks.md §8 measures the
fallbacks against each other, on held-out studies too, and what no fallback of this kind can reach
(``benchmarks/bench_rule_limits.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fmgauge.core.stats import Estimate
from fmgauge.weaklabels.gold_auc import PairOutcomes, weighted_aucs
from fmgauge.weaklabels.proxy import Proxy, stack_rows
from fmgauge.weaklabels.verdicts import (
    ACCEPTABLE_AUC,
    AGREE_BAR,
    AUTO_MARGIN,
    COMMIT_FROM,
    MAX_MORE,
    Fallback,
    Verdict,
)


def more_labels(n: int, half: float, gap: float) -> int | None:
    """About how many more gold labels would make an interval of half-width ``half`` exclude a gap ``gap``."""
    if gap < 1e-9:
        return None
    more = math.ceil(n * (half / gap) ** 2 - n)
    return max(1, more) if more <= MAX_MORE else None


def interval_verdict(gold: Estimate, lab: Estimate, n: int) -> tuple[Verdict, int | None]:
    """Unpaired rules: ``gold-only`` / ``use-weak-labels`` when the intervals do not overlap."""
    if gold.lo > lab.hi:
        return "gold-only", None
    if gold.hi < lab.lo:
        return "use-weak-labels", None
    gap = abs(gold.value - lab.value)
    half = (gold.hi - gold.lo) / 2 + (lab.hi - lab.lo) / 2
    return "uncertain", more_labels(n, half, gap)


def paired_verdict(diff: float, lo: float, hi: float, n: int, min_class: int = COMMIT_FROM) -> tuple[Verdict, int | None]:
    """Paired rules: the CI of ΔAUC = weak side − gold-only excludes 0, or not. With fewer than ``COMMIT_FROM``
    gold items of the rarer class (``min_class``) the rule does not commit: a bootstrap over items then holds 0, 1
    or 2 of them (resamples that lose the class are skipped), so its interval does not show how the estimate would
    vary with other gold items — on the rule suite, gold-only verdicts committed from 2 rarer-class items were right
    in 0.80 of cells, on the held-out studies in 0.25 (docs/benchmarks.md §8). More labels: until the rarer class
    reaches ``COMMIT_FROM`` at its current share."""
    if min_class < COMMIT_FROM:
        return "uncertain", math.ceil((COMMIT_FROM - min_class) * n / max(min_class, 1))
    if lo > 0:
        return "use-weak-labels", None
    if hi < 0:
        return "gold-only", None
    return "uncertain", more_labels(n, (hi - lo) / 2, abs(diff))


def crossover_verdict(n_star: float | None, ci: tuple[float, float] | None, m: int) -> tuple[Verdict, str]:
    """The projection rule: the crossover interval against the user's m (and the lean of its point estimate)."""
    top = m * (1 + 1e-9)  # n* = m (the curve is already at the weak side) counts as "stopped helping"
    lean = "use-weak-labels" if (n_star is None or not math.isfinite(n_star) or n_star > top) else "gold-only"
    if ci is None or not all(math.isfinite(v) or v == math.inf for v in ci):
        return "uncertain", lean
    if ci[0] > top:
        return "use-weak-labels", lean
    if ci[1] <= top:
        return "gold-only", lean
    return "uncertain", lean


def folds(y: np.ndarray, n_classes: int, n_repeats: int, seed: int):  # noqa: ANN201 - iterator of (train, test)
    """Repeated stratified K-fold over the gold items, K = min(5, smallest class count)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    k = int(min(5, np.bincount(y, minlength=n_classes).min()))
    return RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed).split(np.zeros(len(y)), y)


def mixed_oof(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, x_pool: Any, weak: np.ndarray, *,
              n_repeats: int = 2, seed: int = 0, init: Any = None) -> np.ndarray:
    """Out-of-fold class probabilities (m, K) of the proxy trained on the weak-labelled pool (``x_pool``,
    ``weak``) + the training folds of ``n_repeats`` stratified K-fold splits of the gold set, averaged.

    Every fold's model is trained on the same ~N_pool items and differs only in the few gold items it sees, so
    pooling their out-of-fold scores into one AUC is sound (unlike for gold-only models trained on 8 items).
    ``init`` warm-starts a convex proxy (:meth:`Proxy.warm_model` on the pool).
    """
    splits = list(folds(y, n_classes, n_repeats, seed))
    fits = proxy.fit_predict([stack_rows(x_pool, x[tr]) for tr, _ in splits],
                             [np.concatenate([weak, y[tr]]) for tr, _ in splits], x, n_classes, init=init)
    out = np.zeros((len(y), n_classes))
    for (_, te), p in zip(splits, fits, strict=True):
        out[te] += p[te]
    return out / n_repeats


def paired_difference(y: np.ndarray, n_classes: int, weights: np.ndarray, pairs: PairOutcomes,
                      weak_side: np.ndarray, *, level: float) -> tuple[float, float, float]:
    """AUC(weak side: fixed scores (m, K)) − gold-only leave-pair-out AUC on the same gold items, with a
    percentile bootstrap CI over items (``weights`` from :func:`.gold_auc.boot_weights`: the same resamples for
    both sides; resamples that lose a class are skipped)."""
    d = (weighted_aucs(y, n_classes, weights, scores=weak_side)
         - weighted_aucs(y, n_classes, weights, pairs=pairs))
    boots = d[1:][np.isfinite(d[1:])]
    a = (1 - level) / 2
    return float(d[0]), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def scores_of(p: np.ndarray) -> np.ndarray:
    """Scores for AUC: column 1 of a binary (m, 2) probability array, else the array."""
    return p[:, 1] if p.shape[1] == 2 else p


def labeler_ranks(labeler_auc: float, gold_auc: float, agreement: float = math.nan, *, bar: float = ACCEPTABLE_AUC,
                  margin: float = 0.0, agree_bar: float = math.inf) -> bool:
    """Do the weak labels clear a fallback's bar: the labeler's AUC on the gold items (from its scores) ≥ ``bar``,
    or above the gold-only AUC estimate from the same items by more than ``margin``, or the weak labels agree with a
    gold-trained model across the pool, ``agreement`` > ``agree_bar`` (:func:`pool_agreement`)? (The ``labeler``
    and ``auto`` fallbacks, :func:`ranks_bar`; NaN: no.)"""
    return bool(labeler_auc >= bar or labeler_auc > gold_auc + margin or agreement > agree_bar)


def pool_agreement(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, x_pool: Any, weak: np.ndarray) -> float:
    """How far the weak labels agree with the gold labels, read across the pool: the proxy trained on the m gold
    items alone (``x`` (m, ...), ``y`` (m,)) scores the N pool items (``x_pool``), and the AUC of those scores
    against the pool's weak labels ``weak`` (N,) (macro one-vs-rest for K > 2; NaN when the weak labels hold one
    class).

    When the labeler's errors do not depend on the item given its class (class-conditional noise), and the gold
    model, trained on gold labels only, cannot know them: agreement − 0.5 = (a − 0.5)·(PPV + NPV − 1), with a the
    gold model's AUC on the pool and PPV + NPV − 1 the weak labels' markedness (binary). So it is above 0.5 for a
    labeler informative about the gold classes, 0.5 for one at chance, below 0.5 for one that labels another
    concept — as far as the m gold items taught the model anything (a near 0.5 mutes it). It reads N pool items,
    where the labeler's AUC on the gold items reads 2–5 of the rarer class at m = 10–20."""
    from fmgauge.core.stats import auc

    if len(np.unique(weak)) < 2:
        return math.nan
    return auc(weak, proxy.fit_predict([x], [y], x_pool, n_classes)[0])  # binary: column 1


def ranks_bar(fallback: Fallback) -> dict[str, float]:
    """The bars of :func:`labeler_ranks` a fallback applies: ``auto`` reads the pool's agreement (> AGREE_BAR) and
    the labeler's AUC on the gold items AUTO_MARGIN above the gold-only estimate, with no bar on that AUC alone;
    the others the labeler's AUC ≥ ACCEPTABLE_AUC or above the gold-only estimate."""
    if fallback == "auto":
        return {"bar": math.inf, "margin": AUTO_MARGIN, "agree_bar": AGREE_BAR}
    return {"bar": ACCEPTABLE_AUC, "margin": 0.0, "agree_bar": math.inf}


def worth_verdict(cv: tuple[str, str], youden_hi: float, min_class: int = COMMIT_FROM) -> tuple[str, str, bool]:
    """``delta-worth``: (verdict, lean, worthless) from cv-delta's (verdict, lean) and the upper end of the 95%
    interval of the labeler's estimated Youden's J = 1 − ρ0 − ρ1 (NaN when unusable: cv-delta decides). With fewer
    than ``COMMIT_FROM`` gold items of the rarer class (``min_class``) the guard leans but does not commit, as
    :func:`paired_verdict` does not."""
    verdict, lean = cv
    if not math.isfinite(youden_hi) or youden_hi > 0:
        return verdict, lean, False
    if verdict == "use-weak-labels":  # cv-delta's paired interval excludes 0: what the labels do outweighs J
        return verdict, lean, True
    return ("gold-only" if min_class >= COMMIT_FROM else "uncertain"), "gold-only", True
