"""Which items to label first: a gold sample stratified by the labeler's output, with the weights ``decide`` needs.

Notation: N items the labeler labelled, weak labels ``weak`` (N,), K classes; stratum k = the N_k items it called k;
m the gold budget; n_k gold items drawn from stratum k (Σ n_k = m), uniformly at random without replacement.

A random gold set of 20 items from a pool with 4% positives holds no positive at all 44% of the time, and then
neither the gold-only AUC nor the labeler's precision on its positive calls can be estimated. Stratifying on the
weak label puts gold items into every class the labeler says, including a rare one, so P(y | ŷ = k) is measured in
each stratum (:mod:`.confusion` combines it with the known N_k) and, when the labeler is any good, the rare true
class is labelled too.

Allocation (``allocation``):

- ``sqrt`` (default): n_k ∝ √N_k — between proportional and equal allocation, the classical compromise when
  small strata matter (Cochran 1977, §5.5), so a 4% stratum gets about 1/6 of a binary budget instead of 1/25;
- ``proportional``: n_k ∝ N_k (a self-weighting sample; weights all 1);
- ``equal``: n_k = m/K.

Every non-empty stratum gets at least ``min(floor, N_k)`` items (default 2), rounding by largest remainder.
Design weights: w_i = (N_k / n_k) for an item of stratum k, rescaled to mean 1 over the sample: the inverse
inclusion probability, so a pair (i, j) of gold items stands for w_i·w_j pairs of the population and AUCs estimated
on the sample are unbiased for the population's (the gold-only AUC and the paired ΔAUC in ``decide``; bootstraps
resample within strata).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmgauge.core.validation import FmgaugeError

ALLOCATIONS = ("sqrt", "proportional", "equal")


@dataclass(frozen=True)
class GoldDesign:
    """A stratified gold sample: ``index`` (m,) positions in the labelled items, ``weights`` (m,) design weights
    (mean 1), ``stratum`` (m,) the weak label each was drawn from; ``sizes`` N_k and ``drawn`` n_k per stratum."""

    index: np.ndarray
    weights: np.ndarray
    stratum: np.ndarray
    sizes: list[int]
    drawn: list[int]


def allocate(sizes: np.ndarray, m: int, allocation: str = "sqrt", floor: int = 2) -> np.ndarray:
    """n_k (K,) gold items per stratum of sizes N_k (K,), summing to ``m`` (see the module docstring)."""
    sizes = np.asarray(sizes, dtype=int)
    if allocation not in ALLOCATIONS:
        raise FmgaugeError(f"allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}.")
    if m > sizes.sum():
        raise FmgaugeError(f"m = {m} gold items asked for but the labeler labelled only {int(sizes.sum())} items.")
    base = np.minimum(sizes, floor)
    if base.sum() > m:
        raise FmgaugeError(f"m = {m} is too small to put {floor} gold items into each of the labeler's "
                           f"{int((sizes > 0).sum())} classes; ask for at least {int(base.sum())}.")
    share = {"sqrt": np.sqrt(sizes), "proportional": sizes.astype(float),
             "equal": (sizes > 0).astype(float)}[allocation]
    n = base.copy()
    for _ in range(m):  # hand out the rest one by one to the stratum furthest below its target share
        room = sizes - n
        if room.sum() == 0 or n.sum() == m:
            break
        target = share / share.sum() * m
        gap = np.where(room > 0, target - n, -np.inf)
        n[int(np.argmax(gap))] += 1
    return n


def sample_gold(weak: np.ndarray, m: int, n_classes: int, *, allocation: str = "sqrt", floor: int = 2,
                seed: int = 0, exclude: np.ndarray | None = None) -> GoldDesign:
    """Draw m items to label, stratified by the weak labels ``weak`` (N,); ``exclude`` (bool (N,) or indices):
    items already labelled, never drawn (and left out of N_k)."""
    weak = np.asarray(weak).astype(np.int64)
    if m < 1:
        raise FmgaugeError(f"m must be a positive number of gold items, got {m}.")
    if weak.min(initial=0) < 0 or weak.max(initial=0) >= n_classes:
        raise FmgaugeError(f"weak labels must be class indices in 0..{n_classes - 1}.")
    avail = np.ones(len(weak), dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude)
        avail[ex if ex.dtype != bool else np.flatnonzero(ex)] = False
    sizes = np.bincount(weak[avail], minlength=n_classes)
    n = allocate(sizes, m, allocation, floor)
    rng = np.random.default_rng([seed, 67])
    idx, strat, w = [], [], []
    for k in range(n_classes):
        if n[k] == 0:
            continue
        pick = rng.choice(np.flatnonzero(avail & (weak == k)), n[k], replace=False)
        idx.append(np.sort(pick))
        strat.append(np.full(n[k], k))
        w.append(np.full(n[k], sizes[k] / n[k]))
    weights = np.concatenate(w)
    return GoldDesign(np.concatenate(idx), weights / weights.mean(), np.concatenate(strat), sizes.tolist(),
                      n.tolist())
