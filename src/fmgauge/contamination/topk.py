"""Cross-model top-K overlap: do several models single out the same benchmark items as most member-like?

For each model, take the ``K`` items with the highest member scores (of ``N``). For two models, the overlap ``o``
of their top-K sets under the null (independent choices) is hypergeometric: ``O ~ Hypergeom(N, K, K)``, mean
``K² / N``; the one-sided p-value is ``P(O ≥ o)``. Xu et al. found this signal reproduced by a baseline model with
no plausible exposure (items that are easy for every LM overlap), so the audit includes the baseline in the pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
from scipy import stats as sps

from fmgauge.core.validation import FmgaugeError


@dataclass(frozen=True)
class Overlap:
    model_a: str
    model_b: str
    n: int  # items
    k: int  # top-K size
    overlap: int
    expected: float  # K² / N
    ratio: float  # overlap / expected
    p: float  # P(Hypergeom(N, K, K) ≥ overlap)

    def to_dict(self) -> dict:
        return asdict(self)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (N,), ties broken by index (stable)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k]


def hypergeom_overlap_p(overlap: int, n: int, k: int) -> float:
    """P(O ≥ overlap) for the overlap of two independent uniformly random k-subsets of n items."""
    return float(sps.hypergeom.sf(overlap - 1, n, k, k))


def pairwise_overlap(scores: Mapping[str, np.ndarray], k: int) -> list[Overlap]:
    """Top-``k`` overlap of every pair of models in ``scores`` (name -> (N,) member scores, same items)."""
    names = list(scores)
    if len(names) < 2:
        raise FmgaugeError(f"top-K overlap needs at least 2 models, got {names}.")
    lengths = {m: len(v) for m, v in scores.items()}
    if len(set(lengths.values())) != 1:
        raise FmgaugeError(f"top-K overlap needs scores of the same items per model; lengths differ: {lengths}.")
    n = next(iter(lengths.values()))
    if not 1 <= k < n:
        raise FmgaugeError(f"K must be in [1, {n - 1}] for {n} items, got {k}.")
    tops = {m: set(top_k(v, k).tolist()) for m, v in scores.items()}
    out = []
    for a, b in combinations(names, 2):
        o = len(tops[a] & tops[b])
        e = k * k / n
        out.append(Overlap(a, b, n, k, o, e, o / e, hypergeom_overlap_p(o, n, k)))
    return out
