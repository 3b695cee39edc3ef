"""Does labelling a stratified gold set (``fmgauge weak-labels sample-gold``) make ``decide`` better at m = 20?
(docs/benchmarks.md §12). Slow, honest measurement; never run in CI.

For each text labeler below (Medical Abstracts one-vs-rest: the hurting labelers of
benchmarks/configs/rules-hurt-digestive.yaml and the shipped minilm-l6 labelers of demo-text and ovr-digestive) and
seeds 0..S-1, two gold sets of m items are drawn from the pool:

- ``random``: a simple random sample of m items (what a user labels without a design); when it holds fewer than 2
  items of a class ``decide`` refuses it (counted), and the user labels random items until it holds 2 (the sweep's
  ``gold_order`` does exactly that: its first m items);
- ``stratified``: ``sample_gold`` (√ allocation over the labeler's classes, design weights passed to ``decide``);
  topped up the same way if a true class has fewer than 2 items.

``decide`` (the default rule and fallback) runs on each with the weak-labelled rest of the pool, and two students
(sk-logreg on minilm-l6 embeddings, c = 1; on TF-IDF, c = 10) are trained on the gold set alone and on gold + weak
(the rest of the pool with its weak labels) and scored on the test split: regret = the better AUC − the chosen
one's. Paired over (labeler, seed): the regret difference stratified − random with a bootstrap CI, and the error of
the labeler's estimated accuracy and positive-class precision against the truth on the pool.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sample_gold.py --seeds 8
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sample_gold.py --time [--tag T]   # decide's cost
    .venv/bin/python benchmarks/bench_sample_gold.py --render-only   # docs/bench-parts/weaklabels-decide.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sample_gold.json"
GOLD_BIAS_PART = ROOT / "docs" / "bench-parts" / "weaklabels-gold-bias.md"  # written by bench_gold_bias.py
SOLVER_PART = ROOT / "docs" / "bench-parts" / "weaklabels-proxy-solver.md"  # written by bench_proxy_solver.py
POOR = {"minilm-poor-heart": [["a medical abstract."], ["heart failure and myocardial infarction in patients."]],
        "minilm-poor-vague": [["a medical abstract about a disease."], ["a clinical study of patients."]]}
LABELERS = {
    ("medical-abstracts-digestive", "minilm-l6"): {"kind": "text-embedding", "model": "minilm-l6", "max_length": 128},
    ("medical-abstracts-neoplasms", "minilm-l6"): {"kind": "text-embedding", "model": "minilm-l6", "max_length": 128},
    **{("medical-abstracts-digestive", n): {"kind": "text-embedding", "model": "minilm-l6", "max_length": 128,
                                            "class_descriptions": d} for n, d in POOR.items()},
    ("medical-abstracts-digestive", "simulated-cc-rare"): {"kind": "simulated", "noise": "class-conditional",
                                                           "transition": [[0.55, 0.45], [0.30, 0.70]]},
    ("medical-abstracts-digestive", "simulated-chance"): {"kind": "simulated", "noise": "random", "accuracy": 0.5},
}
STUDENTS = (("embed:minilm-l6", 1.0), ("tfidf", 10.0))


def top_up(gold: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Add random pool items until every class has 2 gold items; returns the set and how many were added."""
    gold = list(gold)
    added = 0
    order = rng.permutation(len(y))
    for i in order:
        if min(np.bincount(y[gold], minlength=2)) >= 2:
            break
        if i not in gold and np.bincount(y[gold], minlength=2)[y[i]] < 2:
            gold.append(int(i))
            added += 1
    return np.array(gold), added


