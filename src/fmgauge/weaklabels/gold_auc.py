"""The gold-only side of a decision: the AUC a student trained on the m gold items would reach, from those items.

Notation: m gold items, K classes, ``x`` (m, D) standardised inputs, ``y`` (m,) true labels, ``weights`` (m,)
optional design weights (inverse inclusion probabilities of a stratified gold sample, :mod:`.sample_gold`; None
= a simple random sample, every item weight 1).

**Leave-pair-out** (Airola et al. 2011, "An experimental comparison of cross-validation techniques for estimating
the area under the ROC curve"): for up to ``max_pairs`` (i of class c, j of another class) pairs, the proxy trained
on the other m − 2 items ranks i against j. The share of pairs ranked right is a nearly unbiased estimate of the AUC
of a model trained on m − 2 items, at any m; pooling K-fold out-of-fold scores is not (models trained on 8–16 items
score on different scales: pooled AUCs of 0.2–0.3 were measured on 20-item TF-IDF gold sets whose students reach
0.6–0.7). With a converged convex proxy (:mod:`.proxy`) its bias against the students' realised test AUC is what
docs/benchmarks.md §12 measures per study and m.

**Sampled pairs, corrected** (binary tasks, convex proxy): where there are more pairs than ``max_pairs`` (m ≥ 50 or
so), the share of sampled pairs ranked right carries a sampling error of about ±0.03. The approximate leave-pair-out
outcomes of **every** pair — one Newton step from the fit on all m items, which ranks 99–100% of pairs as the exact
refit does — serve as its control variate (:func:`pair_auc`): unbiased, and a fraction of the noise.

**From 200 gold items on** the gold side is repeated stratified 5-fold with pooled out-of-fold scores
(:func:`gold_pairs`): there a converged proxy scores on one scale across folds, and it uses every pair where
leave-pair-out affords 60–120.

**Floor at chance.** With 2 gold items of a class every leave-pair-out fit sees one of them, and when the two are
unlike each other (cosine −0.01 between the 2 positive abstracts of one 20-item Medical Abstracts gold set) the
fits rank every held-out pair backwards: an AUC of 0.00 for a student whose real test AUC, trained on both, is
0.77. Each one-vs-rest problem's leave-pair-out AUC is therefore floored at 0.5: a model trained on gold labels is
taken to rank no worse than chance, which is what the data cannot show at that size.

Weighted AUC: a pair (i, j) counts w_i·w_j, so a stratified gold set estimates the population's AUC. Intervals:
Newcombe's (2006) score interval at the Kish effective class sizes, which does not collapse when 20 items happen to
be ranked perfectly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmgauge.core.cache import cached_arrays
from fmgauge.core.stats import Estimate, auc_score_interval
from fmgauge.weaklabels.convex import leave_two_out_scores
from fmgauge.weaklabels.proxy import Proxy

MAX_N = 10_000_000  # an extrapolated crossover beyond this is reported as unreachable
CHANCE = 0.5  # the floor of a leave-pair-out AUC (see the module docstring)
CV_FROM = 200  # from this many gold items on, the gold side is repeated stratified 5-fold (see gold_pairs)
CV_PAIRS = 5000  # pairs per one-vs-rest problem kept from the pooled out-of-fold scores


def problems(n_classes: int) -> list[int]:
    """The one-vs-rest problems a macro AUC averages: [1] for a binary task, else every class."""
    return [1] if n_classes == 2 else list(range(n_classes))


@dataclass(frozen=True)
class PairOutcomes:
    """Leave-pair-out outcomes: for P pairs, ``hit`` = 1 if the proxy trained without i and j ranks i (of class
    ``c``) above j (of another class) for class c, 0.5 on a tie, else 0. With a convex proxy on a binary task also
    the control variate of :func:`pair_auc`: the approximate leave-pair-out outcomes (one Newton step from the fit on
    all m items, :func:`fmgauge.weaklabels.convex.leave_two_out_scores`) of the same pairs and of every pair."""

    c: np.ndarray  # (P,) the one-vs-rest problem (class index; 1 for binary tasks)
    i: np.ndarray  # (P,) the item of class c
    j: np.ndarray  # (P,) the item of another class
    hit: np.ndarray  # (P,) 1, 0.5 or 0
    approx: np.ndarray | None = None  # (P,) the approximate leave-pair-out outcomes of the same pairs
    approx_grid: np.ndarray | None = None  # (m, m) approximate outcomes of every (class-1 item, other item) pair

    def to_arrays(self) -> dict[str, np.ndarray]:
        extra = {} if self.approx is None else {"approx": self.approx, "approx_grid": self.approx_grid}
        return {"c": self.c, "i": self.i, "j": self.j, "hit": self.hit, **extra}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> PairOutcomes:
        return cls(a["c"], a["i"], a["j"], a["hit"], a.get("approx"), a.get("approx_grid"))


def outcomes(si: np.ndarray, sj: np.ndarray) -> np.ndarray:
    """1 where si > sj, 0.5 on a tie, else 0."""
    return np.where(si > sj, 1.0, np.where(si == sj, 0.5, 0.0))


def all_pairs_auc(y: np.ndarray, c: int, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) the weighted mean of outcomes ``grid`` (m, m) over every (class-c item, other item) pair, pair (i, j)
    weighted w_i·w_j under each row of ``weights`` (B, m) (NaN when a resample loses a side)."""
    pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
    wp, wn = weights[:, pos], weights[:, neg]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bp,pn,bn->b", wp, grid[np.ix_(pos, neg)], wn) / (wp.sum(1) * wn.sum(1))


