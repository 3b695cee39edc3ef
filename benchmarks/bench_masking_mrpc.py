"""The full 3 strategies x 5 seeds MRPC comparison on minilm-l6 (a real run; resumable).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_masking_mrpc.py \
        [--config configs/masking/mrpc-minilm-cpu.yaml] [--workers 2]

Trials are committed to the run directory (--out, default runs/bench/masking_mrpc/, git-ignored) as they finish;
re-running resumes. Writes benchmarks/results/<out name>.json (wall time, machine, table), which the docs cite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

from bench_runs import RESULTS, run_dir
from fmgauge.core.config import load_config
from fmgauge.core.runner import BackendConfig
from fmgauge.masking.experiment import CompareConfig, compare

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/masking/mrpc-minilm-cpu.yaml"))
    ap.add_argument("--out", default=str(run_dir("masking_mrpc")))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(CompareConfig, args.config)
    t0 = time.time()
    res = compare(cfg, args.out, backend=BackendConfig(workers=args.workers, threads_per_worker=1))
    wall = time.time() - t0
    out = Path(args.out)
    trials = res.results[res.results.kind == "metrics"]
    record = {
        "command": f"OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_masking_mrpc.py "
                   f"--config {os.path.relpath(args.config, ROOT)} --out {os.path.relpath(args.out, ROOT)} "
                   f"--workers {args.workers}",
        "wall_seconds_this_call": wall, "trial_seconds_sum": float((trials.mlm_seconds + trials.ft_seconds).sum()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "workers": args.workers,
                    "threads_per_worker": 1, "shared": "yes: other jobs ran on the same 2 cores"},
        "summary": {k: res.summary[k] for k in ("verdict", "strategies", "pairs", "majority_baseline",
                                                  "initialised", "trials_done")},
        "run": res.summary["meta"]["run"],
    }
    (RESULTS / f"{out.name}.json").write_text(json.dumps(record, indent=2))
    logging.info("done in %.0f s; report %s", wall, out / "report.html")


if __name__ == "__main__":
    main()
