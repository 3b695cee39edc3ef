"""How decide's proxy fits are solved: steps, seconds and distance to the optimum per solver (docs/benchmarks.md §12).
Slow, honest measurement; never run in CI.

On the inputs ``weak-labels decide`` builds (the timing cases of ``bench_sample_gold.py --time``: the README's text
example on sentence embeddings and on TF-IDF, and the image datasets with a simulated labeler; m // K gold labels per class, the rest of the train split
the weak-labelled pool, at most 2,000 items as decide subsamples it, pixels standardised with the pool's statistics),
two groups of fits:

- ``pool + gold folds``: the proxy trained on the weak-labelled pool + the training folds of 2 × stratified 5-fold
  over the gold items (``cv-delta``'s fits), scored on the gold items;
- ``gold, leave-pair-out``: trained on the gold items without one pair (20 pairs), scored on the gold items.

Each group is solved by every solver below in the coordinates it would see, and compared with the optimum (scikit-learn
L-BFGS at tol 1e-12 in principal coordinates): the largest |Δp| over fits, items and classes, the mean solver steps and
the mean wall seconds per fit on one thread.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_proxy_solver.py [--m 100] [--cases retinamnist,...]
    .venv/bin/python benchmarks/bench_proxy_solver.py --render-only   # docs/bench-parts/weaklabels-proxy-solver.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "proxy_solver.json"
PART = ROOT / "docs" / "bench-parts" / "weaklabels-proxy-solver.md"
NEWTON_MAX = 1024  # RULES_VERSION 9 solved fits of at most this many weights with Newton-Cholesky (the gold items')
POOL_9 = "scikit-learn L-BFGS, principal coordinates, warm start (RULES_VERSION 9: the pool's fits)"
GOLD_9 = "scikit-learn Newton-Cholesky, principal coordinates, warm start (RULES_VERSION 9: the gold items' fits)"


def inputs(dataset: str, representation: str, spec: dict, m: int) -> dict:
    """The gold and pool inputs decide builds for ``dataset``: gold = the first m // K train items of each class;
    returns the proxy, the principal coordinates of pool + gold, the labels and the folds."""
    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.decide import dense
    from fmgauge.weaklabels.features import represent
    from fmgauge.weaklabels.labelers import parse_labeler, run_labeler
    from fmgauge.weaklabels.proxy import Proxy, proxy_student, stack_rows, standardiser
    from fmgauge.weaklabels.rules import folds

    ds = load_dataset(dataset)
    pool = ds.split("train")
    weak = run_labeler(parse_labeler(spec), ds, "train").labels
    fx, _ = represent(ds, representation, "train", "train")
    gold = np.concatenate([np.flatnonzero(pool.y == c)[:m // ds.n_classes] for c in range(ds.n_classes)])
    rest = np.setdiff1d(np.arange(len(pool.y)), gold)
    if len(rest) > 2000:  # decide's pool_max, with its seeded subsample
        rest = rest[np.sort(np.random.default_rng([0, 17]).permutation(len(rest))[:2000])]
    xg, xp = dense(fx[gold]), dense(fx[rest])
    if np.ndim(fx) > 2:
        scale = standardiser(xp)
        xg, xp = scale(xg), scale(xp)
    proxy = Proxy(proxy_student(fx, None), 0)
    both = proxy.coordinates(stack_rows(xp, xg))
    return {"proxy": proxy, "k": ds.n_classes, "y": pool.y[gold], "weak": weak[rest], "xp": xp, "xg": xg,
            "zp": both[:len(rest)], "zg": both[len(rest):], "zgold": proxy.coordinates(xg),
            "splits": list(folds(pool.y[gold], ds.n_classes, 2, 0))}


def groups(d: dict) -> dict[str, dict]:
    """The two fit groups: training sets and the rows they are scored on, in original and principal coordinates."""
    from fmgauge.weaklabels.proxy import stack_rows as stack

    y, k = d["y"], d["k"]
    pairs = np.random.default_rng(0).permutation([(i, j) for i in range(len(y)) for j in range(i + 1, len(y))
                                                  if y[i] != y[j]])[:20]
    keep = [np.setdiff1d(np.arange(len(y)), p) for p in pairs]
    return {
        "pool + gold folds": {"train": [(stack(d["xp"], d["xg"][tr]), stack(d["zp"], d["zg"][tr]),
                                         np.concatenate([d["weak"], y[tr]])) for tr, _ in d["splits"]],
                              "test": (d["xg"], d["zg"]), "warm": (d["zp"], d["weak"]), "k": k, "pool": True},
        "gold, leave-pair-out": {"train": [(d["xg"][s], d["zgold"][s], y[s]) for s in keep],
                                 "test": (d["xg"], d["zgold"]), "warm": (d["zgold"], y), "k": k, "pool": False},
    }


def solve(group: dict, c: float) -> list[dict]:
    """Every solver on every fit of ``group``: steps, seconds and |Δp| to the tol-1e-12 optimum."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from fmgauge.weaklabels.convex import logreg_fit

    k = group["k"]

    def sk(x, y, test, *, solver="lbfgs", tol=1e-4, init=None):  # noqa: ANN001, ANN202
        clf = LogisticRegression(C=c, solver=solver, tol=tol, max_iter=100_000, warm_start=init is not None)
        if init is not None:
            clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
        clf.fit(x, y)
        return clf.predict_proba(test), int(np.max(clf.n_iter_)), clf

    out = []
    with threadpool_limits(1):
        exact = [sk(z, y, group["test"][1], tol=1e-12)[0] for _, z, y in group["train"]]
        warm_sk = sk(*group["warm"], group["test"][1])[2]
        warm_pre = logreg_fit(*group["warm"], c)
        weights = (group["train"][0][1].shape[1] + 1) * (1 if k == 2 else k)
        runs = {"scikit-learn L-BFGS, original coordinates (RULES_VERSION ≤ 8)":
                lambda x, z, y: sk(x, y, group["test"][0])[:2]}
        if group["pool"]:
            runs[POOL_9] = lambda x, z, y: sk(z, y, group["test"][1], init=warm_sk)[:2]
        elif weights <= NEWTON_MAX and not hasattr(group["train"][0][1], "toarray"):
            runs[GOLD_9] = lambda x, z, y: sk(z, y, group["test"][1], solver="newton-cholesky", init=warm_sk)[:2]
        runs |= {
            "preconditioned L-BFGS, principal coordinates":
                lambda x, z, y: (lambda f: (f.proba(group["test"][1], k), f.steps))(logreg_fit(z, y, c)),
            "preconditioned L-BFGS, principal coordinates, warm start (RULES_VERSION 10)":
                lambda x, z, y: (lambda f: (f.proba(group["test"][1], k), f.steps))(
                    logreg_fit(z, y, c, init=warm_pre)),
        }
        for name, run in runs.items():
            steps, seconds, err = [], [], 0.0
            for (x, z, y), ref in zip(group["train"], exact, strict=True):
                t0 = time.perf_counter()
                p, n = run(x, z, y)
                seconds.append(time.perf_counter() - t0)
                steps.append(n)
                err = max(err, float(np.abs(p - ref).max()))
            out.append({"solver": name, "fits": len(steps), "steps": float(np.mean(steps)),
                        "seconds": float(np.mean(seconds)), "max_abs_dp": err})
            print(f"  {name}: {out[-1]}", flush=True)
    return out