def scored_auc(y: np.ndarray, c: int, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AUC of fixed scores ``s`` (m,) for class c against the rest over all pairs (:func:`all_pairs_auc`)."""
    return all_pairs_auc(y, c, outcomes(s[:, None], s[None, :]), weights)


def pair_auc(pairs: PairOutcomes, y: np.ndarray, c: int, weights: np.ndarray) -> np.ndarray:
    """(B,) the leave-pair-out AUC of class c under each row of ``weights`` (B, m), floored at chance.

    Without ``approx``: the weighted share of the sampled pairs ranked right. With it, a control variate for the
    sampling of pairs: the approximate leave-pair-out AUC over **all** pairs plus the sampled pairs' mean of (exact −
    approximate) outcomes. Both estimate the all-pairs leave-pair-out AUC without bias and are equal when every pair
    is sampled; the one-Newton-step approximation ranks 99–100% of pairs as the exact refit does, so the control
    variate's sampling noise is a fraction of the plain share's (with 120 of 625 pairs, a standard error of about
    0.03: as large as the gains the rules must resolve)."""
    sel = pairs.c == c
    wij = weights[:, pairs.i[sel]] * weights[:, pairs.j[sel]]  # (B, P_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (wij * pairs.hit[sel]).sum(1) / wij.sum(1)
        if pairs.approx is not None:
            share = (share - (wij * pairs.approx[sel]).sum(1) / wij.sum(1)
                     + all_pairs_auc(y, c, pairs.approx_grid, weights))
    return np.clip(share, CHANCE, 1.0)


def choose_pairs(y: np.ndarray, n_classes: int, max_pairs: int, seed: int) -> tuple[np.ndarray, ...]:
    """(c, i, j) of up to ``max_pairs`` pairs (all when fewer; for K > 2 split over the K problems)."""
    rng = np.random.default_rng([seed, 29])
    per = max_pairs if n_classes == 2 else max(12, max_pairs // n_classes)
    cs, iis, jjs = [], [], []
    for c in problems(n_classes):
        pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
        grid = np.array(np.meshgrid(pos, neg, indexing="ij")).reshape(2, -1).T  # (|pos|·|neg|, 2)
        if len(grid) > per:
            grid = grid[rng.choice(len(grid), per, replace=False)]
        cs.append(np.full(len(grid), c))
        iis.append(grid[:, 0])
        jjs.append(grid[:, 1])
    return np.concatenate(cs), np.concatenate(iis), np.concatenate(jjs)


def leave_pair_out(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, *, max_pairs: int = 120,
                   seed: int = 0, cache: dict | None = None) -> PairOutcomes:
    """Up to ``max_pairs`` leave-pair-out fits (see the module docstring). Convex fits are warm-started from the
    fit on all m items. ``cache``: a description of (inputs, gold set) under which the outcomes are cached by
    content, so rule trials of several labelers on one gold set share them (the gold side ignores the labeler)."""
    def compute() -> dict[str, np.ndarray]:
        c, i, j = choose_pairs(y, n_classes, max_pairs, seed)
        keep = [np.setdiff1d(np.arange(len(y)), [a, b]) for a, b in zip(i, j, strict=True)]
        z = proxy.coordinates(x)  # every fit trains and scores on rows of x
        warm = proxy.warm_model(z, y)
        probs = proxy.fit_predict([z[k] for k in keep], [y[k] for k in keep], z, n_classes, init=warm)  # (P, m, K)
        hit = outcomes(probs[np.arange(len(c)), i, c], probs[np.arange(len(c)), j, c])
        if warm is None or n_classes != 2 or hasattr(z, "toarray"):  # the control variate: binary convex fits
            return {"c": c, "i": i, "j": j, "hit": hit}
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
        gi, gj = np.repeat(pos, len(neg)), np.tile(neg, len(pos))
        si, sj = leave_two_out_scores(z, y, warm, proxy.cfg.c, gi, gj)
        grid = np.zeros((len(y), len(y)))
        grid[gi, gj] = outcomes(si, sj)
        return {"c": c, "i": i, "j": j, "hit": hit, "approx": grid[i, j], "approx_grid": grid}

    if cache is None:
        arrays = compute()
    else:
        desc = {**cache, "proxy": proxy.cfg.model_dump(), "steps": proxy.steps, "max_pairs": max_pairs,
                "seed": seed, "m": len(y), "what": "leave-pair-out", "version": 6}
        arrays = cached_arrays("lpo", desc, compute)
    return PairOutcomes.from_arrays(arrays)


def cv_pairs(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, *, n_repeats: int = 2, seed: int = 0,
             max_pairs: int = CV_PAIRS) -> dict[str, np.ndarray]:
    """Pooled out-of-fold outcomes: the proxy trained on the training folds of ``n_repeats`` stratified 5-fold
    splits scores the held-out fold; the averaged out-of-fold scores (m, K) rank (positive, negative) pairs — all
    of them, or ``max_pairs`` drawn at random per problem. The arrays of :class:`PairOutcomes`."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    k = int(min(5, np.bincount(y, minlength=n_classes).min()))
    splits = list(RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed)
                  .split(np.zeros(len(y)), y))
    z = proxy.coordinates(x)  # every fit trains and scores on rows of x
    warm = proxy.warm_model(z, y)
    fits = proxy.fit_predict([z[tr] for tr, _ in splits], [y[tr] for tr, _ in splits], z, n_classes, init=warm)
    oof = np.zeros((len(y), n_classes))
    for (_, te), p in zip(splits, fits, strict=True):
        oof[te] += p[te]
    rng = np.random.default_rng([seed, 37])
    cs, iis, jjs, hits = [], [], [], []
    for c in problems(n_classes):
        pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
        grid = np.array(np.meshgrid(pos, neg, indexing="ij")).reshape(2, -1).T
        if len(grid) > max_pairs:
            grid = grid[rng.choice(len(grid), max_pairs, replace=False)]
        si, sj = oof[grid[:, 0], c], oof[grid[:, 1], c]
        cs.append(np.full(len(grid), c))
        iis.append(grid[:, 0])
        jjs.append(grid[:, 1])
        hits.append(outcomes(si, sj))
    return {"c": np.concatenate(cs), "i": np.concatenate(iis), "j": np.concatenate(jjs), "hit": np.concatenate(hits)}


