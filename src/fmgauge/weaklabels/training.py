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
``batch_size`` items (the whole set when it is smaller). Convex students need no budget: they are solved to
convergence, which is the same rule in the limit — ``sk-logreg`` by scikit-learn (:func:`fit_predict_convex`,
pixels standardised with the pool's statistics, sparse inputs welcome) and ``logreg`` in torch, all seeds at once
(:func:`fit_logistic`, on the torch students' inputs, zero-weight padding welcome).

Why ``logreg`` is solved rather than given the budget (docs/weak-labels.md, "Students"): under the step budget
its fit on the 4,708-item PneumoniaMNIST pool stopped far from its optimum (test AUC 0.908 after the 295-step
budget, 0.920 after 16×) while a 500-item gold set got 75 epochs, and its objective (cross-entropy + 1e-4
decoupled weight decay) was nearly unregularised; a 99%-accurate labeler then "hurt" and n* followed the
optimiser, not the labels (docs/benchmarks.md §9).

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
from fmgauge.weaklabels.convex import convex_inputs, fit_predict_convex  # noqa: F401 - re-exported
from fmgauge.weaklabels.seedbatch import seed_batched
from fmgauge.weaklabels.students import (
    CONVEX_STUDENTS,
    SOLVED_STUDENTS,
    TEXT_STUDENTS,
    StudentConfig,
    budget_steps,
    build,
)


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
        condition); default ``budget_steps(cfg, N)``. Students in ``SOLVED_STUDENTS`` (``logreg``) ignore it: they
        are solved to convergence (:func:`fit_predict_logistic`), every seed equal to its own run.
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
    if cfg.kind in SOLVED_STUDENTS:
        if elr is not None:
            raise FmgaugeError(f"train_predict: ELR regularises minibatch training; student {cfg.kind!r} is solved "
                               "to convergence (train mlp, cnn or resnet students with ELR).")
        return fit_predict_logistic(cfg, x_train, y_train, x_test, n_classes, weights=weights)
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


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, *, c: float, weights: torch.Tensor | None = None,
    tol: float = 1e-6, max_iter: int = 5000, init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """L2-regularised multinomial logistic regression for S training sets at once, solved to convergence.

    Per seed s: argmin over W_s (K, D), b_s (K,) of  Σ_i w_si · CE(W_s x_si + b_s, y_si) + ‖W_s‖² / (2c),
    the bias unpenalised (scikit-learn's objective with C = c; softmax over K classes, so on K = 2 the weight
    difference sees a penalty of ‖w1 − w0‖²/(4c), i.e. a binary fit at C = 2c).
    The objective is strictly convex in W, so the optimum depends on the training set alone (no init, no seed,
    no step budget): L-BFGS from zero on the S problems jointly (their sum, each scaled by 1/Σ_i w_si), on
    centred inputs (the unpenalised bias absorbs the shift, so the optimum is unchanged; conditioning improves),
    until every gradient entry is ≤ ``tol``.

    x : (S, N, D) float64, or (N, D) shared by every seed (the pool conditions: the seeds differ only in labels;
    one GEMM then serves all seeds). y : (S, N) int64. weights : (S, N) ≥ 0 (default 1; weight-0 rows pad sets
    of different sizes). A class absent from a seed's training set gets logit −∞ (probability 0). ``init``: a
    (W, b) to start from instead of zero (a nearby problem's solution: fewer iterations, the same optimum).
    Returns W (S, K, D), b (S, K), a (S, K) mask of the classes present, and {"iterations", "grad_max"}.
    """
    shared = x.dim() == 2
    s_count, n = y.shape
    d = x.shape[-1]
    w = torch.ones(s_count, n, dtype=x.dtype) if weights is None else weights.to(x.dtype)
    onehot = F.one_hot(y, n_classes).to(x.dtype) * (w > 0).unsqueeze(-1).to(x.dtype)  # (S, N, K)
    present = onehot.sum(1) > 0  # (S, K)
    neg = torch.zeros(s_count, 1, n_classes, dtype=x.dtype).masked_fill(~present.unsqueeze(1), -torch.inf)
    n_eff = w.sum(1).clamp(min=1e-12)  # (S,)
    # (S, D) centre: shared inputs take their mean (any shift is absorbed by the bias), else the weighted mean
    mu = x.mean(0).expand(s_count, d) if shared else (w.unsqueeze(-1) * x).sum(1) / n_eff[:, None]
    xc = x - (mu[0] if shared else mu.unsqueeze(1))
    scale = (w / n_eff[:, None]).unsqueeze(-1)  # (S, N, 1): each seed's objective per unit weight
    pen = (1.0 / (c * n_eff))[:, None, None]  # (S, 1, 1)
    weight = torch.zeros(s_count, n_classes, d, dtype=x.dtype)
    bias = torch.zeros(s_count, n_classes, dtype=x.dtype)
    if init is not None:  # in centred coordinates: b + W·mu
        weight.copy_(init[0])
        bias.copy_(init[1] + torch.einsum("skd,sd->sk", init[0], mu))
    weight.requires_grad_(True)
    bias.requires_grad_(True)

    def logits() -> torch.Tensor:  # (S, N, K)
        if shared:
            z = (xc @ weight.reshape(-1, d).T).view(n, s_count, n_classes).transpose(0, 1)
        else:
            z = torch.bmm(xc, weight.transpose(1, 2))
        return z + bias.unsqueeze(1) + neg

    def closure() -> torch.Tensor:
        with torch.no_grad():
            logp = torch.log_softmax(logits(), -1)
            ce = -(onehot * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)  # (S, N, 1)
            loss = (ce * scale).sum() + 0.5 * (pen * weight.square()).sum()
            r = (logp.exp() - onehot) * scale  # (S, N, K): ∂loss/∂z
            if shared:
                gw = (r.permute(0, 2, 1).reshape(-1, n) @ xc).view(s_count, n_classes, d)
            else:
                gw = torch.bmm(r.transpose(1, 2), xc)
            weight.grad = gw + pen * weight
            bias.grad = r.sum(1)
        return loss

    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=tol, tolerance_change=0.0)
    opt.step(closure)
    closure()
    grad_max = float(max(weight.grad.abs().max(), bias.grad.abs().max()))
    w_out = weight.detach()
    b_out = bias.detach() - torch.einsum("skd,sd->sk", w_out, mu)
    return w_out, b_out, present, {"iterations": float(opt.state[weight]["n_iter"]), "grad_max": grad_max}


