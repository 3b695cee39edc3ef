"""The proxy student the decision rules train: a converged convex model standing for the student a user trains.

Inputs: ``x`` (n, D) dense features, sparse rows (TF-IDF) or images (n, C, H, W) (flattened to pixels). Images are
standardised per pixel with the statistics of the weak-labelled pool (unlabelled, so nothing leaks); feature vectors
are used as given — as the sweep's ``sk-logreg`` students use them (standardising 384-d sentence embeddings changes
what an L2 strength means: the leave-pair-out estimate at m = 100 then lands 0.04 below the students' realised test
AUC on Medical Abstracts instead of 0.005).

Default proxy: ``sk-logreg`` — L2 logistic regression solved to convergence (scikit-learn's objective,
:func:`fmgauge.weaklabels.convex.logreg_fit`), ``c`` = 1
on feature vectors (sentence embeddings) and 10 on sparse TF-IDF (the shipped text students' strengths), and
``LOGREG_C`` = 0.01 on images (the shipped image ``logreg`` student's strength). On pixels C = 1 is a poor stand-in
for the image students: trained with and without the weak labels on the suite's image gold sets, its realised gain
had the sign of the students' in 0.69 of the cells where the two sides differ by more than 0.02 AUC (CNNs 0.55 and
0.62) against 0.80 at C = 0.01 (docs/benchmarks.md §8, "The image proxy's strength"). A converged convex proxy has one
answer per training set, so the dozens of small fits a decision makes (leave-pair-out, folds) measure the data, not
where an optimiser stopped: the AdamW ``logreg`` the rules used before estimated gold-only AUCs 0.1–0.3 below the
students' real test AUCs at m = 20–100 (issue 23). ``proxy`` picks another: ``logreg`` (the torch students' logistic
regression, now also solved to convergence, L-BFGS at its C) or ``mlp`` (trained under the study's step budget),
:mod:`fmgauge.weaklabels.training`.

Cost. A decision makes 100–250 fits on subsets of the m gold items (leave-pair-out, learning curve) and a dozen on the
pool plus gold folds. Every fit of such a group trains on rows of one matrix and scores rows of it, so a convex proxy
solves it in the rows' principal coordinates (:func:`principal_coordinates`: m dimensions instead of 2,352 pixels on
RetinaMNIST; orthogonal columns) with the same answer, by L-BFGS with a diagonal preconditioner that makes the
problem's Hessian about the identity there (on RetinaMNIST about 20 steps where plain L-BFGS takes 155–175, and
within 2e-6 of the optimum in probability where it stops 3e-4 to 2e-3 short); BLAS runs one thread per fit (these
problems are too small for threads to pay). docs/benchmarks.md §12 "decide's cost" and "How the proxy's fits are
solved" measure it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.convex import LogregFit, logreg_fit
from fmgauge.weaklabels.student_config import CONVEX_STUDENTS, LOGREG_C, StudentConfig

DEFAULT_PROXY = {"kind": "sk-logreg", "c": 1.0}  # feature vectors (embeddings): converged L2 logistic regression
SPARSE_PROXY = {"kind": "sk-logreg", "c": 10.0}  # sparse inputs (TF-IDF): the shipped TF-IDF students' strength
IMAGE_PROXY = {"kind": "sk-logreg", "c": LOGREG_C}  # images (pixels): the shipped image logreg student's strength
PROXY_KINDS = ("sk-logreg", "logreg", "mlp")


def dense(x: Any) -> Any:
    """Sparse rows pass through; anything else becomes (n, D) float64 (images flattened, uint8 scaled to [0, 1])."""
    if hasattr(x, "toarray"):
        return x
    x = np.asarray(x)
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat / 255.0 if x.dtype == np.uint8 else flat


def standardiser(reference: Any):  # noqa: ANN201 - returns a function
    """x -> (x − mean)/std with the statistics of ``reference`` (n, D); sparse inputs are left as they are."""
    if hasattr(reference, "toarray"):
        return lambda x: x
    mean, std = reference.mean(0), reference.std(0)
    std = np.where(std < 1e-8, 1.0, std)
    return lambda x: (x - mean) / std


def default_proxy(x: Any) -> dict:
    """The proxy for inputs like ``x``: SPARSE_PROXY for sparse rows, IMAGE_PROXY for images (n, C, H, W) or
    (n, H, W), DEFAULT_PROXY for feature vectors (n, D)."""
    if hasattr(x, "toarray"):
        return SPARSE_PROXY
    return IMAGE_PROXY if np.ndim(x) > 2 else DEFAULT_PROXY


def proxy_student(x: Any, proxy: StudentConfig | dict | None) -> StudentConfig:
    """The student the rules train on inputs like ``x`` (as given: images before flattening): ``proxy`` if given
    (a dict naming the default's kind without ``c`` gets the default's ``c``), else :func:`default_proxy`."""
    if isinstance(proxy, StudentConfig):
        cfg = proxy
    else:
        base = default_proxy(x)
        spec = dict(proxy or base)
        if spec.get("kind") == base["kind"] and "c" not in spec:
            spec["c"] = base["c"]
        cfg = StudentConfig(**spec)
    if cfg.kind not in PROXY_KINDS:
        raise FmgaugeError(f"proxy must be one of {list(PROXY_KINDS)} (students that read feature vectors), got "
                           f"{cfg.kind!r}.")
    if hasattr(x, "toarray") and cfg.kind not in CONVEX_STUDENTS:
        raise FmgaugeError(f"the inputs are sparse (e.g. TF-IDF): the rules' proxy student must be one of "
                           f"{list(CONVEX_STUDENTS)}, not {cfg.kind!r}.")
    return cfg


def principal_coordinates(x: Any, *, rel_tol: float = 1e-6, max_dense: int = 10_000_000) -> Any:
    """(n, r) coordinates of the n rows of ``x`` (n, D) along the principal axes of their span: orthogonal columns
    whose norms are the singular values of ``x``. n < D: r is the rank (singular values above ``rel_tol`` times the
    largest; what is dropped moves no inner product by more than rel_tol² of the largest), the rows' span; n ≥ D: r =
    D, a rotation. Both come from the eigenvectors of the smaller Gram matrix (4× faster than an SVD of RetinaMNIST's
    1,080 × 2,352 pool; sparse rows with n < D are never densified: a TF-IDF pool of 2,000 texts gets 2,000 dense
    coordinates). Sparse rows with n ≥ D that would mean densifying more than ``max_dense`` entries come back as they
    are.

    An L2-penalised logistic regression with an unpenalised intercept, trained on any subset of these rows and
    scored on any of them, gives the same scores in these coordinates as in the original ones: its optimal weights
    are a combination of its training rows (the gradient of the loss is, and the penalty's is the weights
    themselves: the representer theorem), and a rotation keeps every inner product and norm. The solver then works
    on r ≤ n features instead of D — on 28 × 28 × 3 images with m = 50 gold items, 50 instead of 2,352 — and, the
    columns being orthogonal, with a diagonal preconditioner that fits (:func:`fmgauge.weaklabels.convex.logreg_fit`).
    """
    from scipy.linalg import eigh

    n, d = x.shape
    sparse = hasattr(x, "toarray")
    if sparse and n >= d and n * d > max_dense:
        return x
    if sparse and n < d:
        gram = (x @ x.T).toarray()
    else:
        dense_x = x.toarray() if sparse else np.asarray(x, dtype=np.float64)
        if n >= d:
            return dense_x @ eigh(dense_x.T @ dense_x, driver="evd")[1]
        gram = dense_x @ dense_x.T
    power, axes = eigh(gram, driver="evd")  # squared singular values, ascending; left singular vectors
    keep = power > rel_tol ** 2 * max(power[-1], 1e-300)
    return axes[:, keep][:, ::-1] * np.sqrt(power[keep][::-1])


def stack_rows(a: Any, b: Any) -> Any:
    """Rows of ``a`` then ``b`` (dense or sparse)."""
    if hasattr(a, "toarray"):
        import scipy.sparse as sp

        return sp.vstack([a, b]).tocsr()
    return np.concatenate([a, b])


@dataclass(frozen=True)
class Proxy:
    """A student config and its budget (optimizer steps for torch students, the same for every fit)."""

    cfg: StudentConfig
    steps: int
    seed: int = 0

    @property
    def convex(self) -> bool:
        """A convex proxy (sk-logreg): one optimum per training set, the same in any rotation of the inputs."""
        return self.cfg.kind in CONVEX_STUDENTS

    def coordinates(self, x: Any) -> Any:
        """The inputs every fit of a group (trained on rows of ``x``, scored on rows of ``x``) should see: for a
        convex proxy their principal coordinates (:func:`principal_coordinates`: the same scores, a smaller and
        better conditioned problem), else ``x`` as it is."""
        return principal_coordinates(x) if self.convex else x

    def warm_model(self, x: Any, y: np.ndarray) -> LogregFit | None:
        """Convex students: the fitted solution on (``x``, ``y``), to warm-start fits on nearly the same set (the
        optimum is unique, so this only saves solver steps); None for torch students or a single class."""
        if not self.convex or len(np.unique(y)) < 2:
            return None
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return logreg_fit(x, y, self.cfg.c)

    def fit_predict(self, xs: list[Any], ys: list[np.ndarray], x_test: Any, n_classes: int, *,
                    init: LogregFit | None = None) -> np.ndarray:
        """(S, M, K) probabilities on the shared ``x_test`` of S fits, fit j on (``xs[j]``, ``ys[j]``).

        Convex students fit one after another (:func:`fmgauge.weaklabels.convex.logreg_fit`), warm-started from
        ``init`` (:meth:`warm_model`) when given; a training set of one class gives that class probability 1. Torch
        students train all S fits as one seed-batched run (training sets padded to one size with rows of weight 0;
        fit j is initialised with seed (seed, j)).
        """
        out = np.zeros((len(xs), x_test.shape[0], n_classes))
        if self.convex:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # many small solves: threaded BLAS only adds overhead (2-3x the CPU time)
                for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
                    present = np.unique(y)
                    if len(present) == 1:
                        out[j, :, present[0]] = 1.0
                    else:
                        out[j] = logreg_fit(x, y, self.cfg.c, init=init).proba(x_test, n_classes)
            return out
        from fmgauge.weaklabels.training import train_predict  # torch: only for torch proxies

        n = max(x.shape[0] for x in xs)
        xt = np.zeros((len(xs), n, *xs[0].shape[1:]), dtype=np.float32)
        yt = np.zeros((len(xs), n), dtype=np.int64)
        wt = np.zeros((len(xs), n), dtype=np.float32)
        for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
            xt[j, :len(y)], yt[j, :len(y)], wt[j, :len(y)] = x, y, 1.0
        seeds = [self.seed * 1000 + j for j in range(len(xs))]
        return train_predict(self.cfg, xt, yt, np.asarray(x_test, dtype=np.float32), seeds, n_classes,
                             steps=self.steps, weights=None if wt.all() else wt).astype(float)
