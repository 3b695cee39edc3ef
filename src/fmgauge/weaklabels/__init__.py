"""Weak labels from foundation models: when do they help a classifier, and when do they hurt?

Library entry points (each CLI command calls one of these):

- :func:`label` — run a labeler over a dataset split, cached.
- :func:`calibrate` — the crossover study (students × n_gold × seeds × conditions) with its report.
- :func:`rebuild_report` — rebuild a study's report from its run directory.
- :func:`decide` / :func:`decide_from_files` — the decision rule from a gold set and a labeler's outputs.
"""

from __future__ import annotations

from pathlib import Path

from fmgauge.weaklabels.decide import Pool, decide
from fmgauge.weaklabels.decide_files import decide_from_files
from fmgauge.weaklabels.labelers import LabelerOutput, parse_labeler, run_labeler
from fmgauge.weaklabels.study import StudyConfig, StudyResult, calibrate, load_result
from fmgauge.weaklabels.verdicts import Decision

__all__ = ["StudyConfig", "StudyResult", "LabelerOutput", "Decision", "Pool", "calibrate", "decide",
           "decide_from_files", "label", "rebuild_report", "load_result"]


def label(dataset: str, labeler: dict, *, split: str = "train") -> LabelerOutput:
    """Weak labels for ``split`` of ``dataset`` from ``labeler`` (a labeler config dict); cached."""
    from fmgauge.core.data import load_dataset

    return run_labeler(parse_labeler(labeler), load_dataset(dataset), split)


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild report.html / report.md of a finished study from its store; returns the HTML path."""
    from fmgauge.weaklabels.report import write_report

    return write_report(load_result(run_dir))
