"""The comparison report (HTML + Markdown from one :class:`fmgauge.core.report.Report`), computed from the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fmgauge.core.report import Report, Section, figure_backend, render_html, render_markdown, save_figure


def _ci(d: dict[str, float] | None) -> str:
    if not d:
        return "–"
    return f"{d['value']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"


def strategy_table(summary: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in summary["strategies"]:
        row = {"strategy": r["strategy"], "seeds": str(r["seeds"])}
        for k, v in r.items():
            if isinstance(v, dict) and "value" in v:
                row[f"{k} (mean [95% CI])"] = _ci(v)
        row["realised mask rate"] = f"{r['mlm_rate']:.3f}"
        row["MLM s / trial"] = f"{r['mlm_seconds']:.0f}"
        row["fine-tune+eval s / trial"] = f"{r['ft_seconds']:.0f}"
        rows.append(row)
    for split, m in summary.get("majority_baseline", {}).items():
        rows.append({"strategy": f"majority class ({split})", f"{split}_f1 (mean [95% CI])": f"{m['f1']:.4f}",
                     f"{split}_acc (mean [95% CI])": f"{m['acc']:.4f}"})
    return pd.DataFrame(rows).fillna("–")


def pairs_table(summary: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([{
        "comparison": f"{p['b']} − {p['a']}", "metric": p["metric"], "mean diff [95% paired bootstrap CI]":
        _ci(p["mean_diff"]), "bootstrap p": f"{p['bootstrap_p']:.3g}", "paired t-test p": f"{p['ttest_p']:.3g}",
        "exact sign-flip p (smallest possible)": f"{p['sign_flip_p']:.3g} ({p['min_p']:.3g})" if "min_p" in p
        else "–", "MDE (80% power)": f"{p['mde']:.4f}" if "mde" in p else "–",
        "wins/losses": f"{p['wins']}/{p['losses']}", "seeds": len(p["seeds"]),
        "significant": "yes" if p["significant"] else "no"} for p in summary["pairs"]])


def token_table(tokens: dict[str, Any], which: str) -> pd.DataFrame:
    rows = tokens.get(which, [])
    return pd.DataFrame([{"token": r["token"], "seen": r["seen"],
                          **{k.replace("final_rate_", "final rate ").replace("rate_", "realised rate "): f"{v:.3f}"
                             for k, v in r.items() if "rate_" in k}}
                         for r in rows])


def curve_figures(summary: dict[str, Any], fig_dir: Path) -> list[tuple[str, str]]:
    figure_backend()
    import matplotlib.pyplot as plt

    out = []
    titles = {"mlm_loss": ("MLM stage: training loss", "MLM loss"),
              "ft_loss": ("fine-tuning: training loss", "cross-entropy"),
              "dev_f1": ("fine-tuning: dev F1", "dev F1"),
              "probe_dev_f1": ("frozen-encoder probe: dev F1 by probe training size", "dev F1")}
    for name, rows in summary["curves"].items():
        if not rows:
            continue
        df = pd.DataFrame(rows)
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for s, g in df.groupby("strategy", sort=False):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], marker="o", ms=3, label=s)
            ax.fill_between(g["step"], g["lo"], g["hi"], alpha=0.15)
        title, ylabel = titles[name]
        xlabel = "probe training items" if name.startswith("probe") else "optimiser step"
        ax.set(title=f"{title} (mean, 95% CI over seeds)", xlabel=xlabel, ylabel=ylabel)
        ax.legend()
        path = save_figure(fig, fig_dir / f"{name}.png")
        out.append((title, str(path.relative_to(fig_dir.parent))))
    return out


def build_report(summary: dict[str, Any], run_dir: Path) -> Report:
    meta = summary.get("meta", {})
    cfg = meta.get("config", {})
    init = summary.get("initialised") or []
    setup = [
        f"Task {summary['task']} (split sizes {summary.get('task_sizes', {})}); model {summary['model']}; "
        f"strategies {', '.join(r['strategy'] for r in summary['strategies'])}; seeds {meta.get('seeds')}; "
        f"{summary['trials_done']} of {summary['trials_planned']} trials finished.",
    ]
    if init:
        setup.append(f"The checkpoint has no pretrained masked-LM head: these {len(init)} parameter tensors were "
                     f"freshly initialised before the MLM stage: {', '.join(init)}. The MLM stage trains them from "
                     "scratch, so the MLM losses start high; the encoder itself is pretrained.")
    else:
        setup.append("The masked-LM head was loaded from the checkpoint (nothing initialised).")
    if cfg:
        m = cfg.get("masking", {})
        setup.append(
            f"Protocol: MLM stage {cfg.get('mlm_steps')} steps x batch {cfg.get('mlm_batch')} (AdamW lr "
            f"{cfg.get('mlm_lr')}, weight decay {cfg.get('mlm_weight_decay')}) on the training text; masking rate "
            f"{m.get('rate')} for every strategy, replacement {m.get('replacement')!r}, Typhoon spread "
            f"{m.get('spread')}, EMA {m.get('ema')}, {m.get('warm_batches')} warm-up gradient batches. "
            + (f"Fine-tuning {cfg.get('ft_epochs')} epoch(s) over {cfg.get('ft_train_size') or 'all'} training "
               f"items, batch {cfg.get('ft_batch')}, lr {cfg.get('ft_lr')}"
               if cfg.get("ft_mode", "full") == "full" else
               f"Frozen-encoder probe (ft_mode=probe): logistic regression (C={cfg.get('probe_c') or 'by 5-fold CV'}) "
               "on mean-pooled "
               f"sentence features [u, v, |u-v|, u*v] of {cfg.get('ft_train_size') or 'all'} training items; the "
               "encoder is not fine-tuned, so differences come from the MLM stage alone")
            + f", max length {cfg.get('max_length')} tokens; scored on "
            f"{', '.join(cfg.get('eval_splits', []))}"
            + (f" (at most {cfg['eval_max']} items per split, a fixed stratified subsample shared by all trials)."
               if cfg.get("eval_max") else " (every item)."))
    for n in summary.get("task_notes", []):
        setup.append(f"Note: {n}.")
    machine = meta.get("machine")
    if machine:
        run = meta.get("run", {})
        setup.append(f"Machine: {machine.get('platform')}, {machine.get('cpus')} CPUs, "
                     f"{machine.get('workers') or 'default'} worker process(es) x {machine.get('threads_per_trial')} "
                     f"thread(s); this call ran {run.get('ran')} trial(s) and reused {run.get('skipped')} in "
                     f"{run.get('seconds', 0):.0f} s.")
    sections = [
        Section("Verdict", [summary["verdict"],
                            "A difference counts as significant only when its paired bootstrap 95% CI excludes 0 "
                            "and the paired t-test gives p < 0.05. Single runs can show gaps that vanish across "
                            "seeds; read the CIs."]),
        Section("Setup", setup),
        Section("Scores per strategy", ["Mean over seeds with a Student-t 95% CI. F1 is for the positive class. "
                                        "The majority-class rows show what a model that learned nothing scores."],
                tables=[("per-strategy scores", strategy_table(summary))]),
    ]
    if summary["pairs"]:
        sections.append(Section("Paired differences across seeds",
                                ["Each row is B − A computed seed by seed (the same seed gives both strategies the "
                                 "same data order, classifier initialisation and fine-tuning subset)."],
                                tables=[("paired differences", pairs_table(summary))]))
    fig_dir = run_dir / "figures"
    figs = curve_figures(summary, fig_dir)
    if figs:
        sections.append(Section("Learning curves", figures=figs))
    tokens = summary.get("tokens") or {}
    if tokens.get("most"):
        q = tokens.get("rate_quantiles", {})
        spread = "; ".join(f"{s}: 10%-90% of token types masked at {v['p10']:.3f}-{v['p90']:.3f}"
                           for s, v in q.items())
        sections.append(Section(
            "Which token types get masked",
            [f"Realised masking rate per token type during the MLM stage (masked / seen, summed over seeds), for "
             f"types seen at least {tokens['min_seen']} times, ranked by {tokens['reference']}'s "
             f"{tokens.get('ranked_by', 'realised rate')} (the final rate is Typhoon's per-type rate at the end of "
             f"the MLM stage, mean over seeds; realised rates carry sampling noise). {spread}."],
            tables=[(f"types {tokens['reference']} masks most", token_table(tokens, "most")),
                    (f"types {tokens['reference']} masks least", token_table(tokens, "least"))]))
    lead = summary["verdict"].split(". ")[0] + "."
    footer = (f"fmgauge {meta.get('fmgauge', '')}; finished {meta.get('finished', '')}. Typhoon: Abdurrahman, "
              "Elezabi & Xu 2023 (arXiv 2303.15619).")
    return Report(f"Masking strategies on {summary['task']} with {summary['model']}", lead, sections, footer)


def write_report(result: Any) -> Path:
    """report.html and report.md in the run directory; returns the HTML path."""
    rep = build_report(result.summary, result.run_dir)
    render_markdown(rep, result.run_dir / "report.md")
    return render_html(rep, result.run_dir / "report.html")
