"""The audit's run directory and report: verdicts, score distributions (benchmark vs cohort), enrichment table,
k sweep, permutation-test histograms, top-K overlaps. Every number comes from the :class:`AuditResult`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fmgauge.contamination.audit_result import AuditResult, label
from fmgauge.contamination.mink import detectors, member_scores
from fmgauge.contamination.verdict import NOT_SPECIFIC, SIGNAL
from fmgauge.core.report import Report, Section, figure_backend, render_html, render_markdown, save_figure
from fmgauge.core.store import RunStore


def _pretty(df: pd.DataFrame) -> pd.DataFrame:
    """p-values in 3 significant digits (1e-09 stays visible), other floats rounded to 4 decimals."""
    out = df.copy()
    for c in out.columns:
        if c in ("p", "p_adjusted", "baseline_p", "shard_p"):
            out[c] = [f"{v:.3g}" if isinstance(v, float) and np.isfinite(v) else "–" for v in out[c]]
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def plot_distributions(res: AuditResult, path: Path) -> Path:
    """Histogram of the default detector's member scores, benchmark vs cohort, one panel per model."""
    import matplotlib.pyplot as plt

    cfg = res.config
    det = detectors(cfg["k"])["minkpp"]
    models = [*cfg["models"], cfg["baseline"]]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False, layout="constrained")
    for ax, m in zip(axes[0], models, strict=True):
        s = res.scores[res.scores.model == m]
        b, c = member_scores(s[s.set == "benchmark"], det), member_scores(s[s.set == "cohort"], det)
        bins = np.histogram_bin_edges(np.concatenate([b, c]), bins=30)
        ax.hist(c, bins=bins, alpha=0.55, density=True, label=f"cohort (n={len(c)})", color="tab:gray")
        ax.hist(b, bins=bins, alpha=0.55, density=True, label=f"benchmark (n={len(b)})", color="tab:red")
        ax.axvline(np.quantile(c, cfg["q"]), color="k", ls="--", lw=1, label=f"cohort q={cfg['q']}")
        ax.set_title(f"{label(m)}{' (baseline)' if m == cfg['baseline'] else ''}", fontsize=9)
        ax.set_xlabel(det.name)
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_sweep(res: AuditResult, path: Path) -> Path:
    """AUROC (benchmark vs cohort) of Min-K% and Min-K%++ against k, per model, with bootstrap CIs."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True, layout="constrained")
    for ax, fam in zip(axes, ("mink", "minkpp"), strict=True):
        for i, (m, g) in enumerate(res.sweep[res.sweep.family == fam].groupby("model", sort=False)):
            ax.plot(g.k, g.auroc, "o-", ms=3, color=f"C{i}", label=label(m))
            ax.fill_between(g.k, g.lo, g.hi, color=f"C{i}", alpha=0.15)
        ax.axhline(0.5, color="gray", lw=1, ls=":")
        ax.set_title({"mink": "Min-K%", "minkpp": "Min-K%++"}[fam], fontsize=10)
        ax.set_xlabel("k (fraction of lowest tokens)")
    axes[0].set_ylabel("AUROC benchmark vs cohort")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_permutations(ex: dict, title: str, path: Path) -> Path:
    """Per shard, standardised log-probs: the permutations' histogram (pooled) and the canonical orders."""
    import matplotlib.pyplot as plt

    perm = np.asarray(ex["permuted"])  # (S, m)
    mu, sd = perm.mean(1, keepdims=True), perm.std(1, keepdims=True) + 1e-12
    zp = ((perm - mu) / sd).ravel()
    zc = (np.asarray(ex["canonical"])[:, None] - mu)[:, 0] / sd[:, 0]
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    bins = np.linspace(min(zp.min(), zc.min()) - 0.5, max(zp.max(), zc.max()) + 0.5, 40)
    ax.hist(zp, bins=bins, density=True, color="tab:gray", alpha=0.7, label="random orders (all shards)")
    ax.hist(zc, bins=bins, density=True, color="tab:red", alpha=0.6, label="canonical order (one per shard)")
    ax.set_xlabel("log p(shard), standardised within shard")
    ax.set_title(f"{title}: t = {ex['t']:.2f}, p = {ex['p']:.2g}", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _units_text(res: AuditResult) -> str:
    u = res.meta.get("units", {})
    parts = [f"{k}: {v['units']} units of {v['column']!r}" if v.get("column") else f"{k}: independent items"
             for k, v in u.items() if isinstance(v, dict)]
    return "; ".join(parts) or "independent items"


def lead_line(res: AuditResult) -> str:
    v = res.verdicts()
    parts = []
    for m, g in v.groupby("model", sort=False):
        sig = g[g.verdict == SIGNAL].detector.tolist()
        ns = g[g.verdict == NOT_SPECIFIC].detector.tolist()
        parts.append(f"{label(m)}: signal from {', '.join(sig) or 'no detector'}"
                     + (f"; not specific (baseline reproduces it): {', '.join(ns)}" if ns else ""))
    img = ""
    if res.image_overlap is not None:
        b, c = res.image_overlap["benchmark"]["flagged"], res.image_overlap["control"]["flagged"]
        img = (f" Images: {b['k']} / {b['n']} flagged ({100 * b['value']:.1f} %, CI {100 * b['lo']:.1f}–"
               f"{100 * b['hi']:.1f} %) vs control {c['k']} / {c['n']}.")
    return (f"Contamination audit of {res.meta['benchmark']['benchmark']} ({res.meta['n_benchmark']} items) — "
            + " | ".join(parts) + f". Baseline: {label(res.config['baseline'])}." + img)


def build_report(res: AuditResult, root: Path) -> Report:
    cfg = res.config
    figs = root / "figures"
    rep = Report(f"Contamination audit: {cfg['name']}", lead_line(res))
    for w in res.meta.get("warnings", []):
        rep.sections.append(Section("Warning", [w]))
    v = res.verdicts().assign(model=lambda d: d.model.map(label))
    rep.sections.append(Section("Verdicts", [
        f"Each test's p-value is corrected across detector × model ({cfg['correction']}, α = {cfg['alpha']}). "
        "'signal not specific' means the baseline model, which cannot have seen the benchmark, reproduces the "
        "signal (raw p < α): the benchmark differs from the cohort in a way every LM notices (domain, template, easy "
        "items), which is not evidence of exposure. Xu et al. found exactly this for Min-K%++ tail enrichment and "
        "top-K overlap on small cohorts."], [("verdict per detector × model", _pretty(v))]))
    sec = Section("Per-item detectors vs the known-non-member cohort", [
        f"Tail enrichment: the fraction of benchmark items above the cohort's {cfg['q']}-quantile, against the "
        "fraction an item exchangeable with the cohort would reach (expected), Wilson 95% CI. p-value: a "
        f"permutation test over the pooled items ({_units_text(res)}), so the quantile's own sampling error is "
        "part of the null. "
        f"Cohort: {cfg['cohort']} ({res.meta['n_cohort']} items)."])
    if len(res.enrichment):
        e = res.enrichment.assign(model=lambda d: d.model.map(label))[
            ["model", "role", "detector", "column", "n_benchmark", "fraction", "fraction_lo", "fraction_hi",
             "expected", "enrichment", "p"]]
        sec.tables.append(("tail enrichment", _pretty(e)))
    sec.figures.append(("Min-K%++ member scores, benchmark vs cohort",
                        str(plot_distributions(res, figs / "distributions.png").relative_to(root))))
    sec.figures.append(("k sweep: AUROC of benchmark vs cohort (95% bootstrap CI)",
                        str(plot_sweep(res, figs / "k_sweep.png").relative_to(root))))
    rep.sections.append(sec)
    if res.exchangeability:
        first = next(iter(res.exchangeability.values()))
        ex_sec = Section("Canonical-order exchangeability (Oren et al.)", [
            "Per shard: log p(canonical order) − mean log p(random orders); t across shards, its p-value calibrated "
            "by permutation (in each shard the canonical order is exchangeable with the scored random orders "
            "under the null; p_t = Student-t reference). Permuted: "
            + (first.get("units") or "items") + (f" ({first['n_blocks']} blocks)" if first.get("n_blocks") else "")
            + "."])
        rows = []
        for m, ex in res.exchangeability.items():
            p = plot_permutations(ex, label(m), figs / f"permutations_{_slug(label(m))}.png")
            ex_sec.figures.append((f"permutation test, {label(m)}", str(p.relative_to(root))))
            for s, (d, sp) in enumerate(zip(ex["diffs"], ex["shard_p"], strict=True)):
                rows.append({"model": label(m), "shard": s, "size": ex["shard_sizes"][s], "diff": d, "shard_p": sp})
        ex_sec.tables.append(("per-shard differences", _pretty(pd.DataFrame(rows))))
        rep.sections.append(ex_sec)
    if len(res.overlaps):
        o = res.overlaps.assign(model_a=lambda d: d.model_a.map(label), model_b=lambda d: d.model_b.map(label))
        rep.sections.append(Section("Cross-model top-K overlap", [
            "Overlap of the K most member-like items (Min-K%++) between models, against the hypergeometric null "
            "(expected K²/N); pairs with the baseline show how much overlap any LM produces."],
            [("pairwise overlaps", _pretty(o))]))
    if res.image_overlap is not None:
        rep.sections.append(image_overlap_section(res.image_overlap, root))
    rep.footer = (f"fmgauge contamination audit; benchmark template: {res.meta['benchmark']['template']!r}; "
                  f"run time {res.meta['seconds']:.0f} s.")
    return rep


def image_overlap_section(r: dict, root: Path) -> Section:
    """The image side in the audit report: benchmark and control flag counts side by side, links to the gallery."""
    from fmgauge.contamination.gallery import mark_counts

    sub = root / "image-overlap"
    rows = []
    for name in ("benchmark", "control"):
        f = r[name]["flagged"]
        rows.append({"set": name, "images": r[name]["embedded"], "flagged": f["k"], "fraction": f["value"],
                     "ci_lo": f["lo"], "ci_hi": f["hi"], "max top-1": r[name]["top1_quantiles"]["q100"]})
    marks = mark_counts(sub)
    rec = r["index"]["recall"]
    return Section("Image-side near-neighbour overlap", [
        f"Embedder {r['embedder']['name']}; reference {r['reference']['spec']} ({r['reference']['embedded']} images); "
        f"τ = {r['tau']:.4f} set on the control {r['control']['spec']} so that at most α = {r['alpha']} control "
        f"images clear it. Index {r['index']['kind']}"
        + (f" (recall@1 vs exact {rec['recall_at_1']:.3f})" if rec else "") + ".",
        "Adjudication gallery: image-overlap/gallery.html (serve with `fmgauge contamination gallery "
        f"{sub}` to save marks); full report: image-overlap/report.html. Marks so far: "
        + ", ".join(f"{k} {v}" for k, v in marks.items()) + "."],
        [("flagged fraction (Wilson 95% CI), benchmark beside control", _pretty(pd.DataFrame(rows)))],
        [("top-1 similarity, benchmark vs control", "image-overlap/figures/similarity_hist.png")])


def write_audit(res: AuditResult, root: Path) -> Path:
    """Write config.yaml, scores.parquet, summary.json, report.html/.md under ``root``; returns ``root``."""
    figure_backend()
    store = RunStore(root)
    store.save_config(res.config)
    res.scores.to_parquet(root / "scores.parquet", index=False)
    store.write_json("summary.json", res.to_dict())
    rep = build_report(res, root)
    render_html(rep, root / "report.html")
    render_markdown(rep, root / "report.md")
    store.close()
    return root
