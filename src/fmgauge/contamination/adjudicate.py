"""Automatic adjudication of flagged image pairs, and its agreement with the reviewer's marks.

Each flagged benchmark image is shown with one reference image and gets one of the reviewer's three labels
(:data:`~fmgauge.contamination.gallery.MARKS`), decided from the verification score v of the pair (best aligned
normalised correlation, :mod:`~fmgauge.contamination.verify`):

- ``duplicate``: the copy question flags it: v > τ_copy (the same-modality control's threshold) or the pair is
  near-identical (cosine or v ≥ 1 - 1e-6). Score: v and τ_copy.
- ``same-source``: flagged by the modality question only and v ≥ the *lookalike cut*: as alike, once aligned, as
  unrelated same-modality images get to their best reference match. Score: v and the cut.
- ``different``: flagged by the modality question, but v is below the cut: the embedder put them together, the
  pixels do not.

The lookalike cut is the 5th percentile of the same-modality control's best v when that control is given (95 % of
non-member same-modality images align at least this well with something in the reference); else the 95th
percentile of the out-of-domain control's v (only 5 % of out-of-domain images align this well).

Agreement with the marks (pairs marked by a reviewer only): the confusion table, the fraction agreeing and
Cohen's κ = (p_o - p_e) / (1 - p_e) with p_e from the two labelings' marginals.
"""

from __future__ import annotations

import numpy as np

LABELS = ("duplicate", "same-source", "different")


def lookalike_cut(*, same_modality_v: np.ndarray | None, ood_v: np.ndarray | None) -> tuple[float, str]:
    """(cut, how it was set) from the controls' best verification scores (module docstring)."""
    if same_modality_v is not None and len(same_modality_v):
        return float(np.quantile(same_modality_v, 0.05)), "5th percentile of the same-modality control's best v"
    if ood_v is not None and len(ood_v):
        return float(np.quantile(ood_v, 0.95)), "95th percentile of the out-of-domain control's v"
    return float("-inf"), "no control with verification scores"


def auto_labels(v: np.ndarray, copy_flag: np.ndarray, cut: float) -> np.ndarray:
    """(N,) labels of flagged pairs: duplicate where ``copy_flag``, else same-source if v ≥ cut, else different."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.asarray(copy_flag, bool), "duplicate", np.where(v >= cut, "same-source", "different"))


def agreement(auto: list[str], human: list[str | None]) -> dict:
    """Auto vs human labels over the pairs a human marked: counts, confusion, agreement, Cohen's κ."""
    pairs = [(a, h) for a, h in zip(auto, human, strict=True) if h in LABELS]
    n = len(pairs)
    conf = {a: {h: 0 for h in LABELS} for a in LABELS}
    for a, h in pairs:
        conf[a][h] += 1
    out: dict = {"marked": n, "confusion": conf, "agree": None, "kappa": None}
    if n == 0:
        return out
    po = sum(conf[c][c] for c in LABELS) / n
    pa = {c: sum(conf[c].values()) / n for c in LABELS}
    ph = {c: sum(conf[a][c] for a in LABELS) / n for c in LABELS}
    pe = sum(pa[c] * ph[c] for c in LABELS)
    out["agree"] = po
    out["kappa"] = (po - pe) / (1 - pe) if pe < 1 else (1.0 if po == 1 else 0.0)
    return out
