"""How far can an uncertain verdict's fallback go? The limit of decide's default on the rule suite (docs §8).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rule_limits.py [--out runs/bench/rules-r8]
        [--no-proxy-truth] [--before runs/bench/rules-r3] [--same-as runs/bench/rules-r4]

Reads the stored trials of every study that ``benchmarks/bench_rules.py`` ran into ``--out`` (each cell's realised
AUCs with and without the weak labels, and each gold set's rule trial); trains no model but the proxy of the goal-3
ceiling below. Results go to
``benchmarks/results/rule_limits.json``; ``bench_rules.py --render-only`` puts them in §8.

decide's default acts on the committed verdicts of ``delta-worth`` (cv-delta's paired interval and the J guard) and
hands every ``uncertain`` one to a fallback. Goal 2 of issue 23 (no study worse than its better trivial policy by more
than 0.01 AUC) is scored per study over all its cells. This measures, per study, the excess over the better trivial
policy of:

- **the default**, fallback ``auto`` (cv-delta's lean once the gold set holds 20 items of its rarer class, else the
  weak labels iff the pool's agreement with a gold-trained model > 0.52 or the labeler's AUC on the gold items is
  above the gold-only estimate by more than 0.1), and the previous
  default ``labeler`` (the labeler's AUC ≥ 0.7 or above the gold-only estimate, at every m); both are members of the family
  below;
- **the oracle fallback**: every uncertain verdict acted on as the cell's own better side, with the committed verdicts
  and the guard unchanged — if this meets the goal, what is lost is lost in the fallback alone;
- **the best threshold fallback with hindsight**: over a grid of fallbacks "weak labels iff the labeler's AUC on the
  gold items ≥ t or > the gold-only estimate + b or the pool's agreement > a", optionally replaced by cv-delta's lean (the sign of the paired
  ΔAUC estimate) once the gold set holds ≥ k items of its rarer class, the member with the smallest worst-study
  excess, chosen on all the studies themselves (an optimistic bound for the family);
  with each member's goal-3 number (the share of cells with |ΔAUC| > 0.02 where it chose the better side);
- **the same family, leave one study out**: the member chosen on the other studies, scored on the one left out;
- **a learned fallback, leave one study out**: gradient-boosted trees (scikit-learn, depth 2, 100 trees) on the
  numbers a rule trial records (labeler AUC on the gold items, gold-only estimate, their difference, Youden's J and
  its interval, the paired ΔAUC estimate, log m, the weak-trained proxy's AUC minus the gold-only estimate,
  log(n_eff / m)), fit to the sign of the realised ΔAUC on the other studies' uncertain cells (weighted by |ΔAUC|,
  each study weighing the same), scored on the one left out.

Goal 3 (the better side in ≥ 80% of the cells where the two trivial policies differ by more than 0.02 AUC) is split
by what made the choice — a committed verdict, the pool's agreement or the labeler's ranking (uncertain, fewer than
LEAN_FROM = 20 items of the rarer class) or the paired estimate's lean (uncertain, LEAN_FROM or more) — with two ceilings for the lean: **one choice per gold
set and representation** (the majority side of the students that share a proxy representation: no rule that, like
decide's, decides once per gold set and representation can do better), and **the proxy's own realised ΔAUC**: the
rules' proxy (sk-logreg) trained on each of those gold sets with and without the weak labels and scored on the test
split, the one step of this script that trains a model (two fits per gold set the lean decides on a wide cell;
about 15 minutes on 2 cores the first time, cached in ``runs/bench/rule-limits/proxy_truth.parquet``, resumable) — a perfect estimate of what the proxy gains would pick
the students' better side only as often as this does. Beside it, from the stored cells alone, how well each
student's realised gain stands for another's on the same gold sets (what a proxy of that student's kind would reach).

**The image proxy's strength**: on every wide cell of the studies whose proxy reads images, the same proxy truth at
each L2 strength C of C_GRID (cached with the rest): how often the sign of the proxy's own realised gain is the
students' better side, per C — what chose decide's image proxy (C = 0.01, students.LOGREG_C). With ``--before`` (an
earlier bench_rules.py run directory, e.g. the rule trials before that change): the default on the same cells before
and after, with the regret change's cluster-bootstrap interval over (study, seed). With ``--same-as`` (an earlier run
directory whose trials a change of cost only should reproduce, e.g. before decide's fits moved to the row span):
per study, the share of cells with the same verdict and the same side acted on, and the largest change of the
estimates.
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
RESULTS = ROOT / "benchmarks" / "results" / "rule_limits.json"
CHANGES = ROOT / "benchmarks" / "results" / "rule_changes.json"  # every --same-as comparison, by RULES_VERSION
TRUTH_CACHE = ROOT / "runs" / "bench" / "rule-limits" / "proxy_truth.parquet"
KEY = ["labeler", "features", "n_gold", "seed"]
T_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, float("inf"))  # labeler AUC threshold (inf: never on the AUC alone)
B_GRID = (0.0, 0.05, 0.1, float("inf"))  # margin over the gold-only estimate (inf: never)
K_GRID = (5, 10, 20, 40, float("inf"))  # rarer-class count from which cv-delta's lean decides (inf: never)
A_GRID = (0.5, 0.52, 0.55, float("inf"))  # bar on the pool's agreement (rules.pool_agreement; inf: never read)
FEATURES = ("labeler AUC", "gold-only AUC", "difference", "J", "J lo", "J hi", "paired ΔAUC", "log m",
            "weak-proxy AUC − gold-only", "log(n_eff / m)")


def study_cells(run_dir: Path) -> pd.DataFrame:
    """One row per cell (labeler × student × n_gold × seed) of a study: the realised AUCs ``auc_g``, ``auc_gw``, the
    default rule's verdict and committed choice (``delta-worth``, as decide scores it now), and its trial's numbers."""
    from fmgauge.weaklabels.rule_eval import policy_cells, proxy_features
    from fmgauge.weaklabels.study import load_result

    res = load_result(run_dir)
    feats = {s: v["features"] for s, v in res.summary["students"].items()}
    rules = pd.read_parquet(run_dir / "rules.parquet")
    cells = policy_cells(res.results, rules, feats)
    dw = cells[cells.policy == "delta-worth"].assign(features=lambda d: d.student.map(lambda s: proxy_features(feats[s])))
    first = rules.drop_duplicates([*KEY, "rule"]).set_index([*KEY, "rule"])
    cv = first.xs("cv-delta", level="rule")[["gap", "gap_lo", "gap_hi", "lab_youden", "lab_youden_lo",
                                              "lab_youden_hi", "gold_min_class", "n_eff"]]
    auc = first.xs("auc", level="rule").reindex(columns=["labeler_value", "gold_auc", "agreement"]).rename(
        columns={"labeler_value": "lab_auc"})  # agreement: stored from RULES_VERSION 12 (NaN before)
    ws = first.xs("weak-student", level="rule")[["labeler_value"]].rename(columns={"labeler_value": "ws_auc"})
    return dw.merge(cv.join(auc).join(ws).reset_index(), on=KEY, how="left")


def all_cells(out: Path, names: list[str]) -> pd.DataFrame:
    """:func:`study_cells` of every study ``names`` in the run directory ``out`` that stores rule trials with the
    labeler's AUC and the gold set's smallest class count, with a ``study`` column."""
    frames = []
    for n in names:
        c = study_cells(out / n)
        if c.lab_auc.notna().any() and c.gold_min_class.notna().any():
            frames.append(c.assign(study=n))
    return pd.concat(frames, ignore_index=True)


def rule_configs(run_dir: Path, max_gold: float = float("inf")) -> dict[tuple, dict]:
    """The newest stored rule-trial config per KEY (labeler, features, n_gold, seed) of a study, n_gold ≤ max_gold."""
    with sqlite3.connect(run_dir / "trials.sqlite") as con:
        cfgs = [json.loads(c) for (c,) in con.execute("select config from trials where status = 'done'")]
    newest: dict[tuple, dict] = {}
    for c in cfgs:
        if c.get("kind") != "rule" or c["n_gold"] > max_gold:
            continue
        k = (c["labeler"], c["features"], c["n_gold"], c["seed"])
        if k not in newest or c.get("version", 0) > newest[k].get("version", 0):
            newest[k] = c
    return newest


def labeler_fallback(c: pd.DataFrame, t: float, b: float, k: float, a: float = float("inf")) -> np.ndarray:
    """(n,) bool: the family's fallback — weak labels iff lab_auc ≥ t or lab_auc > gold_auc + b or the pool's
    agreement > a (NaN: no); once gold_min_class ≥ k, cv-delta's lean instead (its ``gap`` = gold-only minus
    gold+weak, so weak labels iff ≤ 0)."""
    lab = (c.lab_auc >= t) | (c.lab_auc > c.gold_auc + b) | (c.agreement > a)
    lean = c.gap <= 0
    return np.where(c.gold_min_class >= k, lean, lab).astype(bool)


def auto_fallback(c: pd.DataFrame) -> np.ndarray:
    """(n,) bool: decide's default fallback, ``auto`` — the family member (inf, AUTO_MARGIN, LEAN_FROM, AGREE_BAR)."""
    from fmgauge.weaklabels.verdicts import AGREE_BAR, AUTO_MARGIN, LEAN_FROM

    return labeler_fallback(c, float("inf"), AUTO_MARGIN, LEAN_FROM, AGREE_BAR)


