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
                              cols=[*KEY, "choice", "regret", "delta", "version"])
        subprocess.run([sys.executable, "-c", script], check=True)
        return pd.read_parquet(dest)


def worst_study(c: pd.DataFrame, regret: str) -> tuple[str, float]:
    """The study with the largest excess of ``regret`` over its better trivial policy (trivial regrets from ΔAUC)."""
    per = c.assign(r_w=np.maximum(0, -c.delta), r_g=np.maximum(0, c.delta)).groupby("study")[[regret, "r_w", "r_g"]].mean()
    ex = per[regret] - per[["r_w", "r_g"]].min(axis=1)
    return str(ex.idxmax()), float(ex.max())


def compare(m: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """Before → after on the aligned cells ``m`` (regret_old, regret_new, choice_old, choice_new, delta)."""
    d = (m.regret_new - m.regret_old).to_numpy()
    cluster = (m.study + ":" + m.seed.astype(str)).to_numpy()
    ids, idx = np.unique(cluster, return_inverse=True)
    sums, counts = np.bincount(idx, weights=d), np.bincount(idx).astype(float)
    w = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot)
    boots = (w @ sums) / (w @ counts)
    wide = (m.delta.abs() > 0.02).to_numpy()
    pick = {s: float(((m[f"choice_{s}"] == "use-weak-labels") == (m.delta > 0)).to_numpy()[wide].mean())
            for s in ("old", "new")}
    return {"cells": int(len(m)), "clusters": int(len(ids)), "regret_old": float(m.regret_old.mean()),
            "regret_new": float(m.regret_new.mean()), "change": float(d.mean()),
            "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975)),
            "pick_old": pick["old"], "pick_new": pick["new"], "wide": int(wide.sum()),
            "changed": float((m.choice_old != m.choice_new).mean()),
            "worst_old": worst_study(m, "regret_old"), "worst_new": worst_study(m, "regret_new")}


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
    old = default_cells(args.old_code, [(n, old_dirs[n]) for n in names])
    new = default_cells(ROOT, [(n, str(args.out)) for n in names])
    m = old.merge(new, on=KEY, suffixes=("_old", "_new"))
    if len(m) != len(new) or not np.allclose(m.delta_old, m.delta_new):
        raise SystemExit("the two sides' cells differ: the old and new trials must share their sweeps")
    m = m.rename(columns={"delta_new": "delta"})
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