def gold_pairs(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, *, max_pairs: int = 120, seed: int = 0,
               cache: dict | None = None) -> PairOutcomes:
    """The gold-only side as pair outcomes: leave-pair-out below ``CV_FROM`` gold items; from there on pooled
    out-of-fold scores of repeated stratified 5-fold (:func:`cv_pairs`). At m ≥ 200 a converged proxy trained on
    4/5 of the items scores on one scale across folds and loses little to the smaller training set, while 60–120
    leave-pair-out pairs leave the estimate a ±0.03 coin flip against the weak side's all-pairs AUC; ten fits also
    cost less than a hundred."""
    if len(y) < CV_FROM:
        return leave_pair_out(proxy, x, y, n_classes, max_pairs=max_pairs, seed=seed, cache=cache)

    def compute() -> dict[str, np.ndarray]:
        return cv_pairs(proxy, x, y, n_classes, seed=seed)

    if cache is None:
        arrays = compute()
    else:
        desc = {**cache, "proxy": proxy.cfg.model_dump(), "steps": proxy.steps, "seed": seed, "m": len(y),
                "what": "cv-pairs", "version": 3, "max_pairs": CV_PAIRS}
        arrays = cached_arrays("lpo", desc, compute)
    return PairOutcomes.from_arrays(arrays)


