"""The proxy student the decision rules train: a converged convex model standing for the student a user trains.

Inputs: ``x`` (n, D) dense features, sparse rows (TF-IDF) or images (n, C, H, W) (flattened to pixels). Images are
standardised per pixel with the statistics of the weak-labelled pool (unlabelled, so nothing leaks); feature vectors
are used as given — as the sweep's ``sk-logreg`` students use them (standardising 384-d sentence embeddings changes
what an L2 strength means: the leave-pair-out estimate at m = 100 then lands 0.04 below the students' realised test
AUC on Medical Abstracts instead of 0.005).

Default proxy: ``sk-logreg`` — L2 logistic regression solved to convergence by scikit-learn (L-BFGS), ``c`` = 1
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.students import CONVEX_STUDENTS, LOGREG_C, StudentConfig
from fmgauge.weaklabels.training import fit_predict_convex, train_predict

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

    def warm_model(self, x: Any, y: np.ndarray) -> Any:
        """Convex students: the fitted solution on (``x``, ``y``), to warm-start fits on nearly the same set (the
        optimum is unique, so this only saves solver iterations); None for torch students or a single class."""
        if self.cfg.kind not in CONVEX_STUDENTS or len(np.unique(y)) < 2:
            return None
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.cfg.c, max_iter=2000).fit(x, y)

    def fit_predict(self, xs: list[Any], ys: list[np.ndarray], x_test: Any, n_classes: int, *,
                    init: Any = None) -> np.ndarray:
        """(S, M, K) probabilities on the shared ``x_test`` of S fits, fit j on (``xs[j]``, ``ys[j]``).

        Convex students fit one after another, warm-started from ``init`` (:meth:`warm_model`) when given; torch
        students train all S fits as one seed-batched run (training sets padded to one size with rows of weight 0;
        fit j is initialised with seed (seed, j)).
        """
        out = np.zeros((len(xs), x_test.shape[0], n_classes))
        if self.cfg.kind in CONVEX_STUDENTS:
            for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
                out[j] = fit_predict_convex(self.cfg, x, np.arange(x.shape[0])[None], y[None], x_test,
                                            n_classes, init=init)[0]
            return out
        n = max(x.shape[0] for x in xs)
        xt = np.zeros((len(xs), n, *xs[0].shape[1:]), dtype=np.float32)
        yt = np.zeros((len(xs), n), dtype=np.int64)
        wt = np.zeros((len(xs), n), dtype=np.float32)
        for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
            xt[j, :len(y)], yt[j, :len(y)], wt[j, :len(y)] = x, y, 1.0
        seeds = [self.seed * 1000 + j for j in range(len(xs))]
        return train_predict(self.cfg, xt, yt, np.asarray(x_test, dtype=np.float32), seeds, n_classes,
                             steps=self.steps, weights=None if wt.all() else wt).astype(float)
