"""Students: the classifiers trained on gold and/or weak labels, and their configs.

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
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.seedbatch import Residual

LOGREG_C = 0.01  # logreg's default C on images scaled to [-2, 2] (docs/weak-labels.md, "Students")


class StudentConfig(BaseModel):
    """One student architecture and its training recipe."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(..., description="architecture family: a registered student (logreg, mlp, cnn, resnet, "
                      "sk-logreg)")
    name: str = Field("", description="display name (default: [features-]kind[-w<width>])")
    features: str = Field("raw", description="input representation: raw | tfidf | embed:<model> "
                          "(see weaklabels.features; tfidf and embed apply to text datasets)")
    width: int = Field(32, ge=1, description="mlp: hidden units; cnn/resnet: channels of the first stage")
    epochs: float = Field(8.0, gt=0, description="training budget in passes over the study's pool (the largest "
                          "training set): every condition and gold-set size runs the same ceil(epochs·N_pool/"
                          "batch_size) optimizer steps (budget_steps below)")
    steps: int | None = Field(None, ge=1, description="explicit budget in optimizer steps for every condition "
                              "(overrides epochs)")
    min_steps: int = Field(60, ge=1, description="lower bound on the budget in optimizer steps")
    batch_size: int = Field(128, ge=1, description="minibatch size (capped at the training-set size)")
    lr: float = Field(3e-3, gt=0, description="AdamW peak learning rate")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule over the "
                                                    "budget: cosine decay to 0 (a settled final model) or constant")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decoupled weight decay")
    c: float = Field(1.0, gt=0, description="logreg, sk-logreg: inverse L2 regularisation strength (scikit-learn's "
                     "C: the penalty is ||W||^2/(2c) beside the summed cross-entropy); default 1.0, for logreg "
                     f"{LOGREG_C} (students.LOGREG_C)")
    model: str = Field("minilm-l6", description="finetune: the encoder to fine-tune (registered name or path)")
    max_length: int = Field(128, ge=8, description="finetune: tokens per text (longer texts are truncated)")

    @model_validator(mode="after")
    def _kind_defaults(self) -> StudentConfig:
        if self.kind == "logreg" and "c" not in self.model_fields_set:
            self.c = LOGREG_C
        return self

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        STUDENTS.get(v)  # raises with the known kinds and near names
        return v

    @field_validator("features")
    @classmethod
    def _features(cls, v: str) -> str:
        from fmgauge.weaklabels.features import check_features

        return check_features(v)

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.kind == "finetune":
            return f"{self.model}-finetune"
        base = self.kind if self.kind in ("logreg", "sk-logreg") else f"{self.kind}-w{self.width}"
        feats = self.features.removeprefix("embed:")
        return base if self.features == "raw" else f"{feats}-{base}"


ModelFactory = Callable[[StudentConfig, tuple[int, int, int], int], nn.Module]
STUDENTS: Registry[ModelFactory] = Registry("student")


@STUDENTS.register("logreg")
def _logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    """Multinomial logistic regression on the torch students' inputs, solved to convergence (L-BFGS on the
    L2-regularised objective at C = ``c``: :func:`fmgauge.weaklabels.training.fit_logistic`); this module holds
    its parameters (n_params, the seed-batched layout)."""
    lin = nn.Linear(math.prod(shape), k)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.Flatten(), lin)


SOLVED_STUDENTS = ("logreg",)  # torch students fit to convergence (no step budget, no minibatches, no ELR)


@STUDENTS.register("mlp")
def _mlp(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), cfg.width), nn.ReLU(), nn.Linear(cfg.width, k))


@STUDENTS.register("sk-logreg")
def _sk_logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    """Multinomial logistic regression fit to convergence by scikit-learn (``training.fit_predict_convex``); this
    module only stands for its parameters (n_params). Works on sparse inputs (TF-IDF) and on images (standardised
    pixels)."""
    return nn.Linear(math.prod(shape), k)


CONVEX_STUDENTS = ("sk-logreg",)


@STUDENTS.register("finetune")
def _finetune(cfg: StudentConfig, shape: tuple[int, ...], k: int) -> nn.Module:
    """A pretrained encoder + fresh classification head, fine-tuned by
    :func:`fmgauge.weaklabels.finetune.fit_predict_finetune` (features: text)."""
    from fmgauge.core.text_models import load_text_model

    return load_text_model(cfg.model, "sequence-classification", device="cpu", num_labels=k).model


TEXT_STUDENTS = ("finetune",)


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


def budget_steps(cfg: StudentConfig, n_ref: int) -> int:
    """Optimizer steps every condition of ``cfg`` runs: ``cfg.steps``, else max(min_steps, ceil(epochs·n_ref/B)).

    ``n_ref``: the reference training-set size, the study's pool (so the budget does not depend on the condition).
    """
    if cfg.steps is not None:
        return int(cfg.steps)
    if n_ref < 1:
        raise FmgaugeError(f"budget_steps: the reference training-set size must be >= 1, got {n_ref}.")
    return max(cfg.min_steps, math.ceil(cfg.epochs * n_ref / min(cfg.batch_size, n_ref)))
