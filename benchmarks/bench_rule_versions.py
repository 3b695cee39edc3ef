"""decide's default before and after a RULES_VERSION change, paired on the same cells (docs/benchmarks.md §8).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rule_versions.py --old-code /work/wt/i23-v11 \
        --old-out /work/wt/i23-v11/runs/bench/rules-v11 --old-out runs/bench/rules-r7 [--out runs/bench/rules-r8]

``--old-code`` is a git worktree at the commit before the change (RULES_VERSION 11: 0b2012a); ``--old-out`` the run
directories whose rule trials that code computed (the first one holding a study is read: the suite and the earlier
held-out studies from the previous round's runs, the studies written since from a run of the old code's
bench_rules.py on the same sweeps); ``--out`` this tree's run directory. For RULES_VERSION 11 the studies written
since were run so: ``git worktree add /work/wt/i23-v11 0b2012a``, their three configs copied into its
benchmarks/configs and named in its bench_rules.STUDIES, their run directories of runs/bench/rules-r8 copied into
its runs/bench/rules-v11 (the sweeps; the rule trials re-run as RULES_VERSION 11), then its
``bench_rules.py --out runs/bench/rules-v11 --only heldout-digestive --skip tfidf-sk-logreg`` and ``--only
heldout-breast,heldout-retina --skip resnet-w16,cnn-w32,cnn-w16``; likewise the five one-vs-rest text studies at 10
seeds (``"seeds": 10`` in its STUDIES, ``--only demo-text,ovr-digestive,ovr-nervous,ovr-cardiovascular,ovr-general
--skip resnet-w16,cnn-w32,tfidf-sk-logreg``), so ``--old-out`` names rules-v11 first. Each side's per-cell choice of its default
is computed by its own ``rule_eval.evaluate`` (the old one in a subprocess on the old code), so each is scored as
that version of decide acts. Per group of cells (bench_rules: the suite; its seeds added after the choice,
NEW_SEEDS; HELD_OUT; EARLIER_HELD_OUT; all): mean
regret before → after with the paired change and its 95% cluster-bootstrap interval over (study, seed), the share
of cells where the two trivial policies differ by > 0.02 AUC on which each picked the better side, and each side's
worst study by its excess over that study's better trivial policy. Results: benchmarks/results/rule_versions.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "rule_versions.json"
KEY = ["study", "labeler", "student", "n_gold", "seed"]
CELLS = """
import sys
sys.path[:0] = [{src!r}]
import pandas as pd
from pathlib import Path
from fmgauge.weaklabels.decide import RULES_VERSION
from fmgauge.weaklabels.rule_eval import DEFAULT_POLICY, evaluate
from fmgauge.weaklabels.study import load_result
frames = []
for name, out in {studies!r}:
    res = load_result(Path(out) / name)
    feats = {{s: v["features"] for s, v in res.summary["students"].items()}}
    _, cells = evaluate(res.results, pd.read_parquet(Path(out) / name / "rules.parquet"), feats,
                        res.summary["meta"]["seeds"])
    frames.append(cells[cells.policy == DEFAULT_POLICY].assign(study=name, version=RULES_VERSION))
pd.concat(frames)[{cols!r}].to_parquet({dest!r})
"""


def default_cells(code: Path, studies: list[tuple[str, str]]) -> pd.DataFrame:
    """(n cells) the default's choice, regret and the realised ΔAUC per cell, as the tree at ``code`` scores the
    stored trials of each (study, run directory) in ``studies`` — in a subprocess, so each version's code is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = str(Path(tmp) / "cells.parquet")
        script = CELLS.format(src=str(code / "src"), studies=studies, dest=dest,
                              cols=[*KEY, "auc_g", "auc_gw", "choice", "regret", "delta", "version"])
        subprocess.run([sys.executable, "-c", script], check=True)
        return pd.read_parquet(dest)


