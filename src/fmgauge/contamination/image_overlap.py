"""``fmgauge contamination image-overlap``: benchmark images against a reference corpus, τ from a control set.

Steps (spec detector 4): open and check the three image sets and the embedder (:func:`prepare`, nothing heavy);
embed the reference in cached, resumable chunks and the benchmark and control likewise
(:mod:`~fmgauge.contamination.embed_cache`); index the reference (:mod:`~fmgauge.contamination.neighbours`) and
find each benchmark and control image's top-k neighbours, measuring an approximate index's recall against exact
search; set τ on the control and flag the benchmark (:mod:`~fmgauge.contamination.overlap`); write the run
directory::

    results.json        config, counts, τ, flagged fraction + Wilson CI, control flags, index + recall, timings
    neighbours.csv      set, id, rank, reference id / source / caption, similarity, flagged (top-1 rows)
    neighbours.parquet  the same
    skipped.csv         unreadable files of every set (set, row, id, path, reason)
    figures/similarity_hist.png
    gallery.html, gallery/  flagged pairs for adjudication (see :mod:`~fmgauge.contamination.gallery`)
    marks.json          the reviewer's marks, once there are any
    report.html, report.md
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fmgauge.contamination.images import ImageSet, open_image_set
from fmgauge.contamination.neighbours import IndexConfig, resolve_kind
from fmgauge.core.files import read_back
from fmgauge.core.models import DeviceName
from fmgauge.core.stats import Estimate
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
MIN_RECALL = 0.95
NEAR_IDENTICAL = 0.999  # top-1 cosine at or above this is counted as a (near-)identical image, whatever τ is


class ImageOverlapConfig(BaseModel):
    benchmark: str = Field(description="benchmark images: folder, csv/tsv/parquet listing, PMC-OA jsonl or npz[:split]")
    reference: str = Field(description="reference corpus (e.g. PMC-OA), same forms; streamed in chunks")
    control: str = Field(description="out-of-domain control images known not to be in the reference; sets τ")
    embedder: str = Field("dct", description="dct (offline), siglip-b16, siglip-so400m, biomedclip, hf-hub:..., "
                          "local-dir:<path>")
    alpha: int = Field(0, ge=0, description="control images allowed above τ (0: τ = max control similarity)")
    top_k: int = Field(5, ge=1, le=1000, description="neighbours kept per image")
    index: IndexConfig = Field(default_factory=IndexConfig)
    recall_queries: int = Field(1000, ge=1, description="queries sampled to measure approximate recall vs exact")
    batch_size: int = Field(64, ge=1, description="images per embedder call")
    chunk: int = Field(4096, ge=1, description="images per cache shard (the unit of resumption)")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|cuda:N|mps (open_clip embedders)")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    gallery_max: int = Field(500, ge=0, description="flagged pairs shown in the gallery, most similar first")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of the Wilson interval")


@dataclass
class Inputs:
    benchmark: ImageSet
    reference: ImageSet
    control: ImageSet
    embedder: object


def prepare(cfg: ImageOverlapConfig) -> Inputs:
    """Open and check every input and the embedder; decodes no image and loads no weights."""
    from fmgauge.contamination.embedders import make_embedder

    bench = open_image_set(cfg.benchmark, option="--benchmark")
    ref = open_image_set(cfg.reference, option="--reference")
    ctrl = open_image_set(cfg.control, option="--control")
    if cfg.alpha >= len(ctrl):
        raise FmgaugeError(f"--alpha {cfg.alpha} must be below the number of control images ({len(ctrl)}); it "
                           "counts control images allowed above τ.")
    resolve_kind(cfg.index, len(ref))
    emb = make_embedder(cfg.embedder, device=cfg.device, dtype=cfg.dtype)
    emb.check()
    return Inputs(bench, ref, ctrl, emb)


@dataclass
class ImageOverlapResult:
    run_dir: Path
    results: dict
    neighbours: pd.DataFrame

    @property
    def tau(self) -> float:
        return self.results["tau"]

    @property
    def flagged(self) -> Estimate:
        f = self.results["benchmark"]["flagged"]
        return Estimate(f["value"], f["lo"], f["hi"], f["level"])

    @property
    def control_flags(self) -> int:
        return self.results["control"]["flagged"]["k"]


def _table(imgset: ImageSet, name: str, rows: np.ndarray, sims: np.ndarray, idx: np.ndarray,
           ref: ImageSet, ref_rows: np.ndarray, tau: float) -> pd.DataFrame:
    """Long table: one row per (image, rank) with the reference neighbour's id, source and caption."""
    q, k = sims.shape
    r_rows = np.where(idx >= 0, ref_rows[np.clip(idx, 0, None)], -1)  # (Q, k) reference rows
    d = {"set": name, "row": np.repeat(rows, k), "id": np.repeat(imgset.ids[rows], k),
         "rank": np.tile(np.arange(1, k + 1), q), "ref_row": r_rows.ravel(),
         "ref_id": np.where(r_rows.ravel() >= 0, ref.ids[np.clip(r_rows.ravel(), 0, None)], ""),
         "similarity": sims.ravel().astype(np.float64)}
    for col, arr in (("ref_source", ref.source_ids), ("ref_caption", ref.captions)):
        if arr is not None:
            d[col] = np.where(r_rows.ravel() >= 0, arr[np.clip(r_rows.ravel(), 0, None)], "")
    df = pd.DataFrame(d)
    df["flagged"] = (df["rank"] == 1) & (df["similarity"] > tau)
    return df


