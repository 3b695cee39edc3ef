"""What every dataset loader shares: the :class:`Dataset` / :class:`Split` types, the :data:`DATASETS` registry and
the data-directory search.

A dataset is named splits of inputs ``x`` — images (N, C, H, W) uint8, features (N, D) float32 or texts (N,) str
(object dtype) — labels ``y`` (N,) int64 and string ids ``"<split>/<index>"``. Loaders register under a name in
:data:`DATASETS` (:mod:`fmgauge.core.datasets_medmnist`, :mod:`fmgauge.core.datasets_online`,
:mod:`fmgauge.core.datasets_text`); :func:`fmgauge.core.data.load_dataset` resolves names after importing them all.
This module imports none of them, so they can all import it.

Data directories are searched in order: ``$FMGAUGE_DATA``, ``./data``, ``../shared/data``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError


@dataclass(frozen=True)
class Split:
    """One split: ``x`` images (N, C, H, W) uint8 or features (N, D) float32, ``y`` (N,) int64, ``ids`` (N,) str."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    source: str = ""
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise FmgaugeError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}.")
        return self.splits[name]


DatasetLoader = Callable[[], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def data_dirs() -> list[Path]:
    """The data directories in search order: $FMGAUGE_DATA, ./data, ../shared/data."""
    dirs = []
    if os.environ.get("FMGAUGE_DATA"):
        dirs.append(Path(os.environ["FMGAUGE_DATA"]).expanduser())
    dirs += [Path("data"), Path("..") / "shared" / "data"]
    return [d.resolve() for d in dirs]


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("FMGAUGE_OFFLINE", "HF_HUB_OFFLINE", "CI"))


def find_data_file(*relative: str, how_to_get: str) -> Path:
    """First existing ``<dir>/<relative>`` over :func:`data_dirs` and each candidate relative path."""
    tried = []
    for d in data_dirs():
        for rel in relative:
            p = d / rel
            if p.exists():
                return p
            tried.append(str(p))
    raise FmgaugeError(
        "data file not found. Looked in:\n  " + "\n  ".join(tried) + f"\nTo provide it: {how_to_get}"
    )
