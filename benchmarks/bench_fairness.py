"""Old vs new training budget: crossovers, ΔAUC and gold-only curves of the same studies under two checkouts.

Slow, honest measurement; never run in CI. Each study runs in a fresh Python process whose ``fmgauge`` comes from
``--src`` (this checkout's ``src`` by default, or an older checkout's to reproduce the old rule), into its own
run directory and ``FMGAUGE_CACHE``; only the config fields both versions know are set. Results (crossover per
labeler × student, seed-mean ΔAUC and gold-only AUC per n_gold, timings) go to
``benchmarks/results/fairness-<tag>.json``; ``--render`` writes the comparison of two tags into
``docs/bench-parts/weaklabels-fairness.md``.

    git worktree add /tmp/oldmain <old commit>
    OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --src /tmp/oldmain/src --tag old    # old rule
    OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --tag new                           # this checkout
    python benchmarks/bench_fairness.py --render old,new

Studies: ``accuracy`` — PneumoniaMNIST, simulated random and instance labelers at accuracy 0.70 / 0.85 / 0.95 and
a 0.99 random one, logreg / mlp-w16 / cnn-w4 / resnet-w4, n_gold 10…1000, 5 seeds (the issue's measurement and
the properties ``tests/test_weaklabels_fairness.py`` pins); ``demo`` and ``demo-text`` — the main job's configs.

The logreg studies (issue 23 F: the AdamW ``logreg`` under the step budget vs ``logreg`` solved to convergence),
run under the commit before the change (``--tag logreg-before``) and this one (``--tag logreg-after``):

    git archive 5b0ce00 src | tar -x -C /tmp/before   # the commit before the change
    OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --src /tmp/before/src --tag logreg-before \
        --only logreg,budget
    OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --tag logreg-after --only logreg,penalty
    python benchmarks/bench_fairness.py --render old,new --logreg logreg-before,logreg-after

``logreg`` — PneumoniaMNIST (whole pool, official test split), random labelers at 0.70 / 0.85 / 0.95 / 0.99 and
instance ones at 0.70 / 0.85 / 0.95, the logreg student, n_gold 10…2000, 10 seeds; ``budget`` (why it failed,
before only) — the AdamW logreg at ¼, 1, 4 and 16 times the step budget, gold vs a 99%-accurate labeler at
n_gold 100 / 500 / 2000, 10 seeds; ``penalty`` (after only) — the converged logreg at C = 0.001, 0.01, 0.1 on the same
design.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PART = ROOT / "docs" / "bench-parts" / "weaklabels-fairness.md"
ACCURACY_STUDY = {
    "name": "accuracy", "dataset": "pneumoniamnist",
    "labelers": [{"name": f"{noise}-{a}", "kind": "simulated", "noise": noise, "accuracy": a}
                 for noise in ("random", "instance") for a in (0.70, 0.85, 0.95)]
    + [{"name": "acc99", "kind": "simulated", "noise": "random", "accuracy": 0.99}],
    "students": [{"kind": "logreg"}, {"kind": "mlp", "width": 16}, {"kind": "cnn", "width": 4},
                 {"kind": "resnet", "width": 4, "epochs": 2}],
    "n_gold": [10, 20, 50, 100, 200, 500, 1000], "seeds": 5, "conditions": ["gold", "gold+weak"], "n_boot": 0,
    "cleanlab": False,
}
LOGREG_STUDY = {
    "name": "logreg", "dataset": "pneumoniamnist",
    "labelers": [{"name": f"random-{a}", "kind": "simulated", "noise": "random", "accuracy": a}
                 for a in (0.70, 0.85, 0.95, 0.99)]
    + [{"name": f"instance-{a}", "kind": "simulated", "noise": "instance", "accuracy": a} for a in (0.70, 0.85, 0.95)],
    "students": [{"kind": "logreg"}],
    "n_gold": [10, 20, 50, 100, 200, 500, 1000, 2000], "seeds": 10, "conditions": ["gold", "gold+weak"],
    "n_boot": 0, "cleanlab": False,
}
BUDGET_STEPS = {"x0.25": 74, "x1": 295, "x4": 1180, "x16": 4720}  # the pool's budget is 295 steps
PENALTY_C = (0.001, 0.01, 0.1)
TWO_POINT = {"dataset": "pneumoniamnist", "labelers": [{"name": "acc99", "kind": "simulated", "noise": "random",
                                                        "accuracy": 0.99}],
             "n_gold": [100, 500, 2000], "seeds": 10, "conditions": ["gold", "gold+weak"], "n_boot": 0,
             "cleanlab": False}
BUDGET_STUDY = {**TWO_POINT, "name": "budget",
                "students": [{"kind": "logreg", "name": f"logreg-steps{k}", "steps": v} for k, v in BUDGET_STEPS.items()]}
PENALTY_STUDY = {**TWO_POINT, "name": "penalty",
                 "students": [{"kind": "logreg", "name": f"logreg-c{c:g}", "c": c} for c in PENALTY_C]}
CHILD = r'''
import json, sys, time
import numpy as np
from fmgauge.core.config import load_config
from fmgauge.core.runner import BackendConfig
from fmgauge.weaklabels.study import StudyConfig, calibrate

if __name__ == "__main__":
    spec, run_dir, workers = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if "config" in spec:
        cfg = load_config(StudyConfig, spec["config"])
    else:
        cfg = StudyConfig(**{k: v for k, v in spec.items() if k in StudyConfig.model_fields})
    if "rule_eval" in StudyConfig.model_fields and spec.get("rules") is False:
        cfg = cfg.model_copy(update={"rule_eval": False})
    t0 = time.time()
    res = calibrate(cfg, run_dir, backend=BackendConfig(workers=workers), progress=False, report=False)
    r = res.results
    gold = r[r.condition == "gold"].groupby(["student", "n_gold"]).auc.mean()
    g = r[r.condition == "gold"].set_index(["student", "n_gold", "seed"]).auc
    w = r[r.condition == "gold+weak"].set_index(["labeler", "student", "n_gold", "seed"]).auc
    per_seed = w - g.reindex(w.index.droplevel(0)).to_numpy()  # paired by seed: the same gold set
    d = per_seed.groupby(["labeler", "student", "n_gold"]).mean()
    from fmgauge.core.stats import mean_ci
    d_ci = {k: mean_ci(v.to_numpy()) for k, v in per_seed.groupby(["labeler", "student", "n_gold"])}
    gw = r[r.condition == "gold+weak"].groupby(["labeler", "student", "n_gold"]).auc.mean()
    curve = r[r.condition == "gold"].pivot_table(index="seed", columns=["student", "n_gold"], values="auc")
    gold_steps = []  # paired by seed: nested gold sets
    for st in dict.fromkeys(curve.columns.get_level_values(0)):
        grid = sorted(curve[st].columns)
        for n0, n1 in zip(grid[:-1], grid[1:]):
            e = mean_ci((curve[st][n1] - curve[st][n0]).to_numpy())
            gold_steps.append({"student": st, "from": int(n0), "to": int(n1), "mean": e.value, "lo": e.lo, "hi": e.hi})
    import sqlite3
    secs = sum(r[0] or 0 for r in sqlite3.connect(f"{run_dir}/trials.sqlite").execute(
        "SELECT seconds FROM trials WHERE status='done' AND config NOT LIKE '%\"kind\": \"rule\"%'"))
    print(json.dumps({
        "seconds": time.time() - t0, "trials": res.summary["meta"]["run"], "trial_seconds": secs,
        "crossovers": [{"labeler": x["labeler"], "student": x["student"], "text": x.get("empirical_text"),
                        "status": x.get("empirical", {}).get("status"), "n_star": x.get("empirical", {}).get("n_star")}
                       for x in res.summary["crossovers"]],
        "delta": [{"labeler": a, "student": b, "n_gold": int(c), "delta": float(v), "lo": d_ci[(a, b, c)].lo,
                   "hi": d_ci[(a, b, c)].hi, "gold_weak": float(gw[(a, b, c)])} for (a, b, c), v in d.items()],
        "gold": [{"student": a, "n_gold": int(b), "auc": float(v)} for (a, b), v in gold.items()],
        "gold_steps": gold_steps,
    }))
'''


HEAVY = ("cnn-w8", "cnn-w16", "cnn-w32", "resnet-w16")  # tests/test_weaklabels_fairness.py reads their record
STUDENTS_RECORD = RESULTS / "fairness-students.json"


def run_students(args: argparse.Namespace) -> None:
    """The heavy image students of the shipped configs, under the fairness test's design (a 1,000-item PneumoniaMNIST
    slice, 8 seeds, the near-perfect check at 400 gold labels), in this process; one record per student."""
    import numpy as np

    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.fairness import check, image_slice, measure, plan, shipped_students

    students = {k: v for k, v in shipped_students(ROOT / "configs" / "weaklabels").items()
                if v.display_name() in (args.students or HEAVY)}
    data = image_slice(load_dataset("pneumoniamnist"), 1000)
    out = json.loads(STUDENTS_RECORD.read_text()) if STUDENTS_RECORD.exists() else {}
    for name, st in students.items():
        if name in out and out[name]["student"] == st.model_dump(mode="json"):
            continue
        t0 = time.time()
        cpu = time.process_time()
        aucs = measure(st, data, plan(50, 400, full=False), list(range(8)))
        out[name] = {"student": st.model_dump(mode="json"), "aucs": [[c, n, v.tolist()] for (c, n), v in aucs.items()],
                     "violations": check(aucs), "wall": time.time() - t0, "cpu": time.process_time() - cpu,
                     "mean": {f"{c}@{n}": float(np.mean(v)) for (c, n), v in aucs.items()}}
        merged = json.loads(STUDENTS_RECORD.read_text()) if STUDENTS_RECORD.exists() else {}  # parallel runs
        STUDENTS_RECORD.write_text(json.dumps({**merged, name: out[name]}, indent=1))
        print(f"[students] {name}: {out[name]['wall']:.0f} s, violations {out[name]['violations']}", flush=True)


def choose_c() -> None:
    """logreg's C by 5-fold CV AUC on the clean PneumoniaMNIST pool (never the test split), at 200, 1,000 items
    (seeded subsets) and the whole pool, on the logreg's inputs (pixels scaled to [-2, 2]); scikit-learn's binary
    fit at C = 2c is the softmax fit at c."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from fmgauge.core.data import load_dataset

    tr = load_dataset("pneumoniamnist").split("train")
    x, y = tr.x.reshape(len(tr.y), -1).astype(np.float64) * 4 / 255 - 2, tr.y
    rng = np.random.default_rng(0)
    out = {}
    for n in (200, 1000, len(y)):
        sub = rng.permutation(len(y))[:n]
        for c in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0):
            scores = []
            for a, b in StratifiedKFold(5, shuffle=True, random_state=0).split(x[sub], y[sub]):
                m = LogisticRegression(C=2 * c, max_iter=3000).fit(x[sub][a], y[sub][a])
                scores.append(roc_auc_score(y[sub][b], m.decision_function(x[sub][b])))
            out[f"n={n},c={c:g}"] = float(np.mean(scores))
            print(f"n={n} c={c:g}: {out[f'n={n},c={c:g}']:.4f}", flush=True)
    (RESULTS / "fairness-logreg-c.json").write_text(json.dumps(out, indent=1))