def run(m: int, cases: list[str] | None) -> None:
    from bench_sample_gold import TIME_CASES

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    for dataset, representation, lab_name, spec in TIME_CASES:
        if cases and dataset not in cases:
            continue
        d = inputs(dataset, representation, spec, m)
        results["rows"] = [r for r in results["rows"] if not (r["dataset"] == dataset and r["m"] == len(d["y"])
                                                              and r["representation"] == representation)]
        for gname, group in groups(d).items():
            print(f"{dataset} m={len(d['y'])} {gname}", flush=True)
            for r in solve(group, d["proxy"].cfg.c):
                results["rows"].append({"dataset": dataset, "representation": representation, "labeler": lab_name,
                                        "classes": d["k"], "m": len(d["y"]), "group": gname,
                                        "dims": [int(group["train"][0][0].shape[1]),
                                                 int(group["train"][0][1].shape[1])],
                                        "items": int(np.mean([len(t[2]) for t in group["train"]])), **r})
        results["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        RESULTS.write_text(json.dumps(results, indent=1))


def render() -> str:
    """docs/bench-parts/weaklabels-proxy-solver.md from proxy_solver.json."""
    from bench_sample_gold import case

    if not RESULTS.exists():
        return ""
    res = json.loads(RESULTS.read_text())
    lines = ["# How the proxy's fits are solved", "",
             f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_proxy_solver.py --m 100` ({res['date']}; "
             "one BLAS thread). The fits one decision makes on the timing cases above, each group solved by every "
             "solver in the coordinates it sees; |Δp|: the largest difference of a probability from the optimum "
             "(scikit-learn L-BFGS at tol 1e-12), over fits, gold items and classes. dims: original / principal "
             "coordinates; items: training items per fit. RULES_VERSION 9 used principal coordinates only where they "
             "were fewer than the original ones and the rows dense or few (the gold items' fits, the pools of "
             "BreastMNIST and RetinaMNIST); on the text pools (sentence embeddings, TF-IDF) and PneumoniaMNIST's its "
             "L-BFGS ran in the original coordinates.", "",
             "| dataset | K | m | fits | items | dims | solver | steps | ms per fit | max abs Δp |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    shown = [r for r in res["rows"] if r["solver"] != (GOLD_9 if r["group"].startswith("pool") else POOL_9)]
    for r in shown:  # (RULES_VERSION 9's solver for the other group is not what it ran on this one)
        lines.append(f"| {case(r)} | {r['classes']} | {r['m']} | {r['group']} ({r['fits']}) | {r['items']} | "
                     f"{r['dims'][0]} / {r['dims'][1]} | {r['solver']} | {r['steps']:.0f} | "
                     f"{1000 * r['seconds']:.1f} | {r['max_abs_dp']:.1e} |")
    worst: dict[str, float] = {}
    for r in shown:
        worst[r["solver"]] = max(worst.get(r["solver"], 0.0), r["max_abs_dp"])
    lines += ["", "Largest |Δp| per solver over every case and group: "
              + "; ".join(f"{name}: {v:.1e}" for name, v in worst.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=100, help="gold items (m // K per class)")
    ap.add_argument("--cases", type=lambda v: v.split(","), default=None, help="datasets of the timing cases")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        run(args.m, args.cases)
    PART.write_text(render())
    print(PART)


if __name__ == "__main__":
    main()
