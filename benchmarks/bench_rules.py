"""The decision rules evaluated over a study suite that includes labelers whose weak labels hurt (docs/benchmarks.md §8).

Slow, honest measurement; never run in CI. For each study below, ``fmgauge.weaklabels.study.calibrate`` runs the
config (resumable: a finished study is only re-read) at every n_gold of its grid, with the rule trials at every
n_gold, and for the image configs without the students named by ``--skip`` (the slowest: ResNet-18 and the widest
CNN; the rule's proxy does not depend on the student, the scores only average over fewer students). The suite:

- ``hurt-digestive`` (benchmarks/configs/rules-hurt-digestive.yaml): Medical Abstracts one-vs-rest with labelers
  whose labels hurt — minilm-l6 with deliberately poor descriptions (two), a class-conditional simulated labeler
  with precision 0.15 on the rare positive class, a simulated labeler at chance;
- the shipped studies: ``demo-text`` and ``demo`` (the main job, unchanged: their timing is the demo's),
  ``breastmnist``, the minilm-l6 one-vs-rest tasks ``ovr-*`` and the remaining image configs.

Every study's ``summary["rule_eval"]`` goes to ``benchmarks/results/rules.json``; the suite pooling (cluster
bootstrap over (study, seed), the goal of issue 23) to ``benchmarks/results/rules_suite.json``; both render into
``docs/bench-parts/weaklabels-rules.md`` (merged into docs/benchmarks.md by ``bench_docs.py``).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rules.py --only hurt-digestive,demo-text
    .venv/bin/python benchmarks/bench_rules.py --suite hurt-digestive,demo-text,demo   # re-pool the suite
    .venv/bin/python benchmarks/bench_rules.py --render-only                          # re-render
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
# scored only after the default was chosen on the others: never in the suite pooling. Held out in earlier rounds and
# since looked at, now in the suite: heldout-cardiovascular, breastmnist, retinamnist-binary, heldout-nervous
HELD_OUT = ("heldout-digestive", "heldout-breast", "heldout-retina")  # written before RULES_VERSION 12 was chosen
# held out for RULES_VERSION 11 (stop 36) and scored then; RULES_VERSION 12's fallback was chosen without them, but
# their RULES_VERSION 11 verdicts were looked at for the commit bar (COMMIT_FROM): pooled on their own, not in the suite
EARLIER_HELD_OUT = ("heldout-general", "heldout-neoplasms", "retinamnist", "pneumoniamnist")
# seeds added to suite studies after RULES_VERSION 12 was chosen (from this seed on): gold sets the choice never saw
NEW_SEEDS = {"demo-text": 5, **{f"ovr-{slug}": 5 for slug in OVR}}
SEEN = {"heldout-cardiovascular": "written before the previous default, the labeler fallback, was chosen; scored after",
        "breastmnist": "first run after the previous default was chosen",
        "retinamnist-binary": "first run after the previous default was chosen",
        "heldout-nervous": "written and scored after the previous default was chosen, before auto was"}
IMAGE_NOTE = {"retinamnist": "; 5 of its 10 seeds, for machine time; 5 classes: the rule with K > 2",
              "pneumoniamnist": "; its grid to 1000 gold labels, for machine time"}
STUDIES: dict[str, tuple[str, dict]] = {
    "hurt-digestive": ("../../benchmarks/configs/rules-hurt-digestive.yaml", {}),
    "heldout-cardiovascular": ("../../benchmarks/configs/rules-heldout-cardiovascular.yaml", {}),
    "heldout-nervous": ("../../benchmarks/configs/rules-heldout-nervous.yaml", {}),
    "heldout-general": ("../../benchmarks/configs/rules-heldout-general.yaml", {}),
    "heldout-neoplasms": ("../../benchmarks/configs/rules-heldout-neoplasms.yaml", {}),
    "heldout-breast": ("../../benchmarks/configs/rules-heldout-breast.yaml", {}),
    "heldout-retina": ("../../benchmarks/configs/rules-heldout-retina.yaml", {}),
    "heldout-digestive": ("../../benchmarks/configs/rules-heldout-digestive.yaml", {}),
    "demo-text": ("demo-text.yaml", {"seeds": 10}),  # 10 seeds: the text tasks are cheap and their studies small
    "demo": ("demo.yaml", {"rule_max_gold": 500}),  # m = 1000, 2000 left out: machine time (docs §8)
    "breastmnist": ("breastmnist.yaml", {}),
    **{f"ovr-{slug}": ("demo-text.yaml", {"name": f"ovr-{slug}", "dataset": f"medical-abstracts-{slug}",
                                          "matched_rate": False, "seeds": 10}) for slug in OVR},
    "pneumoniamnist": ("pneumoniamnist.yaml", {"n_gold": [10, 20, 50, 100, 200, 500, 1000]}),  # machine time
    "retinamnist": ("retinamnist.yaml", {"seeds": 5}),  # 5 of its 10 seeds: machine time (a held-out study)
    "retinamnist-binary": ("retinamnist-binary.yaml", {}),
}


def study_config(name: str, skip: list[str], sweep_only: bool = False, every_n: bool = False):  # noqa: ANN201 - StudyConfig
    from fmgauge.core.config import load_config
    from fmgauge.weaklabels.study import StudyConfig

    file, over = STUDIES[name]
    cfg = load_config(StudyConfig, CONFIGS / file, over)
    keep = [s for s in cfg.students if not any(re.fullmatch(p, s.display_name()) for p in skip)]
    update = {"students": keep, "rule_eval": not sweep_only}
    if every_n:
        update["rule_max_gold"] = None
    return cfg.model_copy(update=update)


def run(args: argparse.Namespace) -> None:
    from fmgauge.core.runner import BackendConfig
    from fmgauge.weaklabels.study import calibrate

    out = json.loads((RESULTS / "rules.json").read_text()) if (RESULTS / "rules.json").exists() else {}
    for name in args.only or list(STUDIES):
        cfg = study_config(name, args.skip, args.sweep_only, args.every_n)
        t0 = time.perf_counter()
        res = calibrate(cfg, Path(args.out) / name, backend=BackendConfig(workers=args.workers), progress=True,
                        report=not args.sweep_only)
        if args.sweep_only:
            print(f"[{name}] sweep done in {time.perf_counter() - t0:.0f} s", flush=True)
            continue
        file, over = STUDIES[name]
        if args.every_n:
            over = {k: v for k, v in over.items() if k != "rule_max_gold"}
        before = out.get(name, {})
        out[name] = {
            "config": f"configs/weaklabels/{file}", "overrides": {**over, "n_gold": cfg.n_gold},
            "students": [s.display_name() for s in cfg.students], "skipped": args.skip,
            "labelers": list(res.summary["labelers"]), "dataset": res.summary["dataset"]["name"],
            "seeds": res.summary["meta"]["seeds"], "run": res.summary["meta"]["run"],
            "seconds": round(time.perf_counter() - t0, 1), "rule_eval": slim(res.summary["rule_eval"]),
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores, "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        }
        rp = Path(args.out) / name / "rules.parquet"
        if rp.exists():
            import pandas as pd

            rr = pd.read_parquet(rp).drop_duplicates(["labeler", "features", "n_gold", "seed"])
            if "cpu_seconds" in rr:
                out[name]["rule_cpu"] = {"trials": int(len(rr)), "cpu_seconds": float(rr.cpu_seconds.sum()),
                                         "by_n_gold": {str(int(m)): float(g.cpu_seconds.mean())
                                                       for m, g in rr.groupby("n_gold")}}
        if res.summary["meta"]["run"]["ran"] == 0 and "seconds" in before:  # re-read: keep what computing it cost
            out[name].update({k: before[k] for k in ("seconds", "date", "computed_by") if k in before})
        if args.computed_by:  # the trials were computed elsewhere (the demo: `make demo`'s commands, §7)
            src = Path(args.computed_by)
            meta = json.loads((src / "summary.json").read_text())["meta"]
            out[name]["computed_by"] = {"command": args.computed_by_command, "dir": str(src.relative_to(ROOT))
                                        if src.is_relative_to(ROOT) else str(src), "created": meta["created"],
                                        "seconds": meta["seconds"], "run": meta["run"]}
        now = json.loads((RESULTS / "rules.json").read_text()) if (RESULTS / "rules.json").exists() else {}
        now[name] = out[name]  # other bench processes may have written other studies meanwhile
        (RESULTS / "rules.json").write_text(json.dumps(now, indent=1))
        print(f"[{name}] done in {out[name]['seconds']:.0f} s", flush=True)


def slim(ev: dict) -> dict:
    """A study's rule evaluation as rules.json keeps it: the scores pooled over labelers and every n_gold (what the
    per-study tables render); the rows per labeler and per n_gold stay in the run directory's summary.json."""
    return {**ev, "scores": [r for r in ev.get("scores", []) if r["scope"] == "all" and r["n_gold"] == "all"]
            } if ev else ev


