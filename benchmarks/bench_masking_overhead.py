"""Typhoon's overhead per MLM training step vs random masking, on minilm-l6 with MRPC text (target <= 1.6x).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_masking_overhead.py [--steps 12]

One step = collate a batch (masking) + forward + backward + AdamW step, as inside HF Trainer. Typhoon reads the
embedding gradients from that same backward pass through hooks (no extra backward); the random step uses
transformers' DataCollatorForLanguageModeling. Steps alternate between the two strategies on the same batches of
examples so background load hits both alike; both wall time and this process's CPU time are recorded (CPU time is
the robust figure on a shared machine). Typhoon's optional warm start (one dedicated forward/backward per warm
batch) is timed separately. Writes benchmarks/results/masking_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fmgauge.masking.experiment import load_mlm, tokenize_split
from fmgauge.masking.strategies import MaskingConfig, make_strategy
from fmgauge.masking.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per strategy")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/masking_overhead.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    os.environ.setdefault("FMGAUGE_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
    tm = load_mlm("minilm-l6", device="cpu")
    model, tok = tm.model, tm.tokenizer
    items = tokenize_split(tok, load_task("mrpc").split("train"), args.max_length)
    ids = [it["input_ids"] for it in items]
    cfg = MaskingConfig(rate=0.3)
    setups = {s: make_strategy(s, tok, cfg, ids, 0) for s in ("random", "typhoon")}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    model.train()
    rng = np.random.default_rng(0)

    def step(name: str, batch_items: list[dict]) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        batch = setups[name].collator(batch_items)
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - w0, time.process_time() - c0

    state = setups["typhoon"].state
    warm_items = [items[j] for j in rng.choice(len(items), args.batch, replace=False)]
    w0, c0 = time.perf_counter(), time.process_time()
    warm_batch = setups["typhoon"].collator(warm_items)
    state.warm_start(model, [warm_batch])
    warm = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
    times: dict[str, list[tuple[float, float]]] = {"random": [], "typhoon": []}
    step("random", warm_items)  # untimed: first-call allocations
    for k in range(args.steps):
        batch_items = [items[j] for j in rng.choice(len(items), args.batch, replace=False)]
        order = ("random", "typhoon") if k % 2 == 0 else ("typhoon", "random")
        for name in order:
            if name == "typhoon":
                state.attach(model)
            times[name].append(step(name, batch_items))
            state.detach()
        print(f"step {k + 1}/{args.steps}: random {times['random'][-1][1]:.2f} s cpu, "
              f"typhoon {times['typhoon'][-1][1]:.2f} s cpu", flush=True)
    med = {n: {"wall": float(np.median([t[0] for t in v])), "cpu": float(np.median([t[1] for t in v]))}
           for n, v in times.items()}
    record = {
        "command": f"OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_masking_overhead.py "
                   f"--steps {args.steps}",
        "model": "minilm-l6 (BertForMaskedLM, head initialised)", "batch": args.batch,
        "max_length": args.max_length, "steps_per_strategy": args.steps, "threads": torch.get_num_threads(),
        "median_seconds_per_step": med,
        "ratio_typhoon_over_random": {k: med["typhoon"][k] / med["random"][k] for k in ("wall", "cpu")},
        "typhoon_updates": state.steps_, "warm_start_one_batch_seconds": warm,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "shared": "yes: other jobs ran on the same 2 cores"},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record["ratio_typhoon_over_random"]), json.dumps(med))


if __name__ == "__main__":
    main()
