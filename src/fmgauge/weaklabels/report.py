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
from fmgauge.weaklabels.rule_eval import conclusion as rule_conclusion


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


def plot_matched(summary: dict, labeler: str, path: Path) -> Path:
    """Matched-rate study: ΔAUC vs n_gold per noise structure at the labeler's error rate, one panel per student."""
    import matplotlib.pyplot as plt

    rows = pd.DataFrame([r for r in summary["matched"] if r["labeler"] == labeler])
    students = list(dict.fromkeys(rows["student"]))
    fig, axes = plt.subplots(1, len(students), figsize=(3.2 * len(students), 3.4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, st in zip(axes[0], students, strict=True):
        g = rows[rows.student == st].sort_values("n_gold")
        for i, kind in enumerate(("own", "random", "class-conditional", "instance")):
            mean = np.array([d["value"] for d in g[kind]])
            lo, hi = np.array([d["lo"] for d in g[kind]]), np.array([d["hi"] for d in g[kind]])
            ax.plot(g["n_gold"], mean, "o-", ms=3, color=f"C{i}", lw=2 if kind == "own" else 1,
                    label="labeler's own errors" if kind == "own" else f"{kind} @ same rate")
            ax.fill_between(g["n_gold"], lo, hi, color=f"C{i}", alpha=0.12)
        ax.axhline(0, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_title(st, fontsize=9)
        ax.set_xlabel("n_gold (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ΔAUC (gold+weak − gold)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Same error rate, different structure — labeler {labeler}", fontsize=10)
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
            **({"n* with ELR": r["elr_empirical_text"], "ΔAUC at largest n_gold with ELR":
                _fmt(r.get("elr_delta_at_max"), True)} if "elr_empirical_text" in r else {}),
        })
    return pd.DataFrame(rows)


def labeler_table(summary: dict) -> pd.DataFrame:
    classes = summary["dataset"]["classes"]
    rows = []
    for lab, m in summary["labelers"].items():
        met = m["metrics"]
        per = "–"
        if "recall" in met:
            per = "; ".join(f"{c}: {_num(r['value'])} / {_num(p['value'])}"
                            for c, r, p in zip(classes, met["recall"], met["precision"], strict=True))
        rows.append({"labeler": lab, "simulated": "yes" if m["simulated"] else "no",
                     "accuracy on pool [95% Wilson CI]": _fmt(met["accuracy"]),
                     "always the majority class": "–" if "majority_rate" not in met else
                     f"{met['majority_rate']:.3f} ('{met['majority_class']}')",
                     "balanced accuracy": _fmt(met.get("balanced_accuracy")),
                     "recall / precision per class": per,
                     "AUC on pool": "–" if met["auc"] is None else f"{met['auc']:.3f}",
                     "warning": met.get("warning") or ""})
    return pd.DataFrame(rows)


def _num(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.2f}"


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
    met = summary["labelers"][labeler]["metrics"]
    beside = ""
    if "majority_rate" in met:
        beside = (f", next to {met['majority_rate']:.3f} for always answering '{met['majority_class']}'; balanced "
                  f"accuracy {met['balanced_accuracy']['value']:.3f}")
    parts = [f"With labeler {labeler} (accuracy {acc['value']:.3f}, 95% CI [{acc['lo']:.3f}, {acc['hi']:.3f}] on the "
             f"pool{beside}), weak labels raised test AUC at n_gold = {grid[0]} for {helped_small} of {len(rows)} "
             f"students."]
    if met.get("warning"):
        parts.append(f"WARNING: {met['warning']}")
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


def _n(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.0f}"


def predictor_table(summary: dict) -> pd.DataFrame:
    """Empirical n* next to the rate-only and the projected predictions, and which prediction lands closer."""
    emp = {(r["labeler"], r["student"]): r for r in summary["crossovers"]}
    rows = []
    for pr in summary.get("projection", []):
        r = emp.get((pr["labeler"], pr["student"]))
        if r is None:
            continue
        proj_txt = {"crossover": _n(pr["n_star"]), "below-range": f"< {summary['config']['n_gold'][0]}",
                    "above-range": f"> {summary['config']['n_gold'][-1]}"
                    + (f" (≈ {_n(pr['n_star'])} extrapolated)" if pr["n_star"] else "")}[pr["status"]]
        closer = "–"
        e = r.get("empirical", {})
        if e.get("status") == "crossover":
            d_rate = _log_dist(e["n_star"], r["rate_only"], summary)
            d_proj = _log_dist(e["n_star"], pr, summary)
            if d_rate is not None and d_proj is not None:
                closer = "projected" if d_proj < d_rate else "rate-only" if d_rate < d_proj else "tie"
        rows.append({"labeler": pr["labeler"], "student": pr["student"],
                     "empirical n*": r.get("empirical_text", "–"), "rate-only n*": r["rate_only_text"],
                     "projected n*": proj_txt, "n_eff of the pool": _n(pr["n_eff"]),
                     "(1−ρ0−ρ1)²": f"{pr['factor']:.3f}", "instance loss (AUC)": f"{pr['instance_loss']:+.3f}",
                     "closer": closer})
    return pd.DataFrame(rows)


def _log_dist(n_emp: float, pred: dict, summary: dict) -> float | None:
    """|ln n*_emp − ln n*_pred|, with out-of-grid predictions placed at their grid edge (or extrapolation)."""
    grid = summary["config"]["n_gold"]
    n = pred.get("n_star")
    if pred.get("status") == "below-range":
        n = grid[0]
    elif pred.get("status") == "above-range":
        n = n if n else grid[-1]
    return None if not n else abs(float(np.log(n_emp) - np.log(n)))


def matched_table(summary: dict) -> pd.DataFrame:
    rows = []
    for r in summary.get("matched", []):
        rows.append({"labeler": r["labeler"], "student": r["student"], "n_gold": r["n_gold"],
                     "own errors": _fmt(r["own"], True), "random @ same rate": _fmt(r["random"], True),
                     "class-conditional (T)": _fmt(r["class-conditional"], True),
                     "instance @ same rate": _fmt(r["instance"], True),
                     "sign flip own vs random": ("yes (both CIs exclude 0)" if r["significant_flip"]
                                                 else "yes" if r["sign_flip"] else "no")})
    return pd.DataFrame(rows)


def noise_table(summary: dict) -> pd.DataFrame:
    rows = []
    for lab, n in summary.get("noise", {}).items():
        def rates(t: list) -> str:
            t = np.asarray(t)
            return ", ".join(f"{1 - t[k, k]:.2f}" for k in range(len(t)))
        rows.append({"labeler": lab, "error rate per true class: pool (truth)": rates(n["transition_pool"]),
                     "first 100 gold labels": rates(n["transition_gold100"]),
                     "cleanlab (no gold)": rates(n["cleanlab"]["transition"]) if "cleanlab" in n else "–"})
    return pd.DataFrame(rows)


def _ci(d: dict | None, fmt: str = "{:.4f}") -> str:
    if not d or d.get("value") is None or not np.isfinite(d["value"]):
        return "–"
    if not np.isfinite(d.get("lo", np.nan)):
        return fmt.format(d["value"])
    return f"{fmt.format(d['value'])} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]"


POLICY_TEXT = {
    "accuracy": "accuracy rule (paper: gold-only AUC vs prior-corrected labeler accuracy)",
    "auc": "auc rule (gold-only AUC vs labeler AUC)",
    "cv-delta": "cv-delta rule (cross-validated ΔAUC on the gold set, with the pool)",
    "delta-worth": "delta-worth rule (cv-delta; gold-only when the labeler is shown no better than chance)",
    "delta-worth (uncertain→weak)": "delta-worth rule, uncertain → use the weak labels",
    "delta-worth (uncertain→labeler)": "delta-worth rule, uncertain → the weak labels if the labeler ranks the gold "
                                       "items acceptably",
    "delta-worth (uncertain→auto)": "delta-worth rule, uncertain → its lean from 20 items of the rarer class, below "
                                    "that the weak labels if they agree with a gold-trained model across the pool "
                                    "(decide's default)",
    "weak-student": "weak-student rule (weak-trained proxy vs gold-only on the gold set)",
    "projection": "projection rule (n* of the gold-only curve at the weak-trained AUC, against m)",
    "cv-delta (uncertain→weak)": "cv-delta rule, uncertain → use the weak labels",
    "projection (uncertain→weak)": "projection rule, uncertain → use the weak labels",
    "weak-student (uncertain→weak)": "weak-student rule, uncertain → use the weak labels",
    **{f"{r} (uncertain→labeler)": f"{r} rule, uncertain → the weak labels if the labeler ranks the gold items "
       "acceptably" for r in ("cv-delta", "projection", "weak-student")},
    **{f"{r} (uncertain→auto)": f"{r} rule, uncertain → its lean from 20 items of the rarer class, below that the "
       "weak labels if they agree with a gold-trained model across the pool" for r in ("cv-delta", "projection",
                                                                                     "weak-student")},
    "always-weak": "always use the weak labels (trivial)",
    "always-gold": "always train on gold only (trivial)",
}


def rule_table(summary: dict, m: int | str, scope: str = "all") -> pd.DataFrame:
    """Per policy at gold-set size ``m`` (or 'all'): regret, hit rates, abstention, the regret difference to the
    better trivial policy."""
    from fmgauge.weaklabels.rule_eval import _fmt_vs

    ev = summary.get("rule_eval") or {}
    rows = []
    for r in ev.get("scores", []):
        if r["scope"] != scope or r["n_gold"] != m:
            continue
        vs = r.get("vs_trivial")
        hc = r.get("hit_rate_committed")
        rows.append({
            "policy": POLICY_TEXT.get(r["policy"], r["policy"]),
            "regret, AUC [95% CI over seeds]": _ci(r["regret"]),
            "hit rate on decisive cells": _ci(r["hit_rate"], "{:.2f}"),
            "decisive cells": f"{r['decisive_cells']} of {r['cells']}",
            "committed verdicts right (all cells)": _ci(hc, "{:.2f}") if isinstance(hc, dict) else "–",
            "better side where |ΔAUC| > 0.02": _ci(r.get("pick_rate_wide"), "{:.2f}"),
            "abstains": _ci(r["abstain"], "{:.0%}"),
            "regret − better trivial": "–" if not vs else f"{_fmt_vs(vs)} vs {vs['baseline']}",
        })
    return pd.DataFrame(rows)


def bias_table(summary: dict) -> pd.DataFrame:
    """The rule's gold-only AUC estimate against each student's realised gold-only test AUC, per n_gold."""
    rows = []
    for r in (summary.get("rule_eval") or {}).get("gold_bias", []):
        rows.append({"student": r["student"], "n_gold": r["n_gold"], "estimate (mean)": f"{r['estimate']:.3f}",
                     "realised test AUC (mean)": f"{r['realised']:.3f}",
                     "bias [95% CI over seeds]": _ci(r["bias"], "{:+.3f}"),
                     "median |error|": f"{r['abs_median']:.3f}"})
    return pd.DataFrame(rows)


def plot_rule_regret(summary: dict, path: Path) -> Path:
    """Regret vs n_gold per policy (all labelers pooled), with seed-bootstrap 95% CIs."""
    import matplotlib.pyplot as plt

    ev = summary["rule_eval"]
    rows = pd.DataFrame([r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] != "all"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (policy, g) in enumerate(rows.groupby("policy", sort=False)):
        g = g.sort_values("n_gold")
        v = np.array([d["value"] for d in g.regret])
        lo, hi = np.array([d["lo"] for d in g.regret]), np.array([d["hi"] for d in g.regret])
        trivial = policy.startswith("always")
        ax.plot(g.n_gold, v, "s--" if trivial else "o-", ms=4, color=f"C{i}", label=policy, lw=1 if trivial else 2)
        ax.fill_between(g.n_gold, lo, hi, color=f"C{i}", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel("gold labels the rule is operated from (n_gold)")
    ax.set_ylabel("regret (AUC lost vs the per-cell best choice)")
    ax.set_title("Decision rules against the trivial policies (lower is better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def explanation_paragraphs(summary: dict) -> list[str]:
    """Plain words for the 'why' section, every number from the summary."""
    out = []
    flips = summary.get("matched", [])
    if flips:
        n_flip = sum(r["sign_flip"] for r in flips)
        n_sig = sum(r["significant_flip"] for r in flips)
        out.append(f"Matched-rate study: in {n_flip} of {len(flips)} (student, n_gold) cells the labeler's own "
                   f"errors and random flips at the same rate move ΔAUC in opposite directions ({n_sig} with both "
                   "95% CIs excluding 0): the error rate alone does not decide whether weak labels help.")
    table = predictor_table(summary)
    if not table.empty and (table["closer"] != "–").any():
        c = table["closer"].value_counts()
        out.append(f"Predicting the crossover: the projection lands closer to the empirical n* for "
                   f"{int(c.get('projected', 0))} and the rate-only rule for {int(c.get('rate-only', 0))} of the "
                   f"{int((table['closer'] != '–').sum())} (labeler, student) pairs with an in-range crossover.")
    return out


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
        real = [n for n in labs if n not in sim]
        controls = [n for n in sim if labs[n].get("matched_to")]
        lead = f"Real labelers: {', '.join(real)}. SIMULATED: {', '.join(sim)}" + (
            " (matched-rate controls: the real labelers' error rates with other noise structures)."
            if len(controls) == len(sim) else ".")
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
    why = Section("Why the crossover lands where it does", explanation_paragraphs(summary))
    for caption, table in (
        ("Predicted vs empirical crossover (projection: our reading of the paper's label-space projection)",
         predictor_table(summary)),
        ("Matched-rate noise study: mean ΔAUC [95% CI] by noise structure at the labeler's error rate",
         matched_table(summary)),
        ("Estimated noise: from the truth, from 100 gold labels, and by confident learning (cleanlab)",
         noise_table(summary)),
    ):
        if not table.empty:
            why.tables.append((caption, table))
    for lab in dict.fromkeys(r["labeler"] for r in summary.get("matched", [])):
        why.figures.append((f"Matched-rate study, labeler {lab}", plot_matched(
            summary, lab, fig_dir / f"matched_{_slug(lab)}.png").relative_to(run_dir).as_posix()))
    if why.tables:
        sections.append(why)
    ev = summary.get("rule_eval") or {}
    if ev:
        m = ev["headline_m"]
        sec = Section("Decision rules, evaluated", [
            rule_conclusion(ev),
            "How: for every labeler, seed and gold-set size n_gold of the grid, `decide` ran on that seed's own "
            "n_gold gold items and the weak-labelled rest of the pool (nothing from the test set), and its choice "
            "was scored against the sweep's realised ΔAUC of every student. Regret = AUC lost against the per-cell "
            "best of gold-only and gold+weak; a rule's uncertain verdict falls back to the side its estimate leans "
            "to, '(uncertain→weak)' to the weak labels, '(uncertain→labeler)' to the weak labels only where the "
            "labeler's AUC on the gold items is ≥ 0.7 or above the gold-only estimate, and '(uncertain→auto)' to "
            "the side its estimate leans to once the gold set holds 20 items of its rarer class and below that to "
            "the weak labels only where they agree with a model trained on the gold items across the pool (AUC of "
            "its pool scores against the weak labels > 0.52) or the labeler's AUC on the gold items is more than "
            "0.1 above the gold-only estimate (decide's default; the uncertain share is the abstention). Paired "
            "rules commit to a side only from 3 gold items of the rarer class. Decisive cells: the "
            "seed-mean ΔAUC has a 95% CI excluding 0. Committed verdicts are scored against each cell's own "
            "realised sign. Intervals resample seeds; MDE = the smallest regret difference these seeds could "
            "detect (80% power), undefined when two policies never chose differently (a rule-of-three bound is "
            "given instead).",
        ])
        sec.tables.append((f"At n_gold = {m} (all labelers and students)", rule_table(summary, m)))
        sec.tables.append(("Over every n_gold of the grid", rule_table(summary, "all")))
        bias = bias_table(summary)
        if not bias.empty:
            sec.tables.append(("The rules' gold-only AUC estimate (leave-pair-out, from the gold items alone) "
                               "against each student's realised gold-only test AUC", bias))
        sec.figures.append(("Regret of each policy by gold-set size", plot_rule_regret(
            summary, fig_dir / "rules_regret.png").relative_to(run_dir).as_posix()))
        sections.append(sec)
    meta = summary["meta"]
    footer = (f"fmgauge {meta['fmgauge']} · git {meta.get('git') or 'n/a'} · {meta['created']} · "
              f"seeds {meta['seeds']} · {meta['run']['ran']} trials run, {meta['run']['skipped']} reused · "
              f"config in config.yaml, raw rows in results.parquet")
    return Report(f"Weak-label crossover study: {summary['config']['name']}", lead, sections, footer)


def write_suite_report(results: list, out_dir: Path) -> Path:
    """One report over several studies run into ``out_dir/<name>/``, in the order given (each study's own report
    stays in its directory). Figures are referenced relative to ``out_dir``."""
    out_dir = Path(out_dir)
    parts = [build_report(r) for r in results]
    sections = []
    for res, rep in zip(results, parts, strict=True):
        rel = Path(res.run_dir).resolve().relative_to(out_dir.resolve()).as_posix()
        sections.append(Section(f"Study {res.summary['config']['name']}: {res.summary['dataset']['name']}",
                                [rep.lead, f"Full report: {rel}/report.html"]))
        for s in rep.sections:
            sections.append(Section(f"{res.summary['config']['name']} · {s.title}", s.paragraphs, s.tables,
                                    [(c, f"{rel}/{path}") for c, path in s.figures]))
    lead = " ".join(f"[{r.summary['config']['name']}] {rep.lead}" for r, rep in zip(results, parts, strict=True))
    footer = " · ".join(rep.footer for rep in parts)
    report = Report("Weak-label crossover studies: " + ", ".join(r.summary["config"]["name"] for r in results),
                    lead, sections, footer)
    render_markdown(report, out_dir / "report.md")
    return render_html(report, out_dir / "report.html")


def write_report(result) -> Path:  # noqa: ANN001
    """Write report.html and report.md into the run directory; returns the HTML path."""
    report = build_report(result)
    run_dir = Path(result.run_dir)
    render_markdown(report, run_dir / "report.md")
    return render_html(report, run_dir / "report.html")
