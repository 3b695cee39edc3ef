"""An exploration for the next round of decide's fallback: does the weak-labelled pool tell a labeler that helps from
one that hurts where the gold items cannot? (docs/benchmarks.md §8, after "How far a fallback can go").

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rule_agreement.py [--out runs/bench/rules-r3]

The signal, **agreement**: a model trained on the m gold items alone (scikit-learn logistic regression, C = 1, on
standardised features: the representation the rule trial's proxy reads) scores the rest of the pool, and the AUC of
those scores against the labeler's weak labels on the same items is computed (macro one-vs-rest for K > 2). A
labeler at chance agrees at 0.5 whatever the gold model; one that mislabels along another concept agrees below 0.5;
an informative one above 0.5 as far as the gold model has learned something. It reads N pool items instead of the
m gold ones, so its noise is that of N — but it is only as strong as the gold model.

Computed for every rule trial at n_gold ≤ 50 (where the uncertain verdicts act on the labeler) of the **suite**
studies only: the held-out studies (bench_rules.HELD_OUT) are left alone, so they stay unseen for this signal and
can judge a rule built on it. Rows are cached in ``runs/bench/rule-agreement/agree.parquet``; results go to
``benchmarks/results/rule_agreement.json``. Scored, in-sample (a handful of variants chosen by looking, so what it
shows is an upper bound on what a rule using it would gain): below 5 gold items of the rarer class, "the weak labels
iff agreement > 0.5 + ε" and "iff the labeler's AUC on the gold items ≥ 0.6 or agreement > 0.5 + ε", against decide's
default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench" / "rule-agreement" / "agree.parquet"
RESULTS = ROOT / "benchmarks" / "results" / "rule_agreement.json"
KEY = ["study", "labeler", "features", "n_gold", "seed"]
MAX_GOLD = 50
EPS = (0.0, 0.02, 0.03, 0.05)


def rule_configs(run_dir: Path) -> list[dict]:
    """The newest stored rule-trial config per (labeler, features, n_gold, seed) of a study, n_gold ≤ MAX_GOLD."""
    with sqlite3.connect(run_dir / "trials.sqlite") as con:
        cfgs = [json.loads(c) for (c,) in con.execute("select config from trials where status = 'done'")]
    newest: dict[tuple, dict] = {}
    for c in cfgs:
        if c.get("kind") != "rule" or c["n_gold"] > MAX_GOLD:
            continue
        k = (c["labeler"], c["features"], c["n_gold"], c["seed"])
        if k not in newest or c.get("version", 0) > newest[k].get("version", 0):
            newest[k] = c
    return list(newest.values())


def agreement(cfg: dict, data: dict) -> float:
    """AUC of a gold-only model's pool scores against the weak labels, for one rule trial's gold set (NaN when the
    weak labels on the rest of the pool miss a class). ``data`` caches (dataset, pool, x) per (dataset, features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.sweep import _dataset, gold_order, labeler_arrays

    key = (cfg["dataset"], cfg["features"])
    if key not in data:
        ds = _dataset(cfg["dataset"])
        pool = ds.split(cfg["pool_split"])
        x, _ = represent(ds, cfg["features"], cfg["pool_split"], cfg["test_split"])
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x, dtype=float).reshape(len(pool.y), -1)
        data[key] = (ds, pool, x)
    ds, pool, x = data[key]
    _, labels = labeler_arrays(cfg["weak_key"])
    gold = gold_order(pool.y, int(cfg["seed"]), ds.n_classes)[: int(cfg["n_gold"])]
    rest = np.setdiff1d(np.arange(len(pool.y)), gold)
    scale = StandardScaler().fit(x[gold])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(scale.transform(x[gold]), pool.y[gold])
    scores, weak = model.predict_proba(scale.transform(x[rest])), labels[rest]
    if len(np.unique(weak)) < ds.n_classes:
        return float("nan")
    if ds.n_classes == 2:
        return float(roc_auc_score(weak, scores[:, 1]))
    return float(roc_auc_score(weak, scores, multi_class="ovr", labels=list(range(ds.n_classes))))


