"""What `make demo` costs (docs/benchmarks.md §7), measured without `make` (which re-points the shared venv).

Slow, honest measurement; never run in CI. ``--run`` runs the Makefile's demo command (the same arguments, the
environment the Makefile exports: OMP_NUM_THREADS=1, HF_HUB_OFFLINE=1) under ``/usr/bin/time -v`` into a fresh run
directory with a fresh ``FMGAUGE_CACHE`` (so every embedding, labeler output and trial is computed), then
summarises; ``--summarise`` reads an existing log and run directory. The summary — wall and CPU seconds of the whole
command, the load average before, and per study: trials run and reused, trial seconds per student and condition,
the decision-rule trials' CPU seconds — is appended to ``benchmarks/results/demo_time.json`` and printed as a
markdown table.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_demo.py --run --out runs/bench/demo-time
    .venv/bin/python benchmarks/bench_demo.py --summarise /tmp/demo.log runs/bench/demo-r2 --load 1.88
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo_time.json"
CONFIGS = ["configs/weaklabels/demo-text.yaml", "configs/weaklabels/demo.yaml"]  # the Makefile's demo target


def parse_time(log: str) -> dict:
    """Wall, user and system seconds, CPU share and peak RSS from ``/usr/bin/time -v`` output."""
    def field(name: str) -> str:
        m = re.search(rf"^\s*{re.escape(name)}: (.+)$", log, flags=re.M)
        if m is None:
            raise SystemExit(f"no '{name}' in the log: was the command run under /usr/bin/time -v?")
        return m.group(1).strip()

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": wall, "user_s": float(field("User time (seconds)")),
            "system_s": float(field("System time (seconds)")), "cpu_share": field("Percent of CPU this job got"),
            "max_rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024,
            "exit": int(field("Exit status"))}


def phases(log: str, wall: float, start: str | None = None) -> dict:
    """Wall seconds of each phase, from the progress lines' HH:MM:SS stamps: before each study's trials (models,
    embeddings, labelling: one process), its trials (the worker pool), and after them (analysis, reports).
    ``start``: the command's start time (HH:MM:SS; default the first stamp, which comes after the imports)."""
    def sec(stamp: str) -> int:
        h, m, s_ = (int(v) for v in stamp.split(":"))
        return h * 3600 + m * 60 + s_

    stamps = [(sec(m.group(1)), m.group(2)) for m in re.finditer(r"^(\d\d:\d\d:\d\d) (.*)$", log, flags=re.M)]
    if not stamps:
        return {}
    t0 = sec(start) if start else stamps[0][0]
    out, last, begun = {}, t0, t0
    for t, text in stamps:
        m = re.match(r"(\S+): trials: started", text)
        if m:
            out[f"{m.group(1)}: before its trials"] = t - last
            begun = t
        m = re.match(r"(\S+): trials \d+/\d+ \(100%\).*done", text)
        if m:
            out[f"{m.group(1)}: trials"] = t - begun
            last = t
    out["after the last trials"] = t0 + wall - last
    return out


def study(run_dir: Path) -> dict:
    """One study's trials: counts, sweep trial seconds by student × condition, rule trials' CPU seconds."""
    import pandas as pd

    summary = json.loads((run_dir / "summary.json").read_text())
    res = pd.read_parquet(run_dir / "results.parquet")  # 'seconds' = the trial's seconds / its seeds, per seed row
    sweep = res.groupby(["student", "condition"]).seconds.sum()
    out = {"run": summary["meta"]["run"], "study_seconds": summary["meta"]["seconds"],
           "created": summary["meta"]["created"], "sweep_trial_seconds": float(res.seconds.sum()),
           "sweep_by_student": {s: float(g.sum()) for s, g in sweep.groupby(level=0)},
           "sweep_by_student_condition": {f"{s} / {c}": float(v) for (s, c), v in sweep.items()}}
    rp = run_dir / "rules.parquet"
    if rp.exists():
        rr = pd.read_parquet(rp).drop_duplicates(["labeler", "features", "n_gold", "seed"])
        out["rule_trials"] = int(len(rr))
        out["rule_cpu_seconds"] = float(rr.cpu_seconds.sum())
        out["rule_cpu_by_n_gold"] = {str(int(m)): float(g.cpu_seconds.sum()) for m, g in rr.groupby("n_gold")}
        out["rule_cpu_by_features"] = {f: float(g.cpu_seconds.sum()) for f, g in rr.groupby("features")}
    return out