def run_image_overlap(cfg: ImageOverlapConfig, out: str | Path | None = None, *, inputs: Inputs | None = None,
                      progress: bool = True) -> ImageOverlapResult:
    """Run the detector of the module docstring into ``out`` (default ``runs/image-overlap``)."""
    import fmgauge
    from fmgauge.contamination.embed_cache import embed_image_set
    from fmgauge.contamination.gallery import write_gallery
    from fmgauge.contamination.neighbours import build_index, recall_against_exact
    from fmgauge.contamination.overlap import flagged_fraction, flags, plot_histograms, threshold_from_control
    from fmgauge.core.stats import wilson_ci

    inp = inputs or prepare(cfg)
    run_dir = Path(out or "runs/image-overlap")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inp.embedder.prepare()
    timings = {}
    emb = {}
    for name, s in (("reference", inp.reference), ("benchmark", inp.benchmark), ("control", inp.control)):
        t = time.perf_counter()
        emb[name] = embed_image_set(s, inp.embedder, batch_size=cfg.batch_size, chunk=cfg.chunk, label=name,
                                    progress=progress)
        timings[f"embed_{name}_s"] = time.perf_counter() - t
    skipped = {n: e.skipped() for n, e in emb.items()}
    ref_rows = emb["reference"].rows()
    if len(ref_rows) == 0:
        first = skipped["reference"][0]
        raise FmgaugeError(f"--reference {cfg.reference}: none of its {len(inp.reference)} images could be read "
                           f"(empty reference set); e.g. {first.path}: {first.reason}.")
    b_rows, b_emb = emb["benchmark"].matrix()
    c_rows, c_emb = emb["control"].matrix()
    for name, rows, s in (("benchmark", b_rows, inp.benchmark), ("control", c_rows, inp.control)):
        if len(rows) == 0:
            first = skipped[name][0]
            raise FmgaugeError(f"--{name} {s.spec}: none of its {len(s)} images could be read; e.g. "
                               f"{first.path}: {first.reason}.")
    if cfg.alpha >= len(c_rows):
        raise FmgaugeError(f"--alpha {cfg.alpha} must be below the {len(c_rows)} readable control images.")
    warnings = []
    if len(c_rows) > len(b_rows):
        warnings.append(f"the control ({len(c_rows)} images) is larger than the benchmark ({len(b_rows)}): τ is the "
                        f"maximum over more draws than the benchmark gets, so it is stricter (conservative) than "
                        "a control of the benchmark's size would set; compare flag rates, not counts.")
    for name, sk in skipped.items():
        if sk:
            warnings.append(f"{len(sk)} {name} image(s) could not be read and were skipped (skipped.csv).")

    t = time.perf_counter()
    index = build_index(lambda: (e for _, e in emb["reference"].chunks()), len(ref_rows), b_emb.shape[1], cfg.index)
    timings["index_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    s_all, i_all = index.search(np.vstack([b_emb, c_emb]), cfg.top_k)  # one pass over the reference
    b_s, b_i, c_s, c_i = s_all[:len(b_emb)], i_all[:len(b_emb)], s_all[len(b_emb):], i_all[len(b_emb):]
    timings["search_s"] = time.perf_counter() - t
    recall = None
    if index.kind != "exact":
        recall = recall_against_exact(index, np.vstack([b_emb, c_emb]), cfg.top_k,
                                      sample=cfg.recall_queries, seed=cfg.index.seed).to_dict()
        if recall["recall_at_1"] < MIN_RECALL:
            warnings.append(f"approximate search ({index.kind}, {index.params}) found the exact top-1 for only "
                            f"{recall['recall_at_1']:.3f} of sampled queries; raise nprobe/ef_search or use "
                            "--index exact.")

    tau = threshold_from_control(c_s[:, 0], cfg.alpha)
    same = np.flatnonzero(c_s[:, 0] >= NEAR_IDENTICAL)
    if len(same):
        j = same[np.argmax(c_s[same, 0])]
        warnings.append(f"{len(same)} control image(s) are (near-)identical to reference images (top-1 ≥ "
                        f"{NEAR_IDENTICAL}; e.g. {inp.control.ids[c_rows[j]]} ~ {inp.reference.ids[ref_rows[c_i[j, 0]]]}"
                        f", {c_s[j, 0]:.4f}): the control is not disjoint from the reference, so τ = {tau:.4f} is "
                        "inflated; remove them or raise --alpha.")
    b_flag, c_flag = flags(b_s[:, 0], tau), flags(c_s[:, 0], tau)
    est = flagged_fraction(b_flag, level=cfg.level)
    c_est = wilson_ci(int(c_flag.sum()), len(c_flag), level=cfg.level)
    nb = pd.concat([_table(inp.benchmark, "benchmark", b_rows, b_s, b_i, inp.reference, ref_rows, tau),
                    _table(inp.control, "control", c_rows, c_s, c_i, inp.reference, ref_rows, tau)],
                   ignore_index=True)
    nb.to_csv(run_dir / "neighbours.csv", index=False)
    nb.to_parquet(run_dir / "neighbours.parquet", index=False)
    pd.DataFrame([{"set": n, **s.to_dict()} for n, sk in skipped.items() for s in sk],
                 columns=["set", "row", "id", "path", "reason"]).to_csv(run_dir / "skipped.csv", index=False)
    (run_dir / "figures").mkdir(exist_ok=True)
    plot_histograms(b_s[:, 0], c_s[:, 0], tau, run_dir / "figures" / "similarity_hist.png", embedder=cfg.embedder)

    top = nb[(nb.set == "benchmark") & nb.flagged].sort_values("similarity", ascending=False).head(cfg.gallery_max)
    pairs = [{"bench_row": int(r.row), "ref_row": int(r.ref_row), "bench_id": str(r.id), "ref_id": str(r.ref_id),
              "similarity": float(r.similarity), "rank": int(r.rank), "tau": tau,
              "bench_caption": _at(inp.benchmark.captions, r.row), "ref_caption": _at(inp.reference.captions, r.ref_row),
              "ref_source": _at(inp.reference.source_ids, r.ref_row)} for r in top.itertuples()]
    write_gallery(run_dir, pairs, inp.benchmark, inp.reference,
                  title=f"Adjudication: {len(pairs)} flagged pairs ({cfg.embedder}, τ = {tau:.4f})")
    timings["total_s"] = time.perf_counter() - t0

    def counts(name: str, s: ImageSet, rows: np.ndarray) -> dict:
        return {"spec": s.spec, "kind": s.kind, "images": len(s), "embedded": len(rows),
                "skipped": len(skipped[name]), "cache": str(emb[name].root)}

    results = {
        "meta": {"fmgauge": fmgauge.__version__, "python": platform.python_version(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        "config": cfg.model_dump(mode="json"),
        "embedder": {"name": cfg.embedder, "identity": inp.embedder.identity(), "dim": int(b_emb.shape[1])},
        "tau": tau, "alpha": cfg.alpha,
        "benchmark": {**counts("benchmark", inp.benchmark, b_rows),
                      "flagged": {"k": int(b_flag.sum()), "n": len(b_flag), **est.to_dict()},
                      "top1_quantiles": _quantiles(b_s[:, 0]), "near_identical": int((b_s[:, 0] >= NEAR_IDENTICAL).sum())},
        "control": {**counts("control", inp.control, c_rows),
                    "flagged": {"k": int(c_flag.sum()), "n": len(c_flag), **c_est.to_dict()},
                    "top1_quantiles": _quantiles(c_s[:, 0]), "near_identical": int((c_s[:, 0] >= NEAR_IDENTICAL).sum())},
        "reference": counts("reference", inp.reference, ref_rows),
        "index": {"kind": index.kind, "params": index.params, "memory_bytes": index.memory_bytes(),
                  "build_s": index.build_seconds, "recall": recall},
        "gallery": {"pairs": len(pairs), "shown_of_flagged": int(b_flag.sum())},
        "timings": timings, "warnings": warnings,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=float))
    for w in warnings:
        log.warning(w)
    write_report(run_dir)
    return ImageOverlapResult(run_dir, results, nb)


def _at(arr: np.ndarray | None, row: int) -> str:
    return "" if arr is None or row < 0 else str(arr[int(row)])


def _quantiles(x: np.ndarray) -> dict:
    return {f"q{int(q * 100):02d}": float(np.quantile(x, q)) for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)}


def write_report(run_dir: str | Path) -> Path:
    """report.html and report.md of an image-overlap run from its results.json, neighbours and marks."""
    from fmgauge.contamination.gallery import mark_counts
    from fmgauge.core.report import Report, Section, render_html, render_markdown

    run_dir = Path(run_dir)
    f = run_dir / "results.json"
    if not f.is_file():
        raise FmgaugeError(f"{run_dir} has no results.json: run `fmgauge contamination image-overlap --out {run_dir}`.")
    r = read_back(f, lambda p: json.loads(p.read_text()), fix=f"rerun `fmgauge contamination image-overlap ... --out "
                                                               f"{run_dir}` (embeddings are cached).")
    b, c, fl = r["benchmark"], r["control"], r["benchmark"]["flagged"]
    lead = (f"{fl['k']} of {fl['n']} benchmark images ({100 * fl['value']:.1f} %, {int(fl['level'] * 100)} % "
            f"Wilson CI {100 * fl['lo']:.1f}–{100 * fl['hi']:.1f} %) have a reference neighbour above τ = "
            f"{r['tau']:.4f}; the control gets {c['flagged']['k']} of {c['flagged']['n']} (α = {r['alpha']}).")
    summary = pd.DataFrame([
        {"set": "benchmark", "images": b["images"], "embedded": b["embedded"], "skipped": b["skipped"],
         "flagged": fl["k"], "fraction": fl["value"], "ci_lo": fl["lo"], "ci_hi": fl["hi"],
         "median top-1": b["top1_quantiles"]["q50"], "max top-1": b["top1_quantiles"]["q100"],
         f"top-1 ≥ {NEAR_IDENTICAL}": b.get("near_identical")},
        {"set": "control", "images": c["images"], "embedded": c["embedded"], "skipped": c["skipped"],
         "flagged": c["flagged"]["k"], "fraction": c["flagged"]["value"], "ci_lo": c["flagged"]["lo"],
         "ci_hi": c["flagged"]["hi"], "median top-1": c["top1_quantiles"]["q50"],
         "max top-1": c["top1_quantiles"]["q100"], f"top-1 ≥ {NEAR_IDENTICAL}": c.get("near_identical")},
        {"set": "reference", "images": r["reference"]["images"], "embedded": r["reference"]["embedded"],
         "skipped": r["reference"]["skipped"]}]).round(4)
    summary = summary.astype(object).where(summary.notna(), "–")
    how = Section("What was measured", [
        f"Embedder {r['embedder']['name']} (D = {r['embedder']['dim']}), cosine similarity of each image to its nearest "
        f"reference image. τ is the ({r['alpha']} + 1)-th largest control similarity, so at most α control images "
        "(known not to be in the reference) clear it; benchmark images strictly above τ are flagged.",
        "A flag means 'as close to the reference as no control image is', not 'the same image': adjudicate the "
        "pairs in the gallery (duplicate / same source / different) before reporting contamination. Images "
        f"whose top-1 similarity is ≥ {NEAR_IDENTICAL} are counted separately: (near-)identical copies under any "
        "embedder. A control image that is itself that close to the reference is not out of the reference: check it."
        + (" The dct embedder finds near-duplicates (resized, re-encoded, brightness-shifted, slightly cropped or "
           "rotated copies); its similarity between different images of one modality is high, so with an "
           "out-of-domain control its flags mostly say 'same modality'." if r["embedder"]["name"] == "dct" else "")],
        tables=[("Per set (similarities are top-1 cosine)", summary)],
        figures=[("Top-1 similarity to the reference, benchmark vs control, with τ", "figures/similarity_hist.png")])
    ix = r["index"]
    rec = ix["recall"]
    search = Section("Search", [
        f"Index {ix['kind']} {ix['params'] or ''} over {r['reference']['embedded']} reference vectors "
        f"({ix['memory_bytes'] / 2**20:.1f} MiB held by the index; exact search streams the cached chunks)."
        + (f" Against exact search on {rec['queries']} sampled queries: recall@1 {rec['recall_at_1']:.3f}, "
           f"recall@{rec['k']} {rec['recall_at_k']:.3f}, largest top-1 similarity lost {rec['top1_similarity_gap_max']:.4f}."
           if rec else " Exact search: no recall cost.")])
    counts = mark_counts(run_dir)
    marked = sum(v for k, v in counts.items() if k != "unmarked")
    adj = Section("Adjudication", [
        f"{r['gallery']['pairs']} flagged pairs are in the gallery (gallery.html; most similar first, "
        f"{r['gallery']['shown_of_flagged']} flagged in all). {marked} marked so far. Serve it with "
        f"`fmgauge contamination gallery {run_dir}` to save marks into the run."],
        tables=[("Reviewer marks", pd.DataFrame([counts]))])
    nb = pd.read_csv(run_dir / "neighbours.csv", keep_default_na=False)
    top = nb[(nb.set == "benchmark") & (nb["flagged"].astype(str) == "True")].sort_values(
        "similarity", ascending=False).head(20)
    cols = [col for col in ("id", "ref_id", "ref_source", "similarity") if col in top]
    if len(top):
        adj.tables.append(("Most similar flagged pairs (top 20)", top[cols].round(4)))
    sections = [how, search, adj]
    if r["warnings"]:
        sections.insert(0, Section("Warnings", list(r["warnings"])))
    rep = Report(title=f"Image overlap: {b['spec']} against {r['reference']['spec']}", lead=lead, sections=sections,
                 footer=f"fmgauge {r['meta']['fmgauge']}, {r['meta']['time']}; results.json holds every number.")
    render_markdown(rep, run_dir / "report.md")
    return render_html(rep, run_dir / "report.html")
