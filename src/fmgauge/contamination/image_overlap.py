"""``fmgauge contamination image-overlap``: two questions about benchmark images and a reference corpus.

1. **Same modality / source overlap** (the source paper's detector 4): top-1 cosine of each benchmark image to the
   reference under ``--embedder`` (dct offline, SigLIP/BiomedCLIP online); τ_mod from an *out-of-domain* control
   (``--control``): an image closer to the reference than every out-of-domain image. Under such a control this
   flags most images of the reference's modality, copies or not: it measures modality, not copies.
2. **Copies**: the copy detector (:mod:`~fmgauge.contamination.copies`: an SSCD-style embedder trained on the
   reference, a multi-crop shortlist, verification of every candidate by dense alignment); τ_copy from a
   *same-modality* control known to be absent from the reference (``--copy-control``: a held-out split of the
   benchmark's own dataset, or a user-given set): an image whose aligned match is better than every same-modality
   non-member's.

Each question gives a flagged fraction with its Wilson interval and the control's own count; the headline is the
copy rate when a same-modality control is given, else the report's first line says the number measures modality.
Near-identical pairs (cosine or verification score ≥ 1 - 1e-6) are flagged and counted under both questions
whatever τ is; control images that are near-identical to a reference image are demonstrably *in* the reference,
so they are left out of τ (counted and named in a warning). Every flagged benchmark image gets an automatic label
(:mod:`~fmgauge.contamination.adjudicate`). Run directory::

    results.json        config, both questions (τ, flagged + Wilson CI, control flags), labels, index, timings
    neighbours.csv/.parquet  top-k under --embedder per benchmark and control image (set, id, rank, ref, similarity)
    copies.csv          every verified (image, candidate) pair: copy-embedder cosine, verification score, transform
    skipped.csv         unreadable files of every set (set, row, id, path, reason)
    figures/similarity_hist.png, figures/copy_score_hist.png
    gallery.html, gallery/  flagged pairs, pre-labelled, for adjudication (see :mod:`~fmgauge.contamination.gallery`)
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

from fmgauge.contamination.copies import CopyConfig
from fmgauge.contamination.images import ImageSet, open_image_set
from fmgauge.contamination.neighbours import IndexConfig, resolve_kind
from fmgauge.core.files import read_back
from fmgauge.core.models import DeviceName
from fmgauge.core.stats import Estimate
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
MIN_RECALL = 0.95
NEAR_IDENTICAL = 1 - 1e-6  # cosine or verification score at or above this: the same picture, flagged whatever τ is
QUESTIONS = {"copies": "copies", "modality": "same modality / source overlap"}


class ImageOverlapConfig(BaseModel):
    benchmark: str = Field(description="benchmark images: folder, csv/tsv/parquet listing, PMC-OA jsonl or npz[:split]")
    reference: str = Field(description="reference corpus (e.g. PMC-OA), same forms; streamed in chunks")
    control: str | None = Field(None, description="out-of-domain control images known not to be in the reference; "
                                "sets τ of the same-modality / source-overlap question")
    copy_control: str | None = Field(None, description="same-modality images known to be absent from the reference "
                                     "(a held-out split of the benchmark's dataset); sets τ of the copy question")
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
    copies: CopyConfig = Field(default_factory=CopyConfig, description="the copy detector (embedder + verification)")

    def copy_enabled(self) -> bool:
        return self.copies.detector == "on" or (self.copies.detector == "auto" and self.copy_control is not None)


@dataclass
class Inputs:
    benchmark: ImageSet
    reference: ImageSet
    control: ImageSet | None
    embedder: object
    copy_control: ImageSet | None = None


def prepare(cfg: ImageOverlapConfig) -> Inputs:
    """Open and check every input and the embedder; decodes no image and loads no weights."""
    from fmgauge.contamination.embedders import make_embedder

    if cfg.control is None and cfg.copy_control is None:
        raise FmgaugeError("--control and --copy-control are both missing; give an out-of-domain control (sets τ of "
                           "the same-modality question) and/or a same-modality control absent from the reference "
                           "(sets τ of the copy question, e.g. a held-out split of the benchmark's dataset).")
    if cfg.copies.detector not in ("auto", "on", "off"):
        raise FmgaugeError(f"--copy-detector must be auto, on or off, got {cfg.copies.detector!r}.")
    if cfg.copy_control is not None and cfg.copies.detector == "off":
        raise FmgaugeError("--copy-control needs the copy detector; drop --copy-detector off (or the control).")
    bench = open_image_set(cfg.benchmark, option="--benchmark")
    ref = open_image_set(cfg.reference, option="--reference")
    ctrl = open_image_set(cfg.control, option="--control") if cfg.control is not None else None
    cctrl = open_image_set(cfg.copy_control, option="--copy-control") if cfg.copy_control is not None else None
    if ctrl is not None and cfg.alpha >= len(ctrl):
        raise FmgaugeError(f"--alpha {cfg.alpha} must be below the number of control images ({len(ctrl)}); it "
                           "counts control images allowed above τ.")
    if cctrl is not None and cfg.copies.alpha >= len(cctrl):
        raise FmgaugeError(f"--copy-alpha {cfg.copies.alpha} must be below the number of --copy-control images "
                           f"({len(cctrl)}); it counts same-modality control images allowed above τ_copy.")
    resolve_kind(cfg.index, len(ref))
    emb = make_embedder(cfg.embedder, device=cfg.device, dtype=cfg.dtype)
    emb.check()
    return Inputs(bench, ref, ctrl, emb, cctrl)


@dataclass
class ImageOverlapResult:
    run_dir: Path
    results: dict
    neighbours: pd.DataFrame
    copies: pd.DataFrame | None = None

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

    def question(self, name: str) -> dict | None:
        return self.results["questions"].get(name)


def _table(imgset: ImageSet, name: str, rows: np.ndarray, sims: np.ndarray, idx: np.ndarray,
           ref: ImageSet, ref_rows: np.ndarray, tau: float | None) -> pd.DataFrame:
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
    top1 = df["rank"] == 1
    df["flagged"] = top1 & ((df["similarity"] >= NEAR_IDENTICAL) | (df["similarity"] > tau if tau is not None else False))
    return df


def _question(name: str, b_score: np.ndarray, c_score: np.ndarray | None, c_near: np.ndarray | None, alpha: int,
              b_near: np.ndarray, *, control: ImageSet | None, c_rows: np.ndarray | None, level: float,
              warnings: list[str], what: str, other_controls: dict | None = None) -> dict | None:
    """One question's numbers: τ from the control (near-identical control images left out), flags, Wilson CIs.

    ``b_score`` (N_b,) / ``c_score`` (N_c,) the score τ is set on; ``b_near`` / ``c_near`` near-identical masks.
    """
    from fmgauge.contamination.overlap import flagged_fraction, threshold_from_control
    from fmgauge.core.stats import wilson_ci

    if c_score is None or control is None:
        return None
    keep = ~c_near
    if c_near.any():
        j = np.flatnonzero(c_near)
        warnings.append(f"{len(j)} {what} control image(s) are near-identical to reference images (e.g. "
                        f"{', '.join(map(str, control.ids[c_rows[j[:3]]]))}): they are in the reference, so they were "
                        f"left out of τ ({int(keep.sum())} control images set it); check the control.")
    if keep.sum() <= alpha:
        raise FmgaugeError(f"the {what} control has {int(keep.sum())} usable images (after leaving out "
                           f"{int(c_near.sum())} near-identical to the reference); α = {alpha} needs more than α.")
    tau = threshold_from_control(c_score[keep], alpha)
    b_flag = (b_score > tau) | b_near
    c_flag = (c_score > tau) & keep
    est = flagged_fraction(b_flag, level=level)
    c_est = wilson_ci(int(c_flag.sum()), int(keep.sum()), level=level)
    n_c = int(keep.sum())
    out = {"name": QUESTIONS[name], "tau": tau, "alpha": alpha, "control_spec": control.spec,
           "benchmark": {"k": int(b_flag.sum()), "n": len(b_flag), **est.to_dict(),
                         "near_identical": int(b_near.sum())},
           "control": {"k": int(c_flag.sum()), "n": n_c, **c_est.to_dict(), "near_identical_left_out": int(c_near.sum()),
                       "quantiles": _quantiles(c_score[keep])},
           "benchmark_quantiles": _quantiles(b_score),
           "false_flag_rate_bound": (alpha + 1) / (n_c + 1),
           "expected_false_flags_bound": len(b_flag) * (alpha + 1) / (n_c + 1)}
    for oname, (o_score, o_near) in (other_controls or {}).items():
        f = (o_score > tau) | o_near
        out[f"{oname}_flagged"] = {"k": int(f.sum()), "n": len(f), **wilson_ci(int(f.sum()), len(f), level=level).to_dict()}
    out["_flags"] = b_flag
    return out


def run_image_overlap(cfg: ImageOverlapConfig, out: str | Path | None = None, *, inputs: Inputs | None = None,
                      progress: bool = True) -> ImageOverlapResult:
    """Run both questions of the module docstring into ``out`` (default ``runs/image-overlap``)."""
    import fmgauge
    from fmgauge.contamination.adjudicate import auto_labels, lookalike_cut
    from fmgauge.contamination.embed_cache import embed_image_set
    from fmgauge.contamination.gallery import write_gallery
    from fmgauge.contamination.neighbours import build_index, recall_against_exact
    from fmgauge.contamination.overlap import plot_histograms

    inp = inputs or prepare(cfg)
    run_dir = Path(out or "runs/image-overlap")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    c0 = time.process_time()
    inp.embedder.prepare()
    timings = {}
    sets = {"reference": inp.reference, "benchmark": inp.benchmark}
    if inp.control is not None:
        sets["control"] = inp.control
    if inp.copy_control is not None:
        sets["copy_control"] = inp.copy_control
    emb = {}
    for name, s in sets.items():
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
    queries = [n for n in sets if n != "reference"]
    mats = {n: emb[n].matrix() for n in queries}
    for name in queries:
        if len(mats[name][0]) == 0:
            first = skipped[name][0]
            raise FmgaugeError(f"--{name.replace('_', '-')} {sets[name].spec}: none of its {len(sets[name])} images "
                               f"could be read; e.g. {first.path}: {first.reason}.")
    if "control" in mats and cfg.alpha >= len(mats["control"][0]):
        raise FmgaugeError(f"--alpha {cfg.alpha} must be below the {len(mats['control'][0])} readable control images.")
    warnings = []
    n_b = len(mats["benchmark"][0])
    if "control" in mats and len(mats["control"][0]) > n_b:
        warnings.append(f"the control ({len(mats['control'][0])} images) is larger than the benchmark ({n_b}): τ is the "
                        "maximum over more draws than the benchmark gets, so it is stricter (conservative) than a "
                        "control of the benchmark's size would set; compare flag rates, not counts.")
    for name in ("control", "copy_control"):
        if name in mats and len(mats[name][0]) < n_b:
            warnings.append(f"the {name.replace('_', '-')} ({len(mats[name][0])} images) is smaller than the benchmark "
                            f"({n_b}): τ is the maximum over fewer draws, so up to {n_b} · (α + 1) / (N_c + 1) never-"
                            "copied benchmark images may clear it by chance; a larger control tightens that.")
    for name, sk in skipped.items():
        if sk:
            warnings.append(f"{len(sk)} {name} image(s) could not be read and were skipped (skipped.csv).")

    t = time.perf_counter()
    index = build_index(lambda: (e for _, e in emb["reference"].chunks()), len(ref_rows), mats["benchmark"][1].shape[1],
                        cfg.index)
    timings["index_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    allq = np.vstack([mats[n][1] for n in queries])
    s_all, i_all = index.search(allq, cfg.top_k)  # one pass over the reference
    search, off = {}, 0
    for n in queries:
        m = len(mats[n][0])
        search[n] = (s_all[off:off + m], i_all[off:off + m])
        off += m
    timings["search_s"] = time.perf_counter() - t
    recall = None
    if index.kind != "exact":
        recall = recall_against_exact(index, allq, cfg.top_k, sample=cfg.recall_queries, seed=cfg.index.seed).to_dict()
        if recall["recall_at_1"] < MIN_RECALL:
            warnings.append(f"approximate search ({index.kind}, {index.params}) found the exact top-1 for only "
                            f"{recall['recall_at_1']:.3f} of sampled queries; raise nprobe/ef_search or use "
                            "--index exact.")
    top1 = {n: search[n][0][:, 0].astype(np.float64) for n in queries}
    near = {n: top1[n] >= NEAR_IDENTICAL for n in queries}
    rows = {n: mats[n][0] for n in queries}

    # ---- question 1: same modality / source overlap (τ from the out-of-domain control)
    modality = _question("modality", top1["benchmark"], top1.get("control"), near.get("control"), cfg.alpha,
                         near["benchmark"], control=inp.control, c_rows=rows.get("control"), level=cfg.level,
                         warnings=warnings, what="out-of-domain",
                         other_controls={"copy_control": (top1["copy_control"], near["copy_control"])}
                         if "copy_control" in top1 else None)

    # ---- question 2: copies (copy detector; τ from the same-modality control)
    copy_scores, copy_info, copies_df = {}, None, None
    if cfg.copy_enabled():
        from fmgauge.contamination.copies import run_copy_stage

        cq = {n: (sets[n], rows[n]) for n in queries if n != "control" or "copy_control" not in sets}
        base_c = {n: np.where(search[n][1] >= 0, ref_rows[np.clip(search[n][1], 0, None)], -1) for n in cq}
        t = time.perf_counter()
        copy_scores, copy_info = run_copy_stage(inp.reference, cq, base_c, cfg.copies, index_cfg=cfg.index,
                                                batch_size=cfg.batch_size, chunk=cfg.chunk, progress=progress)
        timings["copy_stage_s"] = time.perf_counter() - t
        copies_df = _copies_table(copy_scores, sets, inp.reference)
    best = {n: cs.best() for n, cs in copy_scores.items()}
    v = {n: best[n][0].astype(np.float64) for n in best}
    copy_near = {n: near[n] | (v[n] >= NEAR_IDENTICAL if n in v else False) for n in queries}
    copies = None
    if "copy_control" in v:
        copies = _question("copies", v["benchmark"], v["copy_control"], copy_near["copy_control"], cfg.copies.alpha,
                           copy_near["benchmark"], control=inp.copy_control, c_rows=rows["copy_control"],
                           level=cfg.level, warnings=warnings, what="same-modality")
    copy_flag = copies["_flags"] if copies else copy_near["benchmark"]
    mod_flag = modality["_flags"] if modality else np.zeros(n_b, bool)
    headline = "copies" if copies else "modality"

    # ---- automatic labels of every flagged benchmark image
    cut, cut_how = lookalike_cut(same_modality_v=v.get("copy_control"), ood_v=v.get("control"))
    b_rows = rows["benchmark"]
    s_b, i_b = search["benchmark"]
    flagged = np.flatnonzero(copy_flag | mod_flag)
    pairs = []
    for q in flagged:
        if "benchmark" in best and (copy_flag[q] or not mod_flag[q]):
            ref_row, vq, prm = int(best["benchmark"][1][q]), float(best["benchmark"][0][q]), best["benchmark"][2][q]
        else:
            ref_row = int(ref_rows[i_b[q, 0]])
            vq, prm = _score_of(copy_scores.get("benchmark"), q, ref_row)
        sim = _base_sim(s_b[q], i_b[q], ref_rows, ref_row)
        pairs.append({"q": int(q), "bench_row": int(b_rows[q]), "ref_row": ref_row, "similarity": sim,
                      "copy_score": vq, "params": None if prm is None else [float(x) for x in prm],
                      "copy_flag": bool(copy_flag[q]), "modality_flag": bool(mod_flag[q])})
    labels = auto_labels(np.array([p["copy_score"] if p["copy_score"] is not None else -np.inf for p in pairs]),
                         np.array([p["copy_flag"] for p in pairs], bool), cut) if pairs else np.array([])
    for p, lab in zip(pairs, labels, strict=True):
        p["auto"] = str(lab)
    label_counts = {lab: int((labels == lab).sum()) for lab in ("duplicate", "same-source", "different")}

    nb = pd.concat([_table(sets[n], n, rows[n], *search[n], inp.reference, ref_rows,
                           modality["tau"] if modality else None) for n in queries], ignore_index=True)
    nb.to_csv(run_dir / "neighbours.csv", index=False)
    nb.to_parquet(run_dir / "neighbours.parquet", index=False)
    if copies_df is not None:
        copies_df.to_csv(run_dir / "copies.csv", index=False)
    pd.DataFrame([{"set": n, **s.to_dict()} for n, sk in skipped.items() for s in sk],
                 columns=["set", "row", "id", "path", "reason"]).to_csv(run_dir / "skipped.csv", index=False)
    (run_dir / "figures").mkdir(exist_ok=True)
    figures = []
    if modality:
        plot_histograms(top1["benchmark"], top1["control"], modality["tau"], run_dir / "figures" / "similarity_hist.png",
                        embedder=cfg.embedder)
        figures.append("similarity_hist.png")
    if copies:
        plot_histograms(v["benchmark"], v["copy_control"], copies["tau"], run_dir / "figures" / "copy_score_hist.png",
                        control_label="same-modality control",
                        xlabel="copy score: best aligned correlation with a reference image")
        figures.append("copy_score_hist.png")

    order = sorted(range(len(pairs)), key=lambda j: (("duplicate", "same-source", "different").index(pairs[j]["auto"]),
                                                      -(pairs[j]["copy_score"] or -2.0), -(pairs[j]["similarity"] or -2)))
    shown = [pairs[j] for j in order][:cfg.gallery_max]
    g_pairs = []
    for p in shown:
        q = p["q"]
        g_pairs.append({**{k: p[k] for k in ("bench_row", "ref_row", "similarity", "copy_score", "params", "auto",
                                              "copy_flag", "modality_flag")},
                        "bench_id": str(inp.benchmark.ids[p["bench_row"]]), "ref_id": str(inp.reference.ids[p["ref_row"]]),
                        "tau": modality["tau"] if modality else None, "tau_copy": copies["tau"] if copies else None,
                        "cut": cut, "rank": _rank(i_b[q], ref_rows, p["ref_row"]),
                        "bench_caption": _at(inp.benchmark.captions, p["bench_row"]),
                        "ref_caption": _at(inp.reference.captions, p["ref_row"]),
                        "ref_source": _at(inp.reference.source_ids, p["ref_row"]),
                        "neighbours": _neighbours(q, s_b, i_b, ref_rows, copy_scores.get("benchmark"), inp.reference)})
    title = (f"Adjudication: {len(g_pairs)} flagged pairs, pre-labelled ({label_counts['duplicate']} duplicate, "
             f"{label_counts['same-source']} same-source, {label_counts['different']} different)")
    write_gallery(run_dir, g_pairs, inp.benchmark, inp.reference, title=title,
                  verify_size=cfg.copies.verify.size)
    timings["total_s"] = time.perf_counter() - t0
    timings["total_cpu_s"] = time.process_time() - c0

    def counts(name: str, s: ImageSet, r: np.ndarray) -> dict:
        return {"spec": s.spec, "kind": s.kind, "images": len(s), "embedded": len(r),
                "skipped": len(skipped[name]), "cache": str(emb[name].root)}

    head = copies or modality
    questions = {k: {kk: vv for kk, vv in q.items() if kk != "_flags"} for k, q in
                 (("copies", copies), ("modality", modality)) if q}
    results = {
        "meta": {"fmgauge": fmgauge.__version__, "python": platform.python_version(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        "config": cfg.model_dump(mode="json"),
        "embedder": {"name": cfg.embedder, "identity": inp.embedder.identity(), "dim": int(mats["benchmark"][1].shape[1])},
        "headline": headline,
        "questions": questions,
        # the headline question in the layout every reader of results.json knows (the audit report reads these)
        "tau": head["tau"], "alpha": head["alpha"],
        "benchmark": {**counts("benchmark", inp.benchmark, b_rows),
                      "flagged": {kk: head["benchmark"][kk] for kk in ("k", "n", "value", "lo", "hi", "level")},
                      "top1_quantiles": head["benchmark_quantiles"],  # of the headline question's score
                      "near_identical": int(copy_near["benchmark"].sum())},
        "control": {**counts("copy_control" if copies else "control", sets["copy_control" if copies else "control"],
                             rows["copy_control" if copies else "control"]),
                    "flagged": {kk: head["control"][kk] for kk in ("k", "n", "value", "lo", "hi", "level")},
                    "top1_quantiles": head["control"]["quantiles"],
                    "near_identical": head["control"]["near_identical_left_out"]},
        "reference": counts("reference", inp.reference, ref_rows),
        "index": {"kind": index.kind, "params": index.params, "memory_bytes": index.memory_bytes(),
                  "build_s": index.build_seconds, "recall": recall},
        "copy_detector": copy_info,
        "labels": {"counts": label_counts, "lookalike_cut": cut, "lookalike_cut_how": cut_how},
        "gallery": {"pairs": len(g_pairs), "shown_of_flagged": len(pairs)},
        "timings": timings, "warnings": warnings,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    for w in warnings:
        log.warning(w)
    write_report(run_dir)
    return ImageOverlapResult(run_dir, results, nb, copies_df)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return float(o)


def _score_of(cs, q: int, ref_row: int) -> tuple[float | None, np.ndarray | None]:
    """Verification score and params of query q's pair with ``ref_row`` (None if not verified)."""
    if cs is None:
        return None, None
    j = np.flatnonzero(cs.cands[q] == ref_row)
    if not len(j):
        return None, None
    return float(cs.score[q, j[0]]), cs.params[q, j[0]]


