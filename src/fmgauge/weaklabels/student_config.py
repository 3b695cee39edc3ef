"""Student configs: what a student is (kind, width, training budget, L2 strength) without the torch modules that
build it (:mod:`fmgauge.weaklabels.students`), so that code which only names students — ``decide`` and its proxy —
does not import torch.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError

STUDENTS: Registry = Registry("student")  # kind -> model factory; students.py registers the built-in ones
BUILTIN_KINDS = ("logreg", "mlp", "sk-logreg", "finetune", "cnn", "resnet")  # registered in students.py
SOLVED_STUDENTS = ("logreg",)  # torch students fit to convergence (no step budget, no minibatches, no ELR)
CONVEX_STUDENTS = ("sk-logreg",)  # fit by scikit-learn (training.fit_predict_convex)
TEXT_STUDENTS = ("finetune",)  # fine-tuned text encoders
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
        STUDENTS.check(v, also=BUILTIN_KINDS)  # the built-ins register when students.py is imported
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


def budget_steps(cfg: StudentConfig, n_ref: int) -> int:
    """Optimizer steps every condition of ``cfg`` runs: ``cfg.steps``, else max(min_steps, ceil(epochs·n_ref/B)).

    ``n_ref``: the reference training-set size, the study's pool (so the budget does not depend on the condition).
    """
    if cfg.steps is not None:
        return int(cfg.steps)
    if n_ref < 1:
        raise FmgaugeError(f"budget_steps: the reference training-set size must be >= 1, got {n_ref}.")
    return max(cfg.min_steps, math.ceil(cfg.epochs * n_ref / min(cfg.batch_size, n_ref)))
