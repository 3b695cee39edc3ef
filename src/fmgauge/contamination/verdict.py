"""Multiple-testing correction and the audit's verdict per detector × model.

Verdicts (Xu et al.'s lesson: a detector must beat a negative control before its signal means exposure):

- ``signal``: the corrected p-value is below ``alpha`` and the baseline model (one that cannot have seen the
  benchmark) does not reproduce it (its raw p-value for the same test is ≥ ``alpha``);
- ``signal not specific``: the corrected p-value is below ``alpha`` but the baseline reproduces it (raw p < alpha),
  so the signal says something about the benchmark vs the cohort (domain, template, easy items), not about exposure;
- ``no signal``: the corrected p-value is ≥ ``alpha``.

The baseline is tested at the uncorrected level on purpose: being lenient towards "not specific" is the
conservative direction for a contamination claim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from fmgauge.core.validation import FmgaugeError, check_choice

SIGNAL, NOT_SPECIFIC, NO_SIGNAL = "signal", "signal not specific", "no signal"
CORRECTIONS = ("holm", "bh", "bonferroni", "none")


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values (m,): Holm step-down (FWER), Benjamini-Hochberg (FDR), Bonferroni, or none."""
    check_choice("correction", method, CORRECTIONS)
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.isnan(p).any():
        raise FmgaugeError(f"p-values must be a 1-D array in [0, 1], got {p.tolist()[:10]}.")
    m = len(p)
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    if method == "bh":
        return np.asarray(sps.false_discovery_control(p, method="bh"), dtype=float)
    order = np.argsort(p, kind="stable")  # Holm: p_(i) * (m − i + 1), running max, capped at 1
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


def verdict(p_adjusted: float, baseline_p: float | None, alpha: float = 0.05) -> str:
    """``signal`` / ``signal not specific`` / ``no signal`` (see the module docstring). A significant result without
    the baseline's p-value for the same test is refused: the verdict would be unfounded."""
    if not p_adjusted < alpha:
        return NO_SIGNAL
    if baseline_p is None or not np.isfinite(baseline_p):
        raise FmgaugeError("a significant detector needs the baseline model's p-value for the same test to decide "
                           "whether the signal is specific; the baseline result is missing.")
    return NOT_SPECIFIC if baseline_p < alpha else SIGNAL