def acted(c: pd.DataFrame, fallback: np.ndarray) -> np.ndarray:
    """(n,) bool, weak labels used: the committed verdicts as they are, ``fallback`` on the uncertain ones."""
    return np.where(c.verdict == "uncertain", fallback, c.choice == "use-weak-labels").astype(bool)


def cell_regret(c: pd.DataFrame, weak: np.ndarray) -> np.ndarray:
    """(n,) AUC the policy ``weak`` (n,) bool loses against each cell's better side."""
    return (np.maximum(c.auc_gw, c.auc_g) - np.where(weak, c.auc_gw, c.auc_g)).to_numpy()


def picked_better(c: pd.DataFrame, weak: np.ndarray) -> np.ndarray:
    """(n,) bool: the policy ``weak`` (n,) chose the side that realised the higher AUC."""
    return np.asarray(weak) == (c.delta > 0).to_numpy()


def scored(c: pd.DataFrame) -> pd.DataFrame:
    """``c`` with decide's default applied: ``weak`` (the side acted on), ``reg`` (its regret), ``right`` (it chose
    the better side)."""
    weak = acted(c, auto_fallback(c))
    return c.assign(reg=cell_regret(c, weak), right=picked_better(c, weak), weak=weak)


def excess(c: pd.DataFrame, weak: np.ndarray) -> pd.Series:
    """Per study: mean regret of the policy ``weak`` (n,) minus the mean regret of the better trivial policy."""
    reg = pd.DataFrame({"policy": cell_regret(c, weak), "gold": cell_regret(c, np.zeros(len(c), bool)),
                        "weak": cell_regret(c, np.ones(len(c), bool)), "study": c.study}).groupby("study").mean()
    return reg.policy - reg[["gold", "weak"]].min(axis=1)


