"""How often the decision rule, operated from the first 10 / 20 gold labels, gets the sign of ΔAUC right.

Reuses the sweep's trials (nothing is retrained). For each labeler, student, gold-set size n in the grid and seed
s, the rule compares the student's gold-only test AUC at n (from the sweep) with the labeler measured on only the
first m gold items of seed s's gold order (m = 10 or 20): its accuracy (``accuracy`` rule, the paper's) or its
AUC (``auc`` rule, like-for-like). The verdict is *use weak labels* when the gold-only AUC is below the labeler's
number. It is a hit when that matches the realised sign of ΔAUC(n, s) = AUC(gold+weak) − AUC(gold) for the same
seed (paired: same gold set). Hit rates carry Wilson intervals over the (student, n, seed) cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fmgauge.core.stats import auc, wilson_ci
from fmgauge.weaklabels.sweep import gold_order


def labeler_on_first_gold(
    y_pool: np.ndarray, probs: np.ndarray, labels: np.ndarray, seeds: list[int], m: int, n_classes: int,
) -> pd.DataFrame:
    """Per seed: the labeler's accuracy and AUC on the first ``m`` gold items of that seed's gold order."""
    rows = []
    for s in seeds:
        g = gold_order(y_pool, s, n_classes)[:m]
        scores = probs[g, 1] if n_classes == 2 else probs[g]
        lab_auc = auc(y_pool[g], scores) if len(np.unique(y_pool[g])) > 1 else float("nan")
        rows.append({"seed": s, "m": m, "accuracy": float((labels[g] == y_pool[g]).mean()), "auc": lab_auc})
    return pd.DataFrame(rows)


def hit_rates(
    results: pd.DataFrame, labeler: str, y_pool: np.ndarray, probs: np.ndarray, labels: np.ndarray,
    n_classes: int, m_values: tuple[int, ...] = (10, 20),
) -> dict[str, Any]:
    """Hit-rate table of both rules for one labeler (see the module docstring).

    ``results``: the sweep's rows (student, condition, n_gold, labeler, seed, auc). Returns ``cells`` (one row per
    labeler × student × n_gold × seed × m × rule) and ``summary`` (hit rate with Wilson CI per rule × m, overall and
    per n_gold).
    """
    gold = results[results.condition == "gold"][["student", "n_gold", "seed", "auc"]]
    mixed = results[(results.condition == "gold+weak") & (results.labeler == labeler)]
    paired = gold.merge(mixed[["student", "n_gold", "seed", "auc"]], on=["student", "n_gold", "seed"],
                        suffixes=("_gold", "_mixed"))
    if paired.empty:
        return {"cells": [], "summary": []}
    paired["delta"] = paired["auc_mixed"] - paired["auc_gold"]
    seeds = sorted(paired["seed"].unique().tolist())
    cells = []
    for m in m_values:
        if m > len(y_pool):
            continue
        lab = labeler_on_first_gold(y_pool, probs, labels, seeds, m, n_classes).set_index("seed")
        for rule in ("accuracy", "auc"):
            bench = paired["seed"].map(lab[rule])
            use_weak = paired["auc_gold"] < bench
            ok = bench.notna() & (paired["delta"] != 0)
            part = paired[ok].assign(m=m, rule=rule, labeler_value=bench[ok], use_weak=use_weak[ok],
                                     hit=(use_weak[ok] == (paired["delta"][ok] > 0)))
            cells.append(part)
    cells_df = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
    summary = []
    if not cells_df.empty:
        for (rule, m), g in cells_df.groupby(["rule", "m"]):
            summary.append({"labeler": labeler, "rule": rule, "m": int(m), "n_gold": "all",
                            **_rate(g["hit"].to_numpy())})
            for n, gn in g.groupby("n_gold"):
                summary.append({"labeler": labeler, "rule": rule, "m": int(m), "n_gold": int(n),
                                **_rate(gn["hit"].to_numpy())})
    return {"cells": cells_df.assign(labeler=labeler).to_dict("records") if not cells_df.empty else [],
            "summary": summary}


def _rate(hits: np.ndarray) -> dict[str, Any]:
    ci = wilson_ci(int(hits.sum()), len(hits))
    return {"hits": int(hits.sum()), "cells": int(len(hits)), "hit_rate": ci.value, "lo": ci.lo, "hi": ci.hi}
