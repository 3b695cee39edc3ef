"""Seed batching: train the S seeds of a trial together vs a plain loop of one seed at a time, on the demo grid.

Slow, honest measurement; never run in CI. For every trial of the demo study's grid (its students × n_gold × its
seeds, conditions ``gold`` and ``gold+weak`` on the real PneumoniaMNIST pool) it times

(i)  ``train_predict(..., seeds)`` — all S seeds in one seed-batched run, and
(ii) ``train_predict(..., [seed])`` called once per seed — the one-run-at-a-time loop,

on the same inputs, in one process with 1 torch thread (as the runner's workers use). Both are timed in wall-clock
and in process CPU time (robust to other processes on the machine); their order alternates from trial to trial.
The weak labels are simulated: 25% of the pool's labels flipped with a seeded generator (timing does not depend on
which labels are wrong). The demo runs its gold+weak trials once per labeler (2×) and adds a ``weak`` condition;
this benchmark runs each gold+weak trial once.

    PYTHONPATH=src python benchmarks/bench_students.py                      # full grid, ~10 min on 2 cores
    PYTHONPATH=src python benchmarks/bench_students.py --quick              # n_gold 10, 200, 2000 only
    PYTHONPATH=src python benchmarks/bench_students.py --impl benchmarks/baselines/students_vmap.py  # the old one

Prints a Markdown report (the tables in docs/benchmarks.md); ``--json`` also saves every trial's timings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_students")


def load_impl(path: str | None) -> ModuleType:
    """The training module to time: fmgauge's, or another file defining StudentConfig and train_predict."""
    if path is None:
        from fmgauge.weaklabels import training

        return training
    spec = importlib.util.spec_from_file_location("bench_students_impl", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}"


def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict:
    import torch

    from fmgauge.core.config import load_config
    from fmgauge.core.data import load_dataset
    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.study import StudyConfig
    from fmgauge.weaklabels.sweep import training_sets

    torch.set_num_threads(1)
    impl = load_impl(args.impl)
    study = load_config(StudyConfig, args.config)
    n_gold = [10, 200, 2000] if args.quick else study.n_gold
    seeds = study.seed_list()
    ds = load_dataset(study.dataset)
    pool, test = ds.split(study.pool_split), ds.split(study.test_split)
    k = ds.n_classes
    rng = np.random.default_rng(0)
    flip = rng.random(len(pool.y)) < 0.25
    weak = np.where(flip, (pool.y + rng.integers(1, k, len(pool.y))) % k, pool.y)

    records = []
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    for st in study.students:
        cfg = impl.StudentConfig(**st.model_dump())
        name = st.display_name()
        # warm-up (one-off allocator and oneDNN set-up) outside the timings, for both paths
        impl.train_predict(cfg.model_copy(update={"min_steps": 2, "epochs": 0.01}), pool.x[None, :64].repeat(
            len(seeds), 0), pool.y[None, :64].repeat(len(seeds), 0), test.x[:64], seeds, k)
        impl.train_predict(cfg.model_copy(update={"min_steps": 2, "epochs": 0.01}), pool.x[None, :64],
                           pool.y[None, :64], test.x[:64], seeds[:1], k)
        # the sweep's budget rule: every condition runs budget_steps(cfg, pool) steps (--budget own: the old
        # per-training-set budget, for implementations without a steps argument)
        kw = {"steps": impl.budget_steps(cfg, len(pool.y))} if args.budget == "pool" else {}
        for cond in ("gold", "gold+weak"):
            for n in n_gold:
                idx, labels = training_sets(cond, pool.y, weak, n, seeds, k)
                x = pool.x[idx]

                def batched(x=x, labels=labels, cfg=cfg, kw=kw):
                    return impl.train_predict(cfg, x, labels, test.x, seeds, k, **kw)

                def loop(x=x, labels=labels, cfg=cfg, kw=kw):
                    return np.concatenate([impl.train_predict(cfg, x[r:r + 1], labels[r:r + 1], test.x, [s], k,
                                                              **kw) for r, s in enumerate(seeds)])

                if len(records) % 2 == 0:
                    (pb, wb, cb), (pl, wl, cl) = timed(batched), timed(loop)
                else:
                    (pl, wl, cl), (pb, wb, cb) = timed(loop), timed(batched)
                auc_b = [auc(test.y, p[:, 1] if k == 2 else p) for p in pb]
                auc_l = [auc(test.y, p[:, 1] if k == 2 else p) for p in pl]
                rec = {"student": name, "condition": cond, "n_gold": n, "n_train": int(idx.shape[1]),
                       "batched_wall": wb, "loop_wall": wl, "batched_cpu": cb, "loop_cpu": cl,
                       "auc_batched": auc_b, "auc_loop": auc_l}
                records.append(rec)
                log.info("%-9s %-9s n=%-5d batched %6.2fs  loop %6.2fs  x%.2f  (cpu x%.2f)", name, cond, n, wb,
                         wl, wl / wb, cl / cb)
    return {
        "command": "PYTHONPATH=src python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "threads": torch.get_num_threads(), "impl": args.impl or "fmgauge.weaklabels.training", "budget": args.budget,
        "grid": {"students": [s.display_name() for s in study.students], "n_gold": n_gold, "seeds": seeds,
                 "conditions": ["gold", "gold+weak"], "dataset": ds.name, "pool": len(pool), "test": len(test)},
        "quick": args.quick, "load_before": load0, "load_after": os.getloadavg(),
        "elapsed": time.perf_counter() - t_start, "trials": records,
    }


