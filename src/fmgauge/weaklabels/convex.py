"""Convex students (``sk-logreg``): L2 logistic regression solved to convergence. No torch here, so that
``decide``'s proxy, which fits hundreds of these, starts without importing it (:mod:`fmgauge.weaklabels.training`
re-exports :func:`fit_predict_convex` and :func:`convex_inputs` for the sweep).

Two solvers of the one objective, C·Σᵢ loss(yᵢ, xᵢ·W + b) + ½‖W‖² (binomial loss with one weight vector for two
classes, multinomial with one per class for more; the intercept is not penalised — scikit-learn's
``LogisticRegression``):

- :func:`fit_predict_convex` — scikit-learn's L-BFGS, the sweep's ``sk-logreg`` students;
- :func:`logreg_fit` — L-BFGS on a diagonally preconditioned problem, for the decision rules' proxy, which fits in
  principal coordinates (:func:`fmgauge.weaklabels.proxy.principal_coordinates`: orthogonal columns). There the data term's
  Hessian is nearly diagonal, C·d̄·sⱼ² on column j (sⱼ² its squared norm, d̄ the loss's curvature at p = 1/K), so
  the variables wⱼ = pⱼ·vⱼ with pⱼ = (1 + C·d̄·sⱼ²)^-½ make the whole Hessian close to the identity. On standardised
  pixels at C = 0.01 (RetinaMNIST's pool, 1,060 items × 1,079 coordinates × 5 classes) scikit-learn's L-BFGS takes
  155–175 steps and stops 3e-4 to 2e-3 from the optimum in probability; the preconditioned one takes about 20 and
  stops within 2e-6 (docs/benchmarks.md §12 "How the proxy's fits are solved").
"""

from __future__ import annotations

from dataclasses import dataclass
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
    cfg: StudentConfig, x_pool: Any, idx: np.ndarray, y_train: np.ndarray, x_test: Any, n_classes: int,
) -> np.ndarray:
    """Convex students (``sk-logreg``): one L2 logistic regression per seed, solved to convergence (lbfgs).

    ``x_pool`` (N_pool, D) dense or sparse, or images (N_pool, C, H, W) (standardised by :func:`convex_inputs`);
    ``idx`` (S, N) rows of each seed's training set; ``y_train`` (S, N); ``x_test`` like ``x_pool``. A seed changes
    only the training set (the optimum does not depend on an init). A training set missing some class gets
    probability 0 for it. Returns (S, M, K) float32 probabilities.
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
        clf = LogisticRegression(C=cfg.c, max_iter=2000)
        clf.fit(x_pool[idx[r]], y_train[r])
        out[r][:, clf.classes_] = clf.predict_proba(x_test)
    return out


@dataclass(frozen=True)
class LogregFit:
    """A fitted L2 logistic regression: ``coef`` (D, 1) for two classes (the second's log-odds) or (D, K') for K'
    classes, ``intercept`` (1,) or (K',), ``classes`` (K',) the labels it was trained on, ``steps`` the solver's
    iterations."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    steps: int = 0

    def proba(self, x: Any, n_classes: int) -> np.ndarray:
        """(M, ``n_classes``) probabilities on ``x`` (M, D); classes the fit never saw get 0."""
        from scipy.special import expit, softmax

        z = np.asarray(x @ self.coef) + self.intercept
        out = np.zeros((x.shape[0], n_classes))
        if len(self.classes) == 2:
            q = expit(z[:, 0])
            out[:, self.classes[0]], out[:, self.classes[1]] = 1 - q, q
        else:
            out[:, self.classes] = softmax(z, axis=1)
        return out


