"""Write docs/bench-parts/masking.md from the stored benchmark results (no number is typed by hand).

    .venv/bin/python benchmarks/bench_masking_render.py

Reads benchmarks/results/masking_overhead.json and, for the comparison runs in ``RUNS`` and the attempts kept as
evidence, their digests (benchmarks/results/digests/<name>.json, see ``bench_runs``): refreshed from the run
directory runs/bench/<name>/ when it is there (re-analysed from its trial store, so a partly finished run renders
what finished), read as stored otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from bench_runs import digest
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.masking.experiment import load_result
from fmgauge.masking.report import pairs_table, strategy_table, token_table

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"
METRIC_COLUMNS = ["strategy", "seed", "dev_f1", "dev_acc", "test_f1", "test_acc", "mlm_seconds", "ft_seconds",
                  "ft_steps", "ft_train_size"]


def _digest_comparison(run: Path) -> dict:
    """What a comparison section reads from its run directory: the analysis, trial sums, the dev curve, wall."""
    try:
        res = load_result(run)
    except FmgaugeError as e:
        return {"error": str(e)}
    trials = res.results[res.results.kind == "metrics"]
    curve = res.results[res.results.kind == "ft_curve"]
    mean = curve.dropna(subset=["dev_f1"]).groupby("step").dev_f1.mean() if "dev_f1" in curve else pd.Series()
    return {"summary": res.summary, "wall": list(_wall(run)),
            "trial_seconds": [float(trials.mlm_seconds.sum()), float(trials.ft_seconds.sum())],
            "dev_f1_by_step": [[int(k), float(v)] for k, v in mean.items()],
            "metrics": _metric_rows(trials)}


def _digest_attempt(run: Path) -> dict:
    """What an attempt section reads: its config, majority baseline on dev and the per-trial metrics."""
    res = load_result(run)
    return {"config": res.summary["meta"]["config"],
            "majority_dev": res.summary.get("majority_baseline", {}).get("dev", {}),
            "metrics": _metric_rows(res.results[res.results.kind == "metrics"])}


def _metric_rows(t: pd.DataFrame) -> list[dict]:
    return t[[c for c in METRIC_COLUMNS if c in t]].to_dict(orient="records")


def _wall(run_dir: Path) -> tuple[str, str, float, int, int]:
    """First trial start (finish - seconds), last finish, busy wall seconds, trials done, sittings.

    Busy wall time is the length of the union of the trials' [start, finish] intervals, so a run resumed in a later
    session is not charged for the time between sessions; a sitting is a maximal stretch with a trial running.
    """
    store = RunStore(run_dir)
    t = store.trial_table()
    store.close()
    t = t[t.status == "done"]
    spans = sorted(zip(t.finished_at - t.seconds, t.finished_at, strict=True))
    busy, sittings, (lo, hi) = 0.0, 1, spans[0]
    for a, b in spans[1:]:
        if a > hi:
            busy, sittings, lo = busy + hi - lo, sittings + 1, a
        hi = max(hi, b)
    busy += hi - lo
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    return (time.strftime(fmt, time.gmtime(spans[0][0])), time.strftime(fmt, time.gmtime(hi)), busy, len(t),
            sittings)


def overhead_section() -> list[str]:
    path = RES / "masking_overhead.json"
    if not path.exists():
        return ["## Typhoon overhead per MLM step", "", "Not run yet.", ""]
    o = json.loads(path.read_text())
    med, ratio = o["median_seconds_per_step"], o["ratio_typhoon_over_random"]
    table = pd.DataFrame([{"strategy": s, "median wall s / step": f"{v['wall']:.2f}",
                           "median CPU s / step": f"{v['cpu']:.2f}"} for s, v in med.items()])
    return [
        "## Typhoon overhead per MLM step vs random masking (target ≤ 1.6x)", "",
        f"Command: `{o['command']}` (finished {o['finished']}).", "",
        f"Model minilm-l6 as BertForMaskedLM (head initialised), batch {o['batch']}, max length {o['max_length']}, "
        f"{o['steps_per_strategy']} timed steps per strategy, alternating on the same batches, {o['threads']} torch "
        f"thread. A step = collate (mask) + forward + backward + AdamW step. Machine: {o['machine']['platform']}, "
        f"{o['machine']['cpus']} CPUs, shared with other jobs (load average {o['machine']['load_avg'][0]:.1f} at the "
        f"end), so wall time per step is {med['random']['wall'] / med['random']['cpu']:.0f}x the CPU time; CPU time of this "
        "process is the robust figure.", "",
        table.to_markdown(index=False), "",
        f"**Typhoon / random: {ratio['cpu']:.2f}x CPU time, {ratio['wall']:.2f}x wall time per step** "
        f"({o['typhoon_updates']} EMA updates, i.e. one per step plus the warm start). Typhoon reads ∂L/∂e from the "
        "backward pass the optimiser runs anyway (hooks on the input embeddings), so the per-step extra is only the "
        "per-type scatter and the rate normalisation. The optional warm start costs one extra forward/backward per "
        f"warm batch: {o['warm_start_one_batch_seconds']['cpu']:.2f} s CPU for one batch, once per run.", "",
    ]


RUNS = {  # run directory -> (section title, config, how the run shared the machine)
    "masking_mrpc_ft": (
        "MRPC with full fine-tuning: random vs whole-word vs Typhoon, minilm-l6, paired over seeds",
        "configs/masking/mrpc-minilm-ft.yaml",
        "2 worker processes x 1 torch thread with the 2 CPU cores to themselves."),
    "masking_mrpc": (
        "MRPC with a frozen-encoder probe: random vs whole-word vs Typhoon, minilm-l6, paired over seeds",
        "configs/masking/mrpc-minilm-cpu.yaml",
        "4 worker processes x 1 torch thread on 2 CPU cores shared with other helpers' benchmarks (`uptime` load "
        "averages fell from about 15 to about 2 while it ran). The per-strategy seconds are not comparable across "
        "strategies: trials ran in plan order (random first) while the load fell."),
}


def comparison_section(name: str) -> list[str]:
    title, config, shared = RUNS[name]
    d = digest(name, _digest_comparison)
    if d is None:
        return [f"## {title}", "", "Not run yet.", ""]
    if "error" in d:
        return [f"## {title}", "", f"No trial finished yet ({d['error']}).", ""]
    s = d["summary"]
    cfg = s["meta"]["config"]
    start, end, busy, n, sittings = d["wall"]
    rec_path = RES / f"{name}.json"
    cmd = (json.loads(rec_path.read_text())["command"] if rec_path.exists() else
           f"OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_masking_mrpc.py --config {config} "
           f"--out runs/bench/{name} --workers 2")
    trial_min = sum(d["trial_seconds"]) / 60
    gap = f"{sittings} sittings, the time between them not counted; " if sittings > 1 else ""
    stopped = " Stopped at the end of a session; rerunning the command resumes it." if n < s["trials_planned"] else ""
    out = [
        f"## {title}", "",
        f"Command: `{cmd}` (config `{config}`; run directory `runs/bench/{name}/`, with report.html / "
        "report.md / summary.json).", "",
        f"**{n} of {s['trials_planned']} trials finished**; first trial started {start}, last finished {end}: "
        f"**{busy / 60:.1f} min wall** with trials running ({gap}{trial_min:.1f} trial-minutes), {shared}{stopped} "
        "Typhoon's cost is measured by the overhead benchmark above.", "",
        "Protocol (every number from the config): " + _protocol(cfg), "",
        f"Verdict (computed): {s['verdict']}", "",
        "*Scores per strategy (mean [95% t-CI] over seeds)*", "", strategy_table(s).to_markdown(index=False), "",
        "*Paired differences B − A over the same seeds*", "",
        pairs_table(s).to_markdown(index=False) if s["pairs"] else "(fewer than 2 paired seeds yet)", "",
    ]
    mean = d["dev_f1_by_step"]
    if len(mean):  # full fine-tuning evaluates dev F1 along the way; the probe has no such curve
        rising = len(mean) > 1 and mean[-1][1] > mean[-2][1]
        out += ["Dev F1 during fine-tuning, mean over all trials at each evaluation (per-strategy curves with CIs: "
                f"`runs/bench/{name}/figures/dev_f1.png`): "
                + ", ".join(f"step {int(k)} {v:.3f}" for k, v in mean)
                + (" — still rising at the last evaluation: fine-tuning had not converged within this budget."
                   if rising else "."), ""]
    tok = s.get("tokens") or {}
    if tok.get("most"):
        out += [f"*Token types {tok['reference']} masks most (ranked by its {tok.get('ranked_by', 'realised rate')}, "
                f"mean over seeds; types seen ≥ {tok['min_seen']} times), with every strategy's realised rate "
                "(masked / seen over the MLM stage, summed over seeds) for the same types*", "",
                token_table(tok, "most").head(15).to_markdown(index=False), "",
                "*… and least*", "", token_table(tok, "least").head(10).to_markdown(index=False), ""]
    return out


def _protocol(cfg: dict) -> str:
    m = cfg["masking"]
    ft = (f"frozen-encoder probe (logistic regression, C={cfg['probe_c'] or 'chosen by 5-fold CV per trial'}, on "
          "mean-pooled [u, v, |u-v|, u*v]) "
          f"fitted on a stratified {cfg['ft_train_size']} of the 3,668 training pairs per seed"
          if cfg.get("ft_mode") == "probe" else
          f"fine-tuning of the whole encoder + a new classification head, {cfg['ft_epochs']} epoch(s) on "
          f"{cfg['ft_train_size'] or 'all 3,668'} training pairs, batch {cfg['ft_batch']}, AdamW lr {cfg['ft_lr']} "
          f"with {cfg.get('ft_warmup', 0.1):.0%} linear warm-up then linear decay")
    return (f"MLM stage {cfg['mlm_steps']} AdamW steps x batch {cfg['mlm_batch']} (lr {cfg['mlm_lr']}, weight decay "
            f"{cfg['mlm_weight_decay']}) on MRPC training pairs, masking rate {m['rate']} for every strategy, "
            f"replacement {m['replacement']!r}, Typhoon spread {m['spread']}, EMA {m['ema']}, {m['warm_batches']} "
            f"warm-up batch(es); then {ft}; max length {cfg['max_length']}; scored on dev (all 408) and "
            + (f"a fixed stratified {cfg['eval_max']} of" if cfg["eval_max"] else "all")
            + f" the 1,725 labelled MSR test pairs; seeds {list(range(cfg['seeds']))}"
            if isinstance(cfg["seeds"], int) else str(cfg["seeds"]))


def finetune_attempt_section() -> list[str]:
    d = digest("masking_mrpc_finetune16", _digest_attempt)
    if d is None:
        return []
    t = pd.DataFrame(d["metrics"])
    cfg = d["config"]
    rows = pd.DataFrame([{"strategy": r.strategy, "seed": r.seed, "dev F1": f"{r.dev_f1:.4f}",
                          "dev acc": f"{r.dev_acc:.4f}", "test F1": f"{r.test_f1:.4f}", "wall s": f"{r.mlm_seconds + r.ft_seconds:.0f}"}
                         for r in t.itertuples()])
    base = d["majority_dev"]
    at_base = bool(len(t)) and bool((abs(t.dev_f1 - base.get("f1", -1)) < 1e-9).all())
    what = ("every one predicted the majority class (dev F1 {:.4f} = always 'paraphrase')".format(base["f1"])
            if at_base else "see the table")
    wall = (t.mlm_seconds + t.ft_seconds).mean() / 60
    return [
        "## First fine-tuning attempt: 16 steps learned nothing", "",
        f"The same comparison with full fine-tuning ({cfg['mlm_steps']} MLM steps, then {cfg['ft_train_size']} "
        f"training pairs x {cfg['ft_epochs']} epoch at batch {cfg['ft_batch']} = {int(t.ft_steps.iloc[0])} steps, "
        f"lr {cfg['ft_lr']}) finished {len(t)} trials before it was stopped; {what}, at {wall:.1f} min wall per "
        "trial on the shared CPU. "
        "Stored in `runs/bench/masking_mrpc_finetune16/`.", "",
        rows.to_markdown(index=False), "",
    ]


ATTEMPTS = {  # fine-tuning attempts kept as evidence: run directory -> (title, what differed)
    "masking_mrpc_ft_b32": (
        "Fine-tuning attempt: 115 steps of 32 at lr 5e-5, fresh pooler: learned a little",
        "the classifier's pooler freshly initialised (the MLM checkpoint has none; this is transformers' default "
        "and `ft_pooler: init`)"),
    "masking_mrpc_ft_lr1e4": (
        "Fine-tuning attempt: 230 steps of 16 at lr 1e-4, checkpoint pooler: collapsed to the majority class",
        "the checkpoint's pooler copied over (`ft_pooler: checkpoint`), length-grouped batches"),
    "masking_mrpc_ft_pooler": (
        "Fine-tuning attempt: 115 steps of 32 at lr 5e-5, checkpoint pooler: collapsed to the majority class",
        "the checkpoint's pooler copied over (`ft_pooler: checkpoint`), length-grouped batches; otherwise the "
        "protocol of the 115-step attempt above, which learned a little with a fresh pooler"),
    "masking_mrpc_ft_grouped": (
        "Fine-tuning attempt: 115 steps of 32 at lr 5e-5, fresh pooler, length-grouped batches: below the majority "
        "class",
        "the protocol of the 115-step attempt above that learned a little, with batches grouped by length "
        "(transformers' `group_by_length` sampler) instead of shuffled; grouping was dropped again after it"),
}


def attempt_section(name: str) -> list[str]:
    d = digest(name, _digest_attempt)
    if d is None:
        return []
    t = pd.DataFrame(d["metrics"])
    cfg = d["config"]
    base = d["majority_dev"]
    title, change = ATTEMPTS[name]
    rows = pd.DataFrame([{"strategy": r.strategy, "seed": r.seed, "dev F1": f"{r.dev_f1:.4f}",
                          "dev acc": f"{r.dev_acc:.4f}", "test acc": f"{r.test_acc:.4f}",
                          "wall s": f"{r.mlm_seconds + r.ft_seconds:.0f}"} for r in t.itertuples()])
    return [
        f"## {title}", "",
        f"{cfg['mlm_steps']} MLM steps, then all training pairs x {cfg['ft_epochs']} epoch at batch {cfg['ft_batch']} "
        f"= {int(t.ft_steps.iloc[0])} steps, lr {cfg['ft_lr']}; {change}. {len(t)} trial(s) finished before it was "
        f"stopped. Majority class on dev: F1 {base.get('f1', float('nan')):.4f}, accuracy "
        f"{base.get('acc', float('nan')):.4f}. Stored in `runs/bench/{name}/`.", "",
        rows.to_markdown(index=False), "",
    ]


def probe_c1_section() -> list[str]:
    d = digest("masking_mrpc_probe_c1", _digest_attempt)
    if d is None:
        return []
    t = pd.DataFrame(d["metrics"])
    rows = pd.DataFrame([{"strategy": r.strategy, "seed": r.seed, "dev F1 (C=1)": f"{r.dev_f1:.4f}",
                          "dev acc (C=1)": f"{r.dev_acc:.4f}"} for r in t.itertuples()])
    new = digest("masking_mrpc", _digest_comparison)
    if new is not None and "error" not in new:
        cur = pd.DataFrame(new["metrics"]).set_index(["strategy", "seed"])
        rows["dev acc (CV-chosen C)"] = [f"{cur.loc[(r.strategy, r.seed), 'dev_acc']:.4f}"
                                         if (r.strategy, r.seed) in cur.index else "–" for r in t.itertuples()]
    return [
        "## Probe attempt: a fixed C = 1 overfit", "",
        f"The probe protocol with a fixed L2 strength C = 1 (1,536 features, {int(t.ft_train_size.iloc[0])} "
        f"training pairs) finished {len(t)} trials before it was replaced by the CV-chosen C; its dev accuracy "
        "hovered around the majority-class rate. Stored in `runs/bench/masking_mrpc_probe_c1/`.", "",
        rows.to_markdown(index=False), "",
    ]


def main() -> None:
    lines = ["# Benchmarks: task-specific masking (`fmgauge.masking`)", "",
             "Machine: 2 CPU cores (x86_64), 24 GB RAM, no GPU; whether other jobs shared it is said per "
             "measurement; `OMP_NUM_THREADS=1`, `HF_HUB_OFFLINE=1`.", ""]
    lines += (overhead_section() + comparison_section("masking_mrpc_ft") + comparison_section("masking_mrpc")
              + finetune_attempt_section() + [ln for n in ATTEMPTS for ln in attempt_section(n)]
              + probe_c1_section())
    out = ROOT / "docs" / "bench-parts" / "masking.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out)


if __name__ == "__main__":
    main()
