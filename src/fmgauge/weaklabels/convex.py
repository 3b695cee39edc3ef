"""Convex students (``sk-logreg``): L2 logistic regression solved to convergence by scikit-learn. No torch here, so
that ``decide``'s proxy, which fits hundreds of these, starts without importing it
(:mod:`fmgauge.weaklabels.training` re-exports both functions for the sweep).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.student_config import CONVEX_STUDENTS, StudentConfig


def convex_inputs(x_pool: Any, x_test: Any) -> tuple[Any, Any]:
    """What a convex student sees: sparse or (N, D) float features as given; images (N, C, H, W) flattened and
    standardised per pixel with the pool's mean and standard deviation (unlabelled inputs: no label leaks)."""
    if hasattr(x_pool, "toarray") or np.asarray(x_pool).ndim == 2:
        return x_pool, x_test
    flat = np.asarray(x_pool).reshape(len(x_pool), -1).astype(np.float64)
    test = np.asarray(x_test).reshape(len(x_test), -1).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    std[std < 1e-8] = 1.0  # constant pixels (image borders) stay 0 after centring
    return (flat - mean) / std, (test - mean) / std


def fit_predict_convex(
    cfg: StudentConfig, x_pool: Any, idx: np.ndarray, y_train: np.ndarray, x_test: Any, n_classes: int, *,
    init: Any = None, solver: str = "lbfgs",
) -> np.ndarray:
    """Convex students (``sk-logreg``): one L2 logistic regression per seed, solved to convergence (lbfgs).

    ``x_pool`` (N_pool, D) dense or sparse, or images (N_pool, C, H, W) (standardised by :func:`convex_inputs`);
    ``idx`` (S, N) rows of each seed's training set; ``y_train`` (S, N); ``x_test`` like ``x_pool``. A seed changes
    only the training set (the optimum does not depend on an init, so ``init`` — a fitted LogisticRegression on
    the same classes — only warm-starts the solver; ``solver`` — scikit-learn's — only changes how it is reached).
    A training set missing some class gets probability 0 for it. Returns (S, M, K) float32 probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    if cfg.kind not in CONVEX_STUDENTS:
        raise FmgaugeError(f"fit_predict_convex: student kind {cfg.kind!r} is not one of {CONVEX_STUDENTS}.")
    idx, y_train = np.asarray(idx), np.asarray(y_train)
    if idx.shape != y_train.shape or idx.ndim != 2:
        raise FmgaugeError(f"fit_predict_convex: idx {idx.shape} and y_train {y_train.shape} must both be (S, N).")
    x_pool, x_test = convex_inputs(x_pool, x_test)
    out = np.zeros((len(idx), x_test.shape[0], n_classes), dtype=np.float32)
    for r in range(len(idx)):
        present = np.unique(y_train[r])
        if len(present) == 1:
            out[r, :, present[0]] = 1.0
            continue
        clf = LogisticRegression(C=cfg.c, max_iter=2000, warm_start=init is not None, solver=solver)
        if init is not None and np.array_equal(init.classes_, present):
            clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
        clf.fit(x_pool[idx[r]], y_train[r])
        out[r][:, clf.classes_] = clf.predict_proba(x_test)
    return out