def compare(m: pd.DataFrame) -> dict:
    """Before → after on the aligned cells ``m`` (auc_g, auc_gw, delta, choice_old, choice_new, regret_old,
    regret_new): the regret change by :func:`fmgauge.weaklabels.rule_eval.compare` (cluster bootstrap over (study,
    seed)), goal 3's share and each side's worst study by bench_rule_limits' ``pick_rate`` and ``excess``."""
    from bench_rule_limits import excess, pick_rate
    from fmgauge.weaklabels.rule_eval import cluster_weights
    from fmgauge.weaklabels.rule_eval import compare as paired

    m = m.assign(cluster=m.study + ":" + m.seed.astype(str))
    ids = np.unique(m.cluster)
    side = {s: m.assign(choice=m[f"choice_{s}"], regret=m[f"regret_{s}"]) for s in ("old", "new")}
    weak = {s: (side[s].choice == "use-weak-labels").to_numpy() for s in side}
    d = paired(side["new"], side["old"], cluster_weights(len(ids)), ids)
    worst = {s: excess(m, weak[s]) for s in side}
    return {"cells": int(len(m)), "clusters": int(len(ids)), "regret_old": float(m.regret_old.mean()),
            "regret_new": float(m.regret_new.mean()), "change": d["value"], "lo": d["lo"], "hi": d["hi"],
            "pick_old": pick_rate(m, weak["old"]), "pick_new": pick_rate(m, weak["new"]),
            "wide": int((m.delta.abs() > 0.02).sum()), "changed": float((m.choice_old != m.choice_new).mean()),
            **{f"worst_{s}": (str(worst[s].idxmax()), float(worst[s].max())) for s in side}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-code", type=Path, required=True, help="a git worktree at the commit before the change")
    ap.add_argument("--old-out", type=Path, action="append", required=True,
                    help="run directories of the old code's rule trials (the first holding a study is read)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "rules-r8", help="this tree's run directory")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_rules

    groups = {"suite": [n for n in bench_rules.STUDIES if n not in bench_rules.HELD_OUT + bench_rules.EARLIER_HELD_OUT],
              "held out": list(bench_rules.HELD_OUT), "held out earlier": list(bench_rules.EARLIER_HELD_OUT)}
    names = [n for g in groups.values() for n in g if (args.out / n / "rules.parquet").exists()]
    old_dirs = {}
    for n in names:
        found = [d for d in args.old_out if (d / n / "rules.parquet").exists()]
        if not found:
            raise SystemExit(f"--old-out: no directory holds the old rule trials of study {n!r}")
        old_dirs[n] = str(found[0])
    print(f"scoring {len(names)} studies' stored trials with the code at {args.old_code} ...", flush=True)
    old = default_cells(args.old_code, [(n, old_dirs[n]) for n in names])
    print(f"scoring them with this tree's code on {args.out} ...", flush=True)
    new = default_cells(ROOT, [(n, str(args.out)) for n in names])
    m = old.merge(new, on=KEY, suffixes=("_old", "_new"))
    if len(m) != len(new) or not np.allclose(m.delta_old, m.delta_new):
        raise SystemExit("the two sides' cells differ: the old and new trials must share their sweeps")
    m = m.rename(columns={"delta_new": "delta", "auc_g_new": "auc_g", "auc_gw_new": "auc_gw"})
    first_new = m.study.map(bench_rules.NEW_SEEDS)  # NaN: no seed of that study was added after the choice
    masks = {g: m.study.isin(ns).to_numpy() for g, ns in groups.items()}
    masks = {"suite": masks["suite"], "suite, new seeds": (first_new.notna() & (m.seed >= first_new)).to_numpy(),
             "held out": masks["held out"], "held out earlier": masks["held out earlier"],
             "all": np.ones(len(m), bool)}
    commit = subprocess.run(["git", "-C", str(args.old_code), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    shown = lambda p: str(p.absolute().relative_to(ROOT)) if p.absolute().is_relative_to(ROOT) else str(p)  # noqa: E731
    out = {"versions": [int(old.version.iloc[0]), int(new.version.iloc[0])], "old_code": str(args.old_code),
           "old_commit": commit, "old_out": [shown(d) for d in args.old_out], "out": shown(args.out),
           "groups": {g: compare(m[k]) | {"studies": sorted(set(m.study[k]), key=names.index)}
                      for g, k in masks.items() if k.any()},
           "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(out, indent=1))
    for g, r in out["groups"].items():
        print(f"{g}: regret {r['regret_old']:.4f} -> {r['regret_new']:.4f}, change {r['change']:+.4f} "
              f"[{r['lo']:+.4f}, {r['hi']:+.4f}], better side {r['pick_old']:.3f} -> {r['pick_new']:.3f}")


if __name__ == "__main__":
    main()
