"""Library entry points behind ``fmgauge contamination score`` and ``fmgauge contamination topk``.

A ``model`` is a causal LM (:mod:`fmgauge.core.text_models`; every token of each item's text is scored) or a
vision-language model (:mod:`fmgauge.core.vlm_models`; the answer tokens given image + question are scored, see
:mod:`fmgauge.contamination.vlm_scoring`). :func:`check_model_data` settles which, and checks that a VLM's
benchmark has its images, before any model loads; :func:`load_scorer` and :func:`scorer_stats` then give the
same :class:`~fmgauge.contamination.scoring.TokenStats` either way, so every detector runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fmgauge.contamination.benchmarks import TextBenchmark, load_benchmark
from fmgauge.contamination.mink import DEFAULT_K, K_SWEEP, check_k, detectors, item_scores, member_scores
from fmgauge.contamination.scoring import TokenStats, token_stats
from fmgauge.contamination.topk import Overlap, pairwise_overlap
from fmgauge.core.validation import FmgaugeError, did_you_mean


@dataclass
class ScoreResult:
    """Per-item scores (``scores``: one row per item, see :func:`fmgauge.contamination.mink.item_scores`)."""

    model: str
    benchmark: str
    split: str
    scores: pd.DataFrame
    reference_model: str | None = None
    k: float = DEFAULT_K
    meta: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean, sd and quartiles of each detector's raw score over the items."""
        dets = detectors(self.k, with_ref=self.reference_model is not None)
        rows = []
        for d in dets.values():
            v = self.scores[d.column]
            rows.append({"detector": d.name, "column": d.column, "member_if": "higher" if d.higher_is_member else
                         "lower", "mean": v.mean(), "sd": v.std(), "q25": v.quantile(0.25), "q75": v.quantile(0.75)})
        return pd.DataFrame(rows)


def _bench(benchmark: str | TextBenchmark, split: str, max_items: int | None) -> TextBenchmark:
    return benchmark if isinstance(benchmark, TextBenchmark) else load_benchmark(benchmark, split,
                                                                               max_items=max_items)


def check_model_data(model: str, bench: TextBenchmark, *, image_root: str | Path | None = None,
                     blank_images: bool = False) -> Any:
    """Model × data check, before any load: for a vision-language model, the benchmark's
    :class:`~fmgauge.contamination.vlm_scoring.VQAItems` (images resolved; refused when it has none); for a
    causal LM, None."""
    from fmgauge.core.text_models import TEXT_MODELS
    from fmgauge.core.vlm_models import VLM_MODELS, vlm_family

    if vlm_family(model) is None:
        if isinstance(model, str) and "/" not in model and not Path(model).expanduser().exists() \
                and model not in TEXT_MODELS:
            known = [*TEXT_MODELS.names(), *VLM_MODELS.names()]
            raise FmgaugeError(f"unknown model {model!r}.{did_you_mean(model, known)} Known causal LMs: "
                               f"{', '.join(TEXT_MODELS.names())}; vision-language models: "
                               f"{', '.join(VLM_MODELS.names())}; or a local directory or hub id.")
        return None
    from fmgauge.contamination.vlm_scoring import resolve_images

    return resolve_images(bench, image_root, blank_missing=blank_images)


def load_scorer(model: str, *, device: str = "auto", dtype: str = "float32") -> Any:
    """A :class:`~fmgauge.core.vlm_models.VisionLanguageModel` for a VLM name, else a causal LM TextModel."""
    from fmgauge.core.vlm_models import load_vlm_model, vlm_family

    if vlm_family(model) is not None:
        return load_vlm_model(model, device=device, dtype=dtype)
    from fmgauge.core.text_models import load_text_model

    return load_text_model(model, device=device, dtype=dtype)


def scorer_stats(scorer: Any, bench: TextBenchmark, items: Any, *, context: int | None = None,
                 stride: int | None = None, max_batch_tokens: int = 2048,
                 progress: bool = True) -> tuple[TokenStats, tuple[str, ...]]:
    """(token stats, the text each item's stats cover: the answer for a VLM, the item's text for an LM)."""
    if items is None:
        return token_stats(scorer, bench.texts, context=context, stride=stride, max_batch_tokens=max_batch_tokens,
                           progress=progress), bench.texts
    from fmgauge.contamination.vlm_scoring import vlm_token_stats

    return vlm_token_stats(scorer, items, max_batch_tokens=max_batch_tokens, progress=progress), items.answers