def compute(out: Path, names: list[str]) -> pd.DataFrame:
    """Agreement for every rule trial of ``names`` at n_gold ≤ MAX_GOLD, resuming from CACHE."""
    from fmgauge.core.progress import progress

    have = pd.read_parquet(CACHE) if CACHE.exists() else pd.DataFrame(columns=[*KEY, "agree"])
    done = set(map(tuple, have[KEY].itertuples(index=False)))
    todo = [(n, c) for n in names for c in rule_configs(out / n)
            if (n, c["labeler"], c["features"], c["n_gold"], c["seed"]) not in done]
    rows, data = [], {}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with progress("agreement: rule trials", total=len(todo), unit="trial") as p:
        for i, (n, c) in enumerate(todo):
            rows.append({"study": n, "labeler": c["labeler"], "features": c["features"], "n_gold": c["n_gold"],
                         "seed": c["seed"], "agree": agreement(c, data)})
            p.advance()
            if len(rows) == 50 or i == len(todo) - 1:  # saved as it goes: an interrupted run resumes
                have = pd.concat([have, pd.DataFrame(rows)], ignore_index=True)
                have.to_parquet(CACHE)
                rows = []
    return have[have.study.isin(names)]


def score(cells: pd.DataFrame) -> dict:
    """Per variant: each study's excess over its better trivial policy, the pooled regret and goal 3's number."""
    from bench_rule_limits import acted, excess, labeler_fallback, pick_rate
    from fmgauge.weaklabels.rules import AUTO_AUC
    from fmgauge.weaklabels.verdicts import LEAN_FROM

    c = cells
    auto = labeler_fallback(c, AUTO_AUC, 0.0, LEAN_FROM)
    known = c.agree.notna().to_numpy()
    below = (c.gold_min_class < LEAN_FROM).to_numpy()
    best = np.maximum(c.auc_gw, c.auc_g)
    variants = {"default (auto)": auto}
    for eps in EPS:
        over = (c.agree > 0.5 + eps).to_numpy()
        variants[f"agreement > {0.5 + eps:g}"] = np.where(below & known, over, auto)
        variants[f"labeler AUC ≥ 0.6 or agreement > {0.5 + eps:g}"] = np.where(
            below & known, (c.lab_auc >= 0.6).to_numpy() | over, auto)
    out = {}
    for name, fb in variants.items():
        weak = acted(c, fb)
        ex = excess(c, weak)
        out[name] = {"excess": {s: float(v) for s, v in ex.items()}, "worst": float(ex.max()),
                     "worst_study": str(ex.idxmax()), "pick": pick_rate(c, weak),
                     "regret": float((best - np.where(weak, c.auc_gw, c.auc_g)).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "rules-r3",
                    help="bench_rules.py's run directory (one sub-directory per study)")
    args = ap.parse_args()
    import bench_rules
    from bench_rule_limits import study_cells

    names = [n for n in bench_rules.STUDIES if n not in bench_rules.HELD_OUT
             and (args.out / n / "rules.parquet").exists()]
    if not names:
        raise SystemExit(f"--out {args.out}: no suite study with stored rule trials (run bench_rules.py first)")
    agree = compute(args.out, names)
    cells = pd.concat([study_cells(args.out / n).assign(study=n) for n in names], ignore_index=True)
    cells = cells.merge(agree, on=KEY, how="left")
    small = cells[cells.n_gold <= MAX_GOLD]
    by_lab = small.groupby(["study", "labeler"]).agg(agree=("agree", "mean"), delta=("delta", "mean"))
    out = {"studies": names, "cells": int(len(cells)), "trials": int(len(agree)), "max_gold": MAX_GOLD,
           "variants": score(cells), "by_labeler": [{"study": s, "labeler": lab, "agree": float(r.agree),
                                                     "delta": float(r.delta)} for (s, lab), r in by_lab.iterrows()],
           "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(out, indent=1))
    print(RESULTS)


if __name__ == "__main__":
    main()
