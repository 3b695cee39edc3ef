"""An exploration for the next round of decide's fallback: does the weak-labelled pool tell a labeler that helps from
one that hurts where the gold items cannot? (docs/benchmarks.md §8, after "How far a fallback can go").

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rule_agreement.py [--out runs/bench/rules-r7]

The signal, **agreement**: a model trained on the m gold items alone (scikit-learn logistic regression, C = 1, on
standardised features: the representation the rule trial's proxy reads) scores the rest of the pool, and the AUC of
those scores against the labeler's weak labels on the same items is computed (macro one-vs-rest for K > 2). A
labeler at chance agrees at 0.5 whatever the gold model; one that mislabels along another concept agrees below 0.5;
an informative one above 0.5 as far as the gold model has learned something. It reads N pool items instead of the
m gold ones, so its noise is that of N — but it is only as strong as the gold model.

A second pool signal, **learnability**: how well the pool's features predict the weak labels themselves (5-fold
out-of-fold logistic regression on the whole pool, AUC against the weak labels; no gold item read) — about 0.5 for a
labeler at chance, high for any labeler whose labels are a function of what the features see, right or wrong.

Computed for every rule trial at n_gold ≤ 50 (where the uncertain verdicts act on the labeler) of the **suite**
studies only: the held-out studies (bench_rules.HELD_OUT) are left alone, so they stay unseen for this signal and
can judge a rule built on it. Rows are cached in ``runs/bench/rule-agreement/{agree,learn}.parquet``; results go to
``benchmarks/results/rule_agreement.json``. Scored, in-sample (a handful of variants chosen by looking, so what it
shows is an upper bound on what a rule using it would gain): below 5 gold items of the rarer class, "the weak labels
iff agreement > 0.5 + ε" and "iff the labeler's AUC on the gold items ≥ 0.6 or agreement > 0.5 + ε", against decide's
default; and, leave one study out, bench_rule_limits' learned fallback on the rule trial's numbers with and without
the two pool signals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench" / "rule-agreement" / "agree.parquet"
LEARN_CACHE = ROOT / "runs" / "bench" / "rule-agreement" / "learn.parquet"
RESULTS = ROOT / "benchmarks" / "results" / "rule_agreement.json"
KEY = ["study", "labeler", "features", "n_gold", "seed"]
MAX_GOLD = 50
EPS = (0.0, 0.02, 0.03, 0.05)


def agreement(cfg: dict, data: dict) -> float:
    """AUC of a gold-only model's pool scores against the weak labels, for one rule trial's gold set (NaN when the
    weak labels on the rest of the pool miss a class). ``data`` caches (dataset, pool, x) per (dataset, features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.sweep import gold_order, labeler_arrays

    ds, pool, x = pool_data(cfg, data)
    _, labels = labeler_arrays(cfg["weak_key"])
    gold = gold_order(pool.y, int(cfg["seed"]), ds.n_classes)[: int(cfg["n_gold"])]
    rest = np.setdiff1d(np.arange(len(pool.y)), gold)
    scale = StandardScaler().fit(x[gold])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(scale.transform(x[gold]), pool.y[gold])
    scores, weak = model.predict_proba(scale.transform(x[rest])), labels[rest]
    if len(np.unique(weak)) < ds.n_classes:
        return float("nan")
    return auc(weak, scores)


def pool_data(cfg: dict, data: dict) -> tuple:
    """(dataset, pool split, pool features (N, D)) of a rule trial, cached in ``data`` per (dataset, features)."""
    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.sweep import _dataset

    key = (cfg["dataset"], cfg["features"])
    if key not in data:
        ds = _dataset(cfg["dataset"])
        pool = ds.split(cfg["pool_split"])
        x, _ = represent(ds, cfg["features"], cfg["pool_split"], cfg["test_split"])
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x, dtype=float).reshape(len(pool.y), -1)
        data[key] = (ds, pool, x)
    return data[key]


