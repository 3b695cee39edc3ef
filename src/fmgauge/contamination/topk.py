"""Cross-model top-K overlap: do several models single out the same benchmark items as most member-like?

For each model, take the ``K`` items with the highest member scores (of ``N``). For two models, the overlap ``o``
of their top-K sets under the null (independent choices) is hypergeometric: ``O ~ Hypergeom(N, K, K)``, mean
``K² / N``; ``P(O ≥ o)`` is kept as ``p_hypergeom``. Its few possible values make it conservative (at N = 64,
K = 6 it rejects 1 % of null pairs at α = 0.05), so the p-value the audit uses is a permutation test of the same
null (model b's scores randomly reassigned to the items) on the overlap with ties broken by how high model a's
top-K items rank under model b (``p``; level held at every N and K, tested). Xu et al. found this signal
reproduced by a baseline model with no plausible exposure (items that are easy for every LM overlap), so the
audit includes the baseline in the pairs.
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
    p: float  # permutation p-value (overlap, ties broken by a's top-K ranks under b)
    p_hypergeom: float = float("nan")  # P(Hypergeom(N, K, K) ≥ overlap)

    def to_dict(self) -> dict:
        return asdict(self)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (N,), ties broken by index (stable)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k]


def hypergeom_overlap_p(overlap: int, n: int, k: int) -> float:
    """P(O ≥ overlap) for the overlap of two independent uniformly random k-subsets of n items."""
    return float(sps.hypergeom.sf(overlap - 1, n, k, k))


#: Random reassignments of the permutation p-value (resolution 1 / (B + 1)).
N_PERMUTATIONS = 9999


def overlap_pvalues(a: np.ndarray, b: np.ndarray, k: int, *, n_perm: int = N_PERMUTATIONS,
                    seed: int = 0) -> np.ndarray:
    """Permutation p-values of the top-``k`` overlap of score arrays ``a``, ``b`` (D, N) or (N,); returns (D,).

    Statistic: the overlap ``O``, ties broken by ``R`` = the mean rank (under b) of a's top-k items. Null: b's
    scores reassigned to the items at random (the same ``n_perm`` reassignments for every row);
    p = (1 + #{(O*, R*) ≥ (O, R)}) / (1 + B), lexicographic.
    """
    a2, b2 = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    n = a2.shape[1]
    top_a = np.argsort(-a2, axis=1, kind="stable")[:, :k]  # (D, k)
    rank_b = np.empty_like(b2)
    np.put_along_axis(rank_b, np.argsort(-b2, axis=1, kind="stable"), np.arange(n, dtype=float)[None], axis=1)
    in_top_b = rank_b < k  # (D, N): rank 0 = best
    perms = np.random.default_rng(seed).permuted(np.broadcast_to(np.arange(n), (n_perm, n)), axis=1)  # (B, N)
    perms = np.concatenate([np.arange(n)[None], perms])  # row 0: the observation
    # under reassignment π, item i gets b's score of item π(i): its rank is rank_b[π(i)]
    idx = perms[:, top_a]  # (B+1, D, k)
    rows = np.arange(len(a2))[None, :, None]
    o = in_top_b[rows, idx].sum(-1)  # (B+1, D)
    r = -rank_b[rows, idx].mean(-1)  # higher = a's top items rank higher under b
    ge = (o > o[:1]) | ((o == o[:1]) & (r >= r[:1] - 1e-12))
    return ge.sum(0) / (n_perm + 1)


def pairwise_overlap(scores: Mapping[str, np.ndarray], k: int, *, n_perm: int = N_PERMUTATIONS) -> list[Overlap]:
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
        p = float(overlap_pvalues(scores[a], scores[b], k, n_perm=n_perm)[0])
        out.append(Overlap(a, b, n, k, o, e, o / e, p, hypergeom_overlap_p(o, n, k)))
    return out