def fit_predict_logistic(
    cfg: StudentConfig, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, *,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The ``logreg`` student: :func:`fit_logistic` at C = ``cfg.c`` on the torch students' inputs (images scaled
    to [−2, 2] and flattened; features as given). x_train (S, N, ...) per seed or (N, ...) shared by every seed,
    y_train (S, N), x_test (M, ...), weights (S, N) or None. Returns (S, M, K) float32 probabilities."""
    s_count, n = y_train.shape
    lead = (n,) if x_train.shape[0] == n and x_train.ndim == x_test.ndim else (s_count, n)
    x = scale_inputs(torch.from_numpy(np.ascontiguousarray(x_train)).view(*lead, -1)).double()
    y = torch.from_numpy(np.ascontiguousarray(y_train)).long()
    w = None if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float64))
    weight, bias, present, _ = fit_logistic(x, y, n_classes, c=cfg.c, weights=w)
    xt = scale_inputs(torch.from_numpy(np.ascontiguousarray(x_test)).view(len(x_test), -1)).double()
    z = torch.einsum("md,skd->smk", xt, weight) + bias.unsqueeze(1)
    z = z.masked_fill(~present.unsqueeze(1), -torch.inf)
    return torch.softmax(z, -1).numpy().astype(np.float32)


def fit_predict(
    cfg: StudentConfig, x_pool: Any, idx: np.ndarray, labels: np.ndarray, x_test: Any, seeds: list[int],
    n_classes: int, *, n_pool: int, elr: tuple[float, float] | None = None,
) -> np.ndarray:
    """One sweep trial's training: every seed's student on its training set, scored on ``x_test``.

    ``x_pool`` (N_pool, ...) the study's pool inputs in the student's representation; ``idx`` (S, N) each seed's
    training rows, ``labels`` (S, N) their labels; ``n_pool`` the pool size the budget is set by (the same budget
    for every condition). Convex students are solved by scikit-learn, ``logreg`` by :func:`fit_logistic`, text
    students fine-tuned, the other torch students trained for ``budget_steps(cfg, n_pool)`` steps (``elr``: with
    early-learning regularisation, minibatch students only). Returns (S, M, K) float32 probabilities.
    """
    if elr is not None and cfg.kind in (*CONVEX_STUDENTS, *SOLVED_STUDENTS, *TEXT_STUDENTS):
        raise FmgaugeError(f"condition gold+weak-elr trains minibatch torch students only, not {cfg.kind!r}.")
    if cfg.kind in CONVEX_STUDENTS:
        return fit_predict_convex(cfg, x_pool, idx, labels, x_test, n_classes)
    if cfg.kind in SOLVED_STUDENTS and elr is None:
        idx = np.asarray(idx)
        shared = bool((idx == idx[:1]).all())  # pool conditions: every seed trains on the same rows
        return fit_predict_logistic(cfg, x_pool[idx[0]] if shared else x_pool[idx], labels, x_test, n_classes)
    if cfg.kind in TEXT_STUDENTS:
        from fmgauge.weaklabels.finetune import fit_predict_finetune

        return fit_predict_finetune(cfg, x_pool, idx, labels, x_test, seeds, n_classes,
                                    steps=budget_steps(cfg, n_pool))
    return train_predict(cfg, x_pool[idx], labels, x_test, seeds, n_classes, steps=budget_steps(cfg, n_pool),
                         elr=elr)


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