def learnability(cfg: dict, data: dict) -> float:
    """How well the pool's features predict the labeler's weak labels (no gold item read): the AUC of 5-fold
    out-of-fold logistic-regression scores (C = 1, standardised features) against the weak labels of the whole pool
    (macro one-vs-rest for K > 2). About 0.5 for a labeler at chance; high for any labeler whose labels are a
    function of what the features see, right or wrong."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.sweep import labeler_arrays

    _, _, x = pool_data(cfg, data)
    weak = labeler_arrays(cfg["weak_key"])[1]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    scores = cross_val_predict(model, x, weak, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                               method="predict_proba")
    return auc(weak, scores)


def compute(out: Path, names: list[str]) -> pd.DataFrame:
    """Agreement for every rule trial of ``names`` at n_gold ≤ MAX_GOLD, resuming from CACHE."""
    from fmgauge.core.progress import progress

    have = pd.read_parquet(CACHE) if CACHE.exists() else pd.DataFrame(columns=[*KEY, "agree"])
    done = set(map(tuple, have[KEY].itertuples(index=False)))
    from bench_rule_limits import rule_configs

    todo = [(n, c) for n in names for c in rule_configs(out / n, MAX_GOLD).values()
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


def compute_learnability(out: Path, names: list[str]) -> pd.DataFrame:
    """Learnability of every rule trial's weak labels (one per study × labeler × features × seed: simulated
    labelers draw per seed), resuming from LEARN_CACHE."""
    from bench_rule_limits import rule_configs
    from fmgauge.core.progress import progress

    cols = ["study", "labeler", "features", "seed"]
    have = pd.read_parquet(LEARN_CACHE) if LEARN_CACHE.exists() else pd.DataFrame(columns=[*cols, "learn"])
    done = set(map(tuple, have[cols].itertuples(index=False)))
    todo = {}
    for n in names:
        for c in rule_configs(out / n, MAX_GOLD).values():
            k = (n, c["labeler"], c["features"], c["seed"])
            if k not in done:
                todo[k] = c
    rows, data, by_key = [], {}, {}
    with progress("learnability: weak labels", total=len(todo), unit="labeling") as p:
        for k, c in todo.items():
            if (c["weak_key"], c["features"]) not in by_key:  # a labeler shared by seeds is fit once
                by_key[c["weak_key"], c["features"]] = learnability(c, data)
            rows.append(dict(zip(cols, k, strict=True)) | {"learn": by_key[c["weak_key"], c["features"]]})
            p.advance()
    if rows:
        have = pd.concat([have, pd.DataFrame(rows)], ignore_index=True)
        have.to_parquet(LEARN_CACHE)
    return have[have.study.isin(names)]


def score(cells: pd.DataFrame) -> dict:
    """Per variant: each study's excess over its better trivial policy, the pooled regret and goal 3's number."""
    from bench_rule_limits import acted, auto_fallback, cell_regret, excess, pick_rate
    from fmgauge.weaklabels.verdicts import LEAN_FROM

    c = cells
    auto = auto_fallback(c)
    known = c.agree.notna().to_numpy()
    below = (c.gold_min_class < LEAN_FROM).to_numpy()
    variants = {"default (auto)": auto}
    for eps in EPS:
        over = (c.agree > 0.5 + eps).to_numpy()
        variants[f"agreement > {0.5 + eps:g}"] = np.where(below & known, over, auto)
        variants[f"labeler AUC ≥ 0.6 or agreement > {0.5 + eps:g}"] = np.where(
            below & known, (c.lab_auc >= 0.6).to_numpy() | over, auto)
    known_l = c.learn.notna().to_numpy()
    variants["learnability > 0.55 and (labeler AUC ≥ 0.6 or agreement > 0.52)"] = np.where(
        below & known & known_l, (c.learn > 0.55).to_numpy() & ((c.lab_auc >= 0.6).to_numpy()
                                                                 | (c.agree > 0.52).to_numpy()), auto)
    out = {}
    for name, fb in variants.items():
        weak = acted(c, fb)
        ex = excess(c, weak)
        out[name] = {"excess": {s: float(v) for s, v in ex.items()}, "worst": float(ex.max()),
                     "worst_study": str(ex.idxmax()), "pick": pick_rate(c, weak),
                     "regret": float(cell_regret(c, weak).mean())}
    return out


def learned(cells: pd.DataFrame) -> dict:
    """Leave one study out, the learned fallback of bench_rule_limits on the rule trial's numbers alone and with
    agreement and learnability added (NaN agreement as 0.5: the trials above MAX_GOLD): each study's excess."""
    from bench_rule_limits import features, learned_loso

    base = features(cells)
    extra = np.column_stack([cells.agree.fillna(0.5).to_numpy(float), cells.learn.fillna(0.5).to_numpy(float)])
    out = {}
    for name, x in (("rule numbers", base), ("rule numbers + agreement + learnability", np.hstack([base, extra]))):
        ex = learned_loso(cells, x)
        out[name] = {"excess": {s: float(v) for s, v in ex.items()}, "worst": float(ex.max()),
                     "worst_study": str(ex.idxmax())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "rules-r7",
                    help="bench_rules.py's run directory (one sub-directory per study)")
    args = ap.parse_args()
    import bench_rules
    from bench_rule_limits import study_cells

    names = [n for n in bench_rules.STUDIES if n not in bench_rules.HELD_OUT + bench_rules.EARLIER_HELD_OUT
             and (args.out / n / "rules.parquet").exists()]
    if not names:
        raise SystemExit(f"--out {args.out}: no suite study with stored rule trials (run bench_rules.py first)")
    agree = compute(args.out, names)
    cells = pd.concat([study_cells(args.out / n).assign(study=n) for n in names], ignore_index=True)
    learn = compute_learnability(args.out, names)
    cells = cells.merge(agree, on=KEY, how="left").merge(learn, on=["study", "labeler", "features", "seed"],
                                                         how="left")
    small = cells[cells.n_gold <= MAX_GOLD]
    by_lab = small.groupby(["study", "labeler"]).agg(agree=("agree", "mean"), learn=("learn", "mean"),
                                                      delta=("delta", "mean"))
    out = {"studies": names, "cells": int(len(cells)), "trials": int(len(agree)), "max_gold": MAX_GOLD,
           "variants": score(cells), "learned": learned(cells),
           "by_labeler": [{"study": s, "labeler": lab, "agree": float(r.agree), "learn": float(r.learn),
                           "delta": float(r.delta)} for (s, lab), r in by_lab.iterrows()],
           "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(out, indent=1))
    print(RESULTS)


if __name__ == "__main__":
    main()
