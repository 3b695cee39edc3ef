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
    d = (w - g.reindex(w.index.droplevel(0)).to_numpy()).groupby(["labeler", "student", "n_gold"]).mean()
    import sqlite3
    secs = sum(r[0] or 0 for r in sqlite3.connect(f"{run_dir}/trials.sqlite").execute(
        "SELECT seconds FROM trials WHERE status='done' AND config NOT LIKE '%\"kind\": \"rule\"%'"))
    print(json.dumps({
        "seconds": time.time() - t0, "trials": res.summary["meta"]["run"], "trial_seconds": secs,
        "crossovers": [{"labeler": x["labeler"], "student": x["student"], "text": x.get("empirical_text"),
                        "status": x.get("empirical", {}).get("status"), "n_star": x.get("empirical", {}).get("n_star")}
                       for x in res.summary["crossovers"]],
        "delta": [{"labeler": a, "student": b, "n_gold": int(c), "delta": float(v)} for (a, b, c), v in d.items()],
        "gold": [{"student": a, "n_gold": int(b), "auc": float(v)} for (a, b), v in gold.items()],
    }))
'''


def run(args: argparse.Namespace) -> None:
    studies = {"accuracy": {**ACCURACY_STUDY, "rules": False},
               "demo": {"config": str(ROOT / "configs/weaklabels/demo.yaml"), "rules": False},
               "demo-text": {"config": str(ROOT / "configs/weaklabels/demo-text.yaml"), "rules": False}}
    out_path = RESULTS / f"fairness-{args.tag}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fmgauge-fairness-"))
    for name in args.only or list(studies):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT / "src"), help="the src/ directory whose fmgauge to run")
    ap.add_argument("--tag", default="new", help="name of this run's results (fairness-<tag>.json)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=None, help="accuracy,demo,demo-text")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="run directories and caches (default: a fresh tmp dir)")
    ap.add_argument("--render", type=lambda s: s.split(","), default=None, help="OLD,NEW: write the comparison")
    args = ap.parse_args()
    if args.render:
        PART.write_text(render(args.render))
        print(PART)
        return
    run(args)


if __name__ == "__main__":
    main()
