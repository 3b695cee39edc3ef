"""The decision rule: from 10+ gold labels, will the labeler's weak labels help a classifier or hurt it?

Notation: m gold items, K classes; ``x`` (m, ...) inputs of the gold items (features (m, D), sparse rows, or
images); ``y`` (m,) their true labels; ``probs`` (m, K) the labeler's class probabilities on them and ``labels``
(m,) its hard labels. Optionally the **pool**: :class:`Pool` — inputs and weak labels of the N items the labeler
labelled for free (the gold items excluded).

Four rules; every one ends in ``use-weak-labels``, ``gold-only`` or ``uncertain`` (with the side its point
estimate leans to, which is what an ``uncertain`` verdict falls back to):

- ``accuracy`` — the paper's rule (Xu, James, Ryu 2026): the gold-only AUC against the labeler's accuracy. The
  accuracy is **prior-corrected**: Σ_k π_k·recall_k with the recalls from the gold set and the pool's class prior
  π estimated from the weak labels by black-box shift estimation (Lipton et al. 2018: the weak-label shares q =
  Tᵀπ, T from the gold set), so a class-balanced gold set no longer misstates the accuracy of the labels the
  student trains on (without a pool, π is the gold set's class shares: plain accuracy).
- ``auc`` — like-for-like: the labeler's AUC from its scores against the gold-only AUC.
- ``cv-delta`` — what the weak labels do (needs the pool): the proxy trained on the weak-labelled pool + the
  training folds of repeated stratified K-fold over the gold items scores the held-out folds; its AUC against the
  gold-only AUC on the same items is ΔAUC = AUC(gold+weak) − AUC(gold), the sweep's ΔAUC estimated on the gold
  set, with a paired bootstrap CI over gold items.
- ``weak-student`` — (needs the pool): the proxy trained on the weak-labelled pool alone, scored on the gold
  items, against the gold-only AUC on the same items (paired bootstrap CI of the difference).

The gold-only AUC is estimated by **leave-pair-out** (Airola et al. 2011): for up to ``max_pairs`` (positive,
negative) pairs of gold items, the proxy trained on the other m − 2 items ranks the pair. Pooling K-fold scores
of models trained on 8–16 items each is badly biased (pooled out-of-fold AUCs of 0.2–0.3 were measured on 20-item
TF-IDF gold sets); leave-pair-out is nearly unbiased at any m.

Every rule reads the gold-only AUC (and the pool rules their weak side) off one **proxy student** trained on
standardised inputs (pool statistics): by default the zoo's ``logreg`` under the study's budget rule
(:mod:`fmgauge.weaklabels.training`: the same optimizer steps for every fit), ``sk-logreg`` on sparse inputs;
``proxy`` picks another. The pool is subsampled to ``pool_max`` items, so a decision costs seconds. How well a
proxy stands for the student a user trains is what the calibration sweep's rule evaluation measures
(:mod:`fmgauge.weaklabels.rule_eval`, docs/benchmarks.md).

Small-sample honesty: the gold-only AUC and the labeler's AUC carry Newcombe's score interval
(:func:`fmgauge.core.stats.auc_score_ci`), which does not collapse when 20 items happen to be ranked perfectly
(a 20-item CV AUC of 1.00 was seen next to test AUCs of 0.91–0.96, where the bootstrap says [1.00, 1.00]); the
paper-rule verdicts compare intervals, the paired rules read the CI of the difference. ``uncertain`` says roughly how many more gold
labels would settle it, assuming the interval half-widths shrink like 1/√m: m' = m·(half-width / |gap|)².

The estimated crossover n* extrapolates the gold-only learning curve (leave-pair-out AUC at nested subsets of the
gold set, fit as a + b·ln n) to the labeler's level (accuracy, AUC, or the weak-trained proxy's AUC). It is rough by
construction; the calibration sweep measures the real one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fmgauge.core.stats import Estimate, auc_score_ci, auc_score_interval, wilson_ci
from fmgauge.core.validation import FmgaugeError, check_finite, check_same_length
from fmgauge.weaklabels.students import CONVEX_STUDENTS, StudentConfig
from fmgauge.weaklabels.training import budget_steps, fit_predict_convex, train_predict

Verdict = Literal["use-weak-labels", "gold-only", "uncertain"]
Lean = Literal["use-weak-labels", "gold-only"]
Fallback = Literal["lean", "weak"]
RULES = ("accuracy", "auc", "cv-delta", "weak-student")
POOL_RULES = ("cv-delta", "weak-student")
DEFAULT_PRIMARY = "cv-delta"  # the evaluation over every shipped study picks it (docs/benchmarks.md §8)
DEFAULT_FALLBACK = "weak"  # ... with uncertain verdicts acting as "use the weak labels" (§8: the lean loses AUC)
RULES_VERSION = 2  # bump when a rule's computation changes: the study's rule trials carry it, so stale ones rerun
MAX_MORE = 100_000  # "more labels" beyond this is reported as "more than" (the two estimates are ~equal)
RULE_TEXT = {
    "accuracy": "gold-only AUC vs labeler accuracy (prior-corrected; the paper's rule)",
    "auc": "gold-only AUC vs labeler AUC (like-for-like)",
    "cv-delta": "cross-validated ΔAUC = AUC(gold+weak) − AUC(gold) on the gold set",
    "weak-student": "weak-trained student's AUC on the gold set vs gold-only AUC",
}


@dataclass(frozen=True)
class Pool:
    """The weak-labelled pool: ``x`` (N, ...) inputs like the gold set's (dense, sparse or images) and ``labels``
    (N,) the labeler's hard labels, gold items excluded."""

    x: Any
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.x.shape[0] != len(self.labels):
            raise FmgaugeError(f"pool inputs have {self.x.shape[0]} rows but {len(self.labels)} weak labels.")


