"""The labeler side of a decision: its class-conditional confusion, from the gold items and the pool's weak labels.

Notation: K classes; J[y, ŷ] (K, K) the joint distribution of (true, weak) label over the labelled population (the
pool plus the gold items); π = J.sum(1) the class prior, q = J.sum(0) the weak-label shares; recall_y = J[y, y]/π_y,
precision_ŷ = J[ŷ, ŷ]/q_ŷ; accuracy = trace J; balanced accuracy = mean recall; for a binary task
ρ0 = P(ŷ=1 | y=0), ρ1 = P(ŷ=0 | y=1), and Youden's J = 1 − ρ0 − ρ1 (recall minus false-positive rate; for K > 2
the mean over one-vs-rest problems): J ≤ 0 means the weak labels carry no class information, or the inverse.

**Estimator** (post-stratified on the weak label; with ``pool_labels``): q comes from the weak labels of the whole
population, known for every item, and P(y | ŷ = k) from the gold items the labeler called k:
J[y, k] = q_k · P(y | ŷ=k). It needs no matrix inverse (black-box shift estimation's q = Tᵀπ, which the rules used
before, gave class priors from 0 to 0.67 against a true 0.042 on rare-positive tasks, issue 23), it is unbiased for
a gold set drawn at random within each weak-label stratum — a random gold set, or the stratified one
``fmgauge weak-labels sample-gold`` proposes — and it is **unusable** when some weak class of the pool has no gold
item (nothing says what the labeler's "k" means): then it says so instead of printing a number. Without a pool the
gold set itself is the sample (J = its confusion shares).

Intervals: Monte Carlo over the posterior of the counts (Jeffreys prior: Dirichlet(counts + ½) per weak-label
stratum, and for q), 2.5% and 97.5% quantiles, so a class with 2 gold items gets a wide interval instead of a
0 or 1 with none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmgauge.core.stats import Estimate


@dataclass(frozen=True)
class LabelerSummary:
    """An honest summary of a labeler's quality (everything with a 95% interval; values NaN when unusable)."""

    class_names: tuple[str, ...]
    accuracy: Estimate
    majority_rate: Estimate  # share of the most common true class: what always answering it scores
    majority_class: str
    balanced_accuracy: Estimate
    recall: list[Estimate]  # per true class
    precision: list[Estimate]  # per weak class
    prior: list[Estimate]  # the population's class prior π
    factor: Estimate  # (1 − ρ0 − ρ1)² (binary; mean over one-vs-rest problems for K > 2)
    youden: Estimate  # 1 − ρ0 − ρ1 (binary; mean over one-vs-rest problems): ≤ 0 = no better than chance
    population: int  # items the summary speaks for (pool + gold; the gold set without a pool)
    source: str  # "pool + gold" (post-stratified) | "gold" (the gold set only) | "truth" (every item labelled)
    unusable: str | None = None  # why the population estimate cannot be made (e.g. a weak class with no gold item)
    counts: list[list[int]] = field(default_factory=list)  # gold confusion counts C[y, ŷ]

    @property
    def worse_than_majority(self) -> bool:
        return bool(np.isfinite(self.accuracy.value) and self.accuracy.value <= self.majority_rate.value + 1e-12)

    def warning(self) -> str | None:
        """The plain warning when the labeler's accuracy is at or below the majority-class rate."""
        if not self.worse_than_majority:
            return None
        return (f"accuracy {self.accuracy.value:.3f} is at or below the majority-class rate "
                f"{self.majority_rate.value:.3f}: worse than always answering '{self.majority_class}'. Accuracy "
                f"says little here; read balanced accuracy and per-class recall/precision.")

    def lines(self) -> list[str]:
        """Plain-words lines: accuracy beside the majority rate, balanced accuracy, per-class recall/precision."""
        if self.unusable:
            head = [f"labeler quality on the population: unusable — {self.unusable}"]
        else:
            head = [f"labeler accuracy {self.accuracy} vs {self.majority_rate.value:.3f} for always answering "
                    f"'{self.majority_class}'; balanced accuracy {self.balanced_accuracy} (from {self.source})"]
        per = "; ".join(f"{n}: recall {_s(r)}, precision {_s(p)}"
                        for n, r, p in zip(self.class_names, self.recall, self.precision, strict=True))
        head.append(f"per class — {per}")
        w = self.warning()
        if w:
            head.append(f"WARNING: {w}")
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy.to_dict(), "majority_rate": self.majority_rate.to_dict(),
                "majority_class": self.majority_class, "balanced_accuracy": self.balanced_accuracy.to_dict(),
                "recall": [e.to_dict() for e in self.recall], "precision": [e.to_dict() for e in self.precision],
                "prior": [e.to_dict() for e in self.prior], "factor": self.factor.to_dict(),
                "youden": self.youden.to_dict(),
                "population": self.population, "source": self.source, "unusable": self.unusable,
                "warning": self.warning(), "counts": self.counts, "class_names": list(self.class_names)}


def _s(e: Estimate) -> str:
    return "–" if not np.isfinite(e.value) else str(e)