def _sums(rows: list[dict]) -> tuple[float, float, float, float]:
    return tuple(sum(r[key] for r in rows) for key in ("batched_wall", "loop_wall", "batched_cpu", "loop_cpu"))


def markdown(res: dict) -> str:
    g = res["grid"]
    lines = [
        f"- command: `{res['command']}`",
        f"- date: {res['date']}; machine: {res['machine']}; Python {res['python']}, torch {res['torch']}, "
        f"{res['threads']} torch thread; implementation: `{res['impl']}`",
        f"- grid: {len(g['students'])} students × n_gold {g['n_gold']} × conditions {g['conditions']}, "
        f"{len(g['seeds'])} seeds per trial = {len(res['trials'])} trials on {g['dataset']} (pool {g['pool']}, "
        f"test {g['test']}){' — QUICK SUBSET' if res['quick'] else ''}",
        f"- load average (1/5/15 min) before {res['load_before'][0]:.2f}/{res['load_before'][1]:.2f}/"
        f"{res['load_before'][2]:.2f}, after {res['load_after'][0]:.2f}/{res['load_after'][1]:.2f}/"
        f"{res['load_after'][2]:.2f}; benchmark took {res['elapsed'] / 60:.1f} min",
        "",
        "| student | condition | trials | batched (s) | loop (s) | speed-up (wall) | speed-up (CPU) | mean abs ΔAUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, cond: str, rows: list[dict]) -> str:
        bw, lw, bc, lc = _sums(rows)
        dauc = np.mean([abs(a - b) for r in rows for a, b in zip(r["auc_batched"], r["auc_loop"], strict=True)])
        return (f"| {label} | {cond} | {len(rows)} | {bw:.1f} | {lw:.1f} | {lw / bw:.2f}× | {lc / bc:.2f}× | "
                f"{dauc:.4f} |")

    for st in g["students"]:
        mine = [r for r in res["trials"] if r["student"] == st]
        for cond in g["conditions"]:
            lines.append(row(st, cond, [r for r in mine if r["condition"] == cond]))
        lines.append(row(f"**{st}**", "both", mine))
    for cond in g["conditions"]:
        lines.append(row("all students", cond, [r for r in res["trials"] if r["condition"] == cond]))
    lines.append(row("**total**", "both", res["trials"]))
    return "\n".join(lines)


def before_after(res: dict, base: dict) -> str:
    """Per student: this run's batched and loop totals against another run's (same grid), e.g. an older impl."""
    lines = [
        f"- before: `{base['command']}` ({base['date']}, implementation `{base['impl']}`)",
        f"- after: `{res['command']}` ({res['date']}, implementation `{res['impl']}`)",
        "",
        "| student | batched before (s) | batched after (s) | gain | loop before (s) | loop after (s) | gain | "
        "after batched vs before loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    key = {(r["student"], r["condition"], r["n_gold"]) for r in res["trials"]}
    if key != {(r["student"], r["condition"], r["n_gold"]) for r in base["trials"]}:
        raise SystemExit("--baseline-json holds a different grid; run both with the same --config/--quick.")
    for st in [*res["grid"]["students"], None]:
        now = [r for r in res["trials"] if st is None or r["student"] == st]
        then = [r for r in base["trials"] if st is None or r["student"] == st]
        bw, lw, _, _ = _sums(now)
        bw0, lw0, _, _ = _sums(then)
        lines.append(f"| {st or '**total**'} | {bw0:.1f} | {bw:.1f} | {bw0 / bw:.2f}× | {lw0:.1f} | {lw:.1f} | "
                     f"{lw0 / lw:.2f}× | {lw0 / bw:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "weaklabels" / "demo.yaml"),
                   help="study YAML whose students, n_gold and seeds form the grid (default: the demo)")
    p.add_argument("--quick", action="store_true", help="only n_gold 10, 200, 2000 (a subset; say so if recorded)")
    p.add_argument("--impl", default=None,
                   help="time train_predict from this file instead of fmgauge's (e.g. an older students.py)")
    p.add_argument("--budget", choices=["pool", "own"], default="pool",
                   help="pool: every condition runs the study's budget (the sweep's rule); own: each training "
                        "set's own max(min_steps, epochs*n/batch) (the rule before; needed for --impl baselines)")
    p.add_argument("--json", default=None, help="also write every trial's timings to this JSON file")
    p.add_argument("--baseline-json", default=None,
                   help="also print a before/after table against another run's --json (same grid)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    res = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(markdown(res))
    if args.baseline_json:
        print("\n" + before_after(res, json.loads(Path(args.baseline_json).read_text())))


if __name__ == "__main__":
    main()