def pick_rate(c: pd.DataFrame, weak: np.ndarray) -> float:
    """Goal 3's number: the share of cells with |ΔAUC| > 0.02 where the policy ``weak`` (n,) chose the better side."""
    wide = (c.delta.abs() > 0.02).to_numpy()
    return float(picked_better(c, weak)[wide].mean())


def family(c: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Every member (t, b, k, a) of the threshold family: its excess per study (rows members, columns studies) and
    its pick rate over all cells."""
    acts = {(t, b, k, a): acted(c, labeler_fallback(c, t, b, k, a)) for t in T_GRID for b in B_GRID for k in K_GRID
            for a in A_GRID}
    return (pd.DataFrame({m: excess(c, w) for m, w in acts.items()}).T,
            pd.Series({m: pick_rate(c, w) for m, w in acts.items()}))


def features(c: pd.DataFrame) -> np.ndarray:
    """(n, 10) the learned fallback's inputs (FEATURES), NaN as 0."""
    z = lambda s: np.nan_to_num(np.asarray(s, dtype=float))  # noqa: E731
    m = c.n_gold.to_numpy(float)
    return np.column_stack([z(c.lab_auc), z(c.gold_auc), z(c.lab_auc - c.gold_auc), z(c.lab_youden),
                            z(c.lab_youden_lo), z(c.lab_youden_hi), -z(c.gap), np.log(m),
                            z(c.ws_auc - c.gold_auc), np.log1p(z(c.n_eff)) - np.log(m)])


def learned_loso(c: pd.DataFrame, x: np.ndarray | None = None) -> pd.Series:
    """Per study: excess of the gradient-boosted fallback fit on the other studies' uncertain cells, on the inputs
    ``x`` (n, F) (default :func:`features`)."""
    from sklearn.ensemble import GradientBoostingClassifier

    x = features(c) if x is None else x
    y, w = (c.delta > 0).to_numpy(int), c.delta.abs().to_numpy() + 1e-4
    unsure, study = (c.verdict == "uncertain").to_numpy(), c.study.to_numpy()
    out = {}
    for s in np.unique(study):
        tr = unsure & (study != s)
        sw = w[tr] / pd.Series(w[tr]).groupby(study[tr]).transform("sum").to_numpy()
        model = GradientBoostingClassifier(max_depth=2, n_estimators=100, random_state=0).fit(x[tr], y[tr],
                                                                                               sample_weight=sw)
        te = study == s
        fb = np.zeros(len(c), bool)
        fb[te] = model.predict_proba(x[te])[:, 1] > 0.5
        out[s] = float(excess(c, acted(c, fb))[s])
    return pd.Series(out)


def branch(c: pd.DataFrame) -> np.ndarray:
    """(n,) what made the default's choice: ``committed``, ``labeler`` (uncertain, fewer than LEAN_FROM items of the
    rarer class: the pool's agreement or the labeler's ranking) or ``lean`` (uncertain, LEAN_FROM or more: the paired estimate's sign)."""
    from fmgauge.weaklabels.verdicts import LEAN_FROM

    return np.where(c.verdict != "uncertain", "committed", np.where(c.gold_min_class >= LEAN_FROM, "lean", "labeler"))


def per_gold_set_ceiling(c: pd.DataFrame) -> np.ndarray:
    """(n,) bool, weak labels used by the best single choice per gold set and representation: the side most of the
    wide cells (|ΔAUC| > 0.02) of the students sharing (study, labeler, features, n_gold, seed) gain on."""
    group = ["study", *KEY]
    votes = c.assign(v=np.sign(c.delta) * (c.delta.abs() > 0.02)).groupby(group).v.transform("sum")
    return (votes > 0).to_numpy()


C_GRID = (1.0, 0.1, 0.01, 0.001)  # the image proxy's L2 strengths compared (scikit-learn's C)


def study_inputs(out: Path, study: str, data: dict) -> tuple:
    """(dataset, pool inputs, test inputs, pool labels, test labels, the rules' default proxy C) of a study's
    proxy representation (its first rule trial's), cached in ``data`` per study."""
    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.proxy import proxy_student
    from fmgauge.weaklabels.sweep import _dataset

    if study not in data:
        cfg = next(iter(rule_configs(out / study).values()))
        ds = _dataset(cfg["dataset"])
        x_pool, x_test = represent(ds, cfg["features"], cfg["pool_split"], cfg["test_split"])
        data[study] = (ds, x_pool, x_test, ds.split(cfg["pool_split"]).y, ds.split(cfg["test_split"]).y,
                       proxy_student(x_pool, None).c)
    return data[study]


def proxy_truth(out: Path, want: pd.DataFrame, data: dict) -> pd.DataFrame:
    """The rules' proxy (sk-logreg, :mod:`fmgauge.weaklabels.proxy`) at L2 strength ``c``: its realised test AUC
    without (``p_gold``) and with (``p_gw``) the weak labels, per row (study × KEY × c) of ``want``, fit on each
    training set the sweep gives its students. Resumes from TRUTH_CACHE (rows stored before the column ``c``
    existed were computed at C = 1), saving every 25 rows."""
    from fmgauge.core.progress import progress
    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.students import StudentConfig
    from fmgauge.weaklabels.sweep import labeler_arrays, training_sets
    from fmgauge.weaklabels.training import fit_predict_convex

    cols = ["study", *KEY, "c"]
    have = pd.read_parquet(TRUTH_CACHE) if TRUTH_CACHE.exists() else pd.DataFrame(columns=[*cols, "p_gold", "p_gw"])
    if "c" not in have:
        have = have.assign(c=1.0)
    done = set(map(tuple, have[cols].itertuples(index=False)))
    want = want[cols].drop_duplicates()
    todo = [w for w in map(tuple, want.itertuples(index=False)) if w not in done]
    configs = {s: rule_configs(out / s) for s in {w[0] for w in todo}}
    rows = []
    TRUTH_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with progress("proxy truth: gold sets × C", total=len(todo), unit="fit pair") as p:
        for i, (s, *k, c) in enumerate(todo):
            cfg = configs[s][tuple(k)]
            ds, x_pool, x_test, y_pool, y_test, _ = study_inputs(out, s, data)
            weak = labeler_arrays(cfg["weak_key"])[1]
            got = {}
            for cond in ("gold", "gold+weak"):
                idx, lab = training_sets(cond, y_pool, weak, int(cfg["n_gold"]), [int(cfg["seed"])], ds.n_classes)
                probs = fit_predict_convex(StudentConfig(kind="sk-logreg", c=c), x_pool, idx, lab, x_test,
                                           ds.n_classes)
                got[cond] = auc(y_test, probs[0])
            rows.append(dict(zip(cols, (s, *k, c), strict=True)) | {"p_gold": got["gold"], "p_gw": got["gold+weak"]})
            p.advance()
            if len(rows) == 25 or i == len(todo) - 1:  # saved as it goes: an interrupted run resumes
                have = pd.concat([have, pd.DataFrame(rows)], ignore_index=True)
                have.to_parquet(TRUTH_CACHE)
                rows = []
    return have


def proxy_strength(c: pd.DataFrame, truth: pd.DataFrame, held_out: list[str]) -> dict:
    """How well the image proxy's realised gain stands for the students', per L2 strength C of C_GRID: over the wide
    cells (|ΔAUC| > 0.02) of the studies whose proxy reads images (``c.image``), the share where the sign of the
    proxy's own test-AUC gain (:func:`proxy_truth`) is the students' better side — in all, where the weak labels
    were better (sensitivity), where gold only was (specificity), per student — and the proxy's mean gold-only test
    AUC. {"suite" | "held_out": {C: {...}}}."""
    wide = c[(c.delta.abs() > 0.02) & c.image]
    out: dict = {}
    for side, rows in (("suite", ~wide.study.isin(held_out)), ("held_out", wide.study.isin(held_out))):
        w = wide[rows.to_numpy()]
        if w.empty:
            continue
        d = {"cells": int(len(w)), "studies": sorted(w.study.unique()), "weak_better": float((w.delta > 0).mean())}
        for cv in C_GRID:
            t = w.merge(truth[truth.c == cv], on=["study", *KEY], how="inner")
            if len(t) < len(w):
                continue
            pos, gain = (t.delta > 0).to_numpy(), (t.p_gw - t.p_gold).to_numpy()
            right = (gain > 0) == pos
            d[str(cv)] = {"rate": float(right.mean()), "sensitivity": float(right[pos].mean()),
                          "specificity": float(right[~pos].mean()), "gold_auc": float(t.p_gold.mean()),
                          "by_student": {s: float(right[(t.student == s).to_numpy()].mean())
                                         for s in sorted(t.student.unique())}}
        out[side] = d
    return out


def before_after(c: pd.DataFrame, old: pd.DataFrame, held_out: list[str], n_boot: int = 4000) -> dict:
    """decide's default on the same cells, acting on the rule trials of an earlier run (``old``) and of this one
    (``c``; both from :func:`study_cells`): per side (suite, held out) the mean change of the per-cell regret with a
    95% cluster-bootstrap interval over (study, seed), goal 3's share of the wide cells, and the worst study's
    excess over its better trivial policy, before and after."""
    cell = ["study", "labeler", "student", "n_gold", "seed"]
    new, was = scored(c), scored(old)
    m = was[[*cell, "reg", "right", "delta"]].merge(new[[*cell, "reg", "right"]], on=cell, suffixes=("_was", "_now"))
    rng = np.random.default_rng(0)
    out = {}
    for side, rows in (("suite", ~m.study.isin(held_out)), ("held_out", m.study.isin(held_out))):
        d = m[rows.to_numpy()]
        if d.empty:
            continue
        cl = (d.reg_now - d.reg_was).groupby([d.study, d.seed]).agg(["sum", "size"])
        pick = rng.integers(0, len(cl), (n_boot, len(cl)))
        boots = cl["sum"].to_numpy()[pick].sum(1) / cl["size"].to_numpy()[pick].sum(1)
        wide = (d.delta.abs() > 0.02).to_numpy()
        studies = d.study.unique()
        worst = {}
        for tag, frame in (("was", was), ("now", new)):
            f = frame[frame.study.isin(studies)]
            ex = excess(f, f.weak.to_numpy())
            worst[tag] = [str(ex.idxmax()), float(ex.max())]
        out[side] = {"cells": int(len(d)), "clusters": int(len(cl)), "change": float((d.reg_now - d.reg_was).mean()),
                     "ci": [float(v) for v in np.quantile(boots, [0.025, 0.975])],
                     "regret": [float(d.reg_was.mean()), float(d.reg_now.mean())],
                     "goal3": [float(d.right_was[wide].mean()), float(d.right_now[wide].mean())], "worst": worst}
    return out


def same_answers(c: pd.DataFrame, old: pd.DataFrame) -> dict:
    """Per study, how far the rule trials of this run (``c``) and of an earlier one (``old``; both from
    :func:`study_cells`) agree on the same cells — for a change meant to alter the cost and not the answers: the
    share of cells with the same default verdict and the same side acted on, the largest and the median change of
    the gold-only estimate and of the paired ΔAUC estimate, and the default's mean regret before and after."""
    cell = ["study", "labeler", "student", "n_gold", "seed"]
    cols = ["verdict", "gold_auc", "gap"]
    was, now = scored(old), scored(c)
    m = was[[*cell, *cols, "weak", "reg"]].merge(now[[*cell, *cols, "weak", "reg"]], on=cell, suffixes=("_was", "_now"))
    out = {}
    for study, d in [*m.groupby("study"), ("all", m)]:
        dg, dp = (d.gold_auc_now - d.gold_auc_was).abs(), (d.gap_now - d.gap_was).abs()
        out[str(study)] = {"cells": int(len(d)), "same_verdict": float((d.verdict_now == d.verdict_was).mean()),
                           "same_side": float((d.weak_now == d.weak_was).mean()),
                           "gold_auc_max": float(dg.max()), "gold_auc_median": float(dg.median()),
                           "gap_max": float(dp.max()), "gap_median": float(dp.median()),
                           "regret": [float(d.reg_was.mean()), float(d.reg_now.mean())]}
    return out


def goal3(c: pd.DataFrame, weak: np.ndarray, held_out: list[str], truth: pd.DataFrame | None) -> dict:
    """Goal 3 for the suite and the held-out studies: the default's better-side rate ``rate`` over the wide cells,
    per branch (share of the wide cells, rate), the per-gold-set ceiling and, for the lean, the rate of the proxy's
    own realised ΔAUC sign and how often the lean agrees with it; the proxy truth's rate per student too."""
    wide = (c.delta.abs() > 0.02).to_numpy()
    right = picked_better(c, weak)
    br, ceil = branch(c), per_gold_set_ceiling(c)
    t = (c.merge(truth, left_on=["study", *KEY, "c_default"], right_on=["study", *KEY, "c"], how="left")
         if truth is not None else c.assign(p_gold=np.nan, p_gw=np.nan))
    p_gain = (t.p_gw - t.p_gold).to_numpy()
    out = {}
    for side, rows in (("suite", ~c.study.isin(held_out).to_numpy()), ("held_out", c.study.isin(held_out).to_numpy())):
        w = wide & rows
        d = {"cells": int(w.sum()), "rate": float(right[w].mean()),
             "ceiling": float(picked_better(c, ceil)[w].mean()), "branches": {}}
        for b in ("committed", "labeler", "lean"):
            m = w & (br == b)
            d["branches"][b] = {"share": float(m.sum() / max(w.sum(), 1)), "rate": float(right[m].mean())}
        lean = w & (br == "lean") & np.isfinite(p_gain)
        if lean.any():
            truth_right = picked_better(c, p_gain > 0)
            d["lean_truth"] = {"cells": int(lean.sum()), "truth_rate": float(truth_right[lean].mean()),
                               "lean_rate": float(right[lean].mean()),
                               "lean_agrees": float((weak == (p_gain > 0))[lean].mean()),
                               "by_student": {s: float(truth_right[lean & (c.student == s).to_numpy()].mean())
                                              for s in sorted(c.student[lean].unique())}}
        out[side] = d
    return out


def stand_ins(c: pd.DataFrame, min_cells: int = 30) -> dict:
    """How well one student's realised gain stands for another's, on the lean's cells (all studies): for each pair
    (target, stand-in) of students trained on the same gold sets, the share of the target's wide lean cells (|ΔAUC|
    > 0.02) where the stand-in's realised ΔAUC has the same sign; pairs with fewer than ``min_cells`` such cells are
    left out. {target: {stand-in: [rate, cells]}}."""
    lean = c[branch(c) == "lean"]
    d = lean.pivot_table(index=["study", *KEY], columns="student", values="delta")
    out: dict[str, dict[str, list]] = {}
    for tgt in d.columns:
        for src in d.columns.drop(tgt):
            pair = d[[tgt, src]].dropna()
            pair = pair[pair[tgt].abs() > 0.02]
            if len(pair) >= min_cells:
                out.setdefault(tgt, {})[src] = [float(((pair[src] > 0) == (pair[tgt] > 0)).mean()), int(len(pair))]
    return out


def limits(c: pd.DataFrame, held_out: list[str], truth: pd.DataFrame | None = None) -> dict:
    """Every figure of the §8 'limit of the fallback' paragraph, from the per-cell table ``c`` of all studies."""
    from fmgauge.weaklabels.rules import ACCEPTABLE_AUC, labeler_ranks
    from fmgauge.weaklabels.verdicts import AGREE_BAR, AUTO_MARGIN, LEAN_FROM

    ranks = np.array([labeler_ranks(a, g) for a, g in zip(c.lab_auc, c.gold_auc, strict=True)])
    auto = auto_fallback(c)
    fam, picks = family(c)
    assert (labeler_fallback(c, ACCEPTABLE_AUC, 0.0, float("inf")) == ranks).all(), "(0.7, 0, inf) is 'labeler'"
    assert (float("inf"), AUTO_MARGIN, LEAN_FROM, AGREE_BAR) in fam.index, "the default is a member of the family"
    worst = fam.max(axis=1)
    best = worst.idxmin()
    loso = {}
    for s in fam.columns:
        pick = fam.drop(columns=s).max(axis=1).idxmin()
        loso[s] = {"member": list(pick), "excess": float(fam.loc[[pick], s].iloc[0])}
    big = c.n_gold >= 50
    per = pd.DataFrame({"default": excess(c, acted(c, auto)), "labeler": excess(c, acted(c, ranks)),
                        "oracle": excess(c, acted(c, (c.delta > 0).to_numpy())),
                        "hindsight": fam.loc[[best]].iloc[0],
                        "loso": pd.Series({s: v["excess"] for s, v in loso.items()}),
                        "learned_loso": learned_loso(c),
                        "default_m50": excess(c[big], acted(c[big], auto[big.to_numpy()]))})
    fmt = lambda v: "inf" if v == float("inf") else v  # noqa: E731
    top = picks.idxmax()
    return {"studies": list(per.index), "held_out": [s for s in per.index if s in held_out],
            "cells": int(len(c)), "uncertain": float((c.verdict == "uncertain").mean()),
            "per_study": {s: {k: float(v) for k, v in row.items()} for s, row in per.iterrows()},
            "hindsight_member": [fmt(v) for v in best], "hindsight_worst": float(worst[best]),
            "hindsight_pick": float(picks[best]), "default_pick": float(pick_rate(c, acted(c, auto))),
            "oracle_pick": float(pick_rate(c, acted(c, (c.delta > 0).to_numpy()))),
            "best_pick_member": [fmt(v) for v in top], "best_pick": float(picks[top]),
            "best_pick_worst": float(worst[top]),
            "members": int(len(fam)), "loso": {s: {"member": [fmt(v) for v in d["member"]], "excess": d["excess"]}
                                               for s, d in loso.items()},
            "features": list(FEATURES), "goal3": goal3(c, acted(c, auto), held_out, truth) | {
                "stand_ins": stand_ins(c)},
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as the docs name run directories), else as given."""
    p = path.absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "rules-r8",
                    help="bench_rules.py's run directory (one sub-directory per study)")
    ap.add_argument("--before", type=Path, default=None,
                    help="an earlier bench_rules.py run directory: the default on the same cells before and after")
    ap.add_argument("--same-as", type=Path, default=None,
                    help="an earlier run directory whose rule trials should give the same answers (a change of cost "
                    "only): how far the two agree, per study")
    ap.add_argument("--no-proxy-truth", action="store_true",
                    help="skip the goal-3 ceiling that trains the proxy (~10 min the first time, then cached)")
    args = ap.parse_args()
    import bench_rules  # the study list and which studies are held out

    names = [n for n in bench_rules.STUDIES if (args.out / n / "rules.parquet").exists()]
    if not names:
        raise SystemExit(f"--out {args.out}: no study with stored rule trials (run benchmarks/bench_rules.py first)")
    c = all_cells(args.out, names)
    data: dict = {}
    inputs = {n: study_inputs(args.out, n, data) for n in c.study.unique()}
    c = c.assign(c_default=c.study.map({n: v[-1] for n, v in inputs.items()}),
                 image=c.study.map({n: np.ndim(v[1]) > 2 for n, v in inputs.items()}))
    truth = None
    if not args.no_proxy_truth:  # the lean's wide cells at the default C; every wide image cell at every C of C_GRID
        wide = (c.delta.abs() > 0.02).to_numpy()
        lean = c[(branch(c) == "lean") & wide].assign(c=lambda d: d.c_default)
        grid = pd.concat([c[wide & c.image.to_numpy()].assign(c=v) for v in C_GRID])
        truth = proxy_truth(args.out, pd.concat([lean, grid], ignore_index=True), data)
    held = list(bench_rules.HELD_OUT + bench_rules.EARLIER_HELD_OUT)  # every study the default was not chosen on
    out = limits(c, held, truth)
    if truth is not None:
        out["proxy_strength"] = proxy_strength(c, truth, held)
    if args.before is not None:
        out["before_after"] = before_after(c, all_cells(args.before, names), held) | {
            "before": _shown(args.before), "after": _shown(args.out)}
    if args.same_as is not None:
        from fmgauge.weaklabels.decide import RULES_VERSION

        out["same_answers"] = {"studies": same_answers(c, all_cells(args.same_as, names)),
                               "before": _shown(args.same_as), "after": _shown(args.out),
                               "rules_version": RULES_VERSION}
        changes = json.loads(CHANGES.read_text()) if CHANGES.exists() else {}  # one comparison per RULES_VERSION
        CHANGES.write_text(json.dumps(changes | {str(RULES_VERSION): out["same_answers"]}, indent=1))
    RESULTS.write_text(json.dumps(out, indent=1))
    print(RESULTS)


if __name__ == "__main__":
    main()
