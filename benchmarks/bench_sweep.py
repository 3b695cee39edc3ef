"""The default sweep end to end: wall time, trials per minute and peak memory of the demo study, then a re-run.

Slow, honest measurement; never run in CI. Runs ``fmgauge.weaklabels.study.calibrate`` on the demo config (what
``fmgauge weak-labels calibrate --config configs/weaklabels/demo.yaml`` runs: local backend, one worker process
per CPU, 1 torch thread each) into a fresh run directory with a fresh ``FMGAUGE_CACHE``, both under /tmp; then runs
it again into the same run directory, where every labeler output and finished trial should be reused. Each run is a
fresh Python process (as a user re-running the command), so the re-run time includes interpreter and import start-up.

Memory, three views:

- driver peak RSS — ``getrusage(RUSAGE_SELF).ru_maxrss`` in the process calling ``calibrate`` (dataset, labelers,
  analysis, report);
- largest worker peak RSS — ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` there: the peak of the single largest finished
  child process (a trial worker), *not* a sum over the workers running side by side (a child forked from the
  driver inherits the driver's peak RSS so far, so this never reads below that);
- peak total PSS — the driver and all its descendants sampled every 0.5 s from /proc (proportional set size:
  shared library pages split between processes), the memory the whole run needs at once.

    PYTHONPATH=src python benchmarks/bench_sweep.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> None:
    """One calibrate run in this process; prints a JSON line with its timings and memory."""
    t_start = time.perf_counter()
    import torch

    import fmgauge
    from fmgauge.core.config import load_config
    from fmgauge.core.runner import BackendConfig
    from fmgauge.weaklabels.study import StudyConfig, calibrate

    t_import = time.perf_counter() - t_start
    cfg = load_config(StudyConfig, args.config)
    t0 = time.perf_counter()
    res = calibrate(cfg, args.run_dir, backend=BackendConfig(workers=args.workers), progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "import_seconds": t_import, "calibrate_seconds": seconds, "stats": res.stats.to_dict(),
        "driver_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "workers": args.workers or os.cpu_count(), "torch": torch.__version__, "fmgauge": fmgauge.__version__,
        "students": [s.display_name() for s in cfg.students], "labelers": [lab.display_name() for lab in cfg.labelers],
        "n_gold": cfg.n_gold, "seeds": cfg.seed_list(), "conditions": cfg.conditions,
    }))


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants, from /proc/<pid>/stat parent links."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        tree += frontier
    return tree


def _measured_run(cmd: list[str], env: dict[str, str]) -> dict:
    """Run one child calibrate; returns its JSON plus wall time and the sampled peak total PSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"pss_kb": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak["pss_kb"] = max(peak["pss_kb"], sum(_pss_kb(p) for p in _tree(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.stderr.write(err)
        raise SystemExit(f"calibrate run failed with exit code {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    return {**res, "process_seconds": wall, "peak_total_pss_kb": peak["pss_kb"]}


def markdown(first: dict, again: dict, meta: dict) -> str:
    mib = 1024
    s1, s2 = first["stats"], again["stats"]

    def row(label: str, r: dict) -> str:
        st = r["stats"]
        tpm = f"{st['trials_per_minute']:.1f}" if st["ran"] else "–"
        return (f"| {label} | {r['process_seconds']:.1f} | {r['calibrate_seconds']:.1f} | {st['seconds']:.1f} | "
                f"{st['ran']} / {st['skipped']} / {st['failed']} | {tpm} | "
                f"{r['driver_maxrss_kb'] / mib:.0f} | {r['children_maxrss_kb'] / mib:.0f} | "
                f"{r['peak_total_pss_kb'] / mib:.0f} |")

    return "\n".join([
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; machine: {meta['machine']}; Python {meta['python']}, torch {first['torch']}, "
        f"fmgauge {first['fmgauge']}; local backend, {first['workers']} worker processes × 1 torch thread",
        f"- study: {len(first['students'])} students × {len(first['labelers'])} labelers × n_gold "
        f"{first['n_gold']} × conditions {first['conditions']}, {len(first['seeds'])} seeds per trial = "
        f"{s1['total']} trials ({s1['total'] * len(first['seeds'])} training runs)",
        f"- load average (1/5/15 min) before {meta['load_before'][0]:.2f}/{meta['load_before'][1]:.2f}/"
        f"{meta['load_before'][2]:.2f}, after {meta['load_after'][0]:.2f}/{meta['load_after'][1]:.2f}/"
        f"{meta['load_after'][2]:.2f}",
        "",
        "| run | process wall (s) | calibrate (s) | trials (s) | ran / reused / failed | trials/min | "
        "driver peak RSS (MiB) | largest worker peak RSS (MiB) | peak total PSS (MiB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        row("first run (fresh cache)", first),
        row("re-run (same run dir)", again),
        "",
        f"calibrate = labelers + sweep + analysis + report; trials = the sweep alone (RunStats). First run: "
        f"{first['calibrate_seconds'] - s1['seconds']:.1f} s outside the sweep; python + imports "
        f"{first['import_seconds']:.1f} s. Re-run: {s2['skipped']} of {s2['total']} trials reused.",
        "",
        "RUSAGE_CHILDREN.ru_maxrss is the largest peak of any finished child, and a child forked from the driver "
        "(the `git rev-parse` for the run's metadata, each spawned worker until its exec) inherits the driver's "
        "peak RSS so far; so it is a worker's own peak only when it exceeds the driver's. A re-run starts no "
        "worker: its figure is the `git` fork.",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "weaklabels" / "demo.yaml"), help="study YAML")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    p.add_argument("--keep", action="store_true", help="keep the /tmp run directory and cache afterwards")
    p.add_argument("--json", default=None, help="also write both runs' figures to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="fmgauge-bench-sweep-"))
    env = {**os.environ, "FMGAUGE_CACHE": str(tmp / "cache")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--config", args.config,
           "--run-dir", str(tmp / "run")] + (["--workers", str(args.workers)] if args.workers else [])
    load_before = os.getloadavg()
    try:
        first = _measured_run(cmd, env)
        again = _measured_run(cmd, env)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {"command": "PYTHONPATH=src python " + " ".join(["benchmarks/bench_sweep.py", *sys.argv[1:]]),
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}",
            "load_before": load_before, "load_after": os.getloadavg(), "tmp": str(tmp)}
    if args.json:
        Path(args.json).write_text(json.dumps({"first": first, "rerun": again, **meta}, indent=1))
    print(markdown(first, again, meta))


if __name__ == "__main__":
    main()
