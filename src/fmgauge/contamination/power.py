"""Detector power relative to the un-fine-tuned base model, with paired intervals.

A planted group's AUROC against the matched clean group moves with the group draw itself: with 64 items per group
the base model, which never saw either group, already lands anywhere in about 0.5 ± 0.1 (issue 24 measured 0.40
for one draw). Both models score the **same items**, so the draw's effect is shared and cancels in the difference

    Δ = AUROC(planted; members vs clean) − AUROC(base; members vs clean)

whose interval comes from a paired, stratified cluster bootstrap: member units and clean units are resampled with
replacement (separately, whole units: the two sentences of a pair, the questions of one image) and both AUROCs are
recomputed on the same resample. The same is done for the tail enrichment (members above the clean group's
``q``-quantile, relative to the fraction an exchangeable item would reach).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from fmgauge.core.validation import FmgaugeError


def _units(labels: Sequence[str] | None, n: int) -> list[np.ndarray]:
    """Item indices of each unit, units in order of first appearance (each item alone when ``labels`` is None)."""
    if labels is None:
        return [np.array([i]) for i in range(n)]
    if len(labels) != n:
        raise FmgaugeError(f"unit labels: {len(labels)} for {n} items.")
    out: dict[str, list[int]] = {}
    for i, u in enumerate(labels):
        out.setdefault(str(u), []).append(i)
    return [np.asarray(v) for v in out.values()]


def mann_whitney_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + ½ P(pos = neg) of (n_pos,) and (n_neg,) scores (the ROC AUC)."""
    r = sps.rankdata(np.r_[pos, neg])
    n1, n0 = len(pos), len(neg)
    return float((r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tail_enrichment_ratio(members: np.ndarray, clean: np.ndarray, q: float) -> float:
    """(fraction of members above the clean group's ⌈q·M⌉-th smallest score) / ((M − r + 1) / (M + 1))."""
    m = len(clean)
    r = max(1, int(np.ceil(q * m - 1e-9)))
    tau = np.sort(clean)[r - 1]
    return float((members > tau).mean() / ((m - r + 1) / (m + 1)))


def paired_effects(members: dict[str, np.ndarray], clean: dict[str, np.ndarray], *,
                   member_units: Sequence[str] | None = None, clean_units: Sequence[str] | None = None,
                   q: float = 0.95, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """AUROC and tail enrichment of ``members`` (N,) vs ``clean`` (M,) member scores for the models ``planted`` and
    ``base`` (dict keys), their difference planted − base, and percentile intervals from the paired stratified
    cluster bootstrap (module docstring). Returns a flat dict: ``auroc_<model>``, ``auroc_<model>_lo/_hi``,
    ``delta_auroc`` (+ ``_lo``/``_hi``), and the same with ``enrichment``."""
    if set(members) != {"planted", "base"} or set(clean) != {"planted", "base"}:
        raise FmgaugeError("paired effects need 'planted' and 'base' scores of the same members and clean items.")
    n, m = len(members["planted"]), len(clean["planted"])
    if len(members["base"]) != n or len(clean["base"]) != m:
        raise FmgaugeError("planted and base scores must cover the same items.")
    mu, cu = _units(member_units, n), _units(clean_units, m)
    rng = np.random.default_rng(seed)

    def stats(mi: np.ndarray, ci: np.ndarray) -> np.ndarray:
        out = []
        for model in ("planted", "base"):
            a, c = members[model][mi], clean[model][ci]
            out += [mann_whitney_auc(a, c), tail_enrichment_ratio(a, c, q)]
        return np.asarray(out)  # auroc_p, enr_p, auroc_b, enr_b

    point = stats(np.arange(n), np.arange(m))
    boots = np.empty((n_boot, 4))
    for b in range(n_boot):
        mi = np.concatenate([mu[j] for j in rng.integers(0, len(mu), len(mu))])
        ci = np.concatenate([cu[j] for j in rng.integers(0, len(cu), len(cu))])
        boots[b] = stats(mi, ci)
    a = (1 - level) / 2
    res = {}
    for j, (name, model) in enumerate([("auroc", "planted"), ("enrichment", "planted"), ("auroc", "base"),
                                       ("enrichment", "base")]):
        res[f"{name}_{model}"] = float(point[j])
        res[f"{name}_{model}_lo"], res[f"{name}_{model}_hi"] = (float(x) for x in np.quantile(boots[:, j], [a, 1 - a]))
    for j, name in ((0, "auroc"), (1, "enrichment")):
        d = boots[:, j] - boots[:, j + 2]
        res[f"delta_{name}"] = float(point[j] - point[j + 2])
        res[f"delta_{name}_lo"], res[f"delta_{name}_hi"] = (float(x) for x in np.quantile(d, [a, 1 - a]))
    res["units"] = [len(mu), len(cu)]
    return res
