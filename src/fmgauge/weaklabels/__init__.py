"""Weak labels from foundation models: when do they help a classifier, and when do they hurt?

Library entry points (each CLI command calls one of these):

- :func:`label` — run a labeler over a dataset split, cached.
- :func:`calibrate` — the crossover study (students × n_gold × seeds × conditions) with its report.
- :func:`rebuild_report` — rebuild a study's report from its run directory.
- :func:`decide` / :func:`decide_from_files` — the decision rule from a gold set and a labeler's outputs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

# decide needs neither torch nor the study machinery: imported here (the function shadows its module's name, as
# before); the rest on first use
from fmgauge.weaklabels.decide import Pool, decide
from fmgauge.weaklabels.decide_files import decide_from_files
from fmgauge.weaklabels.verdicts import Decision

if TYPE_CHECKING:
    from fmgauge.weaklabels.labelers import LabelerOutput
    from fmgauge.weaklabels.study import StudyConfig, StudyResult, calibrate, load_result

__all__ = ["StudyConfig", "StudyResult", "LabelerOutput", "Decision", "Pool", "calibrate", "decide",
           "decide_from_files", "label", "rebuild_report", "load_result"]

_LAZY = {"LabelerOutput": "labelers", "StudyConfig": "study", "StudyResult": "study", "calibrate": "study",
         "load_result": "study"}


def __getattr__(name: str) -> Any:
    """The study's entry points, imported when first used (they import torch)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"fmgauge.weaklabels.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fmgauge.weaklabels' has no attribute {name!r}")


def label(dataset: str, labeler: dict, *, split: str = "train") -> LabelerOutput:
    """Weak labels for ``split`` of ``dataset`` from ``labeler`` (a labeler config dict); cached."""
    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.labelers import parse_labeler, run_labeler

    return run_labeler(parse_labeler(labeler), load_dataset(dataset), split)


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild report.html / report.md of a finished study from its store; returns the HTML path."""
    from fmgauge.weaklabels.report import write_report
    from fmgauge.weaklabels.study import load_result

    return write_report(load_result(run_dir))