def one(ds_name: str, lab_name: str, seed: int, m: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.decide import Pool, decide
    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.labelers import parse_labeler, run_labeler
    from fmgauge.weaklabels.sample_gold import sample_gold

    ds = load_dataset(ds_name)
    pool, test = ds.split("train"), ds.split("test")
    cfg = {**LABELERS[(ds_name, lab_name)], "name": lab_name}
    out = run_labeler(parse_labeler(cfg), ds, "train")
    weak, y = out.labels, pool.y
    rng = np.random.default_rng([seed, 101])
    srs = rng.choice(len(y), m, replace=False)
    designs = {"random": (srs, None, bool(min(np.bincount(y[srs], minlength=2)) >= 2))}
    d = sample_gold(weak, m, 2, seed=seed)
    designs["stratified"] = (d.index, d.weights, bool(min(np.bincount(y[d.index], minlength=2)) >= 2))
    truth_acc = float((weak == y).mean())
    truth_prec = float(y[weak == 1].mean()) if (weak == 1).any() else float("nan")
    from fmgauge.weaklabels.decide import RULES_VERSION

    row: dict = {"dataset": ds_name, "labeler": lab_name, "seed": seed, "m": m, "truth_accuracy": truth_acc,
                 "truth_precision_pos": truth_prec, "rules_version": RULES_VERSION}
    for name, (gold, w, ok) in designs.items():
        gold, added = top_up(gold, y, rng)
        if w is not None and added:
            w = np.concatenate([w, np.ones(added) * w.mean()])
        rest = np.setdiff1d(np.arange(len(y)), gold)
        res = {"runnable_as_drawn": ok, "added": added, "positives": int(y[gold].sum())}
        for feat, c in STUDENTS:
            xp, xt = represent(ds, feat, "train", "test")
            t0 = time.process_time()
            dec = decide(xp[gold], y[gold], out.probs[gold], weak[gold], pool=Pool(xp[rest], weak[rest]),
                         weights=w, seed=seed, curve=False,
                         rules=("accuracy", "auc", "cv-delta", "delta-worth", "weak-student"))
            cpu = time.process_time() - t0
            lab = np.concatenate([weak[rest], y[gold]])
            a_g = roc_auc_score(test.y, LogisticRegression(C=c, max_iter=2000).fit(xp[gold], y[gold])
                                .predict_proba(xt)[:, 1])
            a_gw = roc_auc_score(test.y, LogisticRegression(C=c, max_iter=2000).fit(
                xp[np.concatenate([rest, gold])], lab).predict_proba(xt)[:, 1])
            best = max(a_g, a_gw)
            s = dec.labeler_summary
            res[feat] = {"choice": dec.choice, "verdict": dec.verdict, "auc_g": a_g, "auc_gw": a_gw,
                         "regret": best - (a_gw if dec.choice == "use-weak-labels" else a_g),
                         "regret_weak": best - a_gw, "regret_gold": best - a_g, "cpu": cpu,
                         "gold_auc_est": dec.gold_auc.value,
                         "acc_est": s.accuracy.value, "prec_est": s.precision[1].value}
        row[name] = res
    return row


def run(args: argparse.Namespace) -> None:
    from fmgauge.weaklabels.decide import RULES_VERSION

    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    done["rows"] = [r for r in done["rows"] if r.get("rules_version") == RULES_VERSION]  # decided as decide now does
    have = {(r["dataset"], r["labeler"], r["seed"], r["m"]) for r in done["rows"]}
    for (ds_name, lab), _ in LABELERS.items():
        for seed in range(args.seeds):
            if (ds_name, lab, seed, args.m) in have:
                continue
            t0 = time.time()
            done["rows"].append(one(ds_name, lab, seed, args.m))
            from fmgauge.weaklabels.rule_eval import DEFAULT_POLICY

            done.update({"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0],
                         "policy": DEFAULT_POLICY})
            RESULTS.write_text(json.dumps(done, indent=1))
            print(f"{ds_name} {lab} seed {seed}: {time.time() - t0:.0f} s", flush=True)


def render() -> str:
    data = json.loads(RESULTS.read_text())
    rows = data["rows"]
    rng = np.random.default_rng(0)
    lines = ["### sample-gold at m = 20: a stratified gold set against a random one", "",
             "Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sample_gold.py "
             f"--seeds {max(r['seed'] for r in rows) + 1}` ({data['date']}, load average {data['load']:.1f} on 2 "
             "cores). Per labeler, mean over seeds × the two students (sk-logreg on minilm-l6 / TF-IDF); regret of "
             f"the choice of `decide`'s default when this ran ({data.get('policy', 'delta-worth acting on its lean')}"
             "; §8); 'as drawn' = the share of gold sets with 2 items of each class before any top-up (decide "
             "refuses the others).", "",
             "| labeler | as drawn: random / stratified | positives: random / stratified | regret: random / "
             "stratified | always-weak / always-gold | accuracy error: random / stratified |", "|---|---|---|---|---|---|"]
    diffs = []
    for (ds_name, lab) in LABELERS:
        rs = [r for r in rows if r["labeler"] == lab and r["dataset"] == ds_name]
        if not rs:
            continue
        feats = [f for f, _ in STUDENTS]

        def mean(design: str, key: str, rs=rs, feats=feats) -> float:
            return float(np.mean([r[design][f][key] for r in rs for f in feats]))

        acc_err = {d: float(np.mean([abs(r[d][feats[0]]["acc_est"] - r["truth_accuracy"]) for r in rs]))
                   for d in ("random", "stratified")}
        diffs += [r["stratified"][f]["regret"] - r["random"][f]["regret"] for r in rs for f in feats]
        lines.append(
            f"| {lab} ({ds_name.removeprefix('medical-abstracts-')}) | "
            f"{np.mean([r['random']['runnable_as_drawn'] for r in rs]):.0%} / "
            f"{np.mean([r['stratified']['runnable_as_drawn'] for r in rs]):.0%} | "
            f"{np.mean([r['random']['positives'] for r in rs]):.1f} / "
            f"{np.mean([r['stratified']['positives'] for r in rs]):.1f} | "
            f"{mean('random', 'regret'):.4f} / {mean('stratified', 'regret'):.4f} | "
            f"{mean('random', 'regret_weak'):.4f} / {mean('random', 'regret_gold'):.4f} | "
            f"{acc_err['random']:.3f} / {acc_err['stratified']:.3f} |")
    diffs = np.asarray(diffs)
    boots = [diffs[rng.integers(0, len(diffs), len(diffs))].mean() for _ in range(2000)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    cpu = [r[d][f]["cpu"] for r in rows for d in ("random", "stratified") for f, _ in STUDENTS]
    lines += ["", f"Pooled over labelers, seeds and students (n = {len(diffs)} paired cells): regret stratified − "
                  f"random = {diffs.mean():+.4f} AUC [{lo:+.4f}, {hi:+.4f}] (bootstrap over cells). decide's CPU "
                  f"time per call here: median {np.median(cpu):.1f} s, max {np.max(cpu):.1f} s.", ""]
    return "\n".join(lines)


TIMING = ROOT / "benchmarks" / "results" / "decide_timing.json"
PART = ROOT / "docs" / "bench-parts" / "weaklabels-decide.md"


TIME_CASES = (  # (dataset, representation, labeler name, labeler spec): what decide's cost is measured on
    ("medical-abstracts-neoplasms", "embed:minilm-l6", "minilm-l6",
     LABELERS[("medical-abstracts-neoplasms", "minilm-l6")]),
    ("medical-abstracts-neoplasms", "tfidf", "minilm-l6", LABELERS[("medical-abstracts-neoplasms", "minilm-l6")]),
    ("pneumoniamnist", "raw", "simulated-random 0.85", {"kind": "simulated", "noise": "random", "accuracy": 0.85}),
    ("breastmnist", "raw", "simulated-random 0.8", {"kind": "simulated", "noise": "random", "accuracy": 0.8}),
    ("retinamnist", "raw", "simulated-random 0.45", {"kind": "simulated", "noise": "random", "accuracy": 0.45}),
)


def time_decide(sizes: tuple[int, ...] = (20, 50, 100), tag: str = "current", cases: list[str] | None = None,
                fresh: bool = False, note: str = "") -> None:
    """CPU and wall time of `fmgauge weak-labels decide` at each m on TIME_CASES (the README's text example on sentence
    embeddings and on TF-IDF, and the shipped image datasets, 2 to 5 classes): the whole command (a fresh process: imports, reading files, the
    decision; it imports fmgauge from PYTHONPATH, so a checkout of an older commit there measures that commit) and
    decide() alone (in-process, after a warm-up call). Gold sets: the first m // K pool items of each class. The
    run is stored under ``tag`` beside earlier runs (decide_timing.json), row by row: a run stopped and started
    again with the same tag keeps its rows and measures the rest (``fresh``: drops them first). ``cases``: datasets
    of TIME_CASES to measure; ``note``: a sentence stored with the run (what it measured, why it stopped)."""
    import resource
    import subprocess
    import sys
    import tempfile

    import pandas as pd

    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.decide_files import decide_from_files
    from fmgauge.weaklabels.labelers import parse_labeler, run_labeler

    runs = [r for r in timing_runs() if not (fresh and r["tag"] == tag)]
    run = next((r for r in runs if r["tag"] == tag), None)
    if run is None:
        run = {"tag": tag, "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "pythonpath": os.environ.get("PYTHONPATH", ""), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "rows": []}
        runs.append(run)
    if note:
        run["note"] = note
    rows = run["rows"]
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, representation, lab_name, spec in TIME_CASES:
            if cases and dataset not in cases:
                continue
            ds = load_dataset(dataset)
            pool = ds.split("train")
            out = run_labeler(parse_labeler(spec), ds, "train")
            lab = Path(tmp) / f"{dataset}-outputs.csv"
            pd.DataFrame({"id": out.ids, "label": [ds.class_names[k] for k in out.labels],
                          **{f"p_{c}": out.probs[:, k] for k, c in enumerate(ds.class_names)}}).to_csv(lab, index=False)
            for m in sizes:
                gold = pd.DataFrame({"id": pool.ids, "label": [ds.class_names[k] for k in pool.y]})
                gold = gold.groupby("label").head(m // ds.n_classes)
                if any(case(r) == case({"dataset": dataset, "representation": representation}) and r["m"] == len(gold)
                       for r in rows):
                    continue
                gpath = Path(tmp) / f"{dataset}-gold{m}.csv"
                gold.to_csv(gpath, index=False)
                options = dict(dataset=dataset, split="train", representation=representation)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                load0, t0 = os.getloadavg()[0], time.time()
                proc = subprocess.run([sys.executable, "-m", "fmgauge", "weak-labels", "decide", "--gold", str(gpath),
                                       "--labeler-outputs", str(lab), "--dataset", dataset, "--split", "train",
                                       "--representation", representation, "--json", str(Path(tmp) / "d.json")],
                                      capture_output=True, text=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if proc.returncode:
                    raise SystemExit(proc.stderr)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                wall = time.time() - t0
                d = json.loads((Path(tmp) / "d.json").read_text())
                decide_from_files(gpath, lab, **options)  # warm: files, features, imports
                c0, w0 = time.process_time(), time.time()
                decide_from_files(gpath, lab, **options)
                rows.append({"dataset": dataset, "representation": representation, "labeler": lab_name,
                             "classes": ds.n_classes, "m": len(gold), "command_cpu": cpu, "command_wall": wall,
                             "decide_cpu": time.process_time() - c0, "decide_wall": time.time() - w0,
                             "load": [load0, os.getloadavg()[0]], "verdict": d["verdict"], "choice": d["choice"]})
                print(rows[-1], flush=True)
                TIMING.write_text(json.dumps({"runs": runs}, indent=1))


def timing_runs() -> list[dict]:
    """The stored timing runs (decide_timing.json); a file from before runs were tagged is one run of the text
    example, tagged by its date."""
    if not TIMING.exists():
        return []
    t = json.loads(TIMING.read_text())
    if "runs" in t:
        return t["runs"]
    rows = [{"dataset": "medical-abstracts-neoplasms", "representation": "embed:minilm-l6", "labeler": "minilm-l6",
             "classes": 2, **r} for r in t["rows"]]
    return [{"tag": t["date"], "date": t["date"], "pythonpath": "", "omp_num_threads": "1", "rows": rows}]


def case(row: dict) -> str:
    """A timing row's case: its dataset, and its representation where that is not the dataset's first one
    (TIME_CASES; raw pixels, or the README example's sentence embeddings)."""
    first = next(rep for ds, rep, _, _ in TIME_CASES if ds == row["dataset"])
    return row["dataset"] if row.get("representation", first) == first else f"{row['dataset']} ({row['representation']})"


def budget_lines(run: dict, budget: float = 5.0) -> list[str]:
    """Issue 23's budget (decide at m ≤ 100 under 5 s on 2 cores) read off one timing run: per dataset the largest
    wall time of the decision alone, and what the whole command adds (starting Python, imports, reading the data)."""
    worst: dict[str, float] = {}
    command: dict[str, float] = {}
    for r in run["rows"]:
        if r["m"] <= 100:
            worst[case(r)] = max(worst.get(case(r), 0.0), r["decide_wall"])
            command[case(r)] = max(command.get(case(r), 0.0), r["command_wall"])
    within = [f"{d} (≤ {w:.1f} s)" for d, w in worst.items() if w < budget]
    over = [f"{d} (up to {w:.1f} s)" for d, w in worst.items() if w >= budget]
    extra = float(np.median([r["command_wall"] - r["decide_wall"] for r in run["rows"]]))
    return [f"In `{run['tag']}` the decision alone stays under {budget:g} s of wall time at every m ≤ 100 on "
            + (", ".join(within) or "no dataset") + (f"; not on {', '.join(over)}" if over else "")
            + f". The whole command adds a median {extra:.1f} s to it: starting Python, the imports (scikit-learn, "
            "scipy and pandas; torch too before the labelers' package stopped importing it where no model runs), "
            "reading the data and the labeler's file (and TF-IDF's matrices, fitted on a first run, read from the "
            "cache later); its wall time at m ≤ 100, at most: "
            + ", ".join(f"{d} {w:.1f} s" for d, w in command.items()) + "."]


def render_part() -> str:
    """docs/bench-parts/weaklabels-decide.md: estimator bias per study and n_gold (from rules.json), sample-gold
    (sample_gold.json) and decide's timing (decide_timing.json)."""
    lines = ["# 12. decide's estimates, sample-gold and decide's cost (`benchmarks/bench_sample_gold.py`, "
             "`benchmarks/bench_rules.py`)", ""]
    rules = ROOT / "benchmarks" / "results" / "rules.json"
    data = json.loads(rules.read_text()) if rules.exists() else {}
    if data:
        lines += ["### The gold-only AUC estimate against the students' realised gold-only test AUC", "",
                  "From the suite of §8 (same runs, same command): for every study, n_gold and seed, the rules' "
                  "estimate (the converged sk-logreg proxy on the student's representation: leave-pair-out floored "
                  "at 0.5 below 200 gold items, pooled repeated 5-fold from 200 on; from the m gold items alone) "
                  "minus each student's realised gold-only test AUC on the same gold set. Per study and n_gold: the "
                  "median over students of |mean error over 5 seeds|, and in brackets the same for the student the "
                  "proxy mirrors (sk-logreg on the same features, or the torch logreg on pixels). Five gold sets "
                  "cannot resolve a bias of a few hundredths (one gold set's error has an SD of 0.10–0.19 at m = 20, "
                  "below): the goal is judged on the many-gold-set measurement that follows the table.", ""]
        grid = sorted({b["n_gold"] for d in data.values() for b in (d["rule_eval"] or {}).get("gold_bias", [])})
        lines += ["| study | " + " | ".join(f"m = {m}" for m in grid) + " |", "|---|" + "---|" * len(grid)]
        for name, d in data.items():
            gb = (d["rule_eval"] or {}).get("gold_bias", [])
            if not gb:
                continue
            cells = []
            for m in grid:
                at = [b for b in gb if b["n_gold"] == m]
                if not at:
                    cells.append("–")
                    continue
                med = float(np.median([abs(b["bias"]["value"]) for b in at]))
                mirror = [b for b in at if "sk-logreg" in b["student"] or b["student"] == "logreg"]
                mir = "" if not mirror else " (" + ", ".join(f"{b['bias']['value']:+.3f}" for b in mirror) + ")"
                cells.append(f"{med:.3f}{mir}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        per_ds: dict[str, dict[int, float]] = {}  # studies on one dataset share their gold sides: count it once
        for d in data.values():
            for m in grid:
                at = [abs(b["bias"]["value"]) for b in (d["rule_eval"] or {}).get("gold_bias", []) if b["n_gold"] == m]
                if at:
                    per_ds.setdefault(d["dataset"], {})[m] = float(np.median(at))
        lines.append("| **median over datasets** | " + " | ".join(
            f"**{np.median([v[m] for v in per_ds.values() if m in v]):.3f}**" if any(m in v for v in per_ds.values())
            else "–" for m in grid) + " |")
        if GOLD_BIAS_PART.exists():  # benchmarks/bench_gold_bias.py: the bias over hundreds of gold sets per study
            part = GOLD_BIAS_PART.read_text().splitlines()[1:]  # without its title; its headings one level deeper
            lines += ["", *("#" + ln if ln.startswith("#") else ln for ln in part)]
        lines.append("")
    if RESULTS.exists():
        lines += [render(), ""]
    runs = timing_runs()
    if runs:
        lines += ["### decide's cost", "",
                  "Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sample_gold.py --time [--tag T]`: "
                  "`weak-labels decide` on the README's text example (`--dataset medical-abstracts-neoplasms "
                  "--representation embed:minilm-l6`, the minilm-l6 labeler's outputs on the 2,021-abstract pool; "
                  "the same on `--representation tfidf`) and "
                  "on the shipped image datasets (`--representation raw`, a simulated labeler's outputs on the train "
                  "split), m // K gold labels per class: the whole command as a fresh process (CPU seconds: user + "
                  "system of the process and its children; wall seconds) and the decision alone (`decide_from_files` "
                  "in-process after a warm-up call: reading the files and features plus every rule), with the load "
                  "average of the shared 2-core machine before and after (on a loaded machine the wall time measures "
                  "the other work too). OMP_NUM_THREADS as given (unset: what a user runs).", ""]
        cols = [r["tag"] for r in runs]
        for r in runs:
            lines.append(f"- `{r['tag']}`: {r['date']}, OMP_NUM_THREADS={r.get('omp_num_threads') or 'unset'}"
                         + (f", PYTHONPATH={r['pythonpath']}" if r.get("pythonpath") else "")
                         + (f". {r['note']}" if r.get("note") else ""))
        lines += ["", "decide() alone, wall seconds (CPU seconds) per run (–: not measured in that run):", "",
                  "| dataset | K | m | " + " | ".join(f"`{c}`" for c in cols) + " | whole command, last run: CPU s "
                  "/ wall s | verdict (last run) |", "|---|---|---|" + "---|" * len(cols) + "---|---|"]
        keys = sorted({(case(r), r["classes"], r["m"]) for run in runs for r in run["rows"]},
                      key=lambda k: (k[1], k[0], k[2]))
        for key in keys:
            at = [next((r for r in run["rows"] if (case(r), r["classes"], r["m"]) == key), None) for run in runs]
            last = next(r for r in reversed(at) if r is not None)
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(
                "–" if r is None else f"{r['decide_wall']:.1f} ({r['decide_cpu']:.1f})" for r in at)
                + f" | {last['command_cpu']:.1f} / {last['command_wall']:.1f} | {last['choice']} "
                f"({last['verdict']}) |")
        full = [r for r in runs if {case(x) for x in r["rows"]} >= {case({"dataset": c[0], "representation": c[1]})
                                                                      for c in TIME_CASES}]
        lines += ["", *budget_lines(full[-1])] if full else []
        lines.append("")
    if SOLVER_PART.exists():  # benchmarks/bench_proxy_solver.py: how the proxy's fits are solved
        lines += ["#" + ln if ln.startswith("#") else ln for ln in SOLVER_PART.read_text().splitlines()] + [""]
    if data:
        demo = {n: data[n] for n in ("demo-text", "demo") if n in data and data[n].get("rule_cpu")}
        if demo:
            lines += ["### The demo's rule evaluation", "",
                      "`make demo` now operates `decide` at every n_gold of both studies' grids (before: n_gold ≤ 100). "
                      "What those rule trials cost, from each trial's own CPU time in the §8 runs of the demo's two "
                      "configs (a loaded machine: CPU seconds, not wall):", "",
                      "| study | rule trials | CPU s in all | grid evaluated | students in that run |",
                      "|---|---|---|---|---|"]
            for n, d in demo.items():
                c = d["rule_cpu"]
                lines.append(f"| {n} | {c['trials']} | {c['cpu_seconds']:.0f} | "
                             f"{', '.join(c['by_n_gold'])} | {', '.join(d['students'])} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--time", action="store_true", help="time decide on the README's example and the image datasets")
    ap.add_argument("--tag", default="current", help="with --time: the name the run is stored under")
    ap.add_argument("--sizes", type=lambda v: tuple(int(x) for x in v.split(",")), default=(20, 50, 100),
                    help="with --time: the gold-set sizes m")
    ap.add_argument("--cases", type=lambda v: v.split(","), default=None,
                    help=f"with --time: datasets of {[c[0] for c in TIME_CASES]}")
    ap.add_argument("--fresh", action="store_true", help="with --time: measure the tag's rows again")
    ap.add_argument("--note", default="", help="with --time: a sentence stored with the run")
    args = ap.parse_args()
    if args.time:
        time_decide(args.sizes, tag=args.tag, cases=args.cases, fresh=args.fresh, note=args.note)
    elif not args.render_only:
        run(args)
    PART.write_text(render_part())
    print(PART)


if __name__ == "__main__":
    main()
