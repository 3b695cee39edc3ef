"""What every labeler returns, and the registry of labeler kinds.

A labeler maps items of a dataset split to weak labels. Its output is a :class:`LabelerOutput`:
``ids`` (N,) str, ``probs`` (N, K) per-class probabilities (rows sum to 1), ``labels`` (N,) = argmax of
``probs`` unless the labeler gave hard labels only. Outputs are cached keyed by (dataset, split, labeler config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from fmgauge.core.data import Dataset
from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError, check_ids_match
from fmgauge.core.validation import check_template as check_format_template


class LabelerBase(BaseModel):
    """Fields shared by every labeler config."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""  # display name, unique in a study; defaults to a description of the labeler

    @property
    def simulated(self) -> bool:
        return False

    def display_name(self) -> str:
        return self.name or self.describe()

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class LabelerOutput:
    ids: np.ndarray  # (N,) str
    probs: np.ndarray  # (N, K) float, rows sum to 1
    labels: np.ndarray  # (N,) int

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.probs.shape[0] != n or self.labels.shape != (n,):
            raise FmgaugeError(
                f"labeler output is inconsistent: {n} ids, probs {self.probs.shape}, labels {self.labels.shape}."
            )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids.astype(str), "probs": self.probs, "labels": self.labels}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> LabelerOutput:
        return cls(ids=a["ids"], probs=a["probs"], labels=a["labels"])

    def align(self, ids: np.ndarray, *, source: str) -> LabelerOutput:
        """Reorder to ``ids``; refuses (naming the first few) if any are missing."""
        check_ids_match(f"labeler output {source}", self.ids, ids, what=f"the {len(ids)} dataset items")
        pos = {str(i): k for k, i in enumerate(self.ids)}
        order = np.array([pos[str(i)] for i in ids])
        return LabelerOutput(ids=self.ids[order], probs=self.probs[order], labels=self.labels[order])


def check_template(t: str, name: str = "each template") -> str:
    """A prompt/description template must contain ``{c}`` (the class name) and no other braces."""
    return check_format_template(name, t, required=["c"])


LabelFn = Callable[[Any, Dataset, str], LabelerOutput]


@dataclass(frozen=True)
class LabelerKind:
    config: type[LabelerBase]
    label: LabelFn  # (config, dataset, split) -> LabelerOutput


LABELERS: Registry[LabelerKind] = Registry("labeler kind")