def logreg_fit(x: Any, y: np.ndarray, c: float, *, init: LogregFit | None = None, tol: float = 1e-7,
               max_iter: int = 5000) -> LogregFit:
    """The L2 logistic regression C·Σ loss + ½‖W‖² on ``x`` (n, D) dense or sparse, ``y`` (n,) int labels (≥ 2
    distinct), solved by L-BFGS in preconditioned variables (module docstring). ``tol``: the largest gradient
    component at the stop, in the preconditioned variables (where the Hessian is about the identity, so about the
    distance to the optimum). ``init``: a fit on the same classes to start from (the optimum is unique: only the
    number of steps changes)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    classes = np.unique(y)
    k = len(classes)
    cols = 1 if k == 2 else k
    n, d = x.shape
    codes = np.searchsorted(classes, y)
    rows = np.arange(n)
    onehot = np.eye(k)[codes] if k > 2 else codes[:, None].astype(np.float64)
    curvature = 0.25 if k == 2 else 1.0 / k  # the loss's Hessian at p = 1/K (binomial: p(1 − p) at 1/2)
    sq = np.asarray(x.multiply(x).sum(0)).ravel() if hasattr(x, "toarray") else np.einsum("ij,ij->j", x, x)
    scale = 1.0 / np.sqrt(1.0 + c * curvature * sq)  # (D,)
    b_scale = 1.0 / np.sqrt(c * curvature * n)  # the intercept's: its data curvature is C·d̄·n
    col = scale[:, None]
    shrink = col * col  # the penalty's Hessian in the preconditioned variables
    x_t = x.T.tocsr() if hasattr(x, "toarray") else x.T  # a view for dense rows: BLAS reads it transposed

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = theta.reshape(d + 1, cols)
        z = np.asarray(x @ (v[:d] * col)) + v[d] * b_scale  # (n, cols): x·W + b with W = scale·v
        if k == 2:
            loss = float(np.logaddexp(0.0, z[:, 0]).sum() - z[codes == 1, 0].sum())
            g = expit(z) - onehot  # σ(z) − y
        else:
            top = z.max(1, keepdims=True)
            e = np.exp(z - top)
            total = e.sum(1, keepdims=True)
            loss = float((np.log(total) + top).sum() - z[rows, codes].sum())
            g = e / total - onehot
        grad = np.empty_like(v)
        grad[:d] = c * col * np.asarray(x_t @ g) + v[:d] * shrink
        grad[d] = c * b_scale * g.sum(0)
        return c * loss + 0.5 * float((v[:d] * v[:d] * shrink).sum()), grad.ravel()

    theta0 = np.zeros((d + 1) * cols)
    if init is not None and np.array_equal(init.classes, classes):
        theta0 = np.concatenate([init.coef / scale[:, None], init.intercept[None] / b_scale]).ravel()
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 0.0})
    v = res.x.reshape(d + 1, cols)
    return LogregFit(v[:d] * scale[:, None], v[d] * b_scale, classes, int(res.nit))


def leave_two_out_scores(x: np.ndarray, y: np.ndarray, fit: LogregFit, c: float, i: np.ndarray,
                         j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate scores (log-odds of ``fit.classes[1]``) of items i and j (P,) each by the binary ``fit`` on
    (``x`` (m, D) dense, ``y`` (m,)) retrained without the pair: one Newton step from the fit's optimum (approximate
    leave-out, Rad & Maleki 2020), exact for a quadratic loss and, for logistic regression at its optimum, off by
    the step's second-order remainder only. With H the Hessian of C·Σ loss + ½‖w‖² (intercept unpenalised),
    K = X_S H⁻¹ X_Sᵀ (2 × 2) of the pair S and D_S its loss curvatures, the pair's scores move by
    C·(K + K (C⁻¹D_S⁻¹ − K)⁻¹ K)·r_S, r the residuals p − y (Woodbury: H without the pair's terms). Returns
    (scores of i, scores of j), each (P,)."""
    from scipy.special import expit

    if len(fit.classes) != 2:
        raise ValueError("leave_two_out_scores: a binary fit is needed")
    m, d = x.shape
    xb = np.c_[x, np.ones(m)]
    s = xb @ np.r_[fit.coef[:, 0], fit.intercept]
    p = expit(s)
    curv = np.maximum(p * (1.0 - p), 1e-12)
    hess = c * (xb.T * curv) @ xb + np.diag(np.r_[np.ones(d), 0.0])
    gram = xb @ np.linalg.solve(hess, xb.T)  # (m, m): X H⁻¹ Xᵀ
    res = p - (y == fit.classes[1])
    k = np.stack([np.stack([gram[i, i], gram[i, j]], -1), np.stack([gram[j, i], gram[j, j]], -1)], -2)  # (P, 2, 2)
    inv_curv = np.zeros_like(k)
    inv_curv[:, 0, 0], inv_curv[:, 1, 1] = 1.0 / (c * curv[i]), 1.0 / (c * curv[j])
    step = c * ((k + k @ np.linalg.solve(inv_curv - k, k)) @ np.stack([res[i], res[j]], -1)[..., None])[..., 0]
    return s[i] + step[:, 0], s[j] + step[:, 1]
