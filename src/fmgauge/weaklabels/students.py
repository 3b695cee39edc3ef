"""Students: the torch modules of the classifiers trained on gold and/or weak labels (their configs, the registry
and the budget rule live in :mod:`fmgauge.weaklabels.student_config`, re-exported here, so that naming a student does
not import torch).

Every torch student is a small module on images ``x`` (N, C, H, W) uint8 scaled to [-2, 2] (or on dense features
(N, D)); :func:`build` makes one seed's module. How they are trained — the budget rule shared by every condition,
seed batching, the convex solver — lives in :mod:`fmgauge.weaklabels.training`; the seed-batching engine in
:mod:`fmgauge.weaklabels.seedbatch`.

Students (parameter counts for 28×28 grey images, K = 2):
``logreg`` 1.6k · ``mlp`` (width h) 785h · ``cnn`` (width w) two conv blocks + linear head ·
``resnet`` ResNet-18 topology for 28×28 (3×3 stem, no max-pool, GroupNorm, stage widths w, 2w, 4w, 8w) ·
``sk-logreg`` L2 logistic regression solved to convergence (standardised pixels on images) · ``finetune`` a
pretrained text encoder fine-tuned end to end.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.seedbatch import Residual
from fmgauge.weaklabels.student_config import (  # noqa: F401 - the configs, re-exported where they always were
    BUILTIN_KINDS,
    CONVEX_STUDENTS,
    LOGREG_C,
    SOLVED_STUDENTS,
    STUDENTS,
    TEXT_STUDENTS,
    StudentConfig,
    budget_steps,
)

ModelFactory = Callable[[StudentConfig, tuple[int, int, int], int], nn.Module]


@STUDENTS.register("logreg")
def _logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    """Multinomial logistic regression on the torch students' inputs, solved to convergence (L-BFGS on the
    L2-regularised objective at C = ``c``: :func:`fmgauge.weaklabels.training.fit_logistic`); this module holds
    its parameters (n_params, the seed-batched layout)."""
    lin = nn.Linear(math.prod(shape), k)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.Flatten(), lin)


@STUDENTS.register("mlp")
def _mlp(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), cfg.width), nn.ReLU(), nn.Linear(cfg.width, k))


@STUDENTS.register("sk-logreg")
def _sk_logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    """Multinomial logistic regression fit to convergence by scikit-learn (``training.fit_predict_convex``); this
    module only stands for its parameters (n_params). Works on sparse inputs (TF-IDF) and on images (standardised
    pixels)."""
    return nn.Linear(math.prod(shape), k)


@STUDENTS.register("finetune")
def _finetune(cfg: StudentConfig, shape: tuple[int, ...], k: int) -> nn.Module:
    """A pretrained encoder + fresh classification head, fine-tuned by
    :func:`fmgauge.weaklabels.finetune.fit_predict_finetune` (features: text)."""
    from fmgauge.core.text_models import load_text_model

    return load_text_model(cfg.model, "sequence-classification", device="cpu", num_labels=k).model


def _image_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise FmgaugeError(f"student {kind!r} needs images (C, H, W); this dataset holds inputs of shape {shape} "
                           "(features). Use logreg or mlp students on features.")
    return shape  # type: ignore[return-value]


@STUDENTS.register("cnn")
def _cnn(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    c, h, w = _image_shape("cnn", shape)
    wd = cfg.width
    return nn.Sequential(
        nn.Conv2d(c, wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # (wd, h/2, w/2)
        nn.Conv2d(wd, 2 * wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (2wd, h/4, w/4)
        nn.Flatten(), nn.Linear(2 * wd * (h // 4) * (w // 4), k),
    )


class _Block(Residual):
    """ResNet basic block with GroupNorm (seed-batching friendly: no running statistics)."""

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


@STUDENTS.register("resnet")
def _resnet18(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    w = cfg.width
    c = _image_shape("resnet", shape)[0]
    layers: list[nn.Module] = [nn.Conv2d(c, w, 3, 1, 1, bias=False), nn.GroupNorm(min(8, w), w), nn.ReLU()]
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