@dataclass(frozen=True)
class RuleVerdict:
    """One rule's verdict and the numbers behind it."""

    rule: str
    verdict: Verdict
    lean: Lean  # the side the point estimate favours: what ``uncertain`` falls back to
    labeler: Estimate  # the number standing for the weak labels: accuracy, AUC, gold+weak or weak-student AUC
    gap: float  # gold-only − labeler side (> 0: weak labels expected to hurt)
    gap_ci: tuple[float, float] | None  # paired rules: CI of the gap
    more_gold: int | None  # uncertain only: about how many more gold labels would decide
    crossover: float | None  # estimated n* where the gold-only curve reaches the labeler side (None: unreachable)
    fallback: Fallback = "weak"  # what an uncertain verdict acts as: the (free) weak labels, or its lean

    @property
    def choice(self) -> Lean:
        """What a user following this rule does: the verdict, or when uncertain its fallback."""
        if self.verdict != "uncertain":
            return self.verdict  # type: ignore[return-value]
        return self.lean if self.fallback == "lean" else "use-weak-labels"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labeler"] = self.labeler.to_dict()
        d["choice"] = self.choice
        return d


@dataclass(frozen=True)
class Decision:
    """What ``fmgauge weak-labels decide`` prints: the verdict of each rule and the numbers behind it."""

    n_gold: int
    class_counts: list[int]
    gold_auc: Estimate  # gold-only AUC by leave-pair-out (Newcombe interval)
    rules: dict[str, RuleVerdict]
    primary: str = DEFAULT_PRIMARY
    learning_curve: list[tuple[int, float]] = field(default_factory=list)  # (n, CV AUC) used for n*
    pool_size: int = 0  # pool items the pool rules trained on (after subsampling)
    prior: list[float] | None = None  # the pool's class prior the accuracy rule used

    @property
    def verdict(self) -> Verdict:
        return self.rules[self.primary].verdict

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "choice": self.rules[self.primary].choice, "primary_rule": self.primary,
                "n_gold": self.n_gold, "class_counts": self.class_counts, "gold_auc": self.gold_auc.to_dict(),
                "pool_size": self.pool_size, "prior": self.prior,
                "rules": {k: v.to_dict() for k, v in self.rules.items()},
                "learning_curve": [list(p) for p in self.learning_curve]}

    def explain(self) -> str:
        """Plain-words summary, one line per rule."""
        lines = []
        for r in self.rules.values():
            tag = " (primary)" if r.rule == self.primary else ""
            if r.rule in POOL_RULES:
                what = "gold+weak AUC" if r.rule == "cv-delta" else "weak-trained AUC"
                ci = f" [{-r.gap_ci[1]:+.3f}, {-r.gap_ci[0]:+.3f}]" if r.gap_ci else ""
                head = (f"[{r.rule} rule{tag}] gold-only AUC {self.gold_auc} vs {what} {r.labeler}: "
                        f"difference {-r.gap:+.3f}{ci}: {r.verdict}")
            else:
                what = "accuracy (prior-corrected)" if r.rule == "accuracy" else "AUC"
                head = f"[{r.rule} rule{tag}] gold-only AUC {self.gold_auc} vs labeler {what} {r.labeler}: {r.verdict}"
            if r.verdict == "uncertain":
                more = (f"more than {MAX_MORE}" if r.more_gold is None else f"about {r.more_gold}")
                acts = "" if r.fallback == "lean" else f"; acting on it: {r.choice}"
                head += f" (leaning {r.lean}{acts}) — label {more} more gold items to decide"
            if not self.learning_curve:
                pass
            elif r.crossover is not None and r.crossover <= self.n_gold:
                head += f"; the gold-only curve is already at the labeler's level (n* ≤ {self.n_gold})"
            elif r.crossover is not None:
                head += f"; estimated crossover n* ≈ {r.crossover:.0f} gold labels (rough extrapolation)"
            else:
                head += "; the gold-only curve does not reach the labeler in extrapolation (n* unknown, large)"
            lines.append(head)
        return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------- the proxy student
