"""The decision rules evaluated over every shipped weak-label study (docs/benchmarks.md §8).

Slow, honest measurement; never run in CI. For each study below, ``fmgauge.weaklabels.study.calibrate`` runs the
shipped config (resumable: a finished study is only re-read) with the gold-set grid cut to the sizes the rule
evaluation scores (n_gold ≤ ``rule_max_gold``) and, for the image configs, without the students named by
``--skip`` (the slowest: ResNet-18 and the widest CNN; the rule's proxy does not depend on the student, the scores
only average over fewer students). The overrides are recorded per study. Then every study's
``summary["rule_eval"]`` is collected into ``benchmarks/results/rules.json`` and rendered into
``docs/bench-parts/weaklabels-rules.md`` (merged into docs/benchmarks.md by ``bench_docs.py``).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rules.py            # ~1-2 h on 2 cores
    .venv/bin/python benchmarks/bench_rules.py --render-only                               # re-render
    .venv/bin/python benchmarks/bench_rules.py --only demo,demo-text                       # a subset
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "weaklabels"
RESULTS = ROOT / "benchmarks" / "results"
PART = ROOT / "docs" / "bench-parts" / "weaklabels-rules.md"
OVR = ("digestive", "nervous", "cardiovascular", "general")  # neoplasms is demo-text
SUITE = ROOT / "benchmarks" / "configs"
STUDIES: dict[str, tuple[str, dict]] = {
    "hurt-digestive": ("../../benchmarks/configs/rules-hurt-digestive.yaml", {}),
    "demo-text": ("demo-text.yaml", {}),
    "demo": ("demo.yaml", {}),
    **{f"ovr-{slug}": ("demo-text.yaml", {"name": f"ovr-{slug}", "dataset": f"medical-abstracts-{slug}",
                                          "matched_rate": False}) for slug in OVR},
    "pneumoniamnist": ("pneumoniamnist.yaml", {}),
    "breastmnist": ("breastmnist.yaml", {}),
    "retinamnist": ("retinamnist.yaml", {}),
    "retinamnist-binary": ("retinamnist-binary.yaml", {}),
}


def study_config(name: str, skip: list[str], sweep_only: bool = False):  # noqa: ANN201 - StudyConfig
    from fmgauge.core.config import load_config
    from fmgauge.weaklabels.study import StudyConfig

    file, over = STUDIES[name]
    cfg = load_config(StudyConfig, CONFIGS / file, over)
    keep = [s for s in cfg.students if not any(re.fullmatch(p, s.display_name()) for p in skip)]
    return cfg.model_copy(update={"students": keep, "rule_eval": not sweep_only})


def resolution(run_dir: Path) -> dict:
    """Per n_gold: how wide the cv-delta rule's 95% ΔAUC interval is (median over labeler x seed cells) against
    how large the realised ΔAUC is (median |ΔAUC| over labeler x student x seed cells): why the rule abstains."""
    import pandas as pd

    rules = pd.read_parquet(run_dir / "rules.parquet")
    cells = pd.read_parquet(run_dir / "rule_cells.parquet")
    cv = rules[rules.rule == "cv-delta"].assign(width=lambda d: d.gap_hi - d.gap_lo)
    real = cells.drop_duplicates(["labeler", "student", "n_gold", "seed"])
    return {str(int(m)): {"ci_width": float(cv.loc[cv.n_gold == m, "width"].median()),
                          "abs_delta": float(real.loc[real.n_gold == m, "delta"].abs().median())}
            for m in sorted(cv.n_gold.unique())}


def run(args: argparse.Namespace) -> None:
    from fmgauge.core.runner import BackendConfig
    from fmgauge.weaklabels.study import calibrate

    out = json.loads((RESULTS / "rules.json").read_text()) if (RESULTS / "rules.json").exists() else {}
    for name in args.only or list(STUDIES):
        cfg = study_config(name, args.skip, args.sweep_only)
        t0 = time.perf_counter()
        res = calibrate(cfg, Path(args.out) / name, backend=BackendConfig(workers=args.workers), progress=True,
                        report=not args.sweep_only)
        if args.sweep_only:
            print(f"[{name}] sweep done in {time.perf_counter() - t0:.0f} s", flush=True)
            continue
        file, over = STUDIES[name]
        before = out.get(name, {})
        out[name] = {
            "config": f"configs/weaklabels/{file}", "overrides": {**over, "n_gold": cfg.n_gold},
            "students": [s.display_name() for s in cfg.students], "skipped": args.skip,
            "labelers": list(res.summary["labelers"]), "dataset": res.summary["dataset"]["name"],
            "seeds": res.summary["meta"]["seeds"], "run": res.summary["meta"]["run"],
            "seconds": round(time.perf_counter() - t0, 1), "rule_eval": res.summary["rule_eval"],
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores, "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "resolution": resolution(Path(args.out) / name),
        }
        if res.summary["meta"]["run"]["ran"] == 0 and "seconds" in before:  # re-read: keep what computing it cost
            out[name].update({k: before[k] for k in ("seconds", "date") if k in before})
        now = json.loads((RESULTS / "rules.json").read_text()) if (RESULTS / "rules.json").exists() else {}
        now[name] = out[name]  # other bench processes may have written other studies meanwhile
        (RESULTS / "rules.json").write_text(json.dumps(now, indent=1))
        print(f"[{name}] done in {out[name]['seconds']:.0f} s", flush=True)


def _ci(d: dict | None, fmt: str) -> str:
    if not d or d.get("value") is None or d["value"] != d["value"]:
        return "–"
    if d.get("lo") is None or d["lo"] != d["lo"]:
        return fmt.format(d["value"])
    return f"{fmt.format(d['value'])} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]"


def render() -> str:
    data = json.loads((RESULTS / "rules.json").read_text())
    policies = ("accuracy", "auc", "cv-delta", "weak-student", "cv-delta (uncertain→weak)",
                "weak-student (uncertain→weak)", "always-weak", "always-gold")
    lines = ["# 8. The decision rules, evaluated over every shipped study (`benchmarks/bench_rules.py`)", "",
             "Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rules.py` (2 workers). "
             "Each study is its shipped config with the gold-set grid cut to the sizes the evaluation scores "
             "(n_gold ≤ 100) and the students listed; every number below is read from that run's "
             "`summary.json` (`benchmarks/results/rules.json` keeps them all, with per-n_gold and per-labeler "
             "scores). Regret = mean AUC lost against the per-cell best of gold-only and gold+weak (an "
             "uncertain verdict acts as its lean); hit rate = share of right choices on decisive cells (seed-mean "
             "ΔAUC with a 95% CI excluding 0); intervals resample seeds.", ""]
    head_rows = []
    for name, d in data.items():
        ev = d["rule_eval"]
        if not ev:
            continue
        m = ev["headline_m"]
        lines += [f"## {name}: {d['dataset']}", "",
                  f"- config `{d['config']}`, overrides {d['overrides']}; seeds {d['seeds']}; run {d['date']} "
                  f"({d['seconds']:.0f} s, {d['run']['ran']} trials run, {d['run']['skipped']} reused)",
                  f"- labelers: {', '.join(d['labelers'])}; students: {', '.join(d['students'])}", "",
                  f"| policy at n_gold = {m} | regret [95% CI] | hit rate on decisive cells | decisive cells | "
                  "abstains | regret − better trivial [95% CI] (MDE) |",
                  "|---|---|---|---|---|---|"]
        scores = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == m}
        for p in policies:
            r = scores.get(p)
            if r is None:
                continue
            vs = r.get("vs_trivial")
            lines.append(f"| {p} | {_ci(r['regret'], '{:.4f}')} | {_ci(r['hit_rate'], '{:.2f}')} | "
                         f"{r['decisive_cells']} of {r['cells']} | {_ci(r['abstain'], '{:.0%}')} | "
                         + ("–" if not vs else f"{vs['value']:+.4f} [{vs['lo']:+.4f}, {vs['hi']:+.4f}] "
                            f"({vs['mde']:.4f}) vs {vs['baseline']}") + " |")
        lines.append("")
        head_rows.append((name, m, scores, ev["best_trivial"]))
    lines += ["## Summary at n_gold = 20: the default rule against the better trivial policy", "",
              "| study | rule | regret | better trivial | its regret | hit rate (decisive) | abstains | "
              "meets the goal? |", "|---|---|---|---|---|---|---|---|"]
    from fmgauge.weaklabels.rule_eval import DEFAULT_POLICY

    for name, m, scores, trivial in head_rows:
        r, t = scores.get(DEFAULT_POLICY), scores.get(trivial)
        if r is None:
            continue
        hit = r["hit_rate"]["value"]
        short = ([f"regret +{r['regret']['value'] - t['regret']['value']:.4f} over {trivial}"]
                 if r["regret"]["value"] > t["regret"]["value"] + 1e-12 else []) + \
            ([f"hit rate {hit:.2f} < 0.85"] if hit == hit and hit < 0.85 else []) + \
            ([f"abstains {r['abstain']['value']:.0%} > 30% (by {r['abstain']['value'] - 0.30:.0%})"]
             if r["abstain"]["value"] > 0.30 else [])
        lines.append(f"| {name} (n_gold {m}) | {DEFAULT_POLICY} | {r['regret']['value']:.4f} | {trivial} | "
                     f"{t['regret']['value']:.4f} | {_ci(r['hit_rate'], '{:.2f}')} | "
                     f"{r['abstain']['value']:.0%} | {'yes' if not short else 'no: ' + '; '.join(short)} |")
    res = {name: d["resolution"] for name, d in data.items() if d.get("resolution")}
    if res:
        ms = sorted({int(m) for r in res.values() for m in r})
        lines += ["", "### Why it abstains: the rule's interval against the effect it must resolve", "",
                  "Per study and n_gold: the median half-width of cv-delta's 95% interval on ΔAUC (from the m gold "
                  "items alone) / the median |ΔAUC| the sweep realised (gold+weak − gold-only on the test set, per "
                  "labeler × student × seed). The rule commits only where its estimate of ΔAUC exceeds its "
                  "half-width, so it abstains on most cells wherever the first number is above the second.", "",
                  "| study | " + " | ".join(f"n_gold = {m}" for m in ms) + " |", "|---|" + "---|" * len(ms)]
        for name, r in res.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{r[str(m)]['ci_width'] / 2:.3f} / {r[str(m)]['abs_delta']:.3f}" if str(m) in r else "–"
                for m in ms) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None, help=f"studies, from {list(STUDIES)}")
    ap.add_argument("--skip", type=lambda s: s.split(","), default=["resnet-w16", "cnn-w32"],
                    help="student display names (regexes) to leave out of the image studies")
    ap.add_argument("--out", default="/tmp/fmgauge-bench-rules", help="run directories (resumable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--sweep-only", action="store_true", help="run the sweeps without the rule trials")
    args = ap.parse_args()
    if not args.render_only:
        run(args)
    PART.write_text(render())
    print(PART)


if __name__ == "__main__":
    main()