def score(model: str, benchmark: str | TextBenchmark, *, split: str = "test", max_items: int | None = None,
          reference_model: str | None = None, k: float = DEFAULT_K, ks: Sequence[float] = K_SWEEP,
          context: int | None = None, stride: int | None = None, max_batch_tokens: int = 2048,
          device: str = "auto", dtype: str = "float32", progress: bool = True,
          image_root: str | Path | None = None, blank_images: bool = False) -> ScoreResult:
    """Score every item of ``benchmark`` under ``model``: loss, zlib, Min-K% and Min-K%++ for each k in ``ks`` (and
    ``k``), and ``ref`` = loss − reference loss when ``reference_model`` is given. Token statistics are cached.

    A vision-language ``model`` scores each item's answer tokens given its image (read from ``image_root``) and
    question; zlib then compresses the answer. ``blank_images``: score items whose image is missing with a blank
    one (reported in ``meta["n_blank_images"]``) instead of refusing. The reference model must be of the same
    kind (both VLMs or both causal LMs): a loss over answer tokens and one over the whole text do not compare.
    """
    check_k(k)
    bench = _bench(benchmark, split, max_items)
    ks = sorted({*map(check_k, ks), k})
    items = check_model_data(model, bench, image_root=image_root, blank_images=blank_images)
    if reference_model is not None:
        ref_items = check_model_data(reference_model, bench, image_root=image_root, blank_images=blank_images)
        if (ref_items is None) != (items is None):
            kinds = {True: "a causal LM", False: "a vision-language model"}
            raise FmgaugeError(f"--reference-model {reference_model!r} is {kinds[ref_items is None]} but --model "
                               f"{model!r} is {kinds[items is None]}; the reference ratio needs two models scoring "
                               "the same tokens (both VLMs or both causal LMs).")
    st, texts = scorer_stats(load_scorer(model, device=device, dtype=dtype), bench, items, context=context,
                             stride=stride, max_batch_tokens=max_batch_tokens, progress=progress)
    ref = None
    if reference_model is not None:
        ref, _ = scorer_stats(load_scorer(reference_model, device=device, dtype=dtype), bench, items,
                              context=context, stride=stride, max_batch_tokens=max_batch_tokens, progress=progress)
    df = item_scores(st, texts, bench.ids, ks=ks, ref_stats=ref)
    meta = {"benchmark": bench.identity, "template": bench.template, "source": bench.source,
            "scored": "all tokens of the item text" if items is None else
            "answer tokens given image + question (vision-language model)"}
    if items is not None:
        meta["n_blank_images"] = items.n_blank
    return ScoreResult(model, bench.name, bench.split, df, reference_model, k, meta)


def topk_overlap(models: Sequence[str], benchmark: str | TextBenchmark, *, split: str = "test",
                 max_items: int | None = None, top: int | None = None, detector: str = "minkpp",
                 k: float = DEFAULT_K, device: str = "auto", dtype: str = "float32",
                 progress: bool = True, image_root: str | Path | None = None,
                 blank_images: bool = False) -> list[Overlap]:
    """Pairwise top-``top`` overlap (default 10% of the items) of ``detector``'s most member-like items. Models may
    mix causal LMs and VLMs (each ranks the same items by its own scores); VLMs read images from ``image_root``."""
    if len(models) < 2:
        raise FmgaugeError(f"topk needs at least 2 models, got {list(models)}.")
    dets = detectors(k)
    if detector not in dets:
        raise FmgaugeError(f"detector must be one of {sorted(dets)}, got {detector!r}.")
    bench = _bench(benchmark, split, max_items)
    for m in models:  # every model × data check before the first load
        check_model_data(m, bench, image_root=image_root, blank_images=blank_images)
    scores = {m: member_scores(score(m, bench, k=k, ks=(k,), device=device, dtype=dtype, progress=progress,
                                     image_root=image_root, blank_images=blank_images).scores,
                               dets[detector]) for m in models}
    return pairwise_overlap(scores, top or max(1, len(bench) // 10))