def _dense(x: Any) -> Any:
    """Sparse rows pass through; anything else becomes (n, D) float64 (images flattened, uint8 scaled to [0, 1])."""
    if hasattr(x, "toarray"):
        return x
    x = np.asarray(x)
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat / 255.0 if x.dtype == np.uint8 else flat


def standardiser(reference: Any):  # noqa: ANN201 - returns a function
    """x -> (x − mean)/std with the statistics of ``reference`` (n, D); sparse inputs are left as they are."""
    if hasattr(reference, "toarray"):
        return lambda x: x
    mean, std = reference.mean(0), reference.std(0)
    std = np.where(std < 1e-8, 1.0, std)
    return lambda x: (x - mean) / std


DEFAULT_PROXY = {"kind": "logreg"}  # dense inputs: the zoo's logreg under the budget rule (training.py)
SPARSE_PROXY = {"kind": "sk-logreg", "c": 1.0}  # sparse inputs (TF-IDF): L2 logistic regression, converged
PROXY_KINDS = ("logreg", "mlp", "sk-logreg")


def proxy_student(x: Any, proxy: StudentConfig | dict | None) -> StudentConfig:
    """The student the rules train: ``proxy`` if given, else logreg (dense inputs) or sk-logreg (sparse)."""
    cfg = proxy if isinstance(proxy, StudentConfig) else StudentConfig(
        **(proxy or (SPARSE_PROXY if hasattr(x, "toarray") else DEFAULT_PROXY)))
    if cfg.kind not in PROXY_KINDS:
        raise FmgaugeError(f"proxy must be one of {list(PROXY_KINDS)} (students that read feature vectors), got "
                           f"{cfg.kind!r}.")
    if hasattr(x, "toarray") and cfg.kind not in CONVEX_STUDENTS:
        raise FmgaugeError(f"the inputs are sparse (e.g. TF-IDF): the rules' proxy student must be one of "
                           f"{list(CONVEX_STUDENTS)}, not {cfg.kind!r}.")
    return cfg


@dataclass(frozen=True)
class Proxy:
    """A student config and its budget (optimizer steps, the same for every fit of one decision)."""

    cfg: StudentConfig
    steps: int
    seed: int = 0

    def warm_model(self, x: Any, y: np.ndarray) -> Any:
        """Convex students: the fitted solution on (``x``, ``y``), to warm-start fits on nearly the same set (the
        optimum is unique, so this only saves solver iterations); None for torch students or a single class."""
        if self.cfg.kind not in CONVEX_STUDENTS or len(np.unique(y)) < 2:
            return None
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.cfg.c, max_iter=2000).fit(x, y)

    def fit_predict(self, xs: list[Any], ys: list[np.ndarray], x_test: Any, n_classes: int, *,
                    init: Any = None) -> np.ndarray:
        """(S, M, K) probabilities on the shared ``x_test`` of S fits, fit j on (``xs[j]``, ``ys[j]``).

        Torch students train all S fits as one seed-batched run (training sets padded to one size with rows of
        weight 0; fit j is initialised with seed (seed, j)); convex students fit one after another, warm-started
        from ``init`` (:meth:`warm_model`) when given.
        """
        out = np.zeros((len(xs), x_test.shape[0], n_classes))
        if self.cfg.kind in CONVEX_STUDENTS:
            for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
                out[j] = fit_predict_convex(self.cfg, x, np.arange(x.shape[0])[None], y[None], x_test,
                                            n_classes, init=init)[0]
            return out
        n = max(x.shape[0] for x in xs)
        xt = np.zeros((len(xs), n, *xs[0].shape[1:]), dtype=np.float32)
        yt = np.zeros((len(xs), n), dtype=np.int64)
        wt = np.zeros((len(xs), n), dtype=np.float32)
        for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
            xt[j, :len(y)], yt[j, :len(y)], wt[j, :len(y)] = x, y, 1.0
        seeds = [self.seed * 1000 + j for j in range(len(xs))]
        return train_predict(self.cfg, xt, yt, np.asarray(x_test, dtype=np.float32), seeds, n_classes,
                             steps=self.steps, weights=None if wt.all() else wt).astype(float)


def _stack(a: Any, b: Any) -> Any:
    if hasattr(a, "toarray"):
        import scipy.sparse as sp

        return sp.vstack([a, b]).tocsr()
    return np.concatenate([a, b])


def _scores(p: np.ndarray) -> np.ndarray:
    return p[:, 1] if p.shape[1] == 2 else p


