"""Why the crossover lands where it does: noise structure, the matched-rate study and the label-space projection.

Notation: N pool items, K classes, true labels ``y`` (N,), weak labels ``w`` (N,); the labeler's transition
matrix T[y, ŷ] = P(ŷ | y) (K, K), rows summing to 1; its error rate ε = P(ŷ ≠ y).

- **Matched-rate study** (spec): for a real labeler with error rate ε and transition T, three simulated labelers
  on the same pool — ``random`` (symmetric flips at ε), ``class-conditional`` (ŷ ~ T[y]) and ``instance`` (the
  ε·N items a reference model finds hardest, flipped) — run through the same students and grid as the labeler's
  own errors. Opposite signs of ΔAUC between ``random`` and the labeler's own errors at the same rate reproduce the
  paper's finding that a rate-only bound is incomplete.
- **Label-space projection** (our concrete reading of the paper's proposal; the paper gives no formula).
  Class-conditional noise with ρ0 + ρ1 < 1 leaves the Bayes ranking intact (binary; Menon et al. 2015, "Learning
  from corrupted binary labels via class-probability estimation"), so for AUC it acts like fewer clean samples:
  n_eff = N_weak · (1 − ρ0 − ρ1)², with ρ0 = P(ŷ=1|y=0), ρ1 = P(ŷ=0|y=1). For K > 2 we average the factor over the
  K one-vs-rest problems. Weak labels are then worth what a clean gold set of n_eff items is worth, so the
  projected crossover is where the gold-only learning curve reaches AUC_gold(n_eff), lowered by the measured
  instance-dependent loss (the weak-only student's AUC under the labeler's own labels minus under class-conditional
  labels at its T, when the matched-rate study ran). Without instance dependence this gives n* = n_eff.
- **Confident learning** (Northcutt et al. 2021): cleanlab estimates P(given label | true label) from out-of-sample
  predicted probabilities and the weak labels alone, with no gold set; we report it next to the gold-set estimate.
"""

from __future__ import annotations

import numpy as np

from fmgauge.core.validation import FmgaugeError


def transition_matrix(y: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """T[y, ŷ] = P(ŷ | y) (K, K) estimated by counting; a class absent from ``y`` gets an identity row."""
    conf = np.zeros((n_classes, n_classes))
    np.add.at(conf, (np.asarray(y), np.asarray(w)), 1)
    rows = conf.sum(1, keepdims=True)
    t = np.where(rows > 0, conf / np.clip(rows, 1, None), np.eye(n_classes))
    return t


def projection_factor(t: np.ndarray) -> float:
    """(1 − ρ0 − ρ1)² for a binary T; the mean over one-vs-rest problems for K > 2 (clipped at 0)."""
    t = np.asarray(t, dtype=float)
    k = t.shape[0]
    if t.shape != (k, k) or k < 2:
        raise FmgaugeError(f"transition matrix must be square with K >= 2, got shape {t.shape}.")
    if k == 2:
        return float(max(0.0, 1 - t[0, 1] - t[1, 0]) ** 2)
    prior = np.full(k, 1.0 / k)
    factors = []
    for c in range(k):
        rho1 = 1 - t[c, c]  # positives (y = c) labelled as some other class
        others = np.delete(np.arange(k), c)
        rho0 = float((prior[others] * t[others, c]).sum() / prior[others].sum())  # negatives labelled c
        factors.append(max(0.0, 1 - rho0 - rho1) ** 2)
    return float(np.mean(factors))


def effective_size(n_weak: int, t: np.ndarray) -> float:
    """n_eff = n_weak · projection_factor(T): clean-sample worth of ``n_weak`` class-conditionally noisy labels."""
    return float(n_weak) * projection_factor(t)


def curve_at(n_grid: np.ndarray, curve: np.ndarray, n: float) -> float:
    """The learning curve (G,) at ``n``: linear in ln n inside the grid, a + b·ln n fit to the last 3 points beyond
    it (and to the first 3 below it)."""
    ln = np.log(n_grid)
    if n_grid[0] <= n <= n_grid[-1]:
        return float(np.interp(np.log(n), ln, curve))
    sl = slice(-3, None) if n > n_grid[-1] else slice(0, 3)
    b, a = np.polyfit(ln[sl], curve[sl], 1)
    return float(a + b * np.log(max(n, 1.0)))


def curve_inverse(n_grid: np.ndarray, curve: np.ndarray, target: float) -> tuple[str, float | None]:
    """Smallest n where the (seed-mean) gold-only curve reaches ``target``: ("crossover", n) inside the grid,
    ("below-range", None) if already there at the first point, ("above-range", n or None) beyond the grid with the
    log-linear extrapolation of the last 3 points (None if the curve is flat)."""
    if curve[0] >= target:
        return "below-range", None
    for i in range(len(curve) - 1):
        if curve[i] < target <= curve[i + 1]:
            a, b = np.log(n_grid[i]), np.log(n_grid[i + 1])
            return "crossover", float(np.exp(a + (target - curve[i]) / (curve[i + 1] - curve[i]) * (b - a)))
    b, a = np.polyfit(np.log(n_grid[-3:]), curve[-3:], 1)
    return "above-range", (float(np.exp((target - a) / b)) if b > 1e-6 else None)


def projected_crossover(
    n_grid: np.ndarray, gold_curve: np.ndarray, n_pool: int, t: np.ndarray, instance_loss: float = 0.0,
) -> dict:
    """The projection's predicted crossover: where gold-only reaches AUC_gold(n_eff) − instance_loss."""
    n_eff = effective_size(n_pool, t)
    target = curve_at(n_grid, gold_curve, max(n_eff, 1.0)) - max(0.0, instance_loss)
    status, n = curve_inverse(n_grid, gold_curve, target)
    return {"status": status, "n_star": n, "n_eff": n_eff, "factor": projection_factor(t), "target_auc": target,
            "instance_loss": instance_loss}


def cleanlab_noise(x: np.ndarray, w: np.ndarray, n_classes: int, *, seed: int = 0) -> dict:
    """Confident learning's estimate of T[y, ŷ] from the weak labels alone (no gold).

    Out-of-sample probabilities come from 5-fold cross-validation of the reference model of the simulated
    labelers (PCA-50 logistic regression for images/features, TF-IDF logistic regression for texts) trained on the
    weak labels ``w``; cleanlab.count.estimate_py_and_noise_matrices_from_probabilities turns them into the
    noise matrix P(given | true), returned here transposed to our T[y, ŷ].
    """
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities

    from fmgauge.weaklabels.labelers.simulated import reference_probs

    w = np.asarray(w).astype(np.int64)
    if len(np.unique(w)) < n_classes:
        raise FmgaugeError(f"cleanlab needs every class among the weak labels; they hold {np.unique(w).tolist()}.")
    pred = reference_probs(x, w, n_classes, seed)
    pred = np.clip(pred, 1e-6, None)
    pred /= pred.sum(1, keepdims=True)
    _, noise, _, _ = estimate_py_and_noise_matrices_from_probabilities(w, pred)
    t = np.asarray(noise).T  # cleanlab: noise[given, true]; ours: T[true, given]
    return {"transition": t.tolist(), "error_rate_by_class": (1 - np.diag(t)).tolist()}