def summarise(log_path: Path, out: Path, *, load: float | None, command: str, start: str | None = None) -> dict:
    studies = {d.name: study(d) for d in sorted(out.iterdir()) if (d / "summary.json").exists()}
    finished = max((s["created"] for s in studies.values()), default=dt.datetime.now().isoformat(timespec="minutes"))
    row = {"date": f"finished {finished.replace('T', ' ')[:16]}", "command": command, "load_before": load,
           "machine": f"{os.cpu_count()} cores", **parse_time(log_path.read_text()), "studies": studies}
    row["phases"] = phases(log_path.read_text(), row["wall_s"], start)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    data["runs"].append(row)
    RESULTS.write_text(json.dumps(data, indent=1))
    return row


def table(row: dict) -> str:
    load = "unknown" if row["load_before"] is None else f"{row['load_before']:.2f}"
    lines = [f"Command: `{row['command']}` ({row['date']}, load average {load} before, "
             f"{row['machine']}).", "",
             "| part | trials (run / reused) | seconds |", "|---|---|---|",
             f"| whole command | – | **{int(row['wall_s'] // 60)} min {row['wall_s'] % 60:.0f} s wall**; CPU "
             f"{row['user_s'] + row['system_s']:.0f} s (user {row['user_s']:.0f} + system {row['system_s']:.0f}; "
             f"{row['cpu_share']} of one core); peak RSS {row['max_rss_mb']:.0f} MB |"]
    for name, s in row["studies"].items():
        per = ", ".join(f"{k} {v:.0f}" for k, v in sorted(s["sweep_by_student"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| `{name}` | {s['run']['ran']} / {s['run']['skipped']} | study {s['study_seconds']:.0f} s wall "
                     f"(trials {s['run']['seconds']:.0f} s); sweep trial-seconds {s['sweep_trial_seconds']:.0f} "
                     f"({per}); rule trials: {s.get('rule_trials', 0)}, CPU {s.get('rule_cpu_seconds', 0):.0f} s |")
    if row.get("phases"):
        lines += ["", "Wall seconds by phase (from the log's time stamps): " + "; ".join(
            f"{k} {v:.0f}" for k, v in row["phases"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run the demo command under /usr/bin/time -v first")
    ap.add_argument("--out", default="runs/bench/demo-time", help="run directory (--run: must not exist)")
    ap.add_argument("--summarise", nargs=2, metavar=("LOG", "RUN_DIR"), help="an existing time log and run dir")
    ap.add_argument("--load", type=float, default=None, help="--summarise: the load average before the run")
    ap.add_argument("--command", default=None, help="--summarise: the command that was timed")
    ap.add_argument("--start", default=None, help="--summarise: when it started (HH:MM:SS, as the log stamps)")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "fmgauge", "weak-labels", "calibrate", *sum((["--config", c] for c in CONFIGS), []),
           "--out", args.out]
    if args.run:
        out = ROOT / args.out
        if out.exists():
            raise SystemExit(f"--out {out} exists: the measurement needs a fresh run directory.")
        cache = tempfile.mkdtemp(prefix="fmgauge-demo-cache-")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "FMGAUGE_CACHE": cache}
        log = Path(cache + ".log")
        load = os.getloadavg()[0]
        start = dt.datetime.now().strftime("%H:%M:%S")
        with log.open("w") as f:
            subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                           check=True)
        shutil.rmtree(cache, ignore_errors=True)
        row = summarise(log, out, load=load, command="FMGAUGE_CACHE=<fresh> /usr/bin/time -v " + " ".join(
            ["python", *cmd[1:]]), start=start)
    elif args.summarise:
        row = summarise(Path(args.summarise[0]), ROOT / args.summarise[1], load=args.load,
                        command=args.command or " ".join(["python", *cmd[1:]]), start=args.start)
    else:
        raise SystemExit("give --run or --summarise LOG RUN_DIR.")
    print(table(row))


if __name__ == "__main__":
    main()