def run(args: argparse.Namespace) -> None:
    if args.only == ["choose-c"]:
        choose_c()
        return
    if args.only == ["students"]:
        run_students(args)
        return
    studies = {"accuracy": {**ACCURACY_STUDY, "rules": False},
               "demo": {"config": str(ROOT / "configs/weaklabels/demo.yaml"), "rules": False},
               "demo-text": {"config": str(ROOT / "configs/weaklabels/demo-text.yaml"), "rules": False},
               "logreg": {**LOGREG_STUDY, "rules": False}, "budget": {**BUDGET_STUDY, "rules": False},
               "penalty": {**PENALTY_STUDY, "rules": False}}
    out_path = RESULTS / f"fairness-{args.tag}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fmgauge-fairness-"))
    for name in args.only or ["accuracy", "demo", "demo-text"]:
        env = {**os.environ, "PYTHONPATH": str(Path(args.src).resolve()), "OMP_NUM_THREADS": "1",
               "FMGAUGE_CACHE": str(work / f"cache-{args.tag}"), "HF_HUB_OFFLINE": "1"}
        child = work / "child.py"
        child.write_text(CHILD)
        t0 = time.time()
        proc = subprocess.run([sys.executable, str(child), json.dumps(studies[name]),
                               str(work / f"{args.tag}-{name}"), str(args.workers)],
                              env=env, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{name} under {args.src} failed:\n{proc.stderr[-3000:]}")
        out[name] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "src": str(args.src),
                     "wall": time.time() - t0}
        out_path.write_text(json.dumps(out, indent=1))
        print(f"[{args.tag}] {name}: {out[name]['wall']:.0f} s", flush=True)


