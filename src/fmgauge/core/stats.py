"""Statistics every report needs: AUC with a bootstrap CI, Wilson interval, seed-mean CI, paired bootstrap.

Conventions: ``y`` (N,) int class indices; ``scores`` (N,) positive-class scores for binary tasks or (N, K)
per-class scores for K > 2 (macro one-vs-rest AUC). Intervals are two-sided at ``level`` (default 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from fmgauge.core.validation import FmgaugeError, check_same_length


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval."""

    value: float
    lo: float
    hi: float
    level: float = 0.95

    def to_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "level": self.level}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; macro one-vs-rest when ``scores`` is (N, K) with K > 2. Binary (N, 2) uses column 1."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype=float)
    check_same_length(y=y, scores=s)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if len(np.unique(y)) < 2:
        raise FmgaugeError(f"AUC is undefined: y holds a single class ({np.unique(y).tolist()}).")
    if s.ndim == 1:
        return float(roc_auc_score(y, s))
    present = np.unique(y)
    if len(present) < s.shape[1]:
        # macro AUC over the classes present; renormalise the scores of those classes
        s = s[:, present] / np.clip(s[:, present].sum(1, keepdims=True), 1e-12, None)
        y = np.searchsorted(present, y)
        if s.shape[1] == 2:
            return float(roc_auc_score(y, s[:, 1]))
    return float(roc_auc_score(y, s, multi_class="ovr", average="macro"))


