"""The crossover study's report: learning curves, ΔAUC with crossovers, labeler quality, a plain-words verdict.

Built from a :class:`~fmgauge.weaklabels.study.StudyResult` only (summary.json + results.parquet), so
``fmgauge weak-labels report RUN_DIR`` rebuilds it without retraining anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fmgauge.core.report import Report, Section, figure_backend, render_html, render_markdown, save_figure


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def _curve(curves: pd.DataFrame, student: str, cond: str, labeler: str | None) -> pd.DataFrame:
    c = curves[(curves.student == student) & (curves.condition == cond)]
    c = c[c.labeler.isna()] if labeler is None else c[c.labeler == labeler]
    return c.sort_values("n_gold")


def plot_curves(summary: dict, labeler: str, path: Path) -> Path:
    """AUC vs n_gold (log axis) per student: gold vs gold+weak with 95% CI bands over seeds."""
    import matplotlib.pyplot as plt

    curves = pd.DataFrame(summary["curves"])
    students = list(summary["students"])
    acc = summary["labelers"][labeler]["metrics"]["accuracy"]["value"]
    cols = min(3, len(students))
    rows = int(np.ceil(len(students) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, st in zip(axes.ravel(), students, strict=False):
        for cond, lab, color in (("gold", None, "tab:blue"), ("gold+weak", labeler, "tab:orange")):
            c = _curve(curves, st, cond, lab)
            if len(c):
                ax.plot(c.n_gold, c.auc, "o-", color=color, ms=3, label=cond)
                ax.fill_between(c.n_gold, c.lo, c.hi, color=color, alpha=0.2)
        w = _curve(curves, st, "weak", labeler)
        if len(w):
            ax.axhline(w.auc.iloc[0], color="tab:orange", ls="--", lw=1, label="weak only")
        ax.axhline(acc, color="gray", ls=":", lw=1, label="labeler accuracy")
        xo = next((r for r in summary["crossovers"] if r["labeler"] == labeler and r["student"] == st), None)
        if xo and xo.get("empirical", {}).get("status") == "crossover":
            ax.axvline(xo["empirical"]["n_star"], color="k", lw=1, alpha=0.6)
        ax.set_xscale("log")
        ax.set_title(f"{st} ({summary['students'][st]['params']:,} params)", fontsize=9)
        ax.set_xlabel("n_gold")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(students):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("test AUC")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Learning curves — labeler {labeler}", fontsize=11)
    return save_figure(fig, path)


def plot_delta(summary: dict, results: pd.DataFrame, labeler: str, path: Path) -> Path:
    """ΔAUC = AUC(gold+weak) − AUC(gold) vs n_gold per student, seed mean ± 95% CI, crossovers marked."""
    import matplotlib.pyplot as plt
    from scipy import stats as sps

    fig, ax = plt.subplots(figsize=(7, 4))
    gold = results[results.condition == "gold"].set_index(["student", "n_gold", "seed"])["auc"]
    mixed = results[(results.condition == "gold+weak") & (results.labeler == labeler)]
    mixed = mixed.set_index(["student", "n_gold", "seed"])["auc"]
    delta = (mixed - gold.reindex(mixed.index)).reset_index()
    for i, (st, g) in enumerate(delta.groupby("student", sort=False)):
        agg = g.groupby("n_gold")["auc"].agg(["mean", "std", "count"])
        half = sps.t.ppf(0.975, np.maximum(agg["count"] - 1, 1)) * agg["std"].fillna(0) / np.sqrt(agg["count"])
        color = f"C{i}"
        ax.plot(agg.index, agg["mean"], "o-", ms=3, color=color, label=st)
        ax.fill_between(agg.index, agg["mean"] - half, agg["mean"] + half, color=color, alpha=0.15)
        xo = next((r for r in summary["crossovers"] if r["labeler"] == labeler and r["student"] == st), None)
        if xo and xo.get("empirical", {}).get("status") == "crossover":
            ax.plot([xo["empirical"]["n_star"]], [0], "v", color=color, ms=9, mec="k")
    ax.axhline(0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("n_gold (log)")
    ax.set_ylabel("ΔAUC (gold+weak − gold)")
    ax.set_title(f"Do weak labels help? labeler {labeler} (▼ = crossover n*)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_confusions(summary: dict, path: Path) -> Path:
    """Row-normalised confusion matrix P(ŷ | y) of each labeler on the pool."""
    import matplotlib.pyplot as plt

    labs = list(summary["labelers"])
    classes = summary["dataset"]["classes"]
    fig, axes = plt.subplots(1, len(labs), figsize=(3.8 * len(labs), 3.4), squeeze=False, layout="constrained")
    for ax, lab in zip(axes[0], labs, strict=True):
        c = np.asarray(summary["labelers"][lab]["metrics"]["confusion"], dtype=float)
        p = c / np.clip(c.sum(1, keepdims=True), 1, None)
        ax.imshow(p, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(p):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=30, fontsize=7, ha="right")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("labeler says")
        ax.set_ylabel("true class")
        ax.set_title(lab, fontsize=9)
    return save_figure(fig, path)


def _fmt(est: dict | None, signed: bool = False) -> str:
    if not est:
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(est['value'])} [{f.format(est['lo'])}, {f.format(est['hi'])}]"


def crossover_table(summary: dict, labeler: str) -> pd.DataFrame:
    rows = []
    for r in summary["crossovers"]:
        if r["labeler"] != labeler:
            continue
        rows.append({
            "student": r["student"], "params": f"{summary['students'][r['student']]['params']:,}",
            "empirical n* [95% CI]": r.get("empirical_text", "–"),
            "share of resamples with n* in range": f"{r['empirical']['share_in_range']:.2f}" if "empirical" in r else "–",
            "rate-only predicted n*": r["rate_only_text"],
            "ΔAUC at smallest n_gold": _fmt(r.get("delta_at_min"), True),
            "ΔAUC at largest n_gold": _fmt(r.get("delta_at_max"), True),
            "weak-only AUC": _fmt(r.get("weak_only_auc")),
        })
    return pd.DataFrame(rows)


def labeler_table(summary: dict) -> pd.DataFrame:
    rows = []
    for lab, m in summary["labelers"].items():
        met = m["metrics"]
        rows.append({"labeler": lab, "simulated": "yes" if m["simulated"] else "no",
                     "accuracy on pool [95% Wilson CI]": _fmt(met["accuracy"]),
                     "AUC on pool": "–" if met["auc"] is None else f"{met['auc']:.3f}",
                     "error rate per true class": ", ".join(f"{v:.2f}" for v in met["noise_rate_per_class"])})
    return pd.DataFrame(rows)


def conclusion(summary: dict, labeler: str) -> str:
    """One paragraph in plain words, every number from the summary."""
    rows = [r for r in summary["crossovers"] if r["labeler"] == labeler and "empirical" in r]
    acc = summary["labelers"][labeler]["metrics"]["accuracy"]
    grid = summary["config"]["n_gold"]
    if not rows:
        return f"Labeler {labeler}: only the weak-only condition was run; no crossover to report."
    inside = [r["empirical"]["n_star"] for r in rows if r["empirical"]["status"] == "crossover"]
    above = [r["student"] for r in rows if r["empirical"]["status"] == "above-range"]
    below = [r["student"] for r in rows if r["empirical"]["status"] == "below-range"]
    helped_small = sum(r["delta_at_min"]["value"] > 0 for r in rows)
    worst = min(rows, key=lambda r: r["min_delta"])
    parts = [f"With labeler {labeler} (accuracy {acc['value']:.3f}, 95% CI [{acc['lo']:.3f}, {acc['hi']:.3f}] on the "
             f"pool), weak labels raised test AUC at n_gold = {grid[0]} for {helped_small} of {len(rows)} students."]
    if inside:
        parts.append(f"For {len(inside)} of {len(rows)} students they stop helping at a crossover between "
                     f"n_gold ≈ {min(inside):.0f} and {max(inside):.0f} (median {np.median(inside):.0f}).")
    if above:
        parts.append(f"They still help at n_gold = {grid[-1]} for {', '.join(above)} (crossover above the range).")
    if below:
        parts.append(f"They already hurt at n_gold = {grid[0]} for {', '.join(below)}.")
    if worst["min_delta"] < 0:
        parts.append(f"The largest cost is {worst['min_delta']:+.3f} AUC ({worst['student']}).")
    preds = [r["rate_only"]["n_star"] for r in rows if r["rate_only"]["status"] == "crossover"]
    if preds and inside:
        parts.append(f"The rate-only rule (gold-only AUC reaches labeler accuracy) predicts n* ≈ "
                     f"{np.median(preds):.0f} (median over students) against an empirical median of "
                     f"{np.median(inside):.0f}.")
    elif preds:
        parts.append(f"The rate-only rule predicts n* ≈ {np.median(preds):.0f} (median over students).")
    parts.append("Practical reading: if you hold fewer gold labels than the crossover, add the weak labels; "
                 "beyond it, train on gold only.")
    return " ".join(parts)


def build_report(result) -> Report:  # noqa: ANN001 - StudyResult (avoid an import cycle)
    figure_backend()
    summary, results, run_dir = result.summary, result.results, Path(result.run_dir)
    fig_dir = run_dir / "figures"
    labs = summary["labelers"]
    sim = [n for n, m in labs.items() if m["simulated"]]
    if sim and len(sim) == len(labs):
        lead = (f"SIMULATED labelers ({', '.join(sim)}): no VLM weights were used; this study calibrates the crossover "
                "under controlled noise. Swap in an open_clip labeler (e.g. BiomedCLIP) by config to measure a real VLM.")
    elif sim:
        lead = f"Mixed study: labelers {', '.join(sim)} are SIMULATED; the others are real models."
    else:
        lead = f"Real labelers: {', '.join(labs)}."
    ds = summary["dataset"]
    cfg = summary["config"]
    intro = Section("Study", [
        f"Dataset {ds['name']} ({ds['source']}): pool of {ds['pool']} items (class counts "
        f"{ds['pool_class_counts']}), test set of {ds['test']} items; classes {ds['classes']}.",
        f"{len(summary['students'])} students × n_gold {cfg['n_gold']} × {len(summary['meta']['seeds'])} seeds × "
        f"conditions {cfg['conditions']}. Gold sets are nested per seed and stratified to hold every class. "
        f"Curves show the seed mean with a 95% t-interval; crossover CIs resample seeds.",
    ])
    intro.tables.append(("Labelers (measured on the pool's true labels)", labeler_table(summary)))
    intro.figures.append(("Labeler confusion matrices P(labeler says | true class)",
                          plot_confusions(summary, fig_dir / "labelers.png").relative_to(run_dir).as_posix()))
    sections = [intro]
    for lab in labs:
        s = Section(f"Labeler {lab}", [conclusion(summary, lab)])
        s.tables.append(("Crossover per student", crossover_table(summary, lab)))
        if "gold+weak" in cfg["conditions"]:
            s.figures.append(("ΔAUC vs n_gold with crossovers", plot_delta(
                summary, results, lab, fig_dir / f"delta_{_slug(lab)}.png").relative_to(run_dir).as_posix()))
        s.figures.append(("Learning curves", plot_curves(
            summary, lab, fig_dir / f"curves_{_slug(lab)}.png").relative_to(run_dir).as_posix()))
        sections.append(s)
    meta = summary["meta"]
    footer = (f"fmgauge {meta['fmgauge']} · git {meta.get('git') or 'n/a'} · {meta['created']} · "
              f"seeds {meta['seeds']} · {meta['run']['ran']} trials run, {meta['run']['skipped']} reused · "
              f"config in config.yaml, raw rows in results.parquet")
    return Report(f"Weak-label crossover study: {summary['config']['name']}", lead, sections, footer)


def write_report(result) -> Path:  # noqa: ANN001
    """Write report.html and report.md into the run directory; returns the HTML path."""
    report = build_report(result)
    run_dir = Path(result.run_dir)
    render_markdown(report, run_dir / "report.md")
    return render_html(report, run_dir / "report.html")