def render(tags: list[str]) -> str:
    data = {t: json.loads((RESULTS / f"fairness-{t}.json").read_text()) for t in tags}
    old, new = tags
    lines = ["# Fair training: crossovers under the old and the new training budget", "",
             f"Commands: `python benchmarks/bench_fairness.py --src <checkout>/src --tag {old}` (the commit before "
             f"the budget rule) and `--tag {new}` (this one), then `--render {old},{new}`. Both on the same data, "
             "seeds and students; only the training rule differs (old: max(min_steps, epochs·n/batch) steps on "
             "each training set; new: the same budget for every condition, cosine decay). The old code draws a "
             "simulated labeler's noise once for all seeds and flips a binomial number of items; the new draws "
             "it per seed and flips an exact number.", ""]
    for study in data[new]:
        if study not in data[old]:
            continue
        o, n = data[old][study], data[new][study]
        lines += [f"## Study `{study}`", "",
                  f"Training cost, the sum of the sweep trials' seconds (1 thread each, 2 workers): "
                  f"{o['trial_seconds']:.0f} s ({old}) vs {n['trial_seconds']:.0f} s ({new}).", "",
                  f"| labeler | student | n* ({old}) | n* ({new}) |", "|---|---|---|---|"]
        oxo = {(x["labeler"], x["student"]): x["text"] for x in o["crossovers"]}
        for x in n["crossovers"]:
            lines.append(f"| {x['labeler']} | {x['student']} | {oxo.get((x['labeler'], x['student']), '–')} | "
                         f"{x['text']} |")
        lines.append("")
        grid = sorted({d["n_gold"] for d in n["gold"]})
        lines += [f"Gold-only test AUC (seed mean), {old} → {new}:", "",
                  "| student | " + " | ".join(map(str, grid)) + " |", "|---|" + "---|" * len(grid)]
        og = {(d["student"], d["n_gold"]): d["auc"] for d in o["gold"]}
        ng = {(d["student"], d["n_gold"]): d["auc"] for d in n["gold"]}
        for st in dict.fromkeys(d["student"] for d in n["gold"]):
            lines.append(f"| {st} | " + " | ".join(
                f"{og.get((st, g), float('nan')):.3f} → {ng[(st, g)]:.3f}" for g in grid) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _ci(d: dict) -> str:
    return f"{d['delta' if 'delta' in d else 'mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def render_logreg(tags: list[str]) -> str:
    """Issue 23 F: the step-budgeted AdamW logreg (``before``) vs logreg solved to convergence (``after``)."""
    before, after = tags
    b = json.loads((RESULTS / f"fairness-{before}.json").read_text())
    a = json.loads((RESULTS / f"fairness-{after}.json").read_text())
    lines = ["## The `logreg` student: from a step budget to a converged fit (issue 23 F)", "",
             f"Commands: `git archive 5b0ce00 src | tar -x -C /tmp/before` (the commit before the change), then "
             f"`OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --src /tmp/before/src --tag {before} --only "
             f"logreg,budget --workers 1` (AdamW under the step budget) and `OMP_NUM_THREADS=1 python "
             f"benchmarks/bench_fairness.py --tag {after} --only logreg,penalty --workers 1` (this checkout: L-BFGS "
             f"to convergence at C = 0.01), then `--render old,new --logreg {before},{after}`. PneumoniaMNIST, the "
             "whole 4,708-image pool, the official 624-image test split, 10 seeds; ΔAUC = AUC(gold+weak) − "
             "AUC(gold) paired by seed (same gold set), 95% t-intervals over seeds. Run 2026-12-06 between 17:55 "
             "and 19:25 UTC on the shared 2-core machine (load average 15–100 from other jobs: read the seconds "
             "as loaded-machine seconds).", ""]
    if "budget" in b and "penalty" in a:
        bd = {(x["student"], x["n_gold"]): x for x in b["budget"]["delta"]}
        bg = {(x["student"], x["n_gold"]): x["auc"] for x in b["budget"]["gold"]}
        pd_ = {(x["student"], x["n_gold"]): x for x in a["penalty"]["delta"]}
        x1, x16 = ("logreg-stepsx1", 500), ("logreg-stepsx16", 500)
        lines += ["### Why: the reading follows the optimiser", "",
                  f"Before, the 99%-accurate labeler's ΔAUC at 500 gold labels is {_ci(bd[x1])} under the shipped "
                  f"budget and {_ci(bd[x16])} at 16 times it: with more steps the pool's gold+weak AUC rises from "
                  f"{bd[x1]['gold_weak']:.4f} to {bd[x16]['gold_weak']:.4f} (the budget leaves the pool fit short of "
                  f"its optimum) while gold-only at 500 — 75 epochs at the shipped budget, 1,200 at 16× — falls from "
                  f"{bg[x1]:.4f} to {bg[x16]:.4f} (a nearly unpenalised fit overfits a small set the longer it "
                  "runs). The step count, not the labels, sets the size of what the weak labels are worth. After, "
                  "the converged fit has one reading per objective; at C = 0.001 / 0.01 / 0.1 its ΔAUC at 500 is "
                  + " / ".join(f"{pd_[(f'logreg-c{c:g}', 500)]['delta']:+.4f}" for c in PENALTY_C)
                  + " (C fixed per student, never per condition).", "",
                  "Gold alone vs gold + a 99%-accurate random labeler at n_gold 100 / 500 / 2,000. Before: the "
                  "AdamW logreg at ¼, 1 (shipped), 4 and 16 times the pool's 295-step budget (every condition "
                  "the same steps). After: the converged fit at C = 0.001, 0.01 (shipped) and 0.1.", "",
                  "| logreg | gold AUC 100 / 500 / 2000 | gold+weak AUC 100 / 500 / 2000 | ΔAUC at 100 | ΔAUC at 500 "
                  "| ΔAUC at 2000 | gold 500 → 2000 |", "|---|---|---|---|---|---|---|"]
        for tag, data, study in ((before, b, "budget"), (after, a, "penalty")):
            d = data[study]
            order = [x["name"] for x in (BUDGET_STUDY if study == "budget" else PENALTY_STUDY)["students"]]
            for st in sorted(dict.fromkeys(x["student"] for x in d["gold"]), key=lambda n: order.index(n)):
                g = {x["n_gold"]: x["auc"] for x in d["gold"] if x["student"] == st}
                dl = {x["n_gold"]: x for x in d["delta"] if x["student"] == st}
                step = next(x for x in d["gold_steps"] if x["student"] == st and x["to"] == 2000)
                grid = sorted(g)
                lines.append(f"| {st} ({tag}) | " + " / ".join(f"{g[n]:.4f}" for n in grid) + " | "
                             + " / ".join(f"{dl[n]['gold_weak']:.4f}" for n in grid) + " | "
                             + " | ".join(_ci(dl[n]) for n in grid) + f" | {_ci(step)} |")
        lines.append("")
    if "logreg" in b and "logreg" in a:
        ob, oa = b["logreg"], a["logreg"]
        lines += ["### The shipped logreg on the issue's labelers, before → after", "",
                  f"Training cost (sum of the trials' seconds, 1 worker): {ob['trial_seconds']:.0f} s ({before}) vs "
                  f"{oa['trial_seconds']:.0f} s ({after}).", "",
                  f"| labeler | n* ({before}) | n* ({after}) |", "|---|---|---|"]
        bx = {x["labeler"]: x["text"] for x in ob["crossovers"]}
        for x in oa["crossovers"]:
            lines.append(f"| {x['labeler']} | {bx.get(x['labeler'], '–')} | {x['text']} |")
        grid = sorted({x["n_gold"] for x in oa["gold"]})
        gb = {x["n_gold"]: x["auc"] for x in ob["gold"]}
        ga = {x["n_gold"]: x["auc"] for x in oa["gold"]}
        db = {x["n_gold"]: x for x in ob["delta"] if x["labeler"] == "random-0.99"}
        da = {x["n_gold"]: x for x in oa["delta"] if x["labeler"] == "random-0.99"}
        sb = {x["to"]: x for x in ob["gold_steps"]}
        sa = {x["to"]: x for x in oa["gold_steps"]}
        lines += ["", "| n_gold | gold AUC | gold+weak(0.99) AUC | ΔAUC(0.99) | gold-only step from the previous n |",
                  "|---|---|---|---|---|"]
        for n in grid:
            lines.append(f"| {n} | {gb[n]:.4f} → {ga[n]:.4f} | {db[n]['gold_weak']:.4f} → {da[n]['gold_weak']:.4f} "
                         f"| {_ci(db[n])} → {_ci(da[n])} | "
                         + (f"{_ci(sb[n])} → {_ci(sa[n])}" if n in sa else "–") + " |")
        lines.append("")
    if STUDENTS_RECORD.exists():
        rec = json.loads(STUDENTS_RECORD.read_text())
        lines += ["### The students too heavy for the test suite", "",
                  "Command: `OMP_NUM_THREADS=1 python benchmarks/bench_fairness.py --only students` (2026-12-06, the "
                  "same loaded machine): the shipped image students that cost from ten seconds to minutes per trial "
                  "on a CPU, under `tests/test_weaklabels_fairness.py`'s design (`weaklabels.fairness`: a 1,000-image "
                  "slice of the PneumoniaMNIST pool, test split + the rest of the pool as the test set, 8 seeds, "
                  "nested gold sets and label flips), near-perfect check at 400 gold labels: ΔAUC of a "
                  "99%-accurate labeler with its 95% interval, which must lie above −0.005. The test checks this "
                  "record against the shipped configs.", "",
                  "| student | gold AUC | gold+weak(0.99) AUC | ΔAUC [95% CI] | violations | wall (s) |",
                  "|---|---|---|---|---|---|"]
        from fmgauge.core.stats import mean_ci

        for name, r in rec.items():
            aucs = {(c, n): v for c, n, v in r["aucs"]}
            d = [w - g for w, g in zip(aucs[("0.99", 400)], aucs[("gold", 400)], strict=True)]
            e = mean_ci(d)
            lines.append(f"| {name} | {r['mean']['gold@400']:.4f} | {r['mean']['0.99@400']:.4f} | {e.value:+.4f} "
                         f"[{e.lo:+.4f}, {e.hi:+.4f}] | {'; '.join(r['violations']) or 'none'} | {r['wall']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT / "src"), help="the src/ directory whose fmgauge to run")
    ap.add_argument("--tag", default="new", help="name of this run's results (fairness-<tag>.json)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=None,
                    help="accuracy,demo,demo-text (the default), logreg, budget, penalty; or students, or choose-c")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--students", type=lambda s: s.split(","), default=None,
                    help="with --only students: these display names only (default: cnn-w8,cnn-w16,cnn-w32,resnet-w16)")
    ap.add_argument("--workdir", default=None, help="run directories and caches (default: a fresh tmp dir)")
    ap.add_argument("--render", type=lambda s: s.split(","), default=None, help="OLD,NEW: write the comparison")
    ap.add_argument("--logreg", type=lambda s: s.split(","), default=None,
                    help="BEFORE,AFTER: with --render, append the logreg comparison (issue 23 F)")
    args = ap.parse_args()
    if args.render:
        PART.write_text(render(args.render) + ("\n" + render_logreg(args.logreg) if args.logreg else ""))
        print(PART)
        return
    run(args)


if __name__ == "__main__":
    main()