def _base_sim(sims: np.ndarray, idx: np.ndarray, ref_rows: np.ndarray, ref_row: int) -> float | None:
    j = np.flatnonzero((idx >= 0) & (ref_rows[np.clip(idx, 0, None)] == ref_row))
    return float(sims[j[0]]) if len(j) else None


def _rank(idx: np.ndarray, ref_rows: np.ndarray, ref_row: int) -> int | None:
    j = np.flatnonzero((idx >= 0) & (ref_rows[np.clip(idx, 0, None)] == ref_row))
    return int(j[0]) + 1 if len(j) else None


def _neighbours(q: int, s_b: np.ndarray, i_b: np.ndarray, ref_rows: np.ndarray, cs, ref: ImageSet) -> list[dict]:
    """A benchmark image's neighbours for the gallery: the embedder's top-k and the verified copy candidates."""
    out: dict[int, dict] = {}
    for s, i in zip(s_b[q], i_b[q], strict=True):
        if i >= 0:
            r = int(ref_rows[i])
            out[r] = {"ref_row": r, "ref_id": str(ref.ids[r]), "similarity": float(s), "copy_score": None}
    if cs is not None:
        for r, v in zip(cs.cands[q], cs.score[q], strict=True):
            if r >= 0:
                d = out.setdefault(int(r), {"ref_row": int(r), "ref_id": str(ref.ids[int(r)]), "similarity": None})
                d["copy_score"] = float(v)
    return sorted(out.values(), key=lambda d: (-(d["copy_score"] if d["copy_score"] is not None else -2),
                                               -(d["similarity"] if d["similarity"] is not None else -2)))[:8]