def _folds(y: np.ndarray, n_classes: int, n_repeats: int, seed: int):  # noqa: ANN202
    from sklearn.model_selection import RepeatedStratifiedKFold

    k = int(min(5, np.bincount(y, minlength=n_classes).min()))
    return RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed).split(np.zeros(len(y)), y)


def mixed_oof(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, pool: Pool, *, n_repeats: int = 3,
              seed: int = 0, init: Any = None) -> np.ndarray:
    """Out-of-fold class probabilities (m, K) of the proxy trained on the weak-labelled pool + the training folds
    of ``n_repeats`` stratified K-fold splits of the gold set (K = min(5, smallest class count)), averaged.

    Every fold's model is trained on the same ~N_pool items and differs only in the few gold items it sees, so
    pooling their out-of-fold scores into one AUC is sound (unlike for gold-only models trained on 8 items, see
    :func:`leave_pair_out`). ``x`` and ``pool.x`` must be standardised (:func:`standardiser`); ``init``
    warm-starts a convex proxy (:meth:`Proxy.warm_model` on the pool).
    """
    splits = list(_folds(y, n_classes, n_repeats, seed))
    fits = proxy.fit_predict([_stack(pool.x, x[tr]) for tr, _ in splits],
                             [np.concatenate([pool.labels, y[tr]]) for tr, _ in splits], x, n_classes, init=init)
    out = np.zeros((len(y), n_classes))
    for (_, te), p in zip(splits, fits, strict=True):
        out[te] += p[te]
    return out / n_repeats


@dataclass(frozen=True)
class PairOutcomes:
    """Leave-pair-out outcomes (Airola et al. 2011, "An experimental comparison of cross-validation techniques
    for estimating the area under the ROC curve"): for P pairs (i of class c, j of another class) of gold items,
    the proxy trained on every gold item but i and j scores both; ``hit`` = 1 if it ranks i above j for class c
    (0.5 on a tie). Their mean is a nearly unbiased estimate of the gold-only AUC even on 10-20 items, where
    pooling K-fold scores of models trained on a few items each is badly biased (out-of-fold AUCs of 0.2-0.3
    were measured on 20-item TF-IDF gold sets whose students reach 0.6-0.7 on the test set)."""

    c: np.ndarray  # (P,) the one-vs-rest problem (class index; 1 for binary tasks)
    i: np.ndarray  # (P,) the item of class c
    j: np.ndarray  # (P,) the item of another class
    hit: np.ndarray  # (P,) 1, 0.5 or 0


def leave_pair_out(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, *, max_pairs: int = 120,
                   seed: int = 0) -> PairOutcomes:
    """Up to ``max_pairs`` leave-pair-out fits (all pairs when there are fewer; for K > 2 classes the budget is
    split over the K one-vs-rest problems), trained together; see :class:`PairOutcomes`."""
    rng = np.random.default_rng([seed, 29])
    problems = [1] if n_classes == 2 else list(range(n_classes))
    per = max_pairs if n_classes == 2 else max(12, max_pairs // n_classes)
    cs, iis, jjs = [], [], []
    for c in problems:
        pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
        grid = np.array(np.meshgrid(pos, neg, indexing="ij")).reshape(2, -1).T  # (|pos|·|neg|, 2)
        if len(grid) > per:
            grid = grid[rng.choice(len(grid), per, replace=False)]
        cs.append(np.full(len(grid), c))
        iis.append(grid[:, 0])
        jjs.append(grid[:, 1])
    c, i, j = np.concatenate(cs), np.concatenate(iis), np.concatenate(jjs)
    keep = [np.setdiff1d(np.arange(len(y)), [a, b]) for a, b in zip(i, j, strict=True)]
    probs = proxy.fit_predict([x[k] for k in keep], [y[k] for k in keep], x, n_classes)  # (P, m, K)
    si, sj = probs[np.arange(len(c)), i, c], probs[np.arange(len(c)), j, c]
    return PairOutcomes(c, i, j, np.where(si > sj, 1.0, np.where(si == sj, 0.5, 0.0)))


def _weighted_aucs(y: np.ndarray, n_classes: int, weights: np.ndarray, *, pairs: PairOutcomes | None = None,
                   scores: np.ndarray | None = None) -> np.ndarray:
    """Macro one-vs-rest AUC (B,) under item weights ``weights`` (B, m) (bootstrap multiplicities), from
    leave-pair-out outcomes ``pairs`` or from fixed ``scores`` (m, K) (Mann-Whitney over all pairs)."""
    problems = [1] if n_classes == 2 else list(range(n_classes))
    out = []
    for c in problems:
        if pairs is not None:
            sel = pairs.c == c
            wij = weights[:, pairs.i[sel]] * weights[:, pairs.j[sel]]  # (B, P_c)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append((wij * pairs.hit[sel]).sum(1) / wij.sum(1))
            continue
        pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
        s = scores[:, c]
        cmp = (s[pos, None] > s[None, neg]) + 0.5 * (s[pos, None] == s[None, neg])  # (|pos|, |neg|)
        wp, wn = weights[:, pos], weights[:, neg]
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.einsum("bp,pn,bn->b", wp, cmp, wn) / (wp.sum(1) * wn.sum(1)))
    return np.mean(out, axis=0)


