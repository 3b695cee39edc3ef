# Baseline for benchmarks/bench_students.py --impl: fmgauge/weaklabels/students.py as it was before seed batching
# was rewritten (torch.func vmap over stacked parameters, NCHW). Kept only to reproduce the "before" timings.
"""Students: the classifiers trained on gold and/or weak labels, with the seeds of one trial trained together.

Every student is a small torch module on images ``x`` (N, C, H, W) uint8, scaled to [-2, 2]. S seeds are trained
*at once*: their parameters are stacked on a leading S axis (``torch.func.stack_module_state``) and the model is
``vmap``-ed over it, so one optimizer step advances all S runs. The loss is the sum over seeds of each seed's mean
cross-entropy and Adam is elementwise, so this is the same computation as S independent runs (up to float
reduction order), with the per-step overhead paid once instead of S times.

Training budget: ``epochs`` passes over the training set, at least ``min_steps`` steps, minibatches of
``batch_size`` drawn with each seed's own generator.

Students (parameter counts for 28×28 grey images, K = 2):
``logreg`` 1.6k · ``mlp`` (width h) 785h · ``cnn`` (width w) two conv blocks + linear head ·
``resnet`` ResNet-18 topology for 28×28 (3×3 stem, no max-pool, GroupNorm, stage widths w, 2w, 4w, 8w).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError


class StudentConfig(BaseModel):
    """One student architecture and its training recipe."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["logreg", "mlp", "cnn", "resnet"] = Field(..., description="architecture family")
    name: str = Field("", description="display name (default: kind-w<width>)")
    width: int = Field(32, ge=1, description="mlp: hidden units; cnn/resnet: channels of the first stage")
    epochs: float = Field(8.0, gt=0, description="passes over the training set")
    min_steps: int = Field(60, ge=1, description="lower bound on optimizer steps (tiny gold sets)")
    batch_size: int = Field(128, ge=1, description="minibatch size (capped at the training-set size)")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decoupled weight decay")

    def display_name(self) -> str:
        return self.name or (self.kind if self.kind == "logreg" else f"{self.kind}-w{self.width}")


ModelFactory = Callable[[StudentConfig, tuple[int, int, int], int], nn.Module]
STUDENTS: Registry[ModelFactory] = Registry("student")


@STUDENTS.register("logreg")
def _logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), k))


@STUDENTS.register("mlp")
def _mlp(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), cfg.width), nn.ReLU(), nn.Linear(cfg.width, k))


@STUDENTS.register("cnn")
def _cnn(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    c, h, w = shape
    wd = cfg.width
    return nn.Sequential(
        nn.Conv2d(c, wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # (wd, h/2, w/2)
        nn.Conv2d(wd, 2 * wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (2wd, h/4, w/4)
        nn.Flatten(), nn.Linear(2 * wd * (h // 4) * (w // 4), k),
    )


class _Block(nn.Module):
    """ResNet basic block with GroupNorm (vmap-friendly: no running statistics)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        g = min(8, cout)
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(g, cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(g, cout),
        )
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(g, cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


@STUDENTS.register("resnet")
def _resnet18(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    w = cfg.width
    layers: list[nn.Module] = [nn.Conv2d(shape[0], w, 3, 1, 1, bias=False), nn.GroupNorm(min(8, w), w), nn.ReLU()]
    cin = w
    for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
        layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, k)]
    return nn.Sequential(*layers)


def build(cfg: StudentConfig, shape: tuple[int, int, int], n_classes: int, seed: int) -> nn.Module:
    """A freshly initialised student; the init depends only on ``seed``."""
    factory = STUDENTS.get(cfg.kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(cfg, shape, n_classes)


def n_params(cfg: StudentConfig, shape: tuple[int, int, int], n_classes: int) -> int:
    return sum(p.numel() for p in build(cfg, shape, n_classes, 0).parameters())


def _scale(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-2, 2]."""
    return x.float().mul_(4.0 / 255.0).sub_(2.0)


def train_predict(
    cfg: StudentConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seeds: list[int],
    n_classes: int,
) -> np.ndarray:
    """Train one student per seed and return their test-set class probabilities.

    Parameters
    ----------
    x_train : (S, N, C, H, W) uint8 — seed s trains on ``x_train[s]`` (all seeds have the same N).
    y_train : (S, N) int — labels (gold, weak or mixed) for each seed's training set.
    x_test : (M, C, H, W) uint8 — shared test images.
    seeds : S ints — each seed fixes its model's init and its minibatch order.

    Returns
    -------
    (S, M, K) float32 softmax probabilities.
    """
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
