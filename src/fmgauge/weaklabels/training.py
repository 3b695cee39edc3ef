"""How students are trained: one budget rule for every condition, seed-batched torch training, a convex solver.

**The budget rule** (docs/weak-labels.md, "Training that is fair across conditions"). A crossover compares a
student trained on n_gold gold labels with the same student trained on the whole pool, so both must be trained
the same way or ΔAUC measures the optimiser as much as the labels. fmgauge follows the protocol of Oliver et al.
(2018, "Realistic Evaluation of Deep Semi-Supervised Learning Algorithms", §3): one set of hyperparameters per
student and the *same number of optimizer steps* for every condition and labelled-set size. The budget is
``budget_steps(cfg, n_ref)`` = max(min_steps, ceil(epochs · n_ref / batch_size)) with n_ref the study's pool size
(the largest training set), so the pool gets ``epochs`` passes and a smaller set more; the learning rate follows
a cosine decay to 0 over the budget, so every run ends at a settled model of the same regularised objective
(cross-entropy + AdamW weight decay) instead of wherever a constant step size left it. Minibatches are
``batch_size`` items (the whole set when it is smaller). Convex students (``sk-logreg``) need no budget: they are
solved to convergence (L-BFGS), which is the same rule in the limit.

Seed batching: :func:`train_predict` trains S seeds at once through :func:`fmgauge.weaklabels.seedbatch.seed_batched`
(the seeds' parameters stacked on a seed axis, one optimizer step advancing all S runs); each seed keeps its own
init and minibatch order, so the result equals S independent runs up to float summation order.

Speed (docs/benchmarks.md §1): the training set is scaled to float once per call and every step's rows are
precomputed; AdamW is the fused kernel; glibc keeps freed memory (no page faults per step).
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.seedbatch import seed_batched
from fmgauge.weaklabels.students import CONVEX_STUDENTS, StudentConfig, build


def budget_steps(cfg: StudentConfig, n_ref: int) -> int:
    """Optimizer steps every condition of ``cfg`` runs: ``cfg.steps``, else max(min_steps, ceil(epochs·n_ref/B)).

    ``n_ref``: the reference training-set size, the study's pool (so the budget does not depend on the condition).
    """
    if cfg.steps is not None:
        return int(cfg.steps)
    if n_ref < 1:
        raise FmgaugeError(f"budget_steps: the reference training-set size must be >= 1, got {n_ref}.")
    return max(cfg.min_steps, math.ceil(cfg.epochs * n_ref / min(cfg.batch_size, n_ref)))


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``steps``: cosine from 1 down to 0, or constant 1."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))


@functools.cache
def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of unmapping it.

    Each training step frees and re-allocates the same activation buffers (MBs each); by default glibc returns
    them to the OS and the next step page-faults them back in, which cost up to a third of a CNN step here.
    Process-wide and harmless elsewhere; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the (reused) heap, not fresh mmaps
    except (OSError, AttributeError):  # pragma: no cover - musl or unusual libc
        pass


def scale_inputs(x: torch.Tensor) -> torch.Tensor:
    """Images uint8 [0, 255] -> float [-2, 2]; float features pass through (as float32)."""
    if x.dtype != torch.uint8:
        return x.float()
    return x.float().mul_(4.0 / 255.0).sub_(2.0)


def minibatch_schedule(n: int, seeds: list[int], batch_size: int, steps: int) -> torch.Tensor:
    """(steps, S, B) row indices into each seed's training set; seed s shuffles with its own generator.

    Seed s draws a fresh ``randperm(n)`` per epoch and takes ``n // B`` full batches from it.
    """
    per_epoch = n // batch_size
    epochs = math.ceil(steps / per_epoch)
    out = torch.empty(len(seeds), epochs * per_epoch * batch_size, dtype=torch.long)
    for r, s in enumerate(seeds):
        g = torch.Generator().manual_seed(10_007 * s + 1)
        out[r] = torch.cat([torch.randperm(n, generator=g)[:per_epoch * batch_size] for _ in range(epochs)])
    return out[:, :steps * batch_size].view(len(seeds), steps, batch_size).transpose(0, 1)


def _check_inputs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seeds: list[int],
                  n_classes: int) -> None:
    if y_train.ndim != 2:
        raise FmgaugeError(f"train_predict: y_train must be (S, N), got shape {y_train.shape}.")
    s_count, n = y_train.shape
    if x_train.ndim not in (3, 5) or x_train.shape[:2] != (s_count, n) or len(seeds) != s_count:
        raise FmgaugeError(
            f"train_predict: x_train {x_train.shape} (expected (S, N, C, H, W) images or (S, N, D) features), "
            f"y_train {y_train.shape} and {len(seeds)} seeds disagree; seed s trains on x_train[s] with labels "
            "y_train[s]."
        )
    if x_test.ndim != x_train.ndim - 1 or x_test.shape[1:] != x_train.shape[2:]:
        raise FmgaugeError(f"train_predict: x_test {x_test.shape} must be (M, ...) with the per-item shape of "
                           f"x_train {x_train.shape[2:]}.")
    if n == 0:
        raise FmgaugeError("train_predict: the training sets are empty (N = 0).")
    if y_train.min() < 0 or y_train.max() >= n_classes:
        raise FmgaugeError(f"train_predict: y_train must hold class indices in 0..{n_classes - 1}, "
                           f"got values {np.unique(y_train)[:10].tolist()}.")


def train_predict(
    cfg: StudentConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seeds: list[int],
    n_classes: int,
    *,
    steps: int | None = None,
    elr: tuple[float, float] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Train one student per seed and return their test-set class probabilities.

    Parameters
    ----------
    x_train : (S, N, C, H, W) uint8 images, or (S, N, D) float features (logreg/mlp only) — seed s trains on
        ``x_train[s]`` (all seeds have the same N).
    y_train : (S, N) int — labels (gold, weak or mixed) for each seed's training set.
    x_test : (M, C, H, W) or (M, D) — shared test inputs, like ``x_train``.
    seeds : S ints — each seed fixes its model's init and its minibatch order.
    steps : optimizer steps (the budget rule: the sweep passes ``budget_steps(cfg, pool size)`` for every
        condition); default ``budget_steps(cfg, N)``.
    elr : (β, λ) to train with early-learning regularisation (Liu et al. 2020, "Early-Learning Regularization
        Prevents Memorization of Noisy Labels"): every training item keeps a target t ← β·t + (1−β)·p̂ (its
        running mean prediction, updated when it is in a minibatch) and the loss adds λ·mean log(1 − ⟨t, p̂⟩),
        which pulls the model toward its early predictions and away from memorising wrong labels. CIFAR-10
        defaults: β = 0.7, λ = 3.
    weights : (S, N) per-item loss weights (default: all 1). Rows of weight 0 pad training sets of different sizes
        to one N so they train together (``decide`` trains its CV folds this way): each seed's minibatch loss is
        the weighted mean over its rows.

    Returns
    -------
    (S, M, K) float32 softmax probabilities.
    """
    x_train, y_train, x_test = np.asarray(x_train), np.asarray(y_train), np.asarray(x_test)
    _check_inputs(x_train, y_train, x_test, seeds, n_classes)
    if weights is not None and (np.shape(weights) != y_train.shape or elr is not None):
        raise FmgaugeError(f"train_predict: weights must be (S, N) = {y_train.shape}, got {np.shape(weights)}, "
                           "and cannot be combined with ELR.")
    _keep_freed_memory()
    s_count, n = y_train.shape
    shape = tuple(x_train.shape[2:])
    model = seed_batched([build(cfg, shape, n_classes, s) for s in seeds])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    bs = min(cfg.batch_size, n)
    steps = budget_steps(cfg, n) if steps is None else int(steps)
    # every seed's training set as one float table (S·N, C·H·W), and each step's rows into it
    xf = scale_inputs(torch.from_numpy(np.ascontiguousarray(x_train)).view(s_count * n, -1))
    yf = torch.from_numpy(np.ascontiguousarray(y_train)).long().view(-1)
    rows = minibatch_schedule(n, list(seeds), bs, steps) + (torch.arange(s_count) * n)[:, None]  # (T, S, B)
    targets = torch.zeros(s_count * n, n_classes) if elr else None  # ELR: running mean prediction per item
    wf = None if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float32)).reshape(-1)
    model.train()
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg.schedule, t, steps)
        r = rows[t].reshape(-1)
        xb = xf.index_select(0, r).view(s_count, bs, *shape)  # (S, B, C, H, W)
        logits = model(xb)  # (S, B, K)
        if wf is None:
            loss = F.cross_entropy(logits.reshape(-1, n_classes), yf.index_select(0, r), reduction="sum") / bs
        else:
            ce = F.cross_entropy(logits.reshape(-1, n_classes), yf.index_select(0, r), reduction="none")
            wb = wf.index_select(0, r).view(s_count, bs)
            loss = ((ce.view(s_count, bs) * wb).sum(1) / wb.sum(1).clamp(min=1e-6)).sum()
        if targets is not None:
            beta, lam = elr
            prob = torch.softmax(logits.reshape(-1, n_classes), -1).clamp(1e-4, 1 - 1e-4)
            with torch.no_grad():
                tgt = beta * targets.index_select(0, r) + (1 - beta) * (prob / prob.sum(1, keepdim=True))
                targets.index_copy_(0, r, tgt)
            loss = loss + lam * torch.log(1 - (tgt * prob).sum(1)).sum() / bs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    del xf
    return _predict(model, x_test, s_count)


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
    init: Any = None,
) -> np.ndarray:
    """Convex students (``sk-logreg``): one L2 logistic regression per seed, solved to convergence (lbfgs).

    ``x_pool`` (N_pool, D) dense or sparse, or images (N_pool, C, H, W) (standardised by :func:`convex_inputs`);
    ``idx`` (S, N) rows of each seed's training set; ``y_train`` (S, N); ``x_test`` like ``x_pool``. A seed changes
    only the training set (the optimum does not depend on an init, so ``init`` — a fitted LogisticRegression on
    the same classes — only warm-starts the solver). A training set missing some class gets probability 0 for it.
    Returns (S, M, K) float32 probabilities.
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
        clf = LogisticRegression(C=cfg.c, max_iter=2000, warm_start=init is not None)
        if init is not None and np.array_equal(init.classes_, present):
            clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
        clf.fit(x_pool[idx[r]], y_train[r])
        out[r][:, clf.classes_] = clf.predict_proba(x_test)
    return out


def _predict(model: torch.nn.Module, x_test: np.ndarray, s_count: int, chunk: int = 256) -> np.ndarray:
    """(S, M, K) float32 softmax probabilities of the seed-batched ``model`` on the shared ``x_test``."""
    model.eval()
    xs = torch.from_numpy(np.ascontiguousarray(x_test))
    out = []
    with torch.no_grad():
        for i in range(0, len(xs), chunk):
            xb = scale_inputs(xs[i:i + chunk])
            out.append(torch.softmax(model(xb.expand(s_count, *xb.shape)), -1))
    return torch.cat(out, 1).numpy().astype(np.float32)