def _boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot + 1, n) item multiplicities: the first row all ones (the point estimate), then bootstrap draws."""
    rng = np.random.default_rng([seed, 31])
    return np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)])


def learning_curve(proxy: Proxy, x: Any, y: np.ndarray, n_classes: int, *, seed: int = 0,
                   max_pairs: int = 60) -> list[tuple[int, float]]:
    """Leave-pair-out AUC at nested subsets of the gold set (about m/2, 3m/4, m), for the n* extrapolation."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    points = []
    for frac in (0.5, 0.75, 1.0):
        m = max(int(round(frac * len(y))), 2 * n_classes)
        sub = np.sort(order[:m])
        if np.bincount(y[sub], minlength=n_classes).min() < 2 or any(p[0] == m for p in points):
            continue
        po = leave_pair_out(proxy, x[sub], y[sub], n_classes, max_pairs=max_pairs, seed=seed)
        points.append((m, float(_weighted_aucs(y[sub], n_classes, np.ones((1, m)), pairs=po)[0])))
    return points


def extrapolate_crossover(curve: list[tuple[int, float]], target: float) -> float | None:
    """n where the fit AUC(n) = a + b·ln n reaches ``target``; the current n if already there; None if never."""
    if not curve:
        return None
    n_now, auc_now = curve[-1]
    if auc_now >= target:
        return float(n_now)
    if len(curve) < 2:
        return None
    ln = np.log([p[0] for p in curve])
    b, a = np.polyfit(ln, [p[1] for p in curve], 1)
    if b <= 1e-6:
        return None
    n = math.exp((target - a) / b)
    return float(n) if n < MAX_MORE * 10 else None


# --------------------------------------------------------------------------------------------- the rules
def pool_prior(t_gold: np.ndarray, weak_labels: np.ndarray, n_classes: int) -> np.ndarray | None:
    """The pool's class prior π (K,) from its weak labels by black-box shift estimation: solve q = Tᵀπ with q the
    weak-label shares and T[y, ŷ] the labeler's confusion on the gold set; clipped at 0 and renormalised.
    None when T is singular (the labeler cannot tell the classes apart on the gold set)."""
    q = np.bincount(weak_labels, minlength=n_classes) / max(len(weak_labels), 1)
    try:
        pi = np.linalg.solve(t_gold.T, q)
    except np.linalg.LinAlgError:
        return None
    pi = np.clip(pi, 0, None)
    return None if pi.sum() <= 0 else pi / pi.sum()


def corrected_accuracy(y: np.ndarray, labels: np.ndarray, n_classes: int, prior: np.ndarray | None,
                       level: float) -> Estimate:
    """Σ_k π_k·recall_k with per-class Wilson bounds combined the same way (π: ``prior``, else the gold shares)."""
    counts = np.bincount(y, minlength=n_classes)
    if prior is None:
        return wilson_ci(int((labels == y).sum()), len(y), level=level)
    parts = [wilson_ci(int(((labels == k) & (y == k)).sum()), int(counts[k]), level=level) for k in range(n_classes)]
    return Estimate(float(sum(p * e.value for p, e in zip(prior, parts, strict=True))),
                    float(sum(p * e.lo for p, e in zip(prior, parts, strict=True))),
                    float(sum(p * e.hi for p, e in zip(prior, parts, strict=True))), level)


def _interval_verdict(gold: Estimate, lab: Estimate, n: int) -> tuple[Verdict, int | None]:
    """Unpaired rules: ``gold-only`` / ``use-weak-labels`` when the intervals do not overlap."""
    if gold.lo > lab.hi:
        return "gold-only", None
    if gold.hi < lab.lo:
        return "use-weak-labels", None
    gap = abs(gold.value - lab.value)
    half = (gold.hi - gold.lo) / 2 + (lab.hi - lab.lo) / 2
    return "uncertain", _more(n, half, gap)


def _more(n: int, half: float, gap: float) -> int | None:
    if gap < 1e-9:
        return None
    more = math.ceil(n * (half / gap) ** 2 - n)
    return max(1, more) if more <= MAX_MORE else None