def binary_auc_batch(y: np.ndarray, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUC for each bootstrap resample ``idx`` (B, N) via the rank-sum (Mann-Whitney) formula."""
    ys, ss = y[idx], s[idx]  # (B, N)
    ranks = sps.rankdata(ss, axis=1)
    n1 = ys.sum(1)
    n0 = ys.shape[1] - n1
    r1 = (ranks * ys).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r1 - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_ci(
    y: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
    clusters: np.ndarray | None = None,
) -> Estimate:
    """AUC with a percentile bootstrap CI over items (resamples with a single class are skipped).

    ``clusters`` (N,) any hashable labels: resample whole clusters (items that belong together, e.g. the two
    questions of a pair) with replacement instead of single items, so correlated items do not narrow the interval.
    """
    if n_boot < 1:
        raise FmgaugeError(f"auc_ci needs n_boot >= 1 resamples, got {n_boot}.")
    y = np.asarray(y)
    s = np.asarray(scores, dtype=float)
    point = auc(y, s)
    rng = np.random.default_rng(seed)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if clusters is not None:
        if len(clusters) != len(y):
            raise FmgaugeError(f"clusters has {len(clusters)} labels for {len(y)} items.")
        _, first, codes = np.unique(np.asarray(clusters).astype(str), return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=int)
        rank[np.argsort(first)] = np.arange(len(first))  # clusters numbered in order of first appearance
        members = [np.flatnonzero(rank[codes] == c) for c in range(len(first))]
        picks = rng.integers(0, len(members), size=(n_boot, len(members)))
        yb = (y == y.max()).astype(float)
        boots = np.array([(binary_auc_batch(yb, s, i[None])[0] if s.ndim == 1 else
                           auc(y[i], s[i]) if len(np.unique(y[i])) > 1 else np.nan)
                          for i in (np.concatenate([members[c] for c in row]) for row in picks)])
        boots = boots[np.isfinite(boots)]
        a = (1 - level) / 2
        return Estimate(point, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    if s.ndim == 1:
        boots = binary_auc_batch((y == y.max()).astype(float), s, idx)
    else:
        boots = np.array([auc(y[i], s[i]) if len(np.unique(y[i])) > 1 else np.nan for i in idx])
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    return Estimate(point, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


def _newcombe_var(theta: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Hanley-McNeil variance of an AUC θ under the exponential model, with both group sizes replaced by their
    mean N* = (n_pos + n_neg)/2 (Newcombe 2006, method 5)."""
    n_star = (n_pos + n_neg) / 2.0
    return theta * (1 - theta) / (n_pos * n_neg) * (1 + (n_star - 1) * ((1 - theta) / (2 - theta) + theta / (1 + theta)))


def auc_score_ci(y: np.ndarray, scores: np.ndarray, *, level: float = 0.95) -> Estimate:
    """AUC with a score-type interval that stays honest on small samples (Newcombe 2006, "Confidence intervals for
    an effect size measure based on the Mann-Whitney statistic. Part 2", method 5).

    The interval is every θ with (AUC − θ)² ≤ z²·V(θ), V the Hanley-McNeil variance at θ (:func:`_newcombe_var`):
    like Wilson's interval for a proportion it never collapses to a point, so 20 items ranked perfectly give
    AUC 1.000 with a lower bound well below 1 (the bootstrap gives [1, 1]). For K > 2 classes (macro one-vs-rest
    AUC) the bounds are the means of the per-class bounds (conservative: per-class errors taken as fully correlated).
    """
    y = np.asarray(y)
    s = np.asarray(scores, dtype=float)
    point = auc(y, s)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if s.ndim == 2:
        present = np.unique(y)
        parts = [auc_score_ci((y == k).astype(int), s[:, k], level=level) for k in present]
        return Estimate(point, float(np.mean([p.lo for p in parts])), float(np.mean([p.hi for p in parts])), level)
    pos = y == y.max()
    return auc_score_interval(point, int(pos.sum()), int((~pos).sum()), level=level)


def auc_score_interval(point: float, n_pos: int, n_neg: int, *, level: float = 0.95) -> Estimate:
    """Newcombe's score interval (:func:`auc_score_ci`) around an AUC estimate ``point`` from ``n_pos`` positive
    and ``n_neg`` negative items (any estimator of the Mann-Whitney probability, e.g. leave-pair-out)."""
    z = sps.norm.ppf(1 - (1 - level) / 2)
    grid = np.linspace(0.0, 1.0, 20_001)
    inside = (point - grid) ** 2 <= z * z * _newcombe_var(grid, n_pos, n_neg)
    inside[np.argmin(np.abs(grid - point))] = True  # the point itself (V = 0 at θ = 0 or 1)
    return Estimate(float(point), float(grid[inside].min()), float(grid[inside].max()), level)


def wilson_ci(k: int, n: int, *, level: float = 0.95) -> Estimate:
    """Wilson score interval for a proportion k/n."""
    if n <= 0:
        raise FmgaugeError(f"wilson_ci needs n > 0 trials, got n={n}.")
    if not 0 <= k <= n:
        raise FmgaugeError(f"wilson_ci needs 0 <= k <= n, got k={k}, n={n}.")
    z = sps.norm.ppf(1 - (1 - level) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else float(max(0.0, centre - half))  # exact at the edges: float error left lo ~1e-17 > p
    hi = 1.0 if k == n else float(min(1.0, centre + half))
    return Estimate(p, lo, hi, level)


def mean_ci(values: np.ndarray, *, level: float = 0.95) -> Estimate:
    """Mean with a Student-t interval (over seeds); a single value gets a zero-width interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), level)
    m = float(v.mean())
    if len(v) < 2:
        return Estimate(m, m, m, level)
    half = sps.t.ppf(1 - (1 - level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return Estimate(m, m - float(half), m + float(half), level)


@dataclass(frozen=True)
class PairedResult:
    mean_diff: Estimate
    p_value: float
    n: int

    def to_dict(self) -> dict:
        return {"mean_diff": self.mean_diff.to_dict(), "p_value": self.p_value, "n": self.n}


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> PairedResult:
    """Mean of ``a - b`` over paired units with a percentile bootstrap CI and a two-sided bootstrap p-value.

    The p-value is the share of the null-centred bootstrap distribution at least as extreme as the observed mean
    (Efron & Tibshirani 1993, §16.4), floored at 1/(n_boot+1).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    n = check_same_length(a=a, b=b)
    if n < 2:
        raise FmgaugeError(f"paired_bootstrap needs at least 2 pairs, got {n}.")
    d = a - b
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(1)
    obs = d.mean()
    al = (1 - level) / 2
    centred = boots - boots.mean()
    p = (np.sum(np.abs(centred) >= abs(obs)) + 1) / (n_boot + 1)
    est = Estimate(float(obs), float(np.quantile(boots, al)), float(np.quantile(boots, 1 - al)), level)
    return PairedResult(est, float(min(1.0, p)), n)


def rank_correlation_ci(
    x: np.ndarray, y: np.ndarray, *, method: str = "spearman", n_boot: int = 1000, level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Spearman's rho or Kendall's tau-b of paired ``x``, ``y`` (N,) with a 95% (``level``) interval.

    Spearman: percentile bootstrap over pairs (vectorised; resamples with a constant variable are skipped).
    Kendall: Fisher z-interval with the Fieller, Hartley & Pearson (1957) variance ``0.437 / (N - 4)`` (N > 4).
    Fewer than 3 pairs (5 for Kendall) give a NaN interval.
    """
    if method not in ("spearman", "kendall"):
        raise FmgaugeError(f"method must be 'spearman' or 'kendall', got {method!r}.")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = check_same_length(x=x, y=y)
    fn = sps.spearmanr if method == "spearman" else sps.kendalltau
    point = float(fn(x, y)[0]) if n >= 2 else float("nan")
    if method == "kendall":
        if n <= 4 or not np.isfinite(point):
            return Estimate(point, float("nan"), float("nan"), level)
        z, half = np.arctanh(np.clip(point, -0.999999, 0.999999)), sps.norm.ppf(1 - (1 - level) / 2) * np.sqrt(
            0.437 / (n - 4))
        return Estimate(point, float(np.tanh(z - half)), float(np.tanh(z + half)), level)
    if n < 3:
        return Estimate(point, float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    rx, ry = sps.rankdata(x[idx], axis=1), sps.rankdata(y[idx], axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    ok = den > 0
    if not ok.any():
        return Estimate(point, float("nan"), float("nan"), level)
    boots = (rx * ry).sum(1)[ok] / den[ok]
    a = (1 - level) / 2
    return Estimate(point, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


@dataclass(frozen=True)
class SignFlipResult:
    """Exact paired sign-flip permutation test of mean(a − b) = 0."""

    p_value: float
    min_p: float  # the smallest p-value n pairs can give at all: 2 / 2**n
    mde: float  # minimum detectable mean difference, 5% two-sided, 80% power: (t_.975 + t_.8)·sd/√n
    n: int

    def to_dict(self) -> dict:
        return {"p_value": self.p_value, "min_p": self.min_p, "mde": self.mde, "n": self.n}


def sign_flip_test(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 100_000, seed: int = 0) -> SignFlipResult:
    """Paired permutation test (every sign flip of the differences a − b; exact for n ≤ 16 pairs, Monte Carlo
    beyond) with scipy.stats.permutation_test, the smallest attainable p for n pairs, and the minimum detectable
    difference. With 2 pairs no difference can be significant (min p = 0.5), which a bootstrap hides."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = check_same_length(a=a, b=b)
    if n < 2:
        raise FmgaugeError(f"sign_flip_test needs at least 2 pairs, got {n}.")
    d = a - b
    if np.all(d == 0):
        p = 1.0
    else:
        res = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                   permutation_type="samples", alternative="two-sided",
                                   n_resamples=np.inf if n <= 16 else n_resamples, random_state=seed)
        p = float(res.pvalue)
    sd = float(d.std(ddof=1))
    mde = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
    return SignFlipResult(min(1.0, p), min(1.0, 2.0 / 2 ** n), float(mde), n)