def suite(out_dir: Path, names: list[str], out_file: Path = RESULTS / "rules_suite.json") -> dict:
    """Pool every study's per-cell table (run_dir/rule_cells.parquet) into one suite evaluation: clusters are
    (study, seed); per policy the regret over every n_gold with its interval and the paired difference to the
    better trivial policy of the suite; per study the excess over that study's better trivial policy; the share of
    cells with |ΔAUC| > 0.02 where the policy picked the better side. Written to benchmarks/results/rules_suite.json."""
    import numpy as np
    import pandas as pd

    from fmgauge.weaklabels.rule_eval import (
        DEFAULT_POLICY,
        TRIVIAL,
        WIDE,
        cluster_weights,
        compare,
        evaluate,
        score_cells,
        score_policies,
    )
    from fmgauge.weaklabels.study import load_result

    data = json.loads((RESULTS / "rules.json").read_text()) if (RESULTS / "rules.json").exists() else {}
    frames, rule_rows, truth_j = [], {}, {}
    for n in names:  # re-score every study from its stored trials with the current evaluation
        if not (out_dir / n / "rules.parquet").exists():
            continue
        res = load_result(out_dir / n)
        feats = {s: v["features"] for s, v in res.summary["students"].items()}
        ev, cells = evaluate(res.results, pd.read_parquet(out_dir / n / "rules.parquet"), feats,
                             res.summary["meta"]["seeds"])
        if n in data:
            data[n]["rule_eval"] = slim(ev)
        frames.append(cells.assign(study=n))
        rule_rows[n] = pd.read_parquet(out_dir / n / "rules.parquet")
        truth_j[n] = {lab: 2 * m["metrics"]["balanced_accuracy"]["value"] - 1
                      for lab, m in res.summary["labelers"].items() if len(res.summary["dataset"]["classes"]) == 2}
    (RESULTS / "rules.json").write_text(json.dumps(data, indent=1))
    cells = pd.concat(frames, ignore_index=True).drop(columns=["target", "hit", "hit_committed", "wide", "abstain",
                                                               "regret", "delta"])
    cells = score_cells(cells.assign(cluster=lambda d: d.study + ":" + d.seed.astype(str)))
    scores = score_policies(cells, scope_col="study")
    overall = {r["policy"]: r for r in scores if r["scope"] == "all" and r["n_gold"] == "all"}
    per_study = {}
    for st, g in cells.groupby("study", sort=False):
        reg = g.groupby("policy").regret.mean()
        best = min(TRIVIAL, key=lambda p: reg[p])
        by_m = g.groupby(["n_gold", "policy"]).regret.mean().unstack()
        per_study[st] = {"by_m_excess": {p: {str(int(m)): float(by_m.loc[m, p] - by_m.loc[m, best])
                                             for m in by_m.index} for p in by_m.columns},
                         "best_trivial": best, "trivial_regret": float(reg[best]),
                         "regret": {p: float(v) for p, v in reg.items()},
                         "excess": {p: float(reg[p] - reg[best]) for p in reg.index},
                         "cells": int((g.policy == best).sum())}
        order = ["labeler", "student", "n_gold", "seed"]
        sid = np.unique(g.cluster)
        per_study[st]["excess_ci"] = {p: compare(g[g.policy == p].sort_values(order),
                                                 g[g.policy == best].sort_values(order), cluster_weights(len(sid)), sid)
                                      for p in (DEFAULT_POLICY,) if p in reg.index}
        if st in rule_rows:
            per_study[st]["why"] = why(g, rule_rows[st], best, DEFAULT_POLICY, truth_j.get(st, {}))
    policies = [p for p in overall if p not in TRIVIAL]
    goals = {}
    ids = np.unique(cells.cluster)
    w = cluster_weights(len(ids))
    order = ["study", "labeler", "student", "n_gold", "seed"]
    best_all = min(TRIVIAL, key=lambda p: overall[p]["regret"]["value"])
    for p in policies:
        a = cells[cells.policy == p].sort_values(order)
        b = cells[cells.policy == best_all].sort_values(order)
        vs = compare(a, b, w, ids)
        worst = max(per_study.items(), key=lambda kv: kv[1]["excess"][p])
        pick = overall[p]["pick_rate_wide"]["value"]
        goals[p] = {"vs_best_trivial": {"baseline": best_all, **vs},
                    "worst_study": worst[0], "worst_excess": worst[1]["excess"][p], "pick_rate_wide": pick,
                    "meets": {"beats_trivial": bool(vs["hi"] < 0), "no_study_worse_by_0.01":
                              bool(worst[1]["excess"][p] <= 0.01), "picks_80pct": bool(pick >= 0.8)}}
    by_m = {}
    for r in scores:
        if r["scope"] == "all" and r["n_gold"] != "all":
            by_m.setdefault(str(r["n_gold"]), {})[r["policy"]] = {"regret": r["regret"]["value"],
                                                                  "pick": r["pick_rate_wide"]["value"],
                                                                  "cells": r["cells"]}
    out = {"studies": list(per_study), "default_policy": DEFAULT_POLICY, "wide": WIDE, "cells": int(
        (cells.policy == best_all).sum()), "clusters": int(len(ids)), "overall": overall, "goals": goals,
        "per_study": per_study, "by_m": by_m, "best_trivial": best_all,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    out_file.write_text(json.dumps(out, indent=1, default=float))
    return out


def pool_and_hold_out(out_dir: Path, names: list[str]) -> None:
    """The suite pooling over ``names`` less the held-out studies, each group of held-out studies pooled on its own
    (HELD_OUT: rules_heldout.json; EARLIER_HELD_OUT: rules_heldout_earlier.json), and every study pooled
    (rules_all.json)."""
    suite(out_dir, [n for n in names if n not in HELD_OUT + EARLIER_HELD_OUT])
    for group, file in ((HELD_OUT, "rules_heldout.json"), (EARLIER_HELD_OUT, "rules_heldout_earlier.json"),
                        (tuple(names), "rules_all.json")):
        held = [n for n in names if n in group and (out_dir / n / "rules.parquet").exists()]
        if held:
            suite(out_dir, held, RESULTS / file)


def why(cells, rules, best: str, policy: str, truth_j: dict[str, float]) -> list[dict]:  # noqa: ANN001 - frames
    """Where ``policy`` loses to the study's better trivial policy ``best``: its excess regret per (n_gold,
    mechanism), as a share of the study's mean excess (sums over cells / the study's cells). Mechanisms, from the
    cv-delta trial of the same (labeler, n_gold, seed), the labeler's AUC on the gold items and its estimated
    Youden's J (interval) against its true J on the pool: the J guard choosing gold-only, cv-delta committing to a
    side, or an uncertain cv-delta acted on by the fallback (the labeler ranking the gold items acceptably or not)."""
    from fmgauge.weaklabels.rule_eval import as_decided, labeler_ranks_of

    r = as_decided(rules)
    key = ["labeler", "n_gold", "seed"]
    cv = r[r.rule == "cv-delta"].drop_duplicates(key)[[*key, "verdict", "gold_auc", "lab_youden", "lab_youden_hi"]]
    cv = cv.merge(labeler_ranks_of(r, key), on=key, how="left")
    a = cells[cells.policy == policy][["labeler", "student", "n_gold", "seed", "choice", "regret"]]
    b = cells[cells.policy == best][["labeler", "student", "n_gold", "seed", "regret"]]
    d = a.merge(b, on=["labeler", "student", "n_gold", "seed"], suffixes=("", "_best")).merge(cv, on=key, how="left")
    n = len(d)
    d["excess"] = d.regret - d.regret_best
    d = d[d.excess != 0]
    if d.empty:
        return []

    from fmgauge.weaklabels.rule_eval import AUTO_FALLBACK
    from fmgauge.weaklabels.verdicts import AGREE_BAR, LEAN_FROM

    auto = policy.endswith(AUTO_FALLBACK)

    def mechanism(row) -> str:  # noqa: ANN001 - a row
        if row.verdict != "uncertain":
            return f"cv-delta committed to {'the weak labels' if row.verdict == 'use-weak-labels' else 'gold-only'}"
        if row.choice == "gold-only" and row.lab_youden_hi == row.lab_youden_hi and row.lab_youden_hi <= 0:
            return "the J guard chose gold-only"
        side = "the weak labels" if row.choice == "use-weak-labels" else "gold-only"
        if auto and row.min_class >= LEAN_FROM:
            return f"uncertain, {LEAN_FROM}+ items of the rarer class: the paired estimate's lean → {side}"
        if auto and row.agreement == row.agreement:  # stored from RULES_VERSION 12
            if row.choice == "gold-only":
                return f"uncertain, the pool's agreement ({row.agreement:.2f}) under its bar → gold-only"
            if row.agreement > AGREE_BAR:
                return f"uncertain, the pool's agreement ({row.agreement:.2f}) over its bar → the weak labels"
        if row.choice == "gold-only":
            return f"uncertain, the labeler's AUC on the gold items ({row.lab_auc:.2f}) under the bar → gold-only"
        return (f"uncertain, the labeler's AUC on the gold items ({row.lab_auc:.2f}) over the bar → the weak labels"
                if auto or row.ranks else "uncertain, acted on as weak")

    d["mechanism"] = [mechanism(row) for row in d.itertuples()]
    d["mech_key"] = d.mechanism.str.replace(r" \(\d\.\d\d\)", "", regex=True)
    out = []
    for (m, _), g in d.groupby(["n_gold", "mech_key"]):
        guard = g[g.mechanism == "the J guard chose gold-only"]
        mech = g.mechanism.iloc[0] if g.mechanism.nunique() == 1 else g.mech_key.iloc[0].replace(
            "gold items", f"gold items ({g.lab_auc.min():.2f}–{g.lab_auc.max():.2f})").replace(
            "agreement", f"agreement ({g.agreement.min():.2f}–{g.agreement.max():.2f})")
        out.append({"n_gold": int(m), "mechanism": mech, "share": float(g.excess.sum() / n), "cells": int(len(g)),
                    "seeds": sorted({int(s) for s in g.seed}), "labelers": sorted(set(g.labeler)),
                    "j_est": sorted({round(float(v), 2) for v in guard.lab_youden}) if len(guard) else [],
                    "j_true": {lab: round(truth_j[lab], 2) for lab in set(g.labeler) if lab in truth_j}})
    return sorted(out, key=lambda r: -r["share"])


def _ci(d: dict | None, fmt: str) -> str:
    if not d or d.get("value") is None or d["value"] != d["value"]:
        return "–"
    if d.get("lo") is None or d["lo"] != d["lo"]:
        return fmt.format(d["value"])
    return f"{fmt.format(d['value'])} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]"


def _vs(v: dict) -> str:
    if v.get("identical"):
        return f"{v['value']:+.4f} (same choices on all {v['cells']} cells; bound ±{v['hi']:.4f}, MDE undefined)"
    return f"{v['value']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}] (MDE {v['mde']:.4f})"


def _policy_head(p: str, r: dict, g: dict | None, default: str) -> str:
    """The first cells of a policy's row in the pooled tables: name, regret, − better trivial, worst study, better
    side where the trivial policies differ."""
    return (f"| {p}{' (default)' if p == default else ''} | {_ci(r['regret'], '{:.4f}')} | "
            + ("–" if not g else _vs(g["vs_best_trivial"])) + " | "
            + ("–" if not g else f"{g['worst_study']}: {g['worst_excess']:+.4f}")
            + f" | {_ci(r['pick_rate_wide'], '{:.2f}')} ({r['wide_cells']} cells)")


def _by_skip(data: dict) -> dict[tuple[str, ...], list[str]]:
    """Study names grouped by the students their run skipped (``--skip``), in the order the studies ran."""
    out: dict[tuple[str, ...], list[str]] = {}
    for name, d in data.items():
        out.setdefault(tuple(d.get("skipped") or ()), []).append(name)
    return out


def _stored(name: str) -> dict | None:
    """benchmarks/results/<name> as written by a benchmark, None when it has not run."""
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def render() -> str:
    data = json.loads((RESULTS / "rules.json").read_text())
    su = _stored("rules_suite.json")
    missing = [n for n in STUDIES if n not in data]
    lines = ["# 8. The decision rules, evaluated over a suite that includes labelers that hurt "
             "(`benchmarks/bench_rules.py`)", "",
             "Commands, one per set of skipped students: " + "; ".join(
                 "`OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rules.py --only "
                 + ",".join(names) + (f" --skip {','.join(skip)}" if skip else "") + " --workers 2`"
                 for skip, names in _by_skip(data).items()) + " (resumable; `--sweep-only` first runs the sweeps alone, "
             "`--render-only` re-renders). Every study runs its config at **every n_gold of its grid**, "
             "and `decide` is operated on every seed's own gold set at every n_gold (nothing from the test set). "
             "Regret = AUC lost against the per-cell best of gold-only and gold+weak (cells = labeler × student × "
             "n_gold × seed); a rule's uncertain verdict acts as its lean, '(uncertain→weak)' as the weak labels, "
             "'(uncertain→labeler)' as the weak labels where the labeler's AUC on the gold items is ≥ 0.7 or above "
             "the gold-only estimate and as gold only elsewhere, '(uncertain→auto)' as the lean where the gold set "
             "holds 20 or more items of its rarer class and below that as the weak labels where they agree with a "
             "model trained on the gold items across the pool (agreement > 0.52) or the labeler's AUC on the gold "
             "items is more than 0.1 above the gold-only estimate (decide's default; RULES_VERSION 12, 2026-12-07: "
             "until then the lean from 5 items and the labeler's AUC ≥ 0.55 or above gold-only below that). The "
             "paired rules commit only from 3 gold items of the rarer class (RULES_VERSION 12). "
             "Committed verdicts are scored against each cell's own realised sign; decisive cells are those whose "
             "seed-mean ΔAUC has a 95% t-interval excluding 0. Intervals: cluster bootstrap over (study, seed). "
             "When two policies never choose differently the bootstrap has nothing to resample; the table then "
             "gives the rule-of-three bound ±(3/C)·max|ΔAUC| (C clusters) and calls the MDE undefined.", "",
             "What this round left out, for machine time on a heavily shared 2-core machine (the table below lists "
             "each study's students and overrides): the TF-IDF student of the text studies (`--skip "
             "tfidf-sk-logreg`; its rule trials at large n_gold cost the most)"
             + (", the demo's rule trials above n_gold = 500 (`rule_max_gold: 500`; its sweep still runs the whole "
                "grid; `--every-n` lifts it)" if data.get("demo", {}).get("overrides", {}).get("rule_max_gold")
                else "")
             + (f", and the studies {', '.join(f'`{n}`' for n in missing)}. `--only` with their names runs them; "
                "the goal below is measured on the studies listed only (the held-out ones apart)." if missing else
                ". Every study of the suite ran."), ""]
    lines += ["| study | config | labelers | students | grid | seeds | sweep + rule trials | run |",
              "|---|---|---|---|---|---|---|---|"]
    for name, d in data.items():
        lines.append(f"| {name} | `{d['config']}` {d['overrides'] or ''} | {', '.join(d['labelers'])} | "
                     f"{', '.join(d['students'])} | {d['overrides'].get('n_gold', '')} | {len(d['seeds'])} | "
                     f"{d['run']['ran']} run, {d['run']['skipped']} reused, {d['seconds']:.0f} s | {d['date']} |")
    for name, d in data.items():
        if d.get("computed_by"):
            c = d["computed_by"]
            lines.append(f"\n{name}: its {c['run']['ran']} sweep trials were computed by `{c['command']}` (finished "
                         f"{c['created']}, {c['seconds']:.0f} s for this study; docs/benchmarks.md §7) into "
                         f"`{c['dir']}` and re-read here (`--only {name} --every-n --computed-by {c['dir']}`); the "
                         f"row above counts the rule trials re-run here under the current RULES_VERSION as run. "
                         "The other studies' sweep trials keep the dates of the runs that computed them (students "
                         "and the sk-logreg proxy unchanged since); their rule trials re-ran on the date above.")
    if su:
        from fmgauge.weaklabels.rule_eval import SUFFIX, TRIVIAL

        pool = ("delta-worth", "cv-delta", "weak-student", "projection")
        pol = (*pool, "auc", "accuracy", *(r + SUFFIX[fb] for fb in ("weak", "labeler", "auto") for r in pool),
               *TRIVIAL)
        lines += ["", f"## The goal, pooled over the suite and every n_gold ({su['cells']} cells per policy, "
                      f"{su['clusters']} (study, seed) clusters; computed {su['date']})", "",
                  f"Default policy: **{su['default_policy']}**. Better trivial policy over the suite: "
                  f"{su['best_trivial']}.", "",
                  "| policy | regret [95% CI] | − better trivial [95% CI] | worst study: excess over its better "
                  "trivial | better side where the trivial policies differ by > 0.02 | committed verdicts right | "
                  "decisive hit rate | abstains | goals met |", "|---|---|---|---|---|---|---|---|---|"]
        for p in pol:
            r = su["overall"].get(p)
            if r is None:
                continue
            g = su["goals"].get(p)
            met = "–" if not g else ", ".join(k for k, v in g["meets"].items() if v) or "none"
            lines.append(_policy_head(p, r, g, su["default_policy"])
                         + f" | {_ci(r['hit_rate_committed'], '{:.2f}')} | {_ci(r['hit_rate'], '{:.2f}')} | "
                         f"{_ci(r['abstain'], '{:.0%}')} | {met} |")
        dp = su["default_policy"]
        g = su["goals"].get(dp)
        if g:
            vs, m = g["vs_best_trivial"], g["meets"]
            lines += ["", "### The default against the three goals", ""]
            lines.append(f"1. Pooled regret below the better trivial policy ({su['best_trivial']}) with a paired "
                         f"interval excluding 0: {'**met**' if m['beats_trivial'] else '**not met**'} — "
                         f"{_vs(vs)}.")
            bad = [(st, v["excess"][dp]) for st, v in su["per_study"].items() if v["excess"].get(dp, 0) > 0.01]
            def where(st: str) -> str:
                ex = su["per_study"][st]["by_m_excess"][dp]
                top = sorted(ex, key=lambda k: -ex[k])[:2]
                return ", ".join(f"n_gold {k}: {ex[k]:+.4f}" for k in top)

            lines.append("2. On no study worse than its better trivial policy by more than 0.01 AUC: "
                         + ("**met**" if m["no_study_worse_by_0.01"] else "**not met** on " + "; ".join(
                             f"{st} (+{ex:.4f}; most at {where(st)})" for st, ex in bad)) + f"; worst: "
                         f"{g['worst_study']} ({g['worst_excess']:+.4f}). Why: at the smallest budgets a gold set holds "
                         "only a few items of the rarer class (2 by construction at n_gold = 10 on the 10%-positive "
                         "tasks), so the gold-only side is estimated from fits that see one or two of them and the "
                         "paired ΔAUC is mostly noise; an uncertain verdict then acts on the pool's agreement with a "
                         "model trained on those few items (or on how the labeler's scores rank them), which is only "
                         "as informative as that model (the limit below measures how far any such fallback can go). "
                         "Measured, per study (the excess split by "
                         "n_gold and by what made the choice; shares of the study's excess over all its cells; the "
                         "cells are labeler × student × seed; J = Youden's J, estimated by decide vs true on the "
                         "pool):")
            for st, ex in bad:
                rows = [r for r in su["per_study"][st].get("why", []) if r["share"] > 0.0005]
                if not rows:
                    continue
                lines.append(f"   - **{st}** (+{ex:.4f}): " + "; ".join(
                    f"n_gold {r['n_gold']}, {r['mechanism']}: {r['share']:+.4f} ({r['cells']} cells; "
                    f"{', '.join(r['labelers'])}; seeds {', '.join(map(str, r['seeds']))}"
                    + (f"; J estimated {', '.join(f'{v:+.2f}' for v in r['j_est'])}, true "
                       f"{', '.join(f'{v:+.2f}' for v in r['j_true'].values())}" if r["j_est"] else "") + ")"
                    for r in rows) + ".")
            base = dp.split(" (")[0]
            others = [p for p in (base, f"{base} (uncertain→weak)", f"{base} (uncertain→labeler)",
                                  f"{base} (uncertain→auto)") if p != dp and p in su["goals"]]
            if others:
                lines.append("   - The other fallbacks of the same rule: " + "; ".join(
                    f"{p}: worst study {su['goals'][p]['worst_study']} ({su['goals'][p]['worst_excess']:+.4f}), "
                    f"pooled regret {su['overall'][p]['regret']['value']:.4f}" for p in others) + ".")
            lines.append(f"3. Where the trivial policies differ by more than {su['wide']} AUC, the better side in ≥ 80% "
                         f"of cells: {'**met**' if m['picks_80pct'] else '**not met**'} — "
                         f"{_ci(su['overall'][dp]['pick_rate_wide'], '{:.2f}')} of "
                         f"{su['overall'][dp]['wide_cells']} cells."
                         + ("" if m["picks_80pct"] else " Where it misses, and why: \"Goal 3: where the better side "
                            "is missed\" below."))
        lines += ["", "### Per study: the default against the better trivial policy (every n_gold)", "",
                  "| study | cells | always-weak | always-gold | default | excess over the better trivial [95% CI, "
                  "seeds resampled] | ≤ 0.01? |", "|---|---|---|---|---|---|---|"]
        for st, v in su["per_study"].items():
            ex = v["excess"].get(dp, float("nan"))
            ci = v.get("excess_ci", {}).get(dp)
            lines.append(f"| {st} | {v['cells']} | {v['regret']['always-weak']:.4f} | "
                         f"{v['regret']['always-gold']:.4f} | {v['regret'].get(dp, float('nan')):.4f} | "
                         + (f"{ex:+.4f}" if not ci else _vs(ci)) + f" | {'yes' if ex <= 0.01 else 'no'} |")
        ms = sorted(su["by_m"], key=int)
        lines += ["", "### By gold budget: regret pooled over the suite", "",
                  "| n_gold | cells | always-weak | always-gold | " + dp + " | better side (|ΔAUC| > 0.02) |",
                  "|---|---|---|---|---|---|"]
        for m in ms:
            b = su["by_m"][m]
            if dp not in b:
                continue
            pick = b[dp]["pick"]
            lines.append(f"| {m} | {b[dp]['cells']} | {b['always-weak']['regret']:.4f} | "
                         f"{b['always-gold']['regret']:.4f} | {b[dp]['regret']:.4f} | "
                         f"{'–' if pick != pick else f'{pick:.2f}'} |")
        lines += version_lines()
    lines += held_out_section(su)
    lines += held_out_section(su, "rules_heldout_earlier.json", "Held out for RULES_VERSION 11", EARLIER_NOTE)
    lines += held_out_section(su, "rules_all.json", "Every study pooled", ALL_NOTE)
    lines += limits_section()
    lines += agreement_section()
    cost = {n: d["rule_cpu"] for n, d in data.items() if d.get("rule_cpu")}
    if cost:
        lines += ["", "### What the rule evaluation costs", "",
                  "CPU seconds of the rule trials (`decide` at every n_gold × seed × labeler × proxy representation; "
                  "a gold set's leave-pair-out fits are shared by its labelers through the cache), from each trial's "
                  "own process time:", "",
                  "| study | rule trials | CPU s in all | mean CPU s per trial by n_gold |", "|---|---|---|---|"]
        for n, c in cost.items():
            per = ", ".join(f"{m}: {v:.1f}" for m, v in c["by_n_gold"].items())
            lines.append(f"| {n} | {c['trials']} | {c['cpu_seconds']:.0f} | {per} |")
    lines += ["", "## Per study (every n_gold pooled)", ""]
    for name, d in data.items():
        ev = d["rule_eval"]
        if not ev:
            continue
        every = {r["policy"]: r for r in ev["scores"] if r["scope"] == "all" and r["n_gold"] == "all"}
        lines += [f"### {name}: {d['dataset']}", "",
                  "| policy | regret [95% CI] | − better trivial | committed right | decisive hit rate | abstains |",
                  "|---|---|---|---|---|---|"]
        for p, r in every.items():
            vs = r.get("vs_trivial")
            lines.append(f"| {p} | {_ci(r['regret'], '{:.4f}')} | {'–' if not vs else _vs(vs)} | "
                         f"{_ci(r['hit_rate_committed'], '{:.2f}')} | {_ci(r['hit_rate'], '{:.2f}')} | "
                         f"{_ci(r['abstain'], '{:.0%}')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _accuracies(name: str) -> str:
    """The accuracies of the simulated labelers a study's config sets (for the held-out section's text)."""
    import yaml

    cfg = yaml.safe_load((CONFIGS / STUDIES[name][0]).read_text())
    return ", ".join(sorted({f"{lab['accuracy']:g}" for lab in cfg["labelers"] if "accuracy" in lab})) or "–"


def version_lines() -> list[str]:
    """The default before and after the last RULES_VERSION change, paired on the same cells of every group of
    studies (benchmarks/bench_rule_versions.py → rule_versions.json)."""
    rv = _stored("rule_versions.json")
    if not rv:
        return []
    v0, v1 = rv["versions"]
    names = {"suite": "suite (chosen on)", "suite, new seeds": "suite, seeds added after the choice",
             "held out": "held out (written before the change)",
             "held out earlier": "held out earlier (seen in part)", "all": "all studies"}
    lines = ["", f"### What RULES_VERSION {v1} changes, paired on the same cells", "",
             f"RULES_VERSION {v1} (2026-12-07): below 20 gold items of the rarer class an uncertain verdict acts on the "
             "pool's agreement with a model trained on the gold items (> 0.52, `rules.pool_agreement`) or on the "
             "labeler's AUC on the gold items more than 0.1 above the gold-only estimate, instead of the lean from 5 "
             "items and the labeler's AUC ≥ 0.55 below that; the paired rules commit only from 3 items of the "
             f"rarer class. Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rule_versions.py --old-code "
             f"{rv['old_code']} " + " ".join(f"--old-out {d}" for d in rv["old_out"]) + f"` (computed {rv['date']}): "
             f"RULES_VERSION {v0}'s default as its own code scores its own rule trials (a worktree at "
             f"{rv.get('old_commit', 'the previous commit')}; the trials the previous round did not have — the new "
             "held-out studies, seeds 5–9 of the five one-vs-rest text studies — computed by that code on the same "
             "sweeps), against this tree's on "
             f"`{rv['out']}`; the change of the mean regret per cell with a 95% cluster-bootstrap interval over (study, "
             "seed).", "",
             "| studies | cells | regret before → after | change [95% CI] | better side (|ΔAUC| > 0.02) | worst study: "
             "excess before → after | cells acted on differently |", "|---|---|---|---|---|---|---|"]
    for g, r in rv["groups"].items():
        lines.append(f"| {names.get(g, g)}: {', '.join(r['studies'])} | {r['cells']} | {r['regret_old']:.4f} → "
                     f"{r['regret_new']:.4f} | {r['change']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}] | "
                     f"{r['pick_old']:.3f} → {r['pick_new']:.3f} | {r['worst_old'][0]} {r['worst_old'][1]:+.4f} → "
                     f"{r['worst_new'][0]} {r['worst_new'][1]:+.4f} | {r['changed']:.1%} |")
    g = rv["groups"]
    if "held out" in g and "suite" in g:
        h, su = g["held out"], g["suite"]
        lines += ["", f"On the suite the change was chosen on, the regret falls by {-su['change']:.4f}; on the studies "
                  f"written before it was chosen, it changes by {h['change']:+.4f} [{h['lo']:+.4f}, {h['hi']:+.4f}] "
                  + ("— no detectable change out of sample" if h["lo"] < 0 < h["hi"] else
                     ("— worse out of sample" if h["lo"] > 0 else "— better out of sample"))
                  + f", while the better side is picked in {h['pick_old']:.3f} → {h['pick_new']:.3f} of their wide cells"
                  + (f"; on the suite's seeds added after the choice (new gold sets, the same labelers) it changes by "
                     f"{g['suite, new seeds']['change']:+.4f} [{g['suite, new seeds']['lo']:+.4f}, "
                     f"{g['suite, new seeds']['hi']:+.4f}]" if "suite, new seeds" in g else "") + "."]
    return lines


ALL_NOTE = ("The suite, the studies held out for RULES_VERSION 12 and those held out for RULES_VERSION 11, pooled "
            "(clusters: (study, seed)): the goals over every labeler of the suite in its widest sense, the studies the "
            "default was chosen on included.")
EARLIER_NOTE = ("These studies were held out for RULES_VERSION 11 (stop 36: written or picked before any of their "
                "trials ran, scored after the default was chosen). RULES_VERSION 12's fallback (the pool's agreement, "
                "the lean from 20 rarer-class items) was chosen on the suite above without them; its commit bar "
                "(3 rarer-class items) was motivated by their RULES_VERSION 11 verdicts as well as the suite's, so "
                "they are scored here apart from the studies held out for RULES_VERSION 12 (above). "
                "The goals, scored on these studies pooled (clusters: (study, seed)):")


def held_out_section(su: dict | None, file: str = "rules_heldout.json", title: str = "Held out",
                     note: str | None = None) -> list[str]:
    """A group of held-out studies (``file``, by default rules_heldout.json): the suite's default and its
    alternatives scored where none of them was chosen, against that study's better trivial policy; ``note`` replaces
    the paragraph saying how the studies were held out."""
    ho = _stored(file)
    if not ho or not su:
        return []
    dp = su["default_policy"]
    base = dp.split(" (")[0]
    pol = [dp, *(p for p in (f"{base} (uncertain→labeler)", f"{base} (uncertain→weak)", base) if p != dp),
           "always-weak", "always-gold"]
    lines = ["", f"### {title}: {', '.join(ho['studies'])} ({ho['cells']} cells per policy, {ho['clusters']} "
             f"(study, seed) clusters; computed {ho['date']})", ""]
    lines += [note] if note else [
             "None of these studies was looked at before the default was chosen on the studies above: "
             + ", ".join(f"`{n}` (`{STUDIES[n][0].split('/')[-1]}`)" for n in ho["studies"])
             + " were written (their configs committed) or picked before any of their trials ran"
             + "".join(f"; `{n}` is a shipped image config (simulated labelers at accuracy {_accuracies(n)}; "
                       f"students without resnet-w16, cnn-w16 and cnn-w32{IMAGE_NOTE.get(n, '')})"
                       for n in ho["studies"] if not STUDIES[n][0].startswith("../"))
             + ". The suite above holds the studies held out in earlier rounds, since looked at: "
             + "; ".join(f"`{n}` ({why})" for n, why in SEEN.items()) + ". Nothing was changed after seeing these; "
             "from here on they count as seen, and a change of the default needs a new held-out study to judge it. "
             "The goals, scored on these studies pooled (clusters: (study, seed)):"]
    lines += ["",
             "| policy | regret [95% CI] | − better trivial [95% CI] | worst study: excess over its better trivial | "
             "better side where the trivial policies differ by > 0.02 | abstains |", "|---|---|---|---|---|---|"]
    for p in pol:
        r = ho["overall"].get(p)
        if r is None:
            continue
        lines.append(_policy_head(p, r, ho["goals"].get(p), dp) + f" | {_ci(r['abstain'], '{:.0%}')} |")
    g = ho["goals"].get(dp)
    if g:
        m = g["meets"]
        lines += ["", f"The default on these studies: pooled regret below {ho['best_trivial']} with an interval "
                  f"excluding 0: {'**met**' if m['beats_trivial'] else '**not met**'}; no study worse than its better "
                  f"trivial policy by more than 0.01: {'**met**' if m['no_study_worse_by_0.01'] else '**not met**'} "
                  f"(worst {g['worst_study']}, {g['worst_excess']:+.4f}); better side in ≥ 80% of the wide cells: "
                  f"{'**met**' if m['picks_80pct'] else '**not met**'} ({g['pick_rate_wide']:.2f}).", "",
                  "| study | cells | always-weak | always-gold | default | excess over the better trivial [95% CI, "
                  "seeds resampled] | excess by n_gold |", "|---|---|---|---|---|---|---|"]
        for st, v in ho["per_study"].items():
            ci = v.get("excess_ci", {}).get(dp)
            by_m = ", ".join(f"{k}: {x:+.4f}" for k, x in v["by_m_excess"].get(dp, {}).items())
            lines.append(f"| {st} | {v['cells']} | {v['regret']['always-weak']:.4f} | "
                         f"{v['regret']['always-gold']:.4f} | {v['regret'].get(dp, float('nan')):.4f} | "
                         + (f"{v['excess'].get(dp, float('nan')):+.4f}" if not ci else _vs(ci)) + f" | {by_m} |")
        for st, v in ho["per_study"].items():
            rows = [r for r in v.get("why", []) if r["share"] > 0.0005][:4]
            if v["excess"].get(dp, 0) > 0.01 and rows:
                lines.append(f"\nWhere the default loses on {st} (shares of the study's excess, as above): " + "; ".join(
                    f"n_gold {r['n_gold']}, {r['mechanism']}: {r['share']:+.4f} ({r['cells']} cells; "
                    f"{', '.join(r['labelers'])})" for r in rows) + ".")
    return lines


def limits_section() -> list[str]:
    """How far a fallback can go (benchmarks/results/rule_limits.json, written by bench_rule_limits.py)."""
    li = _stored("rule_limits.json")
    if not li:
        return []
    per = li["per_study"]
    from fmgauge.weaklabels.verdicts import AGREE_BAR, AUTO_MARGIN, LEAN_FROM

    hm = tuple(map(float, li["hindsight_member"]))  # "inf" for never
    member = ", ".join(f"{n} = {v:g}" for n, v in zip("tbka", hm, strict=False)) + (
        " — decide's default, `auto`, itself" if hm == (float("inf"), AUTO_MARGIN, LEAN_FROM, AGREE_BAR) else "")
    worst = lambda col: max(per, key=lambda st: per[st][col])  # noqa: E731
    lines = ["", "### How far a fallback can go (`benchmarks/bench_rule_limits.py`)", "",
             "Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rule_limits.py"
             + (f" --before {li['before_after']['before']}" if li.get("before_after") else "")
             + (f" --same-as {li['same_answers']['before']}" if li.get("same_answers") else "") + "` "
             f"(computed {li['date']}; it re-reads the stored trials of the {len(per)} studies above and below, "
             f"{li['cells']} cells, and trains no model but the proxy of the goal-3 ceiling below). The default acts on delta-worth's committed verdicts and hands the uncertain ones "
             f"({li['uncertain']:.0%} of the cells) to its fallback. Per study, the excess over the better trivial "
             "policy of: the default (auto) and the previous default (labeler); the **oracle fallback**, every uncertain "
             "verdict acted on as the cell's own better side; the **best member with hindsight** of the family "
             "\"weak labels iff the labeler's AUC on the gold items ≥ t or > the gold-only estimate + b or the pool's "
             "agreement > a, and the paired estimate's lean once the gold set holds ≥ k items of its rarer class\" "
             f"({li['members']} members, t 0.5–0.8, b 0–0.1, k 5–40 or never, a 0.5–0.55 or never), chosen on these "
             "very studies by its "
             f"worst study: {member}; the same family **leave one study out** (the member chosen on "
             "the other studies, scored on the one left out); and a **learned fallback**, gradient-boosted trees on "
             "the numbers a rule trial records (" + ", ".join(li["features"]) + "), fit on the other studies' "
             "uncertain cells, leave one study out. The last column is the default on the cells with n_gold ≥ 50.",
             "", "| study | default (auto) | labeler (previous default) | oracle fallback | family, hindsight | family, leave "
             "one out | learned, leave one out | default, n_gold ≥ 50 |", "|---|---|---|---|---|---|---|---|"]
    for st, v in per.items():
        tag = " (held out)" if st in li["held_out"] else ""
        lines.append(f"| {st}{tag} | {v['default']:+.4f} | {v['labeler']:+.4f} | {v['oracle']:+.4f} | "
                     f"{v['hindsight']:+.4f} | {v['loso']:+.4f} | {v['learned_loso']:+.4f} | "
                     f"{v['default_m50']:+.4f} |")
    cols = {c: max(per[st][c] for st in per) for c in ("default", "labeler", "oracle", "hindsight", "loso",
                                                       "learned_loso", "default_m50")}
    lines += ["", f"Worst study: default {cols['default']:+.4f} ({worst('default')}), labeler "
              f"{cols['labeler']:+.4f} ({worst('labeler')}), oracle fallback {cols['oracle']:+.4f}, family with "
              f"hindsight {cols['hindsight']:+.4f} ({worst('hindsight')}), leave one out {cols['loso']:+.4f} "
              f"({worst('loso')}), learned {cols['learned_loso']:+.4f} ({worst('learned_loso')}); the default at "
              f"n_gold ≥ 50 {cols['default_m50']:+.4f}. "
              + ("The oracle fallback meets goal 2 on every study: the committed verdicts and the J guard are not "
                 "what loses; all of the excess is in what the uncertain verdicts act on. "
                 if cols["oracle"] <= 0.01 else "")
              + ("No member of the family meets goal 2 on every study even when chosen with hindsight on these "
                 "studies, nor does the learned fallback out of sample: at 10–20 gold items with 2–5 of the rarer "
                 "class, the numbers decide has do not tell a labeler that helps from one that hurts well enough. "
                 if cols["hindsight"] > 0.01 and cols["learned_loso"] > 0.01 else "")
              + (f"The family meets goal 2 with hindsight, but not leave one study out: chosen without "
                 f"{worst('loso')}, its member misses it there by {cols['loso'] - 0.01:.4f} — which member is right "
                 "depends on having labelers like that study's in the suite, so a labeler of a new kind can still "
                 "cost more than 0.01 at 10–20 gold items. "
                 if cols["hindsight"] <= 0.01 < cols["loso"] else "")
              + ("From 50 gold items on, the default is within 0.01 of the better trivial policy on every study. "
                 if cols["default_m50"] <= 0.01 else "")
              + f"Goal 3 over these cells: the default picks the better side in {li['default_pick']:.2f} of the "
              f"cells where |ΔAUC| > 0.02; the family's best is {li['best_pick']:.2f} ("
              + ", ".join(f"{n} = {float(v):g}" for n, v in zip("tbka", li["best_pick_member"], strict=False))
              + f"), whose worst study is {li['best_pick_worst']:+.4f}"
              + (": the default meets goals 2 and 3 together over these studies" if li["default_pick"] >= 0.8
                 and cols["default"] <= 0.01 else ": a fallback of this kind buys goal 3 only by giving up goal 2")
              + f"; the oracle fallback would pick {li['oracle_pick']:.2f}."]
    return (lines + goal3_lines(li.get("goal3")) + strength_lines(li.get("proxy_strength"), li.get("before_after"))
            + [ln for _, sa in sorted((_stored("rule_changes.json") or {"0": li.get("same_answers")}).items(),
                                      key=lambda kv: int(kv[0])) for ln in same_lines(sa)])


def goal3_lines(g3: dict | None) -> list[str]:
    """Goal 3 split by what made the default's choice, with the lean's two ceilings (rule_limits.json 'goal3')."""
    if not g3:
        return []
    from fmgauge.weaklabels.verdicts import LEAN_FROM

    names = {"committed": "a committed verdict",
             "labeler": f"uncertain, < {LEAN_FROM} of the rarer class: the pool's agreement or the labeler's ranking",
             "lean": f"uncertain, ≥ {LEAN_FROM} of the rarer class: the paired estimate's lean"}
    lines = ["", "#### Goal 3: where the better side is missed", "",
             "The cells where the two trivial policies differ by more than 0.02 AUC, split by what made the default's "
             "choice (share of those cells, and the share of them where it chose the better side). **Ceiling, one "
             "choice per gold set**: the side most of the students that share the gold set and the proxy "
             "representation gain on — no rule that decides once per gold set and representation, as decide does, "
             "can do better. **The proxy's own ΔAUC** (lean cells only): the rules' proxy (sk-logreg) trained on the "
             "same gold set with and without the weak labels and scored on the test split; the sign of that "
             "realised gain is what a perfect estimate of the proxy's ΔAUC would choose.", "",
             "| studies | wide cells | default | ceiling, one choice per gold set | " + " | ".join(names.values())
             + " | lean: the proxy's own ΔAUC | lean agrees with the proxy's own ΔAUC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for side, label in (("suite", "suite (chosen on)"), ("held_out", "held out")):
        d = g3.get(side)
        if not d or not d["cells"]:
            continue
        br = d["branches"]
        lt = d.get("lean_truth", {})
        lines.append(f"| {label} | {d['cells']} | {d['rate']:.2f} | {d['ceiling']:.2f} | "
                     + " | ".join(f"{br[b]['share']:.0%}: {br[b]['rate']:.2f}" for b in names)
                     + (f" | {lt['truth_rate']:.2f} ({lt['cells']} cells) | {lt['lean_agrees']:.2f} |" if lt
                        else " | – | – |"))
    suite = g3["suite"]
    lt = suite.get("lean_truth")
    if lt:
        per = ", ".join(f"{s} {v:.2f}" for s, v in lt["by_student"].items())
        lean = suite["branches"]["lean"]
        lines += ["", f"On the suite the lean decides {lean['share']:.0%} of the wide cells and picks the better side "
                  f"in {lean['rate']:.2f} of them. Two things cost it: the estimate is noisy — it agrees with the "
                  f"proxy's own realised ΔAUC in {lt['lean_agrees']:.2f} of those cells — and the proxy does not "
                  f"stand for every student: a perfect estimate of the proxy's gain would pick the students' better "
                  f"side in only {lt['truth_rate']:.2f} of them (per student: {per}). "
                  + ("A logistic regression on pixels stands poorly for a CNN trained on the same images; on the text "
                     "studies, whose students read the same sentence embeddings as the proxy, it stands well. "
                     if max((v for k, v in lt["by_student"].items() if k.startswith("cnn")), default=1.0)
                     < min((v for k, v in lt["by_student"].items() if k.startswith("minilm")), default=0.0) else "")
                  + "That perfect estimate would lift the default to about "
                  f"{suite['rate'] + lean['share'] * (lt['truth_rate'] - lean['rate']):.2f} of the suite's wide "
                  f"cells (goal 3 asks 0.80); the rest of the way to the ceiling of {suite['ceiling']:.2f} would "
                  "need a proxy that behaves like the user's student (decide's `--proxy` offers `logreg` and `mlp` "
                  "for feature vectors; there is no CNN proxy)."]
    si = g3.get("stand_ins")
    if si:
        studs = sorted({s for d in si.values() for s in d} | set(si))
        lines += ["", "How well one student's realised gain stands for another's on the same gold sets (the lean's "
                  "wide cells of every study; rows: the student whose better side is scored, columns: the stand-in; "
                  "the share of cells with the same sign, – where the two share fewer than 30 such cells) — what a "
                  "proxy of the stand-in's kind would reach with a perfect estimate:", "",
                  "| student | " + " | ".join(studs) + " |", "|---|" + "---|" * len(studs)]
        for tgt in sorted(si):
            lines.append(f"| {tgt} | " + " | ".join(f"{si[tgt][s][0]:.2f}" if s in si[tgt] else "–"
                                                     for s in studs) + " |")
        cnns = [t for t in si if t.startswith("cnn")]
        best = {t: max(si[t], key=lambda s, t=t: si[t][s][0]) for t in cnns}
        if cnns and all(b.startswith("cnn") for b in best.values()):
            lines += ["", "For the CNN students the best stand-in is the other CNN (" + ", ".join(
                f"{b} for {t}: {si[t][b][0]:.2f}" for t, b in best.items()) + "), not a linear model: a proxy of the "
                "student's own kind, trained on the pool and the gold folds as cv-delta trains its proxy, is the "
                "lead for goal 3 on images — at the price of dozens of CNN fits per decision."]
    return lines


def strength_lines(ps: dict | None, ba: dict | None = None) -> list[str]:
    """The image proxy's L2 strength against the students' realised gains, and the default before and after the
    change (rule_limits.json 'proxy_strength', 'before_after')."""
    if not ps or "suite" not in ps:
        return []
    from fmgauge.weaklabels.proxy import IMAGE_PROXY

    chosen = str(float(IMAGE_PROXY["c"]))
    lines = ["", "#### The image proxy's strength", "",
             "The rules' proxy on images is an L2 logistic regression on standardised pixels; its strength C decides "
             "whether it stands for the image students at all. Over every cell of the image studies where the two "
             "trivial policies differ by more than 0.02 AUC, the proxy was trained on the cell's gold set with and "
             "without the weak labels at each C and scored on the test split (`bench_rule_limits.py`, cached with "
             "the goal-3 proxy truth): the share of cells where the sign of its own realised gain is the students' "
             "better side — a perfect estimate of the proxy's ΔAUC picks no better than this — split by the cells "
             "where the weak labels were better (sensitivity) and where gold only was (specificity), and per "
             f"student; the proxy's mean gold-only test AUC beside. decide's image proxy is C = {IMAGE_PROXY['c']:g}, "
             "the strength of the shipped image `logreg` student (students.LOGREG_C), chosen on the suite; the "
             "held-out image studies were scored after the choice.", ""]
    for side, label in (("suite", "suite (chosen on)"), ("held_out", "held out")):
        d = ps.get(side)
        if not d:
            continue
        cs = [k for k in d if k not in ("cells", "studies", "weak_better")]
        studs = sorted({s for k in cs for s in d[k]["by_student"]})
        lines += [f"{label}: {', '.join(d['studies'])}; {d['cells']} cells, the weak labels better in "
                  f"{d['weak_better']:.2f} of them.", "",
                  "| C | students' better side | sensitivity | specificity | " + " | ".join(studs)
                  + " | proxy gold-only AUC |", "|---|---|---|---|" + "---|" * len(studs) + "---|"]
        for k in cs:
            v = d[k]
            mark = " (decide)" if k == chosen else ""
            lines.append(f"| {float(k):g}{mark} | {v['rate']:.2f} | {v['sensitivity']:.2f} | {v['specificity']:.2f} | "
                         + " | ".join(f"{v['by_student'].get(s, float('nan')):.2f}" for s in studs)
                         + f" | {v['gold_auc']:.3f} |")
        lines.append("")
    if ba:
        lines += [f"decide's default on the same cells acting on the rule trials before the change (`{ba['before']}`, "
                  f"image proxy C = 1) and after it (`{ba['after']}`; text studies: the same proxy): the mean "
                  "change of the per-cell regret with a 95% cluster-bootstrap interval over (study, seed), and the "
                  "three goals' numbers before → after.", "",
                  "| studies | cells | regret before → after | change [95% CI] | better side where > 0.02 | worst "
                  "study: excess over its better trivial |", "|---|---|---|---|---|---|"]
        for side, label in (("suite", "suite (C chosen on)"), ("held_out", "held out")):
            d = ba.get(side)
            if not d:
                continue
            (s0, w0), (s1, w1) = d["worst"]["was"], d["worst"]["now"]
            lines.append(f"| {label} | {d['cells']} | {d['regret'][0]:.4f} → {d['regret'][1]:.4f} | "
                         f"{d['change']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] | {d['goal3'][0]:.2f} → "
                         f"{d['goal3'][1]:.2f} | {s0} {w0:+.4f} → {s1} {w1:+.4f} |")
        lines.append("")
    return lines


RULE_CHANGES = {  # RULES_VERSION -> (heading, what changed, whether it changed only how fits are solved)
    9: ("The same answers, faster: decide's fits in the span of their rows",
        "decide's convex fits now run in the coordinates of the span of the rows they train and score on (m "
        "dimensions instead of up to 2,352 pixels; the representer theorem makes the optimum the same) and, where the "
        "weights and the items are few (the fits on the gold items), with Newton-Cholesky instead of L-BFGS (which "
        "stops about 1e-3 short of the optimum in probability)", True),
    10: ("The same answers, faster: decide's fits preconditioned",
         "decide's convex fits, on the gold items and on the pool alike, are now solved by L-BFGS in preconditioned "
         "variables in the rows' principal coordinates (orthogonal columns, where a diagonal preconditioner makes the "
         "Hessian about the identity: `convex.logreg_fit`), instead of Newton-Cholesky on the gold items and "
         "scikit-learn's L-BFGS on the pool, which stopped short of the optimum (how far, per dataset: §12 \"How the "
         "proxy's fits are solved\")", True),
    11: ("What the leave-pair-out control variate changes",
         "On binary tasks, where a gold set has more (class-1, other) pairs than the leave-pair-out fits sampled "
         "(120 below 100 gold items), the gold-only AUC is now the approximate leave-pair-out AUC over every pair "
         "(one Newton step from the fit on all m items: `convex.leave_two_out_scores`) corrected by the sampled "
         "pairs' exact − approximate outcomes (`gold_auc.pair_auc`): the same expectation, a fraction of the "
         "pair-sampling noise (tests/test_weaklabels_decide.py measures both)", False),
}


def same_lines(sa: dict | None) -> list[str]:
    """The rule trials before and after a change of how the gold-only side is computed or solved (RULE_CHANGES;
    rule_limits.json 'same_answers')."""
    if not sa:
        return []
    version = sa.get("rules_version")
    heading, change, solver_only = RULE_CHANGES.get(version, ("What changed", "the rules' computation changed", False))
    lines = ["", f"#### {heading}", "",
             f"{change}; RULES_VERSION {version or '?'} re-ran every rule trial. Against the trials before the change "
             f"(`{sa['before']}` → `{sa['after']}`), per study: cells with the same default verdict and the same side "
             "acted on, the change of the gold-only estimate and of the paired ΔAUC estimate (largest; median), and "
             "the default's mean regret. decide's cost before and after: §12 \"decide's cost\".", "",
             "| study | cells | same verdict | same side acted on | Δ gold-only AUC: max; median | Δ paired ΔAUC: max; "
             "median | regret before → after |", "|---|---|---|---|---|---|---|"]
    for name, d in sa["studies"].items():
        label = "**all**" if name == "all" else name
        lines.append(f"| {label} | {d['cells']} | {d['same_verdict']:.3f} | {d['same_side']:.3f} | "
                     f"{d['gold_auc_max']:.4f}; {d['gold_auc_median']:.4f} | {d['gap_max']:.4f}; {d['gap_median']:.4f} | "
                     f"{d['regret'][0]:.4f} → {d['regret'][1]:.4f} |")
    a = sa["studies"]["all"]
    pairs = lambda d: (f" (one pair of gold items in {round(1 / d)} ranked the other way)"  # noqa: E731
                       if d >= 1e-3 and solver_only else "")
    lines += ["", f"Over all {a['cells']} cells the verdict is the same in {a['same_verdict']:.1%} of them and the side "
              f"acted on in {a['same_side']:.1%}. The largest change of a gold-only estimate is {a['gold_auc_max']:.4f}"
              f"{pairs(a['gold_auc_max'])}, of a paired ΔAUC estimate {a['gap_max']:.4f}{pairs(a['gap_max'])}; the "
              f"medians {a['gold_auc_median']:.4f} and {a['gap_median']:.4f}"
              + (": near-ties between two fits' scores that the earlier solver's stopping point had decided (§12 "
                 "\"How the proxy's fits are solved\": how far from the optimum each solver stops); the fits now sit "
                 "at the optimum (tests/test_weaklabels_decide.py checks them against a tightly solved fit)"
                 if solver_only else "")
              + f". The default's mean regret over the cells: {a['regret'][0]:.4f} → {a['regret'][1]:.4f}."]
    return lines + [""]


def agreement_section() -> list[str]:
    """The pool-agreement exploration (benchmarks/results/rule_agreement.json, from bench_rule_agreement.py)."""
    ag = _stored("rule_agreement.json")
    if not ag:
        return []
    va = ag["variants"]
    default = va["default (auto)"]
    top = min((v for k, v in va.items() if k != "default (auto)"), key=lambda v: (v["worst"], v["regret"]))
    top_name = next(k for k, v in va.items() if v is top)
    lines = ["", "### The exploration that led to RULES_VERSION 12: what the weak-labelled pool adds "
             "(`benchmarks/bench_rule_agreement.py`, on RULES_VERSION 11's trials)", "",
             f"Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rule_agreement.py` "
             f"(computed {ag['date']}; {ag['trials']} rule trials at n_gold ≤ {ag['max_gold']} of the suite studies, "
             "the held-out ones left unseen). **Agreement**: a logistic regression trained on the m gold items alone "
             "scores the rest of the pool, and the AUC of those scores against the labeler's weak labels is taken — "
             "0.5 for a labeler at chance whatever the gold model, below 0.5 for one that labels another concept, "
             "above 0.5 for an informative one as far as the gold model has learned anything; it reads the N pool "
             "items, not the m gold ones. (Its figures below are the exploration's, on `runs/bench/rules-r7` with "
             "RULES_VERSION 11's default; decide now computes agreement with its own proxy: \"What RULES_VERSION 12 "
             "changes\" above.) Mean agreement and mean realised ΔAUC at n_gold ≤ "
             f"{ag['max_gold']} per labeler:", "",
             "| study | labeler | agreement | learnability | ΔAUC |", "|---|---|---|---|---|"]
    for r in ag["by_labeler"]:
        lines.append(f"| {r['study']} | {r['labeler']} | {r['agree']:.3f} | {r.get('learn', float('nan')):.3f} | "
                     f"{r['delta']:+.3f} |")
    lines += ["", "Below 5 gold items of the rarer class, fallbacks that read it (the others as decide's default; "
              "in-sample, the variants picked by looking at the table above, so an upper bound on the gain):", "",
              "| fallback below 5 rarer-class items | worst study: excess | pooled regret | better side (|ΔAUC| > 0.02) "
              "|", "|---|---|---|---|"]
    for k, v in va.items():
        lines.append(f"| {k} | {v['worst_study']}: {v['worst']:+.4f} | {v['regret']:.4f} | {v['pick']:.3f} |")
    lines += ["", f"The best of them, \"{top_name}\", moves the worst study from {default['worst']:+.4f} to "
              f"{top['worst']:+.4f}, the pooled regret from {default['regret']:.4f} to {top['regret']:.4f} and the "
              f"better side from {default['pick']:.3f} to {top['pick']:.3f} — in-sample, and "
              + ("still short of goal 2. " if top["worst"] > 0.01 else "within goal 2. ")
              + "Agreement cannot see a random-noise labeler when the gold model has learned little (breastmnist's, "
              "at 10 gold items), and a chance labeler can rank 2 gold positives well. RULES_VERSION 12 adopted it, "
              "stored in every rule trial and computed with decide's own proxy; with it in the trials, the family "
              "of fallbacks was searched again on the suite, where reading the pool up to 20 rarer-class items "
              "(instead of the paired lean from 5) did best, and judged on studies written before that search "
              "(\"What RULES_VERSION 12 changes\" above)."]
    le = ag.get("learned")
    if le:
        lines += ["", "**Learnability** (the table's fourth column) — how well the pool's features predict the weak labels "
                  "themselves, no gold item read — sits at 0.5 for the chance labelers, but also near it for the "
                  "random-noise simulated labelers that help (their flips are independent of the features), and "
                  "near 1 for every zero-shot labeler, the mislabelling ones included (their labels are a function of "
                  "the very embeddings the students read). The learned fallback of the section above, refit on these "
                  "suite studies alone (so its figure differs from that section's) and scored leave one study out, "
                  "with and without the two pool signals:", "",
                  "| learned fallback's inputs | worst study: excess |", "|---|---|"]
        lines += [f"| {k} | {v['worst_study']}: {v['worst']:+.4f} |" for k, v in le.items()]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None, help=f"studies, from {list(STUDIES)}")
    ap.add_argument("--skip", type=lambda s: s.split(","), default=["resnet-w16", "cnn-w32"],
                    help="student display names (regexes) to leave out of the image studies")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "rules-r8"), help="run directories (resumable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--suite", type=lambda s: s.split(","), default=None,
                    help="recompute the suite pooling over these studies' run directories, then render")
    ap.add_argument("--sweep-only", action="store_true", help="run the sweeps without the rule trials")
    ap.add_argument("--every-n", action="store_true", help="drop the rule_max_gold cap of a study (demo)")
    ap.add_argument("--computed-by", default=None, help="run directory whose trials were copied into --out/<study> "
                    "(recorded with its summary's date, seconds and trial counts)")
    ap.add_argument("--computed-by-command", default="", help="the command that computed --computed-by")
    args = ap.parse_args()
    if args.suite:
        pool_and_hold_out(Path(args.out), args.suite)
    elif not args.render_only:
        run(args)
        if not args.sweep_only:
            pool_and_hold_out(Path(args.out), list(json.loads((RESULTS / "rules.json").read_text())))
    PART.write_text(render())
    print(PART)


if __name__ == "__main__":
    main()