def _paired(y: np.ndarray, n_classes: int, weights: np.ndarray, pairs: PairOutcomes, weak_side: np.ndarray, *,
            level: float) -> tuple[float, float, float]:
    """AUC(weak side, fixed scores (m, K)) − gold-only leave-pair-out AUC on the same gold items, with a
    percentile bootstrap CI over items (``weights`` from :func:`_boot_weights`: the same resamples for both
    sides; resamples that lose a class are skipped)."""
    d = _weighted_aucs(y, n_classes, weights, scores=weak_side) - _weighted_aucs(y, n_classes, weights, pairs=pairs)
    boots = d[1:][np.isfinite(d[1:])]
    a = (1 - level) / 2
    return float(d[0]), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def gold_only_auc(pairs: PairOutcomes, y: np.ndarray, n_classes: int, level: float) -> Estimate:
    """The leave-pair-out gold-only AUC with Newcombe's interval (macro: the means of the per-class bounds)."""
    problems = [1] if n_classes == 2 else list(range(n_classes))
    parts = [auc_score_interval(float(pairs.hit[pairs.c == c].mean()), int((y == c).sum()), int((y != c).sum()),
                                level=level) for c in problems]
    return Estimate(float(np.mean([p.value for p in parts])), float(np.mean([p.lo for p in parts])),
                    float(np.mean([p.hi for p in parts])), level)


def _paired_verdict(diff: float, lo: float, hi: float, n: int) -> tuple[Verdict, int | None]:
    if lo > 0:
        return "use-weak-labels", None
    if hi < 0:
        return "gold-only", None
    return "uncertain", _more(n, (hi - lo) / 2, abs(diff))


def decide(
    x: Any, y: np.ndarray, probs: np.ndarray, labels: np.ndarray | None = None, *, pool: Pool | None = None,
    max_pairs: int = 120, pool_repeats: int = 3, pool_max: int | None = 2000, n_boot: int = 1000,
    level: float = 0.95, seed: int = 0, primary: str | None = None, rules: tuple[str, ...] | None = None,
    class_names: tuple[str, ...] | None = None, proxy: StudentConfig | dict | None = None,
    curve: bool = True, fallback: Fallback = DEFAULT_FALLBACK,
) -> Decision:
    """Decide from a gold set whether the labeler's weak labels will help.

    Parameters
    ----------
    x : (m, D) features, sparse rows, or (m, C, H, W) images of the gold items.
    y : (m,) int true labels in 0..K-1 (K = probs.shape[1]); at least 10 items and 2 per class.
    probs : (m, K) the labeler's class probabilities on the gold items.
    labels : (m,) the labeler's hard labels (default: argmax of ``probs``).
    pool : the weak-labelled pool (inputs like ``x``, gold items excluded); enables the prior correction and the
        ``cv-delta`` and ``weak-student`` rules.
    max_pairs : leave-pair-out fits for the gold-only AUC (all pairs when there are fewer).
    pool_repeats : repeats of stratified K-fold for the gold+weak side of ``cv-delta``.
    pool_max : pool items the pool rules train on (a seeded random subset; None: all).
    primary : the rule giving :attr:`Decision.verdict` (default: ``cv-delta`` with a pool, else ``auc``).
    rules : which rules to run (default: all that the inputs allow).
    proxy : the student every rule trains (a StudentConfig or its dict; default logreg on dense inputs, sk-logreg
        on sparse ones), under one budget for all its fits: ``budget_steps(proxy, pool size)`` (no pool:
        ``pool_max`` stands for it).
    curve : fit the gold-only learning curve for the rough n* extrapolation (3 more leave-pair-out runs).
    fallback : what an ``uncertain`` verdict acts as (:attr:`RuleVerdict.choice`): ``weak`` (default), the weak
        labels — they are free: drop them only when shown to hurt — or ``lean``, the side its point estimate
        favours. The evaluation over every shipped study (docs/benchmarks.md §8) found the lean loses AUC.
    """
    if fallback not in ("lean", "weak"):
        raise FmgaugeError(f"fallback must be 'lean' or 'weak', got {fallback!r}.")
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
    xg = _dense(x)
    if not hasattr(xg, "toarray"):
        check_finite("features", xg)
    counts = check_gold(y, k, class_names)
    xp = None
    if pool is not None:
        xp = _dense(pool.x)
        pool_labels = np.asarray(pool.labels).astype(np.int64)
        if pool_max is not None and xp.shape[0] > pool_max:
            keep = np.sort(np.random.default_rng([seed, 17]).permutation(xp.shape[0])[:pool_max])
            xp, pool_labels = xp[keep], pool_labels[keep]
        scale = standardiser(xp)
        xg, xp = scale(xg), scale(xp)
    else:
        xg = standardiser(xg)(xg)
    cfg = proxy_student(xg, proxy)
    # the budget a study with this pool gives the proxy (without a pool: as if it held pool_max items)
    student = Proxy(cfg, budget_steps(cfg, xp.shape[0] if xp is not None else max(pool_max or 0, len(y))), seed)
    pairs = leave_pair_out(student, xg, y, k, max_pairs=max_pairs, seed=seed)
    gold = gold_only_auc(pairs, y, k, level)
    lc = learning_curve(student, xg, y, k, seed=seed) if curve else []
    t_gold = np.zeros((k, k))
    np.add.at(t_gold, (y, labels), 1)
    t_gold /= t_gold.sum(1, keepdims=True)
    prior = pool_prior(t_gold, pool_labels, k) if pool is not None else None
    out: dict[str, RuleVerdict] = {}
    for rule in ("accuracy", "auc"):
        if rule not in wanted:
            continue
        est = (corrected_accuracy(y, labels, k, prior, level) if rule == "accuracy"
               else auc_score_ci(y, _scores(probs), level=level))
        verdict, more = _interval_verdict(gold, est, len(y))
        lean: Lean = "gold-only" if gold.value > est.value else "use-weak-labels"
        out[rule] = RuleVerdict(rule, verdict, lean, est, gold.value - est.value, None, more,
                                extrapolate_crossover(lc, est.value), fallback)
    if pool is not None and any(r in POOL_RULES for r in wanted):
        pool_obj = Pool(xp, pool_labels)
        warm = student.warm_model(xp, pool_labels)
        sides = {}
        if "cv-delta" in wanted:
            sides["cv-delta"] = mixed_oof(student, xg, y, k, pool_obj, n_repeats=pool_repeats, seed=seed, init=warm)
        if "weak-student" in wanted:
            sides["weak-student"] = student.fit_predict([xp], [pool_labels], xg, k, init=warm)[0]
        weights = _boot_weights(len(y), n_boot, seed)
        for rule, side in sides.items():
            diff, lo, hi = _paired(y, k, weights, pairs, side, level=level)
            verdict, more = _paired_verdict(diff, lo, hi, len(y))
            est = auc_score_ci(y, _scores(side), level=level)
            lean = "use-weak-labels" if diff >= 0 else "gold-only"
            out[rule] = RuleVerdict(rule, verdict, lean, est, -diff, (-hi, -lo), more,
                                    extrapolate_crossover(lc, est.value), fallback)
    return Decision(len(y), counts.tolist(), gold, out, primary, lc,
                    pool_size=0 if xp is None else int(xp.shape[0]),
                    prior=None if prior is None else [float(p) for p in prior])


