"""Contamination benchmarks on the real smollm2-135m (CPU): scoring throughput, exchangeability cost, planted power.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py throughput
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py exchangeability
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py power
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py power-method \
        --method full --items 64 [--with-base]

``power-method`` (LoRA vs full fine-tuning) writes ``contamination_power_<method>_n<items>.json``; run one process
per method side by side (one thread each), ``--with-base`` on one of them for the un-fine-tuned model's rows.

Each part writes ``benchmarks/results/contamination_<part>.json`` (partial results as they go; a rerun skips what is
there) and ``docs/bench-parts/contamination.md`` is rendered from those files by the ``markdown`` part.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_runs import run_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "smollm2-135m"


def _machine() -> dict:
    load = os.getloadavg()
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_avg_1m_at_start": round(load[0], 2),
            "note": "machine shared with other jobs during the run (2 cores)"}


def _load(part: str) -> dict:
    p = RESULTS / f"contamination_{part}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save(part: str, obj: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"contamination_{part}.json").write_text(json.dumps(obj, indent=1))


def throughput() -> None:
    """Tokens/s of token-statistics scoring: batched (token budget 2048) vs one item at a time."""
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.scoring import token_stats
    from fmgauge.core.text_models import load_text_model

    res = _load("throughput") or {"machine": _machine(), "runs": {}}
    tm = load_text_model(MODEL, device="cpu")
    for bench, split, n in (("slake-en", "test", 64), ("glue-mrpc", "dev", 32)):
        b = load_benchmark(bench, split, max_items=n)
        for mode, kw in (("one-at-a-time", {"batch_size": 1}), ("batched", {"max_batch_tokens": 2048})):
            key = f"{bench}/{split}/{n}/{mode}"
            if key in res["runs"]:
                continue
            token_stats(tm, b.texts[:2], cache=False, **kw)  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            st = token_stats(tm, b.texts, cache=False, **kw)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            res["runs"][key] = {"benchmark": bench, "split": split, "items": n, "mode": mode,
                                "tokens": int(st.n_tokens.sum()) + n, "seconds": dt, "cpu_seconds": cpu,
                                "tokens_per_s": (int(st.n_tokens.sum()) + n) / dt,
                                "load_avg_1m_after": round(os.getloadavg()[0], 2)}
            print(key, res["runs"][key], flush=True)
            _save("throughput", res)


def exchangeability() -> None:
    """Measured small runs of the sharded test, projected to (50, 250), against the straightforward scorer.

    Setups: SLAKE-En train (4,918 examples, ~2,000 tokens per shard: the reference 5,000-example configuration)
    and SLAKE-En test (1,061 examples, the split an audit tests: ~420 tokens per shard).
    """
    from fmgauge.core.text_models import load_text_model

    res = _load("exchangeability") or {"machine": _machine(), "setups": {}}
    tm = load_text_model(MODEL, device="cpu")
    for split in ("train", "test"):
        key = f"slake-en/{split}"
        if "speedup_bf16_cpu_time" not in res["setups"].get(key, {}).get("projection", {}):
            res["setups"][key] = _exchangeability_setup(tm, split, res["setups"].get(key, {}),
                                                        lambda r, key=key: _save_setup(res, key, r))
    _save("exchangeability", res)


def _save_setup(res: dict, key: str, r: dict) -> None:
    res["setups"][key] = r
    _save("exchangeability", res)


def _exchangeability_setup(tm, split: str, r: dict, save) -> dict:  # noqa: ANN001
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.exchangeability import sequence_logprobs, shard_bounds

    b = load_benchmark("slake-en", split)
    n = min(5000, len(b))
    bounds = shard_bounds(n, 50)
    enc = tm.tokenizer([t + "\n" for t in b.texts[:n]], add_special_tokens=False)["input_ids"]
    shard_tokens = [sum(len(enc[i]) for i in range(a, c)) for a, c in bounds]
    r["setup"] = {"benchmark": f"slake-en/{split}", "examples": n, "shards": 50, "permutations": 250,
                  "context": 2048, "stride": 1024, "max_batch_tokens": 8192,
                  "mean_shard_tokens": float(np.mean(shard_tokens)), "max_shard_tokens": int(max(shard_tokens))}
    # shard 0, 1 canonical + 7 random orders: fmgauge scores all 8 (batched), then the straightforward scorer the
    # first 4 again, right after (same machine conditions for both)
    rng = np.random.default_rng(0)
    a, c = bounds[0]
    shard = enc[a:c]
    orders = [np.arange(len(shard))] + [rng.permutation(len(shard)) for _ in range(7)]
    seqs = torch.tensor([[t for i in o for t in shard[i]] for o in orders])
    if "ours" not in r:
        t0, c0 = time.perf_counter(), time.process_time()
        ours = sequence_logprobs(tm.model, seqs, context=2048, stride=1024, max_batch_tokens=8192)
        dt = time.perf_counter() - t0
        r["ours"] = {"sequences": len(seqs), "seconds": dt, "cpu_seconds": time.process_time() - c0,
                     "s_per_sequence": dt / len(seqs), "load_avg_1m_after": round(os.getloadavg()[0], 2),
                     "logprobs": ours.tolist()}
        print(split, "ours", r["ours"], flush=True)
        save(r)
    if "naive" not in r:
        n_naive = 4
        t0, c0 = time.perf_counter(), time.process_time()
        naive = [_naive_logprob(tm.model, seqs[j: j + 1]) for j in range(n_naive)]
        dt = time.perf_counter() - t0
        r["naive"] = {"sequences": n_naive, "seconds": dt, "cpu_seconds": time.process_time() - c0,
                      "s_per_sequence": dt / n_naive, "load_avg_1m_after": round(os.getloadavg()[0], 2),
                      "max_abs_diff_vs_ours": float(np.max(np.abs(np.array(naive) - r["ours"]["logprobs"][:4])))}
        print(split, "naive", r["naive"], flush=True)
    if "ours_bf16" not in r:  # the same batched scorer with bfloat16 weights (--dtype bfloat16)
        from fmgauge.core.text_models import load_text_model

        tm16 = load_text_model(MODEL, device="cpu", dtype="bfloat16")
        t0, c0 = time.perf_counter(), time.process_time()
        lp16 = sequence_logprobs(tm16.model, seqs, context=2048, stride=1024, max_batch_tokens=8192)
        dt = time.perf_counter() - t0
        lp32 = np.array(r["ours"]["logprobs"])
        r["ours_bf16"] = {"sequences": len(seqs), "seconds": dt, "cpu_seconds": time.process_time() - c0,
                          "s_per_sequence": dt / len(seqs), "load_avg_1m_after": round(os.getloadavg()[0], 2),
                          "max_abs_diff_vs_float32": float(np.max(np.abs(lp16 - lp32))),
                          "canonical_minus_perm_mean": [float(lp32[0] - lp32[1:].mean()),
                                                        float(lp16[0] - lp16[1:].mean())]}
        print(split, "ours bf16", r["ours_bf16"], flush=True)
        del tm16
        save(r)
    total = 50 * 251
    o, nv = r["ours"], r["naive"]
    r["projection"] = {"sequences": total, "hours_ours": total * o["s_per_sequence"] / 3600,
                       "hours_ours_cpu_time": total * o["cpu_seconds"] / o["sequences"] / 3600,
                       "hours_naive": total * nv["s_per_sequence"] / 3600,
                       "speedup_wall": nv["s_per_sequence"] / o["s_per_sequence"],
                       "speedup_cpu_time": (nv["cpu_seconds"] / nv["sequences"]) / (o["cpu_seconds"] / o["sequences"]),
                       "hours_bf16_cpu_time": total * r["ours_bf16"]["cpu_seconds"] / r["ours_bf16"]["sequences"] / 3600,
                       "speedup_bf16_cpu_time": (nv["cpu_seconds"] / nv["sequences"])
                       / (r["ours_bf16"]["cpu_seconds"] / r["ours_bf16"]["sequences"])}
    print(split, "projection", r["projection"], flush=True)
    save(r)
    return r


@torch.no_grad()
def _naive_logprob(model, x: torch.Tensor, context: int = 2048, stride: int = 1024) -> float:  # noqa: ANN001
    """The straightforward scorer: one sequence per forward, full logits, full log-softmax, sliding windows."""
    from fmgauge.contamination.scoring import windows

    total = 0.0
    for s, e, ft in windows(x.shape[1], context, stride):
        lp = torch.log_softmax(model(input_ids=x[:, s:e]).logits[0, :-1].double(), -1)  # (e − s − 1, V)
        tgt = x[0, ft:e]
        total += float(lp[torch.arange(ft - s - 1, e - s - 1), tgt].sum())
    return total


def power() -> None:
    """Plant SLAKE-en test items into smollm2-135m (LoRA) at duplication 1, 4, 16; power of every detector."""
    from fmgauge.contamination.plant import PlantConfig, plant, plant_power

    res = _load("power") or {"machine": _machine()}
    out = Path(os.environ.get("FMGAUGE_CACHE", Path.home() / ".cache" / "fmgauge")) / "contamination-planted-smollm2"
    cfg = PlantConfig(model=MODEL, benchmark="slake-en", split="test", items_per_group=32, duplications=[1, 4, 16],
                      doc_items=8, method="lora", lr=1e-3, batch_size=4, device="cpu")
    if not (out / "plant.json").exists():
        plant(cfg, out)
    res["plant"] = {k: v for k, v in json.loads((out / "plant.json").read_text()).items() if k != "losses"}
    _save("power", res)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = plant_power(out, exchangeability_permutations=10, device="cpu", progress=False)
    res["power_seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    res["power"] = summary
    _save("power", res)
    print(json.dumps(summary["table"], indent=1), flush=True)


def power_method(argv: list[str]) -> None:
    """Plant SLAKE-en test items into smollm2-135m with one method (its default lr unless ``--lr``) at duplication
    1, 4, 16 and measure every detector's power on the planted model (and, ``--with-base``, on the base model)."""
    import argparse

    from fmgauge.contamination.plant import PlantConfig, plant, plant_power

    ap = argparse.ArgumentParser(prog="bench_contamination.py power-method")
    ap.add_argument("--method", choices=["lora", "full"], required=True)
    ap.add_argument("--items", type=int, default=64, help="Distinct items per group.")
    ap.add_argument("--permutations", type=int, default=10, help="Exchangeability permutations per shard.")
    ap.add_argument("--with-base", action="store_true", help="Also the un-fine-tuned model's rows.")
    ap.add_argument("--lr", type=float, default=None, help="Learning rate (default: the method's).")
    a = ap.parse_args(argv)
    part = f"power_{a.method}_n{a.items}" + ("" if a.lr is None else f"_lr{a.lr:g}")
    res = _load(part) or {"machine": _machine()}
    out = Path(os.environ.get("FMGAUGE_CACHE", Path.home() / ".cache" / "fmgauge")) / f"contamination-{part}"
    cfg = PlantConfig(model=MODEL, benchmark="slake-en", split="test", items_per_group=a.items,
                      duplications=[1, 4, 16], doc_items=8, method=a.method, lr=a.lr, batch_size=4, device="cpu")
    if not (out / "plant.json").exists():
        plant(cfg, out)
    man = json.loads((out / "plant.json").read_text())
    res["plant"] = {k: v for k, v in man.items() if k != "losses"}
    res["loss_first_last"] = [float(np.mean(man["losses"][:5])), float(np.mean(man["losses"][-5:]))]
    res["command"] = f"benchmarks/bench_contamination.py power-method {' '.join(argv)}"
    _save(part, res)
    print(part, "planted in", res["plant"]["seconds"], "s", flush=True)
    roles = ["planted", "base"] if a.with_base else ["planted"]
    if res.get("power", {}).get("roles") == roles:
        return
    t0, c0 = time.perf_counter(), time.process_time()
    summary = plant_power(out, exchangeability_permutations=a.permutations, device="cpu", progress=False,
                          roles=roles)
    res["power_seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    res["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    res["power"] = summary
    _save(part, res)
    print(part, json.dumps(summary["table"], indent=1), flush=True)


RUNS = ROOT / "runs" / "bench" / "contamination"  # planted checkpoints (git-ignored)
MRPC = {"benchmark": "glue-mrpc-sentences", "split": "train", "group_by": "pair", "duplications": [1, 4, 16]}


def power_mrpc(argv: list[str]) -> None:
    """Plant GLUE MRPC sentences (a paraphrase corpus; the two sentences of a pair are one unit, ``--group-by
    pair``; ``--benchmark`` another corpus to compare texts) into smollm2-135m with one schedule, then every detector's power for the planted and the base model
    and their paired difference (``plant_power``). A checkpoint already under ``runs/bench/contamination/<name>``
    with the same plant config is reused."""
    import argparse

    from fmgauge.contamination.plant import PlantConfig, plant, plant_power

    ap = argparse.ArgumentParser(prog="bench_contamination.py power-mrpc")
    ap.add_argument("--name", required=True, help="Run name (checkpoint folder and results file).")
    ap.add_argument("--method", choices=["lora", "full"], required=True)
    ap.add_argument("--doc-items", type=int, required=True, help="Items per training document.")
    ap.add_argument("--items", type=int, default=64, help="Items per group.")
    ap.add_argument("--lr", type=float, default=None, help="Learning rate (default: the method's).")
    ap.add_argument("--batch", type=int, default=4, help="Documents per optimiser step.")
    ap.add_argument("--permutations", type=int, default=0, help="Exchangeability permutations (0: skip).")
    ap.add_argument("--dups", default="1,4,16", help="Duplication counts, comma-separated.")
    ap.add_argument("--benchmark", default=MRPC["benchmark"], help="Another corpus to compare texts.")
    ap.add_argument("--split", default=MRPC["split"])
    ap.add_argument("--group-by", default=MRPC["group_by"], help="Unit column, or 'none'.")
    a = ap.parse_args(argv)
    part = f"power_mrpc_{a.name}"
    res = _load(part) or {"machine": _machine()}
    out = RUNS / a.name
    cfg = PlantConfig(model=MODEL, items_per_group=a.items, method=a.method, lr=a.lr, doc_items=a.doc_items,
                      batch_size=a.batch, device="cpu",
                      benchmark=a.benchmark, split=a.split,
                      group_by=None if a.group_by == "none" else a.group_by,
                      duplications=[int(d) for d in a.dups.split(",")])
    if (out / "plant.json").exists():
        have = json.loads((out / "plant.json").read_text())["config"]
        keys = ("benchmark", "split", "group_by", "duplications", "items_per_group", "method", "lr", "doc_items",
                "batch_size", "seed")
        if any(have[k] != cfg.model_dump()[k] for k in keys):
            raise SystemExit(f"{out} holds a plant with another config; pick another --name.")
    else:
        plant(cfg, out)
    man = json.loads((out / "plant.json").read_text())
    res["plant"] = {k: v for k, v in man.items() if k != "losses"}
    res["loss_first_last"] = [float(np.mean(man["losses"][:5])), float(np.mean(man["losses"][-5:]))]
    res["command"] = f"benchmarks/bench_contamination.py power-mrpc {' '.join(argv)}"
    _save(part, res)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = plant_power(out, exchangeability_permutations=a.permutations, device="cpu", roles=("planted", "base"))
    res["power_seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    res["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    res["power"] = summary
    res["draws"] = _draw_spread(out, man)
    _save(part, res)
    print(part, "saved", flush=True)


def _draw_spread(out: Path, man: dict, reps: int = 400) -> dict:
    """How much the group draw alone moves an AUROC: the never-trained items (clean + cohort groups: pairs) split
    at random into two disjoint groups of n pairs, Min-K%++ AUROC of one vs the other under the base model (raw)
    and planted − base (paired), sd over ``reps`` splits, for each n. Token statistics come from the cache."""
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.mink import detectors, item_scores, member_scores
    from fmgauge.contamination.power import mann_whitney_auc
    from fmgauge.contamination.scoring import token_stats
    from fmgauge.core.text_models import load_text_model

    det = detectors(0.2)["minkpp"]
    benches = [load_benchmark(man["groups"][g]["benchmark"], "all") for g in ("clean", "cohort")]
    texts = [t for b in benches for t in b.texts]
    units = [f"{i}/{u}" for i, b in enumerate(benches) for u in b.column("group")]
    sc = {}
    for role, src in (("planted", str(out)), ("base", man["base_model"])):
        tm = load_text_model(src, device="cpu")
        sc[role] = np.concatenate([member_scores(item_scores(token_stats(tm, b.texts, progress=False), b.texts, b.ids,
                                                             ks=(0.2,)), det) for b in benches])
        del tm
    pairs: dict[str, list[int]] = {}
    for i, u in enumerate(units):
        pairs.setdefault(u, []).append(i)
    plist = list(pairs.values())
    rng = np.random.default_rng(0)
    out_rows = {}
    for n in sorted({n for n in (8, 16, len(plist) // 2) if 2 * n <= len(plist)}):
        raw, paired = [], []
        for _ in range(reps):
            perm = rng.permutation(len(plist))
            a = np.concatenate([plist[j] for j in perm[:n]])
            b = np.concatenate([plist[j] for j in perm[n: 2 * n]])
            ab = mann_whitney_auc(sc["base"][a], sc["base"][b])
            ap = mann_whitney_auc(sc["planted"][a], sc["planted"][b])
            raw.append(ab)
            paired.append(ap - ab)
        out_rows[str(2 * n)] = {"items_per_group": 2 * n, "pairs_per_group": n, "sd_base_auroc": float(np.std(raw)),
                                "sd_delta_auroc": float(np.std(paired))}
    return {"detector": "minkpp", "reps": reps, "texts": len(texts), "rows": list(out_rows.values())}


def packing_analysis(argv: list[str]) -> None:
    """Where in an item the planted model's gain sits: per planted run (``--names``), per group, the mean gain in
    log p (planted − base) of each item's first 3 scored tokens and of the rest, and the share of the Min-K%++
    (k = 0.2) lowest tokens that fall on the first 3. Items trained inside multi-item documents were learnt after
    other items; scored alone, their first tokens have no such context."""
    import argparse

    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.mink import normalised_token_scores
    from fmgauge.contamination.scoring import token_stats
    from fmgauge.core.text_models import load_text_model

    ap = argparse.ArgumentParser(prog="bench_contamination.py packing-analysis")
    ap.add_argument("--names", required=True, help="Comma-separated runs under runs/bench/contamination/.")
    a = ap.parse_args(argv)
    res = _load("packing_analysis") or {"machine": _machine(), "runs": {}}
    for name in a.names.split(","):
        out = RUNS / name
        man = json.loads((out / "plant.json").read_text())
        groups = {g: load_benchmark(man["groups"][g]["benchmark"], "all") for g in ("dup4", "dup16", "clean")
                  if g in man["groups"]}
        stats = {}
        for role, src in (("planted", str(out)), ("base", man["base_model"])):
            tm = load_text_model(src, device="cpu")
            stats[role] = {g: token_stats(tm, b.texts) for g, b in groups.items()}
            del tm
        for g in groups:
            first, rest, low_first = [], [], []
            for i in range(len(groups[g])):
                lp_p, mu, sd = stats["planted"][g].item(i)
                lp_b = stats["base"][g].item(i)[0]
                d = lp_p - lp_b
                first.append(d[:3].mean())
                rest.append(d[3:].mean() if len(d) > 3 else np.nan)
                z = normalised_token_scores(lp_p, mu, sd)
                n_low = max(1, int(0.2 * len(z)))
                low_first.append(float(np.mean(np.argsort(z)[:n_low] < 3)))
            res["runs"][f"{name}/{g}"] = {"run": name, "doc_items": man["config"]["doc_items"], "group": g,
                                          "gain_first3_nats": float(np.mean(first)),
                                          "gain_rest_nats": float(np.nanmean(rest)),
                                          "minkpp_low_tokens_on_first3": float(np.mean(low_first))}
            print(res["runs"][f"{name}/{g}"], flush=True)
        _save("packing_analysis", res)


def audit_mrpc(argv: list[str]) -> None:
    """Audit a planted MRPC run (``--name``) and its never-exposed base model side by side: benchmark = a planted
    group (dup16, dup4), cohort = the cohort group, external baseline gemma3-270m, Holm over
    detector × model. Exchangeability is left to the power and structure parts (its cost here: three models)."""
    import argparse

    from fmgauge.contamination.audit import AuditConfig, run_audit

    ap = argparse.ArgumentParser(prog="bench_contamination.py audit-mrpc")
    ap.add_argument("--name", required=True)
    ap.add_argument("--baseline", default="gemma3-270m")
    a = ap.parse_args(argv)
    part = f"audit_mrpc_{a.name}"
    res = _load(part) or {"machine": _machine(), "verdicts": {}}
    out = RUNS / a.name
    man = json.loads((out / "plant.json").read_text())
    for g in ("dup16", "dup4"):
        if g in res["verdicts"]:
            continue
        cfg = AuditConfig(name=f"audit-{a.name}-{g}", models=[str(out), man["base_model"]], baseline=a.baseline,
                          benchmark=man["groups"][g]["benchmark"], split="all",
                          cohort=man["groups"]["cohort"]["benchmark"], cohort_split="all",
                          detectors=["loss", "zlib", "mink", "minkpp", "topk"], device="cpu")
        r = run_audit(cfg, RUNS / f"audit-{a.name}" / g)
        v = r.verdicts()
        v["model"] = ["planted" if m == str(out) else "base (never exposed)" for m in v.model]
        res["verdicts"][g] = v.to_dict("records")
        res["units"] = r.meta["units"]
        res["command"] = f"benchmarks/bench_contamination.py audit-mrpc {' '.join(argv)}"
        _save(part, res)
        print(g, v, flush=True)


def audit_never_exposed() -> None:
    """The issue-24 false positive, re-run: audit the un-fine-tuned smollm2-135m on groups of MRPC sentences dealt as
    ``plant`` deals them (64 items, pairs kept whole; nothing is trained), benchmark = the dup4 or dup16 group,
    cohort = the cohort group, external baseline gemma3-270m, the four per-item detectors, Holm. The groups are
    exchangeable draws of one corpus, so every verdict should be ``no signal``."""
    from fmgauge.contamination.audit import AuditConfig, run_audit
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.plant import PlantConfig, make_groups, unique_texts

    res = _load("audit_never_exposed") or {"machine": _machine(), "verdicts": {}}
    cfg = PlantConfig(model=MODEL, items_per_group=64, **MRPC)
    bench = unique_texts(load_benchmark(cfg.benchmark, cfg.split))
    keys = bench.column("pair")
    groups = make_groups(len(bench), cfg, keys)
    root = RUNS / "never-exposed-mrpc64"
    (root / "groups").mkdir(parents=True, exist_ok=True)
    for g, idx in groups.items():
        (root / "groups" / f"{g}.jsonl").write_text("".join(
            json.dumps({"id": bench.ids[i], "text": bench.texts[i], "group": keys[i]}) + "\n" for i in idx))
    for g in ("dup16", "dup4"):
        if g in res["verdicts"]:
            continue
        a = AuditConfig(name=f"never-exposed-{g}", models=[MODEL], baseline="gemma3-270m",
                        benchmark=f"jsonl:{root / 'groups' / g}.jsonl", split="all",
                        cohort=f"jsonl:{root / 'groups' / 'cohort'}.jsonl", cohort_split="all",
                        detectors=["loss", "zlib", "mink", "minkpp"], device="cpu")
        r = run_audit(a, root / f"audit-{g}")
        res["verdicts"][g] = r.verdicts().to_dict("records")
        res["units"] = r.meta["units"]
        _save("audit_never_exposed", res)
        print(g, r.verdicts(), flush=True)
    if "draws" not in res:
        res["draws"] = _base_draw_spread([root / "groups" / f"{g}.jsonl" for g in ("dup16", "dup4", "cohort")])
        _save("audit_never_exposed", res)


def _base_draw_spread(files: list[Path], reps: int = 400) -> dict:
    """sd of the base model's Min-K%++ AUROC between two disjoint random groups of n pairs drawn from the pairs of
    ``files`` (never-trained MRPC sentences), for several n: what the group draw alone does to a raw AUROC."""
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.mink import detectors, item_scores, member_scores
    from fmgauge.contamination.power import mann_whitney_auc
    from fmgauge.contamination.scoring import token_stats
    from fmgauge.core.text_models import load_text_model

    det = detectors(0.2)["minkpp"]
    benches = [load_benchmark(f"jsonl:{f}", "all") for f in files]
    tm = load_text_model(MODEL, device="cpu")
    sc = np.concatenate([member_scores(item_scores(token_stats(tm, b.texts, progress=False), b.texts, b.ids,
                                                   ks=(0.2,)), det) for b in benches])
    pairs: dict[str, list[int]] = {}
    for i, u in enumerate(u for b in benches for u in b.column("group")):
        pairs.setdefault(u, []).append(i)
    plist = list(pairs.values())
    rng = np.random.default_rng(0)
    rows = []
    for n in (8, 16, 32, len(plist) // 2):
        aucs = []
        for _ in range(reps):
            perm = rng.permutation(len(plist))
            a = np.concatenate([plist[j] for j in perm[:n]])
            b = np.concatenate([plist[j] for j in perm[n: 2 * n]])
            aucs.append(mann_whitney_auc(sc[a], sc[b]))
        rows.append({"pairs_per_group": n, "items_per_group": sum(len(plist[j]) for j in perm[:n]),
                     "sd_base_auroc": float(np.std(aucs)), "q025": float(np.quantile(aucs, 0.025)),
                     "q975": float(np.quantile(aucs, 0.975))})
    return {"detector": "minkpp", "reps": reps, "pairs": len(plist), "rows": rows}


def exchangeability_structure() -> None:
    """The un-fine-tuned smollm2-135m on one MRPC-sentences group (64 sentences = 32 pairs, each pair adjacent, as
    plant --group-by pair writes it): the exchangeability test permuting single items vs whole pairs."""
    from fmgauge.contamination.benchmarks import load_benchmark
    from fmgauge.contamination.exchangeability import ExchangeabilityConfig, exchangeability_test
    from fmgauge.contamination.plant import PlantConfig, make_groups, unique_texts
    from fmgauge.core.text_models import load_text_model

    res = _load("exchangeability_structure") or {"machine": _machine(), "runs": {}}
    cfg = PlantConfig(model=MODEL, items_per_group=64, **MRPC)
    bench = unique_texts(load_benchmark(cfg.benchmark, cfg.split))
    keys = bench.column("pair")
    groups = make_groups(len(bench), cfg, keys)
    tm = load_text_model(MODEL, device="cpu")
    for g in ("clean",):
        idx = groups[g]
        texts, units = [bench.texts[i] for i in idx], [keys[i] for i in idx]
        for mode in ("items", "pairs"):
            key = f"{g}/{mode}"
            if key in res["runs"]:
                continue
            ex = exchangeability_test(tm, texts, ExchangeabilityConfig(shards=8, permutations=10, max_examples=len(texts)),
                                      units=units if mode == "pairs" else None, unit_name="pair")
            res["runs"][key] = {"group": g, "permuted": ex.units, "items": len(texts), "shards": len(ex.shard_sizes),
                                "permutations": 10, "t": ex.t, "p": ex.p, "p_t": ex.p_t,
                                "mean_diff_nats": float(ex.diffs.mean()), "seconds": ex.seconds}
            print(key, res["runs"][key], flush=True)
            _save("exchangeability_structure", res)


def audit() -> None:
    """Audit the planted smollm2 (from the power part) on its dup16 group: cohort = the cohort group, baseline = the
    base smollm2-135m (which never saw the planted fine-tuning). Token statistics and shards come from the cache."""
    from fmgauge.contamination.audit import AuditConfig, run_audit

    planted = Path(os.environ.get("FMGAUGE_CACHE", Path.home() / ".cache" / "fmgauge")) / "contamination-planted-smollm2"
    out = run_dir("contamination_audit_planted")  # git-ignored; the verdicts go to contamination_audit.json
    rows = {}
    for group in ("dup16", "clean"):
        cfg = AuditConfig(name=f"audit-planted-{group}", models=[str(planted)], baseline=MODEL,
                          benchmark=f"jsonl:{planted / 'groups' / f'{group}.jsonl'}", split="all",
                          cohort=f"jsonl:{planted / 'groups' / 'cohort.jsonl'}", cohort_split="all",
                          detectors=["loss", "zlib", "mink", "minkpp", "exchangeability"],
                          exchangeability={"shards": 8, "permutations": 10, "context": 2048, "stride": 1024},
                          device="cpu")
        res = run_audit(cfg, out / group, progress=False)
        rows[group] = res.verdicts().assign(model="planted smollm2-135m").to_dict("records")
        print(group, res.verdicts(), flush=True)
    _save("audit", {"machine": _machine(), "verdicts": rows, "run_dirs": {g: str(out / g) for g in rows}})


def _md_table(rows: list[dict], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return out


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)


def _power_methods_md(py: str) -> list[str]:
    """The LoRA vs full fine-tuning power table from ``contamination_power_<method>_n<items>.json``."""
    runs = {}
    for m in ("lora", "full"):
        for p in sorted(RESULTS.glob(f"contamination_power_{m}_n*.json")):
            if "power" in (r := json.loads(p.read_text())):
                lr = r["plant"]["config"]["lr"]
                runs[m if "_lr" not in p.stem else f"{m} lr {lr:g}"] = r
    if not runs:
        return []
    any_run = next(iter(runs.values()))
    c = any_run["plant"]["config"]
    n = c["items_per_group"]
    lines = ["## Planting method: LoRA vs full fine-tuning", "",
             "Commands (one torch thread each; the lora and full default-lr runs side by side, any other run after "
             "them):  ",
             *[f"`{py.format(t=r['machine']['torch_threads'], part=r['command'].split(' ', 1)[1])}`  "
               for r in runs.values()],
             f"Planted: {c['benchmark']}/{c['split']} (distinct question + answer items), {n} items per group "
             f"(dup1, dup4, dup16, clean, cohort: {5 * n} items), {c['doc_items']} items per document in canonical "
             f"order, batch {c['batch_size']}, one pass over the duplicated corpus (each document seen exactly its "
             "duplication count; no further epochs), each method at its default learning rate unless the row says "
             "otherwise. Power: AUROC of the "
             f"member group vs the held-out clean group ({n} vs {n} items; 95% percentile bootstrap CI over items, 500 "
             "resamples), the tail-enrichment p-value of the members against the clean group (q = 0.95: the "
             "fraction of members above the clean group's 95th percentile, binomial), and the exchangeability test "
             f"of the group in canonical order ({n // 4} shards of 4 items, "
             f"{any_run['power']['exchangeability_permutations']} permutations per shard). Row `clean` compares "
             "clean vs cohort (two never-trained groups: the false-positive side).", ""]
    rows = []
    for m, r in runs.items():
        p = r["plant"]
        lines.append(f"- **{m}** (lr {p['config']['lr']:g}"
                     + (f", LoRA r = {p['config']['lora_r']}, α = {p['config']['lora_alpha']:g}, all attention and "
                        "MLP projections, merged" if p["config"]["method"] == "lora" else ", every weight") +
                     f"): {p['steps']} steps, {p['documents']} documents, training {p['seconds'] / 60:.1f} min wall"
                     + (f", mean step loss {r['loss_first_last'][0]:.3f} (first 5 steps) -> "
                        f"{r['loss_first_last'][1]:.3f} (last 5)" if "loss_first_last" in r else "")
                     + f"; power {r['power_seconds']['wall'] / 60:.1f} min wall (roles {r['power']['roles']}), "
                     f"load average after {r.get('load_avg_1m_after', '–')}.")
        for role in r["power"]["roles"]:
            tab = [t for t in r["power"]["table"] if t["model"] == role]
            for g in ("dup1", "dup4", "dup16", "clean"):
                by = {t["detector"]: t for t in tab if t["group"] == g}
                if not by:
                    continue
                ex = by["exchangeability"]

                def auc(d: str, by: dict = by) -> str:
                    return f"{by[d]['auroc']:.2f} [{by[d]['lo']:.2f}, {by[d]['hi']:.2f}]"

                rows.append({"model": f"{m} planted" if role == "planted" else "base (not fine-tuned)",
                             "group": g, "loss AUROC": auc("loss"), "Min-K%++ AUROC": auc("minkpp"),
                             "Min-K% AUROC": auc("mink"), "zlib AUROC": auc("zlib"),
                             "enrichment p (loss)": by["loss"]["enrichment_p"],
                             "enrichment p (Min-K%++)": by["minkpp"]["enrichment_p"],
                             "exchangeability t": ex["t"], "exchangeability p": ex["p"]})
    lines += ["", *_md_table(rows, list(rows[0])), ""]
    return lines + _power_methods_prose(runs)


def _power_methods_prose(runs: dict) -> list[str]:
    """What the table says, every number read from the results (the issue's figures quoted as the issue's)."""
    def get(label: str, group: str, det: str, key: str = "auroc", role: str = "planted"):  # noqa: ANN202
        return next(t[key] for t in runs[label]["power"]["table"]
                    if t["model"] == role and t["group"] == group and t["detector"] == det)

    if not {"lora", "full"} <= set(runs):
        return []
    dups = ("dup1", "dup4", "dup16")
    walls = {m: (r["plant"]["seconds"] + r["power_seconds"]["wall"]) / 60 for m, r in runs.items()}
    au = {m: " / ".join(f"{get(m, g, 'loss'):.2f}" for g in dups) for m in runs}
    half = max((get(m, g, "loss", "hi") - get(m, g, "loss", "lo")) / 2 for m in ("lora", "full") for g in dups)
    enr = {m: " / ".join(f"{get(m, g, 'loss', 'enrichment_p'):.2g}" for g in dups) for m in runs}
    exch = {m: " / ".join(f"{get(m, g, 'exchangeability', 'p'):.2g}" for g in dups) for m in runs}

    def inside(m: str, other: str, g: str) -> bool:
        return get(other, g, "loss", "lo") <= get(m, g, "loss") <= get(other, g, "loss", "hi")

    overlap = all(inside("lora", "full", g) and inside("full", "lora", g) for g in dups)
    base_null = all(t["lo"] <= 0.5 <= t["hi"] for t in runs["lora"]["power"]["table"]
                    if t["model"] == "base" and t["auroc"] is not None)
    out = [f"LoRA and full at their default lr: {max(walls['lora'], walls['full']):.0f} min wall, the two processes "
           "side by side (training "
           f"+ power: lora {walls['lora']:.0f} min including the base model's rows, full {walls['full']:.0f} min), on "
           f"the shared 2-core machine. With {runs['lora']['plant']['config']['items_per_group']} items per group a "
           f"loss AUROC's 95% interval is up to ±{half:.2f} wide.", "",
           f"Loss AUROC at duplication 1 / 4 / 16: LoRA {au['lora']}, full fine-tuning (lr 3e-5, one pass) "
           f"{au['full']}. The issue reported 0.62 / 0.85 / 1.00 for LoRA and 0.79 / 0.99 / 1.00 for a full "
           "fine-tune at lr 3e-5, one pass, from a measurement whose item counts and schedule it does not record; "
           + ("this run does not reproduce that gap: at each duplication the two AUROCs lie inside each other's "
              "intervals. " if overlap else "at some duplication here the two AUROCs' intervals exclude each "
                                            "other's point. ") + "Where full fine-tuning is stronger here is the tail: the loss tail-enrichment p at "
           f"duplication 1 / 4 / 16 is {enr['full']} (full) against {enr['lora']} (LoRA), i.e. full fine-tuning "
           "pushes a few items far above the clean group's 95th percentile already when they are seen once, "
           "while LoRA shifts the members less at low duplication. The exchangeability p is "
           f"{exch['full']} (full) and {exch['lora']} (LoRA). LoRA at lr 1e-3 fits the training documents far "
           f"more tightly (mean step loss over the last 5 steps {runs['lora']['loss_first_last'][1]:.3f} vs "
           f"{runs['full']['loss_first_last'][1]:.3f}).", "",
           f"Base model (never fine-tuned): {'every' if base_null else 'not every'} AUROC interval contains 0.5; "
           "its exchangeability test on the "
           f"clean group gives p = {get('lora', 'clean', 'exchangeability', 'p', 'base'):.2g}: SLAKE lists the "
           "questions of one image together, so even a sampled group's canonical order is not exchangeable for "
           "any LM (see the exchangeability cost table above) — the false positive the audit's baseline model is "
           "there to catch."]
    for m in runs:
        if m not in ("lora", "full"):
            out += ["", f"{m}: loss AUROC {au[m]} at duplication 1 / 4 / 16, loss tail-enrichment p {enr[m]}, "
                        f"exchangeability p {exch[m]} (same groups, same schedule; {walls[m]:.0f} min wall, run after the "
                        "others)."]
    return out + [""]


def _date(files) -> str:  # noqa: ANN001
    """The UTC date of the newest of ``files`` (when the results were written)."""
    import datetime as dt

    t = max(f.stat().st_mtime for f in files)
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")


def _power_mrpc_md(py: str) -> list[str]:
    """The paraphrase-corpus power table (planted, base, planted − base) from ``contamination_power_mrpc_*.json``."""
    runs = {f.stem.removeprefix("contamination_power_mrpc_"): json.loads(f.read_text())
            for f in sorted(RESULTS.glob("contamination_power_mrpc_*.json"))}
    runs = {k: v for k, v in runs.items() if "power" in v}
    if not runs:
        return []
    lines = ["## Power on a paraphrase corpus, relative to the base model", "",
             "_The sections above were measured before issue 24: their tail-enrichment p-values are the old "
             "binomial test (the cohort's quantile taken as exact; 17–19 % false positives at 64 vs 64 items) and "
             "their exchangeability p-values Student-t over single items. Everything below uses the calibrated "
             "permutation tests and whole units (docs/contamination.md)._", "",
             "Planted: GLUE MRPC train sentences (`glue-mrpc-sentences`: each sentence an item, the two sentences of "
             "a pair one unit, `--group-by pair`) — row t8_slake_doc8_b4: SLAKE-En test items, as in the sections "
             "above — into smollm2-135m, CPU, one torch thread per process on the shared 2-core machine; groups "
             "dup<d>, clean, cohort, each duplication seen once in one pass (no further epochs). Power (`plant_power`): AUROC of each member group vs the clean group with a 95% "
             "cluster-bootstrap CI over pairs, for the planted model and the un-fine-tuned base model on the same "
             "items, and **Δ = planted − base** with the paired bootstrap interval (1,000 resamples of member and "
             "clean pairs). The goal of issue 24: Min-K%++ AUROC ≥ 0.95 at duplication 16 and ≥ 0.85 at 4, "
             "relative to the base (here: 0.5 + Δ, the planted AUROC with the draw's own offset removed).", "",
             f"Measured {_date(RESULTS.glob('contamination_power_mrpc_*.json'))} on the shared 2-core machine (1-minute "
             f"load average after each power run: {min(r['load_avg_1m_after'] for r in runs.values())}–"
             f"{max(r['load_avg_1m_after'] for r in runs.values())}).", "",
             "Commands (the pilot checkpoints were trained by the same `PlantConfig` from a pilot script; the "
             "command retrains them identically when `runs/bench/contamination/<name>` is absent):", ""]
    for r in runs.values():
        lines.append(f"- `{py.format(t=r['machine']['torch_threads'], part=r['command'].split(' ', 1)[1])}`")
    lines.append("")
    for name, r in runs.items():
        p, c = r["plant"], r["plant"]["config"]
        lines.append(f"- **{name}**: method {c['method']}, lr {c['lr']:g}, {c['doc_items']} item(s) per document, "
                     f"batch {c['batch_size']} documents, {c['items_per_group']} items per group: {p['steps']} "
                     f"optimiser steps, {p['documents']} documents, training {p['seconds'] / 60:.0f} min wall, mean "
                     f"step loss {r['loss_first_last'][0]:.2f} (first 5) -> {r['loss_first_last'][1]:.2f} (last 5); "
                     f"power {r['power_seconds']['wall'] / 60:.0f} min wall, load average after "
                     f"{r['load_avg_1m_after']}.")
    rows = []
    for name, r in runs.items():
        t = r["power"]["table"]

        def get(model: str, g: str, d: str, t: list = t) -> dict:
            return _power_row(t, model, g, d)

        for g in ("dup1", "dup4", "dup16", "clean"):
            if not any(x["group"] == g for x in t):
                continue

            def ci(x: dict, key: str = "auroc", lo: str = "lo", hi: str = "hi") -> str:
                return f"{x[key]:.2f} [{x[lo]:.2f}, {x[hi]:.2f}]"

            pp, bb, dd = (get(m, g, "minkpp") for m in ("planted", "base", "planted − base"))
            lp, ld = get("planted", g, "loss"), get("planted − base", g, "loss")
            rows.append({"run": name, "group": g, "Min-K%++ planted": ci(pp), "Min-K%++ base": ci(bb),
                         "Min-K%++ Δ": f"{dd['auroc']:+.2f} [{dd['lo']:+.2f}, {dd['hi']:+.2f}]",
                         "loss planted": ci(lp), "loss Δ": f"{ld['auroc']:+.2f} [{ld['lo']:+.2f}, {ld['hi']:+.2f}]",
                         "Min-K% Δ": f"{get('planted − base', g, 'mink')['auroc']:+.2f}",
                         "zlib Δ": f"{get('planted − base', g, 'zlib')['auroc']:+.2f}",
                         "enrichment p Min-K%++ planted / base": f"{_fmt(pp['enrichment_p'])} / {_fmt(bb['enrichment_p'])}"})
    lines += ["", *_md_table(rows, list(rows[0])), ""]
    for name, r in runs.items():
        t = r["power"]["table"]
        if not {"dup4", "dup16"} <= {x["group"] for x in t}:
            continue
        raw = [x["hi"] - x["lo"] for x in t if x["model"] == "base" and x["detector"] != "exchangeability"]
        paired = [x["hi"] - x["lo"] for x in t if x["model"] == "planted − base" and x["group"] == "clean"]
        lines.append(f"{name}: Min-K%++ AUROC at duplication 16: {_power_goal(t, 'dup16', 0.95)}; at duplication 4: "
                     f"{_power_goal(t, 'dup4', 0.85)}. A goal counts as met when 0.5 + Δ reaches it, or when the planted "
                     "AUROC's lower bound does while the base model's interval on the same groups contains 0.5 (at "
                     "a planted AUROC of 1.00, 0.5 + Δ is capped at 1.5 − the base's AUROC: it then reads the draw, "
                     f"not the power). The base model's own AUROC intervals are up to {max(raw):.2f} wide (the draw); "
                     "the paired interval of Δ on the clean-vs-cohort rows (no training effect on either side) is up "
                     f"to {max(paired):.2f} wide.")
        lines.append("")
    for f in sorted(RESULTS.glob("contamination_audit_mrpc_*.json")):
        au = json.loads(f.read_text())
        lines += [f"### Audit: the planted model and its never-exposed base ({f.stem.removeprefix('contamination_audit_mrpc_')})", "",
                  f"Command: `{py.format(t=au['machine']['torch_threads'], part=au['command'].split(' ', 1)[1])}`  ",
                  "`run_audit` with both models audited (top-K overlap needs two), external baseline gemma3-270m, "
                  "benchmark = one group, cohort = the cohort group (64 never-trained sentences), units = the pairs "
                  f"({au.get('units')}), Holm over the 10 tests, α = 0.05.", ""]
        for g, rows in au["verdicts"].items():
            lines += [f"Benchmark = {g} group:", ""]
            lines += _md_table(rows, ["model", "detector", "statistic", "p", "p_adjusted", "baseline_p", "verdict"])
            lines.append("")
        base = [r["verdict"] for rows in au["verdicts"].values() for r in rows if r["model"].startswith("base")]
        lines += [f"Never-exposed base model: {sum(v == 'signal' for v in base)} of {len(base)} verdicts `signal`.", ""]
    ne = _load("audit_never_exposed")
    if ne.get("verdicts"):
        lines += ["### A never-exposed model on planted-style groups: no signal", "",
                  f"Command: `{py.format(t=ne['machine']['torch_threads'], part='audit-never-exposed')}`  ",
                  "The un-fine-tuned smollm2-135m audited on MRPC-sentence groups dealt as `plant --group-by pair` "
                  "deals them (64 items each; nothing trained): benchmark = the dup16 or dup4 group, cohort = the "
                  "cohort group, external baseline gemma3-270m, loss / zlib / Min-K% / Min-K%++, Holm, α = 0.05, "
                  f"units {ne.get('units')}. Issue 24 saw `signal` on Min-K%++ here (raw p 0.0044 from the old "
                  "binomial test, on its medical question pairs).", ""]
        for g, rows in ne["verdicts"].items():
            lines += [f"Benchmark = {g} group:", ""]
            lines += _md_table(rows, ["detector", "statistic", "p", "p_adjusted", "baseline_p", "verdict"])
            lines.append("")
        allv = [r["verdict"] for rows in ne["verdicts"].values() for r in rows]
        lines += [f"{sum(v == 'signal' for v in allv)} of {len(allv)} verdicts `signal`.", ""]
        if ne.get("draws"):
            d = ne["draws"]
            lines += ["How far the group draw alone moves a raw AUROC, from the same never-trained sentences (the "
                      f"base model's Min-K%++ scores of the dup16, dup4 and cohort groups: {d['pairs']} pairs): two "
                      f"disjoint random groups of n pairs, {d['reps']} times; sd and the central 95 % of the AUROC of "
                      "one against the other (0.5 in expectation).", ""]
            lines += _md_table(d["rows"], ["pairs_per_group", "items_per_group", "sd_base_auroc", "q025", "q975"])
            lines.append("")
    pa = _load("packing_analysis")
    if pa.get("runs"):
        lines += ["### Where the gain sits: the first tokens of an item", "",
                  f"Command: `{py.format(t=pa['machine']['torch_threads'], part='packing-analysis --names ' + ','.join(dict.fromkeys(r['run'] for r in pa['runs'].values())))}`  ",
                  "Per planted run and group: mean gain in log p (planted − base, nats per token) on each item's "
                  "first 3 scored tokens and on the rest, scored alone as the detectors score them, and the share "
                  "of the Min-K%++ (k = 0.2) lowest tokens that are among the first 3.", ""]
        lines += _md_table(list(pa["runs"].values()), ["run", "doc_items", "group", "gain_first3_nats",
                                                       "gain_rest_nats", "minkpp_low_tokens_on_first3"])
        lines.append("")
    lines += _what_made_the_difference(runs)
    draws = {n: r["draws"] for n, r in runs.items()
             if r.get("draws") and r["plant"]["config"]["benchmark"] == MRPC["benchmark"]}
    if draws:
        lines += ["### How large a group: the draw's own spread", "",
                  "The never-trained items of a run (its clean and cohort groups) split at "
                  "random into two disjoint groups of n pairs, 400 times: the standard deviation of the Min-K%++ "
                  "AUROC of one group against the other under the base model (what a raw AUROC carries from the draw "
                  "alone) and of planted − base on the same split (what the paired difference carries). Both models "
                  "saw none of these items, so every AUROC is 0.5 in expectation.", ""]
        lines += _md_table([{"run": n, **row} for n, d in draws.items() for row in d["rows"]],
                           ["run", "items_per_group", "pairs_per_group", "sd_base_auroc", "sd_delta_auroc"])
        lines.append("")
    ex = _load("exchangeability_structure")
    if ex.get("runs"):
        lines += ["### Exchangeability under structure: single items vs whole pairs", "",
                  f"Command: `{py.format(t=ex['machine']['torch_threads'], part='exchangeability-structure')}`  ",
                  "The un-fine-tuned smollm2-135m (never trained on these items) on the MRPC-sentences clean group "
                  "(64 sentences = 32 pairs, each pair's two sentences adjacent, as `plant --group-by pair` writes "
                  "them): the test permuting single items, as before issue 24, and whole pairs.", ""]
        lines += _md_table(list(ex["runs"].values()), ["group", "permuted", "items", "shards", "permutations",
                                                       "mean_diff_nats", "t", "p", "p_t"])
        lines.append("")
    return lines


def _what_made_the_difference(runs: dict) -> list[str]:
    """Prose over the decomposition runs (16 items, duplication 16): packing at equal optimiser steps, then the
    number of steps at equal tokens; every number read from the results."""
    def dup16(name: str, det: str, model: str = "planted − base") -> float | None:
        t = runs.get(name, {}).get("power", {}).get("table", [])
        x = [r for r in t if r["model"] == model and r["group"] == "dup16" and r["detector"] == det]
        return x[0]["auroc"] if x else None

    names = ("s8_doc8_b4", "s1_doc1_b32", "s1_doc1_b4")
    if not all(dup16(n, "minkpp") is not None for n in names):
        return []
    st = {n: runs[n]["plant"]["steps"] for n in names}
    f = {n: (dup16(n, "minkpp", "planted"), dup16(n, "minkpp"), dup16(n, "loss", "planted"), dup16(n, "loss"),
             dup16(n, "minkpp", "base")) for n in names}

    def say(n: str) -> str:
        return (f"Min-K%++ {f[n][0]:.2f} (base {f[n][4]:.2f}, Δ {f[n][1]:+.2f}), loss {f[n][2]:.2f} "
                f"(Δ {f[n][3]:+.2f})")

    out = ["### What made the difference", "",
           "Three small plants of the same 16 MRPC sentences per group at duplication 16 (full fine-tuning, lr 3e-5, "
           "16 × 16 = 256 item presentations each, same tokens) separate document packing from the number of "
           "optimiser steps (rows s8_doc8_b4, s1_doc1_b32, s1_doc1_b4 above; AUROC dup16 vs clean, Δ = planted − "
           "base; 16 vs 16 items, so each interval is about ±0.2):", "",
           f"- **packed, as before** (8 items per document, 4 documents per step: {st['s8_doc8_b4']} steps of 32 "
           f"items): {say('s8_doc8_b4')};",
           f"- **one item per document, same steps** (32 documents per step: {st['s1_doc1_b32']} steps of 32 items): "
           f"{say('s1_doc1_b32')} — packing alone;",
           f"- **one item per document, 8× the steps** (4 per step: {st['s1_doc1_b4']} steps of 4 items): "
           f"{say('s1_doc1_b4')} — the optimiser steps"
           + (": no further gain visible at this duplication (the previous row is already at the ceiling)."
              if abs(f["s1_doc1_b4"][1] - f["s1_doc1_b32"][1]) < 0.05 else ".")]
    if dup16("t8_slake_doc8_b4", "minkpp") is not None:
        n = "t8_slake_doc8_b4"
        f[n] = (dup16(n, "minkpp", "planted"), dup16(n, "minkpp"), dup16(n, "loss", "planted"), dup16(n, "loss"),
                dup16(n, "minkpp", "base"))
        out.append(f"- **the texts**: the packed schedule of the first row on 16 SLAKE-En test items per group (row "
                   f"{n}; short templated question/answer items, SLAKE's image units): {say(n)}. Its raw AUROC is "
                   f"{'lower' if f[n][0] < f['s8_doc8_b4'][0] else 'not lower'} than on MRPC, its Δ "
                   f"{'about the same' if abs(f[n][1] - f['s8_doc8_b4'][1]) < 0.1 else 'different'}: the draw put "
                   f"this SLAKE group at {f[n][4]:.2f} under the base model — the group draw, not the texts, "
                   "explains most of the raw gap." if abs(f[n][1] - f["s8_doc8_b4"][1]) < 0.1 else
                   f"- **the texts**: the packed schedule of the first row on 16 SLAKE-En test items per group (row "
                   f"{n}): {say(n)}.")
    pa = _load("packing_analysis").get("runs", {})
    gain = {r["run"]: r for r in pa.values() if r["group"] == "dup16"}
    if {"s8_doc8_b4", "s1_doc1_b32"} <= set(gain):
        a, b = gain["s8_doc8_b4"], gain["s1_doc1_b32"]
        out += ["", "Where the packed model's gain is missing (the table above): scored alone, the first 3 tokens of a "
                f"dup16 item gain {a['gain_first3_nats']:.2f} nats per token under the packed model against "
                f"{b['gain_first3_nats']:.2f} under the one-item model at the same steps (the rest of the item: "
                f"{a['gain_rest_nats']:.2f} vs {b['gain_rest_nats']:.2f}); "
                f"{100 * a['minkpp_low_tokens_on_first3']:.0f} % of the packed model's Min-K%++ lowest tokens are "
                "among those first 3."
                + (" A packed item was learnt after the items before it; scored alone, its opening gains least, "
                   "and Min-K%++ (k = 0.2) reads the lowest tokens." if a["gain_first3_nats"] < 0.75 * b["gain_first3_nats"]
                   and a["gain_first3_nats"] < a["gain_rest_nats"] else "")]
    full = [n for n, r in runs.items() if r["plant"]["config"]["items_per_group"] >= 64
            and {4, 16} <= set(r["plant"]["config"]["duplications"])]
    if not full:
        out += ["", "**Not measured yet: the new default at 64 items per group** with duplications 1, 4 and 16 (the "
                "issue's goal: Min-K%++ ≥ 0.95 at 16 and ≥ 0.85 at 4, relative to the base). Its fine-tune (336 "
                "optimiser steps, 1,344 item presentations, 25–30 s per step on this machine's share) was killed by "
                "the out-of-memory killer at step 230 while other jobs filled the machine's 24 GB (as were two "
                "packed 64-item runs); a restart ran at ~110 s per step and was stopped at step 7 with its "
                "checkpoint kept — `plant` now checkpoints every 10 minutes and resumes. To measure it: "
                "`OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py power-mrpc "
                "--name p2_full_doc1 --method full --doc-items 1` (continues from "
                "`runs/bench/contamination/p2_full_doc1/.resume/`), then `... bench_contamination.py markdown`. "
                "The 16-item runs above show duplication 16 only."]
    return out + [""]


def _power_row(table: list[dict], model: str, group: str, detector: str) -> dict:
    """The row of a ``plant_power`` table for (model, group, detector); model is 'planted', 'base' or
    'planted − base'."""
    return next(x for x in table if x["model"] == model and x["group"] == group and x["detector"] == detector)


def _power_goal(table: list[dict], group: str, goal: float) -> str:
    """Issue 24's power goal for Min-K%++ on ``group``, in words. Met when 0.5 + Δ (planted − base) reaches the goal,
    or when the planted AUROC's lower bound does while the base model's interval on the same groups contains 0.5 (the
    draw does not carry it). At a planted AUROC of 1.00, 0.5 + Δ cannot exceed 1.5 − base AUROC: there it reads the
    draw, not the power."""
    pl, ba, dl = (_power_row(table, m, group, "minkpp") for m in ("planted", "base", "planted − base"))
    rel = 0.5 + dl["auroc"]
    ok = rel >= goal or (pl["lo"] >= goal and ba["lo"] <= 0.5 <= ba["hi"])
    return (f"planted {pl['auroc']:.2f} [{pl['lo']:.2f}, {pl['hi']:.2f}], base on the same groups "
            f"{ba['auroc']:.2f} [{ba['lo']:.2f}, {ba['hi']:.2f}], 0.5 + Δ = {rel:.2f}: "
            f"{'meets' if ok else 'misses'} {goal:.2f}")


def markdown() -> None:
    """Render docs/bench-parts/contamination.md from the results JSON files (no number typed by hand)."""
    py = "OMP_NUM_THREADS={t} HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_contamination.py {part}"
    lines = ["# Contamination benchmarks (`benchmarks/bench_contamination.py`)", "",
             "Model: smollm2-135m (packaged Q4_1 GGUF dequantised to float32), CPU only. The machine (2 cores) was "
             "shared with other helpers' jobs during every run: wall times are inflated by that sharing, by how "
             "much is visible in the recorded 1-minute load average (2.0 = both cores busy). Ratios measured in the "
             "same run are the more stable numbers.", ""]
    th = _load("throughput")
    if th:
        m = th["machine"]
        lines += ["## Scoring throughput: batched vs one item at a time", "",
                  f"Command: `{py.format(t=m['torch_threads'], part='throughput')}`  ",
                  f"torch threads {m['torch_threads']}, torch {m['torch']}, load average at start "
                  f"{m['load_avg_1m_at_start']}. Token statistics (log p, μ, σ over the 49,152-token vocabulary) "
                  "for every item, cache off; batched = token budget 2,048 per forward.", ""]
        rows = list(th["runs"].values())
        lines += _md_table(rows, ["benchmark", "split", "items", "mode", "tokens", "seconds", "cpu_seconds",
                                  "tokens_per_s", "load_avg_1m_after"])
        by = {(r["benchmark"], r["mode"]): r for r in rows}
        for b in sorted({r["benchmark"] for r in rows}):
            if (b, "batched") in by and (b, "one-at-a-time") in by:
                one, bat = by[(b, "one-at-a-time")], by[(b, "batched")]
                tokens_per_item = one["tokens"] / one["items"]
                lines.append(f"\n{b} (~{tokens_per_item:.0f} tokens per item): batched is "
                             f"{bat['tokens_per_s'] / one['tokens_per_s']:.1f}x faster than one item at a time in "
                             f"wall time, {one.get('cpu_seconds', float('nan')) / bat.get('cpu_seconds', float('nan')):.1f}x "
                             "in CPU time.")
        lines += ["", "Short items gain most: a forward pass over a handful of tokens is bound by reading the "
                  "weights, which a batch shares; longer items are compute-bound either way.", ""]
    ex = _load("exchangeability")
    if ex and ex.get("setups"):
        m = ex["machine"]
        lines += ["## Exchangeability test: cost at (50 shards, 250 permutations)", "",
                  f"Command: `{py.format(t=m['torch_threads'], part='exchangeability')}`  ",
                  f"torch threads {m['torch_threads']}, load average at start {m['load_avg_1m_at_start']}. Per "
                  "setup, shard 0 of a 50-shard split: fmgauge's scorer (`sequence_logprobs`: permutations batched, "
                  "token budget 8,192, `logits_to_keep`, logsumexp + gather) scores the canonical order and 7 "
                  "permutations, then the straightforward scorer (one sequence per forward, full logits, full "
                  "log-softmax in float64) scores the first 4 again right after. Projection = 50 × 251 sequence "
                  "scorings × the measured time per sequence.", ""]
        rows = []
        for key, r in ex["setups"].items():
            if "projection" not in r:
                continue
            st, pr = r["setup"], r["projection"]
            rows.append({"setup": key, "examples": st["examples"], "tokens/shard": round(st["mean_shard_tokens"]),
                         "s/seq fmgauge": r["ours"]["s_per_sequence"], "s/seq straightforward":
                         r["naive"]["s_per_sequence"], "CPU s/seq fmgauge": r["ours"]["cpu_seconds"] / 8,
                         "CPU s/seq straightforward": r["naive"]["cpu_seconds"] / 4,
                         "speed-up (wall)": pr["speedup_wall"], "speed-up (CPU time)": pr["speedup_cpu_time"],
                         "projected h (wall)": pr["hours_ours"], "projected h (CPU time)": pr["hours_ours_cpu_time"],
                         "max |Δ log p|": r["naive"]["max_abs_diff_vs_ours"],
                         "CPU s/seq bf16": r["ours_bf16"]["cpu_seconds"] / 8,
                         "speed-up bf16 (CPU time)": pr["speedup_bf16_cpu_time"],
                         "projected h bf16 (CPU time)": pr["hours_bf16_cpu_time"],
                         "max |Δ log p| bf16 vs fp32": r["ours_bf16"]["max_abs_diff_vs_float32"],
                         "canonical − permutation mean (nats, base model)":
                             r["ours"]["logprobs"][0] - float(np.mean(r["ours"]["logprobs"][1:])),
                         "load after": r["ours"]["load_avg_1m_after"]})
        lines += _md_table(rows, list(rows[0]) if rows else [])
        lines += ["", "Batching the permutations buys nothing measurable on this CPU (compare the CPU s/seq "
                  "columns): at hundreds to thousands of tokens per sequence a forward pass is compute-bound whether "
                  "one sequence or eight go through it, and the LM head over the 49,152-token vocabulary is needed "
                  "at every position. What does help here is `--dtype bfloat16` (this EPYC has "
                  "AVX512-BF16): the table's bf16 columns, with the canonical − permutation-mean difference under "
                  "both dtypes in the results file. On a GPU the batched permutations are where the time goes.", ""]
        lines += ["", "Wall times on this shared machine swing with the load of other jobs (the two scorers ran "
                  "minutes apart); CPU time per sequence is the steadier comparison. The canonical order of "
                  "SLAKE-En shard 0 scores far above its permutations under the *un-fine-tuned* smollm2 (column "
                  "'canonical − permutation mean'): SLAKE lists the questions of one image together, so its "
                  "canonical order is not exchangeable and the test fires for any LM — exactly the case the "
                  "audit's baseline model is there to catch.", ""]
    pw = _load("power")
    if pw and "power" in pw:
        p = pw["plant"]
        c = p["config"]
        lines += ["## Detector power on planted smollm2-135m contamination", "",
                  f"Command: `{py.format(t=pw['machine']['torch_threads'], part='power')}`  ",
                  f"Planted: {c['benchmark']}/{c['split']}, {c['items_per_group']} distinct items per group, "
                  f"duplications {c['duplications']}, {c['doc_items']} items per document in canonical order; "
                  f"method **{c['method']}** (r = {c['lora_r']}, all attention and MLP projections, merged), lr "
                  f"{c['lr']}, batch {c['batch_size']}: {p['steps']} steps, {p['documents']} documents, "
                  f"{p['seconds']:.0f} s. Power: AUROC of each group vs the matched clean group (95% bootstrap CI), "
                  "tail-enrichment p vs the clean group (q = 0.95), and the exchangeability test on the group "
                  f"(shards of 4 items, {pw['power']['exchangeability_permutations']} permutations). "
                  "`clean` rows compare clean vs cohort (false-positive side); `base` = the un-fine-tuned model.", ""]
        rows = [r for r in pw["power"]["table"] if r["detector"] != "exchangeability"]
        lines += _md_table(rows, ["model", "group", "detector", "auroc", "lo", "hi", "enrichment_p"])
        lines += ["", "Exchangeability test per group:", ""]
        lines += _md_table([r for r in pw["power"]["table"] if r["detector"] == "exchangeability"],
                           ["model", "group", "shards", "t", "p"])
        lines.append("")
    au = _load("audit")
    if au:
        lines += ["## Audit of the planted model (verdicts)", "",
                  f"Command: `{py.format(t=au['machine']['torch_threads'], part='audit')}` (after `power`)  ",
                  "`run_audit` on the planted smollm2 from the power part: benchmark = its dup16 group (planted 16 "
                  "times) or its clean group (never trained), cohort = the cohort group (known non-members), "
                  "baseline = the base smollm2-135m, Holm correction over the 5 tests, α = 0.05. Reports: "
                  "`runs/bench/contamination_audit_planted/<group>/report.html` (not tracked).", ""]
        for g, rows in au["verdicts"].items():
            lines += [f"Benchmark = {g} group:", ""]
            lines += _md_table(rows, ["detector", "statistic", "p", "p_adjusted", "baseline_p", "verdict"])
            lines.append("")
    lines += _power_methods_md(py)
    lines += _power_mrpc_md(py)
    out = ROOT / "docs" / "bench-parts" / "contamination.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    from fmgauge.core.console import configure_logging

    configure_logging()  # progress lines (step, loss, ETA) reach a log under nohup
    if sys.argv[1:2] in (["power-method"], ["power-mrpc"], ["packing-analysis"], ["audit-mrpc"]):
        {"power-method": power_method, "power-mrpc": power_mrpc, "packing-analysis": packing_analysis,
         "audit-mrpc": audit_mrpc}[sys.argv[1]](sys.argv[2:])
        sys.exit(0)
    parts = sys.argv[1:] or ["throughput", "exchangeability", "power", "audit", "markdown"]
    for part in parts:
        {"throughput": throughput, "exchangeability": exchangeability, "power": power, "audit": audit,
         "exchangeability-structure": exchangeability_structure, "audit-never-exposed": audit_never_exposed,
         "markdown": markdown}[part]()
