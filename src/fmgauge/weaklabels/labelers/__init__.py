"""Labelers: simulated (controlled studies), file (any external model), open_clip (zero-shot VLM), text-embedding
and causal-lm (zero-shot text).

:func:`run_labeler` is the one entry point: it validates the config, runs the labeler on a dataset split and caches
the output keyed by (dataset, split, labeler config), so a second call does not run the model.
"""

from __future__ import annotations

import logging
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from fmgauge.core.cache import cached_arrays, file_fingerprint
from fmgauge.core.data import Dataset
from fmgauge.weaklabels.labelers import causal_lm, embedding, file, open_clip, simulated  # noqa: F401  (register kinds)
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerOutput
from fmgauge.weaklabels.labelers.causal_lm import CausalLMLabeler
from fmgauge.weaklabels.labelers.embedding import TextEmbeddingLabeler
from fmgauge.weaklabels.labelers.file import FileLabeler
from fmgauge.weaklabels.labelers.open_clip import OpenClipLabeler
from fmgauge.weaklabels.labelers.simulated import SimulatedLabeler

log = logging.getLogger(__name__)

LabelerConfig = Annotated[  # noqa: UP007
    Union[SimulatedLabeler, FileLabeler, OpenClipLabeler, TextEmbeddingLabeler, CausalLMLabeler],  # noqa: UP007
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter = TypeAdapter(LabelerConfig)

__all__ = ["LABELERS", "LabelerConfig", "LabelerOutput", "parse_labeler", "run_labeler", "labeler_cache_key"]


def parse_labeler(obj: dict | LabelerBase) -> LabelerBase:
    """Validate a labeler config given as a dict (from YAML/CLI) or pass a config object through."""
    return obj if isinstance(obj, LabelerBase) else _ADAPTER.validate_python(obj)


def labeler_cache_key(cfg: LabelerBase, ds: Dataset, split: str) -> dict:
    """What identifies a labeler's output: the dataset source, split, and the labeler config minus what cannot change the output (name, device, batch size)."""
    key = {"dataset": ds.name, "source": ds.source, "split": split, "n": len(ds.split(split)),
           "labeler": cfg.model_dump(exclude={"name", "device", "batch_size"})}
    if ds.meta:  # e.g. a text dataset's split seed and one-vs-rest class names change the outputs
        key["meta"] = ds.meta
    if isinstance(cfg, FileLabeler):
        key["file"] = file_fingerprint(cfg.path)
    return key


def run_labeler(cfg: dict | LabelerBase, ds: Dataset, split: str = "train") -> LabelerOutput:
    """Label ``ds``'s ``split`` with the labeler ``cfg``, from cache when it was done before."""
    cfg = parse_labeler(cfg)
    kind = LABELERS.get(cfg.kind)
    arrays = cached_arrays(
        "labels", labeler_cache_key(cfg, ds, split), lambda: kind.label(cfg, ds, split).to_arrays()
    )
    return LabelerOutput.from_arrays(arrays)