def decide_from_files(
    gold: str | Path, labeler: str | Path, *, features: str | Path | None = None, dataset: str | None = None,
    split: str | None = None, representation: str = "raw", classes: tuple[str, ...] | None = None, **kwargs: Any,
) -> Decision:
    """:func:`decide` from the files a user has.

    - ``gold``: CSV with columns ``id`` and ``label`` (class name or index);
    - ``labeler``: CSV/Parquet of the labeler's outputs with ``id`` and ``p_<class>`` columns and/or ``label``
      (the file-labeler format). Every gold id must be in it; its other ids form the **pool** (used by the pool
      rules) when the inputs cover them;
    - inputs, one of: ``features`` — an ``.npz`` with ``ids`` (n,) and ``features`` (n, D), or a CSV with ``id``
      and numeric columns; or ``dataset`` (+ ``split``) — a registered dataset (or folder:/text: path) whose ids
      hold the gold ids, in ``representation`` raw | tfidf | embed:<model>.

    Classes are the dataset's, or with ``features`` the given ``classes`` (default: the gold file's distinct
    labels, sorted); the labeler file needs a ``p_<class>`` column for each (or a ``label`` column).
    """
    from fmgauge.weaklabels.labelers.file import label_indices, parse_outputs, read_table

    if (features is None) == (dataset is None):
        raise FmgaugeError("give exactly one of features (an .npz/.csv of per-item features) or dataset "
                           "(a dataset whose ids hold the gold ids).")
    gold_df = read_table(Path(gold), what="gold file")
    for col in ("id", "label"):
        if col not in gold_df:
            raise FmgaugeError(f"gold file {gold} needs columns id and label; it has {list(gold_df.columns)}.")
    ids = gold_df["id"].astype(str).to_numpy()
    _check_gold_ids(gold_df, gold)
    if features is not None:
        fid, fx = _read_features(Path(features))
        class_names = classes or _class_names_from_gold(gold_df["label"])
    else:
        from fmgauge.core.data import load_dataset
        from fmgauge.weaklabels.features import represent

        ds = load_dataset(dataset)
        sp_name = split or next(iter(ds.splits))
        fx, _ = represent(ds, representation, sp_name, sp_name)
        fid = ds.split(sp_name).ids.astype(str)
        class_names = ds.class_names
    lab_df = read_table(Path(labeler), what="labeler-outputs file")
    if features is not None and classes is None:
        _check_gold_classes(class_names, lab_df, gold, labeler)
    outputs = parse_outputs(lab_df, tuple(class_names), source=str(labeler))
    out = outputs.align(ids, source=str(labeler))
    pos = pd.Series(np.arange(len(fid)), index=fid)
    missing = [i for i in ids if i not in pos.index]
    if missing:
        raise FmgaugeError(f"{len(missing)} gold ids are not in the inputs ({features or dataset}), e.g. "
                           f"{missing[:5]}.")
    if len(class_names) < 2:
        raise FmgaugeError(f"gold file {gold} holds a single class {list(class_names)}: decide needs gold labels "
                           "of at least 2 classes (and 2 items of each).")
    y = label_indices(gold_df["label"], tuple(class_names), str(gold))
    gold_set = set(ids)
    pool_ids = [str(i) for i in outputs.ids if str(i) not in gold_set and str(i) in pos.index]
    pool = None
    if pool_ids:
        pool_out = outputs.align(np.array(pool_ids), source=str(labeler))
        pool = Pool(fx[pos[pool_ids].to_numpy()], pool_out.labels)
    return decide(fx[pos[ids].to_numpy()], y, out.probs, out.labels, pool=pool,
                  class_names=tuple(class_names), **kwargs)


