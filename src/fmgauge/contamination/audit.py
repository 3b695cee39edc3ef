"""The contamination audit: every text detector, for one or more models on one benchmark, with controls built in.

Controls (the spec's and Xu et al.'s): a **cohort** of known non-members scored by the same model (per-item
detectors are tested as cohort-relative tail enrichment, :mod:`~fmgauge.contamination.cohort`), an external
**baseline** model that cannot have seen the benchmark (every test is repeated under it; a signal it reproduces is
``signal not specific``), and a **multiple-testing correction** over all detector × model tests
(:mod:`~fmgauge.contamination.verdict`).

Tests per audited model: ``loss``, ``zlib``, ``mink``, ``minkpp`` (tail enrichment at quantile ``q``, default
detector Min-K%++ at k = 0.2; the k sweep is reported as AUROC benchmark vs cohort), ``exchangeability`` (Oren et
al.; optional, it is the expensive one) and ``topk`` (overlap of the model's top-K items with each other audited
model's, Bonferroni over partners; needs ≥ 2 audited models). Every p-value is a permutation test that holds its
level on data no model saw (issue 24; ``tests/test_contamination_calibration.py``), the baseline's veto uses the
same tests, and items that belong together (``group_by``, default the benchmark's known structure) are relabelled
and permuted as whole units.

Models may be causal LMs or vision-language models (Qwen2.5-VL audited, BLIP-2 as the external baseline, as in
Xu et al.): a VLM scores each item's answer tokens given its image and question
(:mod:`~fmgauge.contamination.vlm_scoring`), reading the benchmark's images from ``image_root`` and the cohort's
from ``cohort_image_root``; both are checked for every VLM before the first model loads. Exchangeability on a VLM
runs on its own language model over the items' text (see docs/contamination.md for why).

Output: ``<out>/config.yaml``, ``summary.json`` (config, tests with verdicts, enrichment, overlaps, exchangeability),
``scores.parquet`` (per-item scores, benchmark and cohort, every model), ``report.html`` / ``report.md`` and
``figures/`` (see :mod:`fmgauge.contamination.report`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fmgauge.contamination.audit_result import AuditResult, label
from fmgauge.contamination.benchmarks import TextBenchmark, load_benchmark, units_of
from fmgauge.contamination.cohort import tail_enrichment
from fmgauge.contamination.detect import check_model_data, load_scorer, scorer_stats
from fmgauge.contamination.exchangeability import ExchangeabilityConfig, blocks_of, exchangeability_test
from fmgauge.contamination.image_overlap import ImageOverlapConfig
from fmgauge.contamination.mink import DEFAULT_K, K_SWEEP, detectors, item_scores, k_column, member_scores
from fmgauge.contamination.topk import pairwise_overlap
from fmgauge.contamination.verdict import adjust_pvalues, verdict
from fmgauge.core.models import DeviceName
from fmgauge.core.stats import auc_ci
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

PER_ITEM = ("loss", "zlib", "mink", "minkpp")
ALL_DETECTORS = (*PER_ITEM, "exchangeability", "topk")


class AuditConfig(BaseModel):
    """An audit: models, benchmark, controls, detectors, correction. Merge order: defaults < YAML < CLI."""

    name: str = Field("contamination-audit", description="Run name (run directory runs/<name> by default).")
    models: list[str] = Field(..., min_length=1, description="Models to audit (names, directories or hub ids).")
    baseline: str = Field(..., description="External baseline model that cannot have seen the benchmark.")
    benchmark: str = Field(..., description="Benchmark name or <layout>:<path>.")
    split: str = Field("test", description="Benchmark split.")
    max_items: int | None = Field(None, ge=4, description="First items of the benchmark in canonical order.")
    cohort: str = Field(..., description="Known non-members (benchmark name or <layout>:<path>).")
    cohort_split: str = Field("test", description="Split of the cohort benchmark.")
    cohort_max_items: int | None = Field(None, ge=4, description="First items of the cohort.")
    group_by: str | None = Field(None, description="Benchmark column whose equal values mark items that belong "
                                 "together: the cohort test relabels and the exchangeability test permutes them "
                                 "as whole units (the cohort uses the same column when it has it). Unset: the "
                                 "benchmark's known structure (SLAKE img_id, glue-mrpc-sentences pair, a table's "
                                 "'group' column); 'none': every item independent.")
    detectors: list[Literal["loss", "zlib", "mink", "minkpp", "exchangeability", "topk"]] = Field(
        list(ALL_DETECTORS), description="Detectors to run.")
    k: float = Field(DEFAULT_K, gt=0, le=1, description="Min-K% / Min-K%++ fraction of lowest tokens.")
    q: float = Field(0.95, gt=0, lt=1, description="Cohort quantile of the tail-enrichment test.")
    topk: int | None = Field(None, ge=1, description="K of the top-K overlap (default: 10% of the items).")
    exchangeability: ExchangeabilityConfig = Field(default_factory=ExchangeabilityConfig,
                                                   description="Options of the sharded permutation test.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level after correction.")
    correction: Literal["holm", "bh", "bonferroni", "none"] = Field("holm", description="Across detector × model.")
    image_root: str | None = Field(None, description="Folder of the benchmark's images (for VLMs).")
    cohort_image_root: str | None = Field(None, description="Folder of the cohort's images (for VLMs).")
    blank_images: bool = Field(False, description="VLMs: score items whose image is missing with a blank image "
                                                  "(text prior only) instead of refusing.")
    context: int | None = Field(None, ge=2, description="Scoring window (default: the model's context).")
    max_batch_tokens: int = Field(2048, ge=1, description="Padded tokens per scoring forward.")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|mps.")
    dtype: str = Field("float32", description="float32|float16|bfloat16|auto.")
    images: ImageOverlapConfig | None = Field(None, description="The benchmark's images: image-side near-neighbour "
                                              "overlap (benchmark, reference, control, embedder, alpha, ...), run "
                                              "into <run>/image-overlap/ and reported beside the text detectors.")


def _check_disjoint(bench: TextBenchmark, cohort: TextBenchmark) -> None:
    shared = set(bench.texts) & set(cohort.texts)
    if shared:
        raise FmgaugeError(f"the cohort must hold known non-members, but {len(shared)} of its texts are also "
                           f"benchmark items (e.g. {next(iter(shared))[:60]!r}); use a disjoint cohort.")


def _check_models_data(models: list[str], bench: TextBenchmark, cohort: TextBenchmark,
                       cfg: AuditConfig) -> dict[str, tuple]:
    """Per model, (benchmark items, cohort items) for a VLM (images resolved) or (None, None): before any load."""
    return {m: (check_model_data(m, bench, image_root=cfg.image_root, blank_images=cfg.blank_images),
                check_model_data(m, cohort, image_root=cfg.cohort_image_root, blank_images=cfg.blank_images))
            for m in models}


def _score_model(model: str, bench: TextBenchmark, cohort: TextBenchmark, cfg: AuditConfig,
                 run_exchangeability: bool, progress: bool, items: tuple = (None, None),
                 units: tuple = (None, None)) -> tuple[pd.DataFrame, dict | None]:
    tm = load_scorer(model, device=cfg.device, dtype=cfg.dtype)
    frames = []
    for role, b, it in (("benchmark", bench, items[0]), ("cohort", cohort, items[1])):
        st, texts = scorer_stats(tm, b, it, context=cfg.context, max_batch_tokens=cfg.max_batch_tokens,
                                 progress=progress)
        df = item_scores(st, texts, b.ids, ks=sorted(set(K_SWEEP) | {cfg.k}))
        df.insert(0, "set", role)
        frames.append(df)
    ex = None
    if run_exchangeability:
        lm = tm if items[0] is None else tm.text_model()  # a VLM: its own language model on the items' text
        ex = exchangeability_test(lm, bench.texts, cfg.exchangeability, units=units[1], unit_name=units[0],
                                  progress=progress).to_dict()
    del tm
    return pd.concat(frames, ignore_index=True), ex


def run_audit(cfg: AuditConfig, out: str | Path | None = None, *, progress: bool = True,
              write_report: bool = True) -> AuditResult:
    """Run the audit described by ``cfg``; write the run directory ``out`` (default ``runs/<name>``)."""
    t0 = time.perf_counter()
    cfg = cfg.model_copy(deep=True)  # the run may adapt defaults (shards); the caller's config stays as given
    bench = load_benchmark(cfg.benchmark, cfg.split, max_items=cfg.max_items)
    cohort = load_benchmark(cfg.cohort, cfg.cohort_split, max_items=cfg.cohort_max_items)
    _check_disjoint(bench, cohort)
    if cfg.baseline in cfg.models:
        raise FmgaugeError(f"the baseline {cfg.baseline!r} is also an audited model; pick an external baseline.")
    image_inputs = None
    if cfg.images is not None:  # checked before any model loads
        from fmgauge.contamination.image_overlap import prepare

        image_inputs = prepare(cfg.images)
    units = _units(bench, cohort, cfg)
    root = Path(out) if out is not None else Path("runs") / cfg.name
    run_ex = "exchangeability" in cfg.detectors
    models = [*cfg.models, cfg.baseline]
    items = _check_models_data(models, bench, cohort, cfg)
    scores, exch = [], {}
    for m in models:
        log.info("scoring %s on %s (%d items) and the cohort (%d items)", label(m), bench.name, len(bench),
                 len(cohort))
        df, ex = _score_model(m, bench, cohort, cfg, run_ex, progress, items[m], units["benchmark"])
        df.insert(0, "model", m)
        scores.append(df)
        if ex is not None:
            exch[m] = ex
    scores_df = pd.concat(scores, ignore_index=True)
    tests, enrich, overlaps = _tests(cfg, scores_df, exch, units)
    sweep = _sweep(scores_df, models, cfg)
    meta = {"seconds": time.perf_counter() - t0, "n_benchmark": len(bench), "n_cohort": len(cohort),
            "benchmark": bench.identity | {"source": bench.source, "template": bench.template},
            "cohort": cohort.identity | {"source": cohort.source},
            "units": {k: {"column": units[k][0], "units": len(b) if units[k][1] is None else len(set(units[k][1]))}
                      for k, b in (("benchmark", bench), ("cohort", cohort))},
            "warnings": units["warnings"]}
    res = AuditResult(cfg.model_dump(), tests, enrich, overlaps, sweep, exch, scores_df, None, meta)
    if image_inputs is not None:
        from fmgauge.contamination.image_overlap import run_image_overlap

        res.image_overlap = run_image_overlap(cfg.images, root / "image-overlap", inputs=image_inputs,
                                              progress=progress).results
    if write_report:
        from fmgauge.contamination.report import write_audit

        res.run_dir = write_audit(res, root)
    return res


def _units(bench: TextBenchmark, cohort: TextBenchmark, cfg: AuditConfig) -> dict:
    """Unit labels of the benchmark and the cohort (``{"benchmark": (column, labels), "cohort": ...,
    "warnings": [...]}``), checked before any model loads."""
    b = units_of(bench, cfg.group_by, option="group_by")
    c = units_of(cohort, cfg.group_by, option="group_by", required=False)
    warnings = []
    if b[0] is None and bench.unit_column is not None:
        warnings.append(f"group_by none: the benchmark's items are grouped by {bench.unit_column!r} in its source, so "
                        "its canonical order carries structure any LM can use; the exchangeability test permutes "
                        "single items and may fire without exposure.")
    for w in warnings:
        log.warning(w)
    if "exchangeability" in cfg.detectors:  # enough blocks for the shards, checked before any model loads
        n = min(len(bench), cfg.exchangeability.max_examples)
        blocks = len(blocks_of(None if b[1] is None else list(b[1][:n]), n))
        if (cfg.exchangeability.shards > blocks // 2 and "shards" not in cfg.exchangeability.model_fields_set
                and blocks >= 4):
            shards = max(2, blocks // 4)  # the default (Oren's 50) was not chosen for this benchmark: ~4 blocks each
            warnings.append(f"exchangeability: the benchmark's first {n} items form {blocks} blocks"
                            + (f" of {b[0]!r}" if b[0] else "") + f"; {shards} shards of about 4 blocks instead of "
                            f"the default {cfg.exchangeability.shards}.")
            log.warning(warnings[-1])
            cfg.exchangeability.shards = shards
        if cfg.exchangeability.shards > blocks // 2:
            what = f"blocks of related items (consecutive items sharing {b[0]!r} are permuted together)" if b[0] \
                else "items"
            raise FmgaugeError(f"exchangeability: {cfg.exchangeability.shards} shards need at least "
                               f"{2 * cfg.exchangeability.shards} {what}; the benchmark's first {n} items form "
                               f"{blocks}. Use fewer shards, more items" + (", or group_by: none" if b[0] else "")
                               + ".")
    return {"benchmark": b, "cohort": c, "warnings": warnings}


def _tests(cfg: AuditConfig, scores: pd.DataFrame, exch: dict[str, dict],
           units: dict | None = None) -> tuple[pd.DataFrame, ...]:
    dets = detectors(cfg.k)
    rows, enrich_rows = [], []
    models = [*cfg.models, cfg.baseline]
    for m in models:
        role = "baseline" if m == cfg.baseline else "audited"
        s = scores[scores.model == m]
        for name in PER_ITEM:
            if name not in cfg.detectors:
                continue
            det = dets[name]
            b = member_scores(s[s.set == "benchmark"], det)
            c = member_scores(s[s.set == "cohort"], det)
            e = tail_enrichment(b, c, q=cfg.q, benchmark_units=(units or {}).get("benchmark", (None, None))[1],
                                cohort_units=(units or {}).get("cohort", (None, None))[1])
            enrich_rows.append({"model": m, "role": role, "detector": name, "column": det.column} | e.to_dict())
            rows.append({"model": m, "role": role, "detector": name, "statistic": e.enrichment, "p": e.p})
        if m in exch:
            rows.append({"model": m, "role": role, "detector": "exchangeability", "statistic": exch[m]["t"],
                         "p": exch[m]["p"]})
    overlaps = pd.DataFrame()
    if "topk" in cfg.detectors and len(cfg.models) < 2:
        log.warning("top-K overlap needs at least 2 audited models; skipped (the baseline is not a partner).")
    elif "topk" in cfg.detectors:
        det = dets["minkpp"]  # the default detector ranks the items
        by_model = {m: member_scores(scores[(scores.model == m) & (scores.set == "benchmark")], det) for m in models}
        n = len(by_model[cfg.baseline])
        ov = pairwise_overlap(by_model, cfg.topk or max(1, n // 10))
        overlaps = pd.DataFrame([o.to_dict() for o in ov])
        for m in cfg.models:
            partners = [o for o in ov if m in (o.model_a, o.model_b) and cfg.baseline not in (o.model_a, o.model_b)]
            best = min(partners, key=lambda o: o.p)
            rows.append({"model": m, "role": "audited", "detector": "topk", "statistic": best.ratio,
                         "p": min(1.0, best.p * len(partners))})
    tests = pd.DataFrame(rows)
    audited = tests.role == "audited"
    tests["p_adjusted"] = np.nan
    tests.loc[audited, "p_adjusted"] = adjust_pvalues(tests.loc[audited, "p"].to_numpy(), cfg.correction)
    base_p = []
    for r in tests.itertuples():
        if r.role != "audited":
            base_p.append(np.nan)
        elif r.detector == "topk":
            o = overlaps[((overlaps.model_a == r.model) & (overlaps.model_b == cfg.baseline))
                         | ((overlaps.model_b == r.model) & (overlaps.model_a == cfg.baseline))]
            base_p.append(float(o.p.iloc[0]))  # the baseline shares the model's top-K items
        else:
            b = tests[(tests.model == cfg.baseline) & (tests.detector == r.detector)]
            base_p.append(float(b.p.iloc[0]) if len(b) else np.nan)
    tests["baseline_p"] = base_p
    tests["verdict"] = [verdict(r.p_adjusted, r.baseline_p, cfg.alpha) if r.role == "audited" else ""
                        for r in tests.itertuples()]
    return tests, pd.DataFrame(enrich_rows), overlaps


def _sweep(scores: pd.DataFrame, models: list[str], cfg: AuditConfig) -> pd.DataFrame:
    """AUROC of member scores, benchmark (1) vs cohort (0), per model and detector column (k sweep included)."""
    rows = []
    cols = [("loss", False), ("zlib", False)] + [(k_column(p, k), True) for p in ("mink", "minkpp") for k in K_SWEEP]
    for m in models:
        s = scores[scores.model == m]
        y = (s.set == "benchmark").to_numpy().astype(int)
        for col, higher in cols:
            v = s[col].to_numpy(dtype=float)
            est = auc_ci(y, v if higher else -v, n_boot=200)
            family, _, kk = col.partition("_")
            rows.append({"model": m, "column": col, "family": family, "k": int(kk) / 100 if kk else None,
                         "auroc": est.value, "lo": est.lo, "hi": est.hi})
    return pd.DataFrame(rows)