def _stats(j: np.ndarray) -> dict[str, np.ndarray]:
    """Quality numbers of joint distributions ``j`` (..., K, K) [true, weak]; NaN where a share is 0."""
    k = j.shape[-1]
    pi, q = j.sum(-1), j.sum(-2)
    diag = np.diagonal(j, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall, precision = diag / pi, diag / q
        rho1 = 1 - recall  # positives of c labelled something else
        rho0 = (q - diag) / (1 - pi)  # negatives of c labelled c
    j = 1 - rho0 - rho1  # Youden's J per one-vs-rest problem: recall − false-positive rate
    fac = np.clip(j, 0, None) ** 2
    with warnings.catch_warnings():  # all-NaN rows (a class absent from every draw) give NaN, which is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        factor = fac[..., 1] if k == 2 else np.nanmean(fac, axis=-1)
        youden = j[..., 1] if k == 2 else np.nanmean(j, axis=-1)
        balanced = np.nanmean(recall, axis=-1)
    return {"accuracy": diag.sum(-1), "balanced": balanced, "recall": recall,
            "precision": precision, "prior": pi, "majority": pi.max(-1), "factor": factor, "youden": youden}


def _est(point: float, draws: np.ndarray, level: float) -> Estimate:
    d = draws[np.isfinite(draws)]
    a = (1 - level) / 2
    if len(d) == 0:
        return Estimate(float(point), float("nan"), float("nan"), level)
    return Estimate(float(point), float(np.quantile(d, a)), float(np.quantile(d, 1 - a)), level)


def labeler_summary(y: np.ndarray, labels: np.ndarray, n_classes: int, *, pool_labels: np.ndarray | None = None,
                    class_names: tuple[str, ...] | None = None, level: float = 0.95, n_draws: int = 2000,
                    seed: int = 0, truth: bool = False) -> LabelerSummary:
    """The labeler's confusion, accuracy, balanced accuracy, recall/precision per class and class prior.

    ``y``, ``labels`` (m,): true and weak labels of the gold items. ``pool_labels`` (N,): the weak labels of the
    rest of the population (post-stratified estimator, see the module docstring). ``truth``: ``y`` holds every
    item's true label (e.g. ``label`` on a labelled split): the numbers are exact, intervals from the same
    Dirichlet posterior of the counts.
    """
    y, labels = np.asarray(y).astype(np.int64), np.asarray(labels).astype(np.int64)
    k = n_classes
    names = tuple(class_names) if class_names else tuple(str(c) for c in range(k))
    counts = np.zeros((k, k))
    np.add.at(counts, (y, labels), 1)
    rng = np.random.default_rng([seed, 61])
    unusable = None
    if pool_labels is not None and not truth:
        n_weak = np.bincount(np.asarray(pool_labels).astype(np.int64), minlength=k) + counts.sum(0)
        q = n_weak / n_weak.sum()
        per = counts.sum(0)
        empty = [c for c in range(k) if per[c] == 0 and n_weak[c] > 0]
        if empty:
            unusable = ("no gold item was labelled " + ", ".join(f"'{names[c]}' ({q[c]:.1%} of the pool's weak "
                        f"labels)" for c in empty) + " by the labeler, so what its label means there is unknown; "
                        "label some of them (fmgauge weak-labels sample-gold stratifies by the labeler's output)")
        with np.errstate(invalid="ignore", divide="ignore"):
            cond = np.where(per > 0, counts / per, np.nan)  # P(y | ŷ) columns
        point = cond * q[None, :]
        alpha = counts + 0.5
        cond_d = np.stack([rng.dirichlet(alpha[:, c], n_draws) for c in range(k)], axis=-1)  # (B, K_y, K_ŷ)
        q_d = rng.dirichlet(n_weak + 0.5, n_draws)
        draws = cond_d * q_d[:, None, :]
        population, source = int(n_weak.sum()), "pool + gold"
    else:
        point = counts / counts.sum()
        draws = rng.dirichlet(counts.ravel() + 0.5, n_draws).reshape(n_draws, k, k)
        population, source = int(counts.sum()), "truth" if truth else "gold"
    sp, sd = _stats(point), _stats(draws)
    if unusable:
        sp = {key: np.full_like(np.asarray(v, dtype=float), np.nan) for key, v in sp.items()}
    pi_hat = sp["prior"] if not unusable else counts.sum(1) / counts.sum()
    maj = int(np.nanargmax(pi_hat))
    return LabelerSummary(
        class_names=names,
        accuracy=_est(sp["accuracy"], sd["accuracy"], level),
        majority_rate=_est(float(np.nanmax(pi_hat)), sd["majority"], level),
        majority_class=names[maj],
        balanced_accuracy=_est(sp["balanced"], sd["balanced"], level),
        recall=[_est(sp["recall"][c], sd["recall"][:, c], level) for c in range(k)],
        precision=[_est(sp["precision"][c], sd["precision"][:, c], level) for c in range(k)],
        prior=[_est(sp["prior"][c], sd["prior"][:, c], level) for c in range(k)],
        factor=_est(sp["factor"], sd["factor"], level),
        youden=_est(sp["youden"], sd["youden"], level),
        population=population, source=source, unusable=unusable, counts=counts.astype(int).tolist())