def _check_gold_ids(gold_df: pd.DataFrame, gold: str | Path) -> None:
    """Each gold id appears once: an id with two different labels is a contradiction, a repeated row a copy."""
    ids = gold_df["id"].astype(str)
    dup = ids[ids.duplicated(keep=False)]
    if dup.empty:
        return
    labels = gold_df.loc[dup.index, "label"].astype(str).groupby(dup).unique()
    clash = labels[labels.map(len) > 1]
    if len(clash):
        raise FmgaugeError(f"gold file {gold} gives {len(clash)} id(s) two or more different labels, e.g. id "
                           f"{clash.index[0]!r}: {sorted(clash.iloc[0])}; keep one label per id.")
    raise FmgaugeError(f"gold file {gold} repeats {dup.nunique()} id(s), e.g. {sorted(dup.unique())[:3]}; each item "
                       "must appear once.")


def _check_gold_classes(class_names: tuple[str, ...], lab_df: pd.DataFrame, gold: str | Path,
                        labeler: str | Path) -> None:
    """With classes taken from the gold file, a gold label the labeler has no probability column for is a problem
    of the gold file (a typo, a class the labeler never predicts), named as such."""
    given = [str(c)[2:] for c in lab_df.columns if str(c).startswith("p_")]
    if not given or all(c in given for c in class_names) or all(str(i) in given for i in range(len(class_names))):
        return
    extra = [c for c in class_names if c not in given]
    raise FmgaugeError(f"gold file {gold} has label(s) {extra} that the labeler-outputs file {labeler} has no "
                       f"probability column for (its classes: {given}); fix those gold labels, or add p_<class> "
                       "columns for them to the labeler outputs.")


def _class_names_from_gold(labels: pd.Series) -> tuple[str, ...]:
    """Class names of a gold file: its distinct labels, sorted (numerically when they are integers). Labels that
    differ only in case or surrounding spaces are refused (they would silently become separate classes)."""
    names = sorted(labels.astype(str).unique(), key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    folded: dict[str, list[str]] = {}
    for n in names:
        folded.setdefault(n.strip().lower(), []).append(n)
    clash = [v for v in folded.values() if len(v) > 1]
    if clash:
        raise FmgaugeError(f"gold labels {clash[0]} differ only in case or spaces; write each class one way "
                           "(they would otherwise become separate classes).")
    return tuple(names)


def _read_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise FmgaugeError(f"features file {path} does not exist.")
    if path.suffix == ".npz":
        from fmgauge.core.files import load_npz

        z = load_npz(path, what="features file")
        if "ids" not in z or "features" not in z:
            raise FmgaugeError(f"{path} must hold arrays 'ids' (n,) and 'features' (n, D); it has {list(z)}.")
        return z["ids"].astype(str), np.asarray(z["features"], dtype=np.float64)
    from fmgauge.weaklabels.labelers.file import read_table

    df = read_table(path, what="features file")
    if "id" not in df:
        raise FmgaugeError(f"features CSV {path} needs an id column; it has {list(df.columns)[:8]}.")
    feats = df.drop(columns=["id"])
    text = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if text:
        raise FmgaugeError(f"features file {path}: every column but id must be numeric; {text[:5]} hold text. "
                           "Drop them, or embed texts with --dataset text:... --representation embed:minilm-l6.")
    return df["id"].astype(str).to_numpy(), check_finite(f"features file {path}", feats.to_numpy(dtype=np.float64))