def weighted_aucs(y: np.ndarray, n_classes: int, weights: np.ndarray, *, pairs: PairOutcomes | None = None,
                  scores: np.ndarray | None = None) -> np.ndarray:
    """Macro one-vs-rest AUC (B,) under item weights ``weights`` (B, m) (design weights × bootstrap
    multiplicities), from leave-pair-out outcomes ``pairs`` (:func:`pair_auc`) or from fixed ``scores`` (m, K)
    (all pairs)."""
    return np.mean([pair_auc(pairs, y, c, weights) if pairs is not None else scored_auc(y, c, scores[:, c], weights)
                    for c in problems(n_classes)], axis=0)


def boot_weights(n: int, n_boot: int, seed: int, design: np.ndarray | None = None,
                 strata: np.ndarray | None = None) -> np.ndarray:
    """(n_boot + 1, n) item weights: the first row the design weights (the point estimate), then bootstrap draws
    (multinomial multiplicities, within ``strata`` when the gold set was drawn stratified) times the design."""
    rng = np.random.default_rng([seed, 31])
    w = np.ones(n) if design is None else np.asarray(design, dtype=float)
    if strata is None:
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    else:
        draws = np.zeros((n_boot, n))
        for s in np.unique(strata):
            idx = np.flatnonzero(strata == s)
            draws[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
    return np.vstack([w, draws * w])


def effective_n(w: np.ndarray) -> float:
    """Kish's effective sample size (Σw)²/Σw² of weights ``w``."""
    w = np.asarray(w, dtype=float)
    return float(w.sum() ** 2 / max((w ** 2).sum(), 1e-12))


def gold_only_auc(pairs: PairOutcomes, y: np.ndarray, n_classes: int, level: float = 0.95,
                  weights: np.ndarray | None = None) -> Estimate:
    """The (weighted) leave-pair-out gold-only AUC with Newcombe's interval at the effective class sizes (macro:
    the means of the per-class bounds)."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    parts = []
    for c in problems(n_classes):
        point = float(pair_auc(pairs, y, c, w[None])[0])
        n_pos = max(1, int(round(effective_n(w[y == c]))))
        n_neg = max(1, int(round(effective_n(w[y != c]))))
        parts.append(auc_score_interval(point, n_pos, n_neg, level=level))
    return Estimate(float(np.mean([p.value for p in parts])), float(np.mean([p.lo for p in parts])),
                    float(np.mean([p.hi for p in parts])), level)


def nested_subsets(y: np.ndarray, n_classes: int, seed: int, fracs=(0.5, 0.75)) -> list[np.ndarray]:
    """Stratified nested subsets of the gold items (sorted indices) at the given fractions, each holding at least
    2 items of every class (so a class with 2 gold items is in every subset)."""
    rng = np.random.default_rng([seed, 41])
    orders = {k: rng.permutation(np.flatnonzero(y == k)) for k in range(n_classes)}
    subsets = []
    for f in fracs:
        take = [orders[k][:max(2, int(round(f * len(orders[k]))))] for k in range(n_classes)]
        sub = np.sort(np.concatenate(take))
        if len(sub) < len(y) and all(len(sub) != len(s) for s in subsets):
            subsets.append(sub)
    return subsets


def learning_curve(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, full: PairOutcomes, *, seed: int = 0,
                   max_pairs: int = 60, weights: np.ndarray | None = None, level: float = 0.95,
                   cache: dict | None = None) -> list[tuple[int, Estimate]]:
    """The gold-only learning curve: leave-pair-out AUC (with its interval) at stratified nested subsets of the gold
    set (about m/2, 3m/4) and at all m items (``full``, already computed), for the n* extrapolation."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    points = []
    for sub in nested_subsets(y, n_classes, seed):
        sub_cache = None if cache is None else {**cache, "subset": sub.tolist()}
        po = gold_pairs(proxy, x[sub], y[sub], n_classes, max_pairs=max_pairs, seed=seed, cache=sub_cache)
        points.append((len(sub), gold_only_auc(po, y[sub], n_classes, level, w[sub])))
    points.append((len(y), gold_only_auc(full, y, n_classes, level, w)))
    return points


def extrapolate_crossover(curve: list[tuple[int, Any]], target: float) -> float | None:
    """n where AUC(n) reaches ``target``: the current n if already there; else the slope b of a + b·ln n fitted to
    the curve, extrapolated from the current point (n_now·exp((target − AUC_now)/b)); None if the curve is flat.
    ``curve`` holds (n, AUC) or (n, Estimate) points, the last at the full gold set."""
    if not curve:
        return None
    vals = [(n, v.value if isinstance(v, Estimate) else float(v)) for n, v in curve]
    n_now, auc_now = vals[-1]
    if auc_now >= target:
        return float(n_now)
    if len(vals) < 2:
        return None
    ln = np.log([p[0] for p in vals])
    b, _ = np.polyfit(ln, [p[1] for p in vals], 1)
    if b <= 1e-6:
        return None
    # the fitted slope, anchored at the current point: n* > n_now whenever the curve is still below the target
    n = n_now * math.exp(min((target - auc_now) / b, 700.0))
    return float(n) if n < MAX_N else None


def crossover_interval(curve: list[tuple[int, Estimate]], target: Estimate, *, n_draws: int = 2000,
                       seed: int = 0) -> tuple[float, float] | None:
    """A rough interval for the extrapolated crossover: draws of the curve points (normal, standard errors from
    their intervals) and of the target, each refitted as a + b·ln n and extrapolated from its last point; the 2.5%
    and 97.5% quantiles of n*
    (a draw whose curve never gets there counts as infinite; one already there as its n). None without 2 points."""
    if len(curve) < 2:
        return None
    rng = np.random.default_rng([seed, 53])
    ln = np.log([n for n, _ in curve])
    mu = np.array([e.value for _, e in curve])
    se = np.array([max((e.hi - e.lo) / 3.92, 1e-4) for _, e in curve])
    vals = mu + se * rng.standard_normal((n_draws, len(curve)))
    t = target.value + max((target.hi - target.lo) / 3.92, 1e-4) * rng.standard_normal(n_draws)
    lc = ln - ln.mean()
    b = (vals - vals.mean(1, keepdims=True)) @ lc / (lc @ lc)
    n_now = float(curve[-1][0])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        step = np.minimum((t - vals[:, -1]) / np.where(b > 1e-6, b, 1.0), 700.0)
        n = np.where(vals[:, -1] >= t, n_now, np.where(b > 1e-6, n_now * np.exp(step), np.inf))
    n = np.where(n > MAX_N, np.inf, n)
    lo, hi = np.quantile(n, [0.025, 0.975], method="inverted_cdf")
    return float(lo), float(hi)
