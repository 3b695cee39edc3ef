"""Library entry points behind ``fmgauge contamination score`` and ``fmgauge contamination topk``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from fmgauge.contamination.benchmarks import TextBenchmark, load_benchmark
from fmgauge.contamination.mink import DEFAULT_K, K_SWEEP, check_k, detectors, item_scores, member_scores
from fmgauge.contamination.scoring import token_stats
from fmgauge.contamination.topk import Overlap, pairwise_overlap
from fmgauge.core.validation import FmgaugeError


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


def score(model: str, benchmark: str | TextBenchmark, *, split: str = "test", max_items: int | None = None,
          reference_model: str | None = None, k: float = DEFAULT_K, ks: Sequence[float] = K_SWEEP,
          context: int | None = None, stride: int | None = None, max_batch_tokens: int = 2048,
          device: str = "auto", dtype: str = "float32", progress: bool = True) -> ScoreResult:
    """Score every item of ``benchmark`` under ``model``: loss, zlib, Min-K% and Min-K%++ for each k in ``ks`` (and
    ``k``), and ``ref`` = loss − reference loss when ``reference_model`` is given. Token statistics are cached."""
    from fmgauge.core.text_models import load_text_model

    check_k(k)
    bench = _bench(benchmark, split, max_items)
    ks = sorted({*map(check_k, ks), k})
    tm = load_text_model(model, device=device, dtype=dtype)
    st = token_stats(tm, bench.texts, context=context, stride=stride, max_batch_tokens=max_batch_tokens,
                     progress=progress)
    ref = None
    if reference_model is not None:
        rm = load_text_model(reference_model, device=device, dtype=dtype)
        ref = token_stats(rm, bench.texts, context=context, stride=stride, max_batch_tokens=max_batch_tokens,
                          progress=progress)
    df = item_scores(st, bench.texts, bench.ids, ks=ks, ref_stats=ref)
    return ScoreResult(model, bench.name, bench.split, df, reference_model, k,
                       {"benchmark": bench.identity, "template": bench.template, "source": bench.source})


def topk_overlap(models: Sequence[str], benchmark: str | TextBenchmark, *, split: str = "test",
                 max_items: int | None = None, top: int | None = None, detector: str = "minkpp",
                 k: float = DEFAULT_K, device: str = "auto", dtype: str = "float32",
                 progress: bool = True) -> list[Overlap]:
    """Pairwise top-``top`` overlap (default 10% of the items) of ``detector``'s most member-like items."""
    if len(models) < 2:
        raise FmgaugeError(f"topk needs at least 2 models, got {list(models)}.")
    dets = detectors(k)
    if detector not in dets:
        raise FmgaugeError(f"detector must be one of {sorted(dets)}, got {detector!r}.")
    bench = _bench(benchmark, split, max_items)
    scores = {m: member_scores(score(m, bench, k=k, ks=(k,), device=device, dtype=dtype, progress=progress).scores,
                               dets[detector]) for m in models}
    return pairwise_overlap(scores, top or max(1, len(bench) // 10))