def _copies_table(scores: dict, sets: dict, ref: ImageSet) -> pd.DataFrame:
    parts = []
    for name, cs in scores.items():
        q, c = cs.cands.shape
        ok = cs.cands >= 0
        qi, ci = np.nonzero(ok)
        best = np.argmax(cs.score, axis=1)
        prm = cs.params[qi, ci]
        parts.append(pd.DataFrame({
            "set": name, "row": cs.rows[qi], "id": sets[name].ids[cs.rows[qi]], "candidate": ci + 1,
            "ref_row": cs.cands[qi, ci], "ref_id": ref.ids[cs.cands[qi, ci]], "copy_embedder_cosine": cs.emb_sim[qi, ci],
            "copy_score": cs.score[qi, ci], "best": best[qi] == ci, "flip": prm[:, 0], "angle_deg": prm[:, 1],
            "scale": prm[:, 2], "dx_px": prm[:, 3], "dy_px": prm[:, 4]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _at(arr: np.ndarray | None, row: int) -> str:
    return "" if arr is None or row < 0 else str(arr[int(row)])


def _quantiles(x: np.ndarray) -> dict:
    return {f"q{int(q * 100):02d}": float(np.quantile(x, q)) for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)}


def lead_line(r: dict) -> tuple[str, str]:
    """(title, lead) of the report: the headline question named for what it measures."""
    q = r["questions"]
    if r["headline"] == "copies":
        c = q["copies"]
        b, k = c["benchmark"], c["control"]
        title = "Image overlap, copies"
        lead = (f"Copies: {b['k']} of {b['n']} benchmark images ({100 * b['value']:.1f} %, {int(b['level'] * 100)} % "
                f"Wilson CI {100 * b['lo']:.1f}–{100 * b['hi']:.1f} %) have a verified copy in the reference "
                f"(aligned correlation above τ_copy = {c['tau']:.4f}, set on the same-modality control, which gets "
                f"{k['k']} of {k['n']}; {b['near_identical']} near-identical).")
        if "modality" in q:
            m = q["modality"]["benchmark"]
            lead += (f" Same modality / source overlap, a different question: {m['k']} of {m['n']} "
                     f"({100 * m['value']:.1f} %) are closer to the reference than any out-of-domain control image.")
        return title, lead
    m = q["modality"]
    b, k = m["benchmark"], m["control"]
    title = "Image overlap: this number measures same modality / source overlap, not copies"
    lead = (f"Same modality / source overlap, not copies: {b['k']} of {b['n']} benchmark images "
            f"({100 * b['value']:.1f} %, {int(b['level'] * 100)} % Wilson CI {100 * b['lo']:.1f}–{100 * b['hi']:.1f} %)"
            f" are closer to the reference than any out-of-domain control image (τ = {m['tau']:.4f}; the control gets "
            f"{k['k']} of {k['n']}). Only {b['near_identical']} are near-identical copies. To measure copies, give a "
            "same-modality control absent from the reference (--copy-control, e.g. a held-out split of the "
            "benchmark's dataset).")
    return title, lead


def write_report(run_dir: str | Path) -> Path:
    """report.html and report.md of an image-overlap run from its results.json, neighbours, pairs and marks."""
    from fmgauge.contamination.adjudicate import agreement
    from fmgauge.contamination.gallery import load_marks, mark_counts, read_pairs
    from fmgauge.core.report import Report, Section, render_html, render_markdown

    run_dir = Path(run_dir)
    f = run_dir / "results.json"
    if not f.is_file():
        raise FmgaugeError(f"{run_dir} has no results.json: run `fmgauge contamination image-overlap --out {run_dir}`.")
    r = read_back(f, lambda p: json.loads(p.read_text()), fix=f"rerun `fmgauge contamination image-overlap ... --out "
                                                               f"{run_dir}` (embeddings are cached).")
    title, lead = lead_line(r)
    q = r["questions"]
    rows = []
    for qq in q.values():
        b, c = qq["benchmark"], qq["control"]
        rows.append({"question": qq["name"], "τ": qq["tau"], "control": qq["control_spec"],
                     "benchmark flagged": f"{b['k']} / {b['n']}", "fraction": b["value"], "ci_lo": b["lo"],
                     "ci_hi": b["hi"], "control flagged": f"{c['k']} / {c['n']}",
                     "near-identical": b["near_identical"],
                     "expected false flags ≤": qq["expected_false_flags_bound"]})
    summary = pd.DataFrame(rows).round(4)
    paras = [
        "Two questions, two numbers. **Copies**: the copy detector (an SSCD-style embedder trained on the reference, a "
        "multi-crop shortlist, then each candidate aligned by a dense search over rotations, zooms, shifts and a "
        "flip and scored by normalised correlation) finds each image's best-aligned reference image; τ_copy is the "
        "best score any same-modality control image (known to be absent from the reference) reaches. **Same modality "
        f"/ source overlap**: top-1 cosine under {r['embedder']['name']} (D = {r['embedder']['dim']}); τ is the "
        "best similarity any out-of-domain control image reaches. The first can only be as good as its control: a "
        "never-copied benchmark image exchangeable with the control clears τ with probability ≤ (α + 1)/(N_c + 1), "
        "so up to the 'expected false flags' column of them may be flagged by chance.",
        f"Near-identical pairs (cosine or aligned correlation ≥ {NEAR_IDENTICAL}) are flagged under both questions "
        "whatever τ is; control images near-identical to a reference image are left out of τ (they are in the "
        "reference)."]
    if "modality" in q and "copy_control_flagged" in q["modality"]:
        cc = q["modality"]["copy_control_flagged"]
        paras.append(f"How much the modality question says about copies: it flags {cc['k']} of {cc['n']} "
                     f"({100 * cc['value']:.1f} %) of the same-modality control, images known NOT to be in the "
                     "reference.")
    if r["embedder"]["name"] == "dct" and "modality" in q:
        paras.append("The dct embedder's similarity between different images of one modality is high, so under an "
                     "out-of-domain control its flags mostly say 'same modality'.")
    how = Section("What was measured", paras, tables=[("The two questions (Wilson intervals)", summary)],
                  figures=[(cap, f"figures/{fn}") for cap, fn in (
                      ("Top-1 similarity to the reference, benchmark vs out-of-domain control, with τ",
                       "similarity_hist.png"),
                      ("Copy score (best aligned correlation), benchmark vs same-modality control, with τ_copy",
                       "copy_score_hist.png")) if (run_dir / "figures" / fn).is_file()])
    sections = [how]
    cd = r.get("copy_detector")
    if cd:
        tr = cd["embedder"].get("training", {})
        hist = tr.get("history") or [{}]
        t = cd["timings"]
        sections.append(Section("Copy detector", [
            f"Copy embedder trained on {tr.get('trained_on', '?')} reference images in {t['train_s']:.1f} s wall / "
            f"{t['train_cpu_s']:.1f} s CPU (cached: 0 when reused); final loss {hist[-1].get('loss', float('nan')):.3f}. "
            f"{cd['views_per_query']} views per query image; pairs verified: "
            + ", ".join(f"{k} {v}" for k, v in cd.get("pairs_verified", {}).items()) + ". copies.csv lists every "
            "verified pair with its transform (flip, angle, zoom, shift)."]))
    ix = r["index"]
    rec = ix["recall"]
    sections.append(Section("Search", [
        f"Index {ix['kind']} {ix['params'] or ''} over {r['reference']['embedded']} reference vectors "
        f"({ix['memory_bytes'] / 2**20:.1f} MiB held by the index; exact search streams the cached chunks)."
        + (f" Against exact search on {rec['queries']} sampled queries: recall@1 {rec['recall_at_1']:.3f}, "
           f"recall@{rec['k']} {rec['recall_at_k']:.3f}, largest top-1 similarity lost {rec['top1_similarity_gap_max']:.4f}."
           if rec else " Exact search: no recall cost.")]))
    counts = mark_counts(run_dir)
    pairs = read_pairs(run_dir)
    marks = load_marks(run_dir)
    auto = [p.get("auto", "") for p in pairs]
    human = [marks.get(p["pair"], {}).get("mark") for p in pairs]
    ag = agreement(auto, human)
    lab = r.get("labels", {})
    adj_text = [
        f"All {r['gallery']['shown_of_flagged']} flagged benchmark images get an automatic label: {lab.get('counts')}; "
        f"the gallery (gallery.html) shows {r['gallery']['pairs']} of them, duplicates first. duplicate = flagged as a copy; "
        f"same-source = flagged for modality only and aligned at least as well as a typical same-modality non-member "
        f"(aligned correlation ≥ {lab.get('lookalike_cut', float('nan')):.4f}, the {lab.get('lookalike_cut_how', '')});"
        " different = below that. Serve it with "
        f"`fmgauge contamination gallery {run_dir}` to save marks into the run.",
        f"{ag['marked']} pairs marked by a reviewer so far."
        + (f" Automatic and human labels agree on {100 * ag['agree']:.1f} % of them (Cohen's κ {ag['kappa']:.3f})."
           if ag["marked"] else "")]
    tables = [("Reviewer marks", pd.DataFrame([counts])),
              ("Automatic labels", pd.DataFrame([{**{k: v for k, v in (lab.get("counts") or {}).items()}}]))]
    if ag["marked"]:
        conf = pd.DataFrame(ag["confusion"]).T
        conf.index.name = "automatic \\ human"
        tables.append(("Automatic (rows) vs human (columns) labels, marked pairs", conf.reset_index()))
    top = pd.DataFrame([{"id": p["bench_id"], "ref_id": p["ref_id"], "auto": p.get("auto"),
                         "copy score": p.get("copy_score"), "similarity": p.get("similarity"),
                         "mark": marks.get(p["pair"], {}).get("mark", "")} for p in pairs[:20]])
    if len(top):
        tables.append(("First 20 gallery pairs (duplicates first, by copy score)", top.round(4)))
    sections.append(Section("Adjudication", adj_text, tables=tables))
    if r["warnings"]:
        sections.insert(0, Section("Warnings", list(r["warnings"])))
    rep = Report(title=f"{title}: {r['benchmark']['spec']} against {r['reference']['spec']}", lead=lead,
                 sections=sections, footer=f"fmgauge {r['meta']['fmgauge']}, {r['meta']['time']}; results.json holds "
                 "every number.")
    render_markdown(rep, run_dir / "report.md")
    return render_html(rep, run_dir / "report.html")
