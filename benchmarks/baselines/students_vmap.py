# Baseline for benchmarks/bench_students.py --impl: the seed-batched training loop of
# fmgauge/weaklabels/students.py as it was before it was rewritten (torch.func vmap over stacked parameters, NCHW,
# per-step minibatch gather). The models and their init come from the package; only the old loop is kept, to
# reproduce the "before" timings.
"""Old seed-batched ``train_predict``: ``vmap`` of ``functional_call`` over ``stack_module_state`` parameters."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.students import StudentConfig, build
from fmgauge.weaklabels.training import scale_inputs as _scale

__all__ = ["StudentConfig", "train_predict"]


def train_predict(
    cfg: StudentConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seeds: list[int],
    n_classes: int,
) -> np.ndarray:
    """The old loop; same contract as :func:`fmgauge.weaklabels.training.train_predict`."""
    s_count, n = y_train.shape
    if x_train.shape[:2] != (s_count, n) or len(seeds) != s_count:
        raise FmgaugeError(
            f"train_predict: x_train {x_train.shape[:2]}, y_train {y_train.shape} and {len(seeds)} seeds disagree."
        )
    shape = tuple(x_train.shape[2:])
    models = [build(cfg, shape, n_classes, s) for s in seeds]
    base = copy.deepcopy(models[0]).to("meta")
    params, buffers = stack_module_state(models)  # each (S, ...)

    def f(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xb,))

    fwd = vmap(f)
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bs = min(cfg.batch_size, n)
    steps = max(cfg.min_steps, math.ceil(cfg.epochs * n / bs))
    gens = [torch.Generator().manual_seed(10_007 * s + 1) for s in seeds]
    xt = torch.from_numpy(np.ascontiguousarray(x_train))
    yt = torch.from_numpy(np.ascontiguousarray(y_train)).long()
    ar = torch.arange(s_count)[:, None]
    perms = [torch.randperm(n, generator=g) for g in gens]
    pos = 0
    for _ in range(steps):
        if pos + bs > n:  # new epoch: reshuffle each seed's order
            perms = [torch.randperm(n, generator=g) for g in gens]
            pos = 0
        idx = torch.stack([p[pos:pos + bs] for p in perms])  # (S, B)
        pos += bs
        logits = fwd(params, buffers, _scale(xt[ar, idx]))  # (S, B, K)
        loss = nn.functional.cross_entropy(logits.reshape(-1, n_classes), yt[ar, idx].reshape(-1),
                                           reduction="sum") / bs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out = []
    with torch.no_grad():
        xs = torch.from_numpy(np.ascontiguousarray(x_test))
        for i in range(0, len(xs), 512):
            xb = _scale(xs[i:i + 512]).expand(s_count, *xs[i:i + 512].shape)
            out.append(torch.softmax(fwd(params, buffers, xb), -1))
    return torch.cat(out, 1).numpy().astype(np.float32)
