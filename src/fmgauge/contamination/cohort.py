"""Cohort-relative tail enrichment (Xu et al.'s audit): are benchmark items more member-like than known non-members?

Given member-oriented scores (higher = more member-like) of ``N`` benchmark items and ``M`` cohort items (known
non-members: text the model cannot have seen, scored the same way by the same model), take the cohort's
``q``-quantile ``τ`` and count benchmark items above it: ``k`` of ``N``. Without contamination the expected
fraction is ``1 − q``; the exact one-sided binomial test ``P(Bin(N, 1 − q) ≥ k)`` gives the p-value, and the
enrichment ``(k / N) / (1 − q)`` comes with a Wilson CI on ``k / N``.

The paper's warning applies: on small cohorts a distribution shift between benchmark and cohort (domain, length,
template) enriches the tail without any exposure. The audit runs the same test under a baseline model that cannot
have seen the benchmark and calls a signal it reproduces "not specific".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from fmgauge.core.stats import wilson_ci
from fmgauge.core.validation import FmgaugeError, check_in_range


@dataclass(frozen=True)
class Enrichment:
    """Tail enrichment of benchmark scores over a cohort."""

    q: float
    threshold: float  # τ, the cohort's q-quantile
    n_benchmark: int
    n_cohort: int
    k: int  # benchmark items above τ
    fraction: float  # k / N
    fraction_lo: float  # Wilson CI
    fraction_hi: float
    expected: float  # 1 − q
    enrichment: float  # fraction / expected
    p: float  # P(Bin(N, 1 − q) ≥ k)

    def to_dict(self) -> dict:
        return asdict(self)


def tail_enrichment(benchmark: np.ndarray, cohort: np.ndarray, *, q: float = 0.95,
                    level: float = 0.95) -> Enrichment:
    """Enrichment of ``benchmark`` (N,) member scores beyond the ``q``-quantile of ``cohort`` (M,) scores."""
    b = np.asarray(benchmark, dtype=float)
    c = np.asarray(cohort, dtype=float)
    check_in_range("q", q, 0.0, 1.0, inclusive=False)
    if len(b) == 0 or len(c) == 0:
        raise FmgaugeError(f"tail enrichment needs benchmark and cohort scores; got {len(b)} and {len(c)} items.")
    if len(c) < int(np.ceil(1 / (1 - q))):
        raise FmgaugeError(f"a cohort of {len(c)} items cannot resolve its {q}-quantile; use at least "
                           f"{int(np.ceil(1 / (1 - q)))} known non-members (or a lower q).")
    tau = float(np.quantile(c, q))
    k = int((b > tau).sum())
    ci = wilson_ci(k, len(b), level=level)
    expected = 1 - q
    p = float(sps.binom.sf(k - 1, len(b), expected))
    return Enrichment(q, tau, len(b), len(c), k, k / len(b), ci.lo, ci.hi, expected, (k / len(b)) / expected, p)
