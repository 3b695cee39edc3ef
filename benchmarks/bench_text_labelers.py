"""Zero-shot text labelers on Medical Abstracts: throughput (texts/s) and full-pool accuracy / macro AUC.

    .venv/bin/python benchmarks/bench_text_labelers.py throughput [--n 48] [--models minilm-l6,smollm2-135m]
    .venv/bin/python benchmarks/bench_text_labelers.py pool [--models smollm2-135m,minilm-l6,gemma3-270m] [--n 0]

``throughput`` times each labeler on the first ``n`` pool texts (a cold cache: the scores of these texts are
computed, not read) at max_text_tokens 64 and 256. ``pool`` labels the whole pool (train split, 2,021 texts) of
``medical-abstracts`` through ``run_labeler`` (so the cache then serves the weak-label study) and scores each
labeler variant on the 5-class task and on neoplasms-vs-rest. Results append to
benchmarks/results/text_labelers.jsonl (one JSON object per measurement, with threads, load average and time), so
an interrupted run resumes from the cache and the file keeps what was measured. The machine is shared: the load
average is recorded with every figure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import typer
from sklearn.metrics import roc_auc_score

from fmgauge.core.data import Dataset, Split, load_dataset
from fmgauge.core.text_models import load_text_model
from fmgauge.weaklabels.labelers import parse_labeler, run_labeler
from fmgauge.weaklabels.text_embed import available_cores, embed_texts, labelling_threads, torch_threads

RESULTS = Path(__file__).resolve().parent / "results" / "text_labelers.jsonl"
app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("bench_text_labelers")


def record(row: dict) -> None:
    row = {"threads": labelling_threads(), **row, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "load_avg_1m": round(os.getloadavg()[0], 2),
           "cores": available_cores(), "cpu": platform.processor() or platform.machine(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def subset(ds: Dataset, n: int, offset: int = 0) -> Dataset:
    sp = ds.split("train")
    sl = slice(offset, offset + n) if n else slice(None)
    return Dataset(f"{ds.name}[{offset}:{offset + n}]" if n else ds.name, ds.class_names,
                   {"train": Split(sp.x[sl], sp.y[sl], sp.ids[sl])}, source=ds.source, meta=ds.meta)


def labeler_cfg(model: str, **kw) -> dict:
    if model == "minilm-l6":
        return {"kind": "text-embedding", "model": model, **kw}
    return {"kind": "causal-lm", "model": model, **kw}


@app.command()
def throughput(n: int = 48, models: str = "minilm-l6,smollm2-135m", tokens: str = "64,256", offset: int = 0,
               batch_size: int = 0, dtype: str = "float32") -> None:
    """Texts/second of each labeler on ``n`` pool texts (model load excluded, cold score cache)."""
    ds = load_dataset("medical-abstracts")
    for model in models.split(","):
        tm = load_text_model(model, task="encoder" if model == "minilm-l6" else "causal-lm", dtype=dtype)
        del tm  # loaded once so the timing below excludes the GGUF conversion and disk reads
        for mtt in [int(t) for t in tokens.split(",")]:
            sub = subset(ds, n, offset + 7919 * mtt % 997)  # distinct texts per setting: never a cache hit
            kw = {"max_length": mtt} if model == "minilm-l6" else {"max_text_tokens": mtt}
            if batch_size:
                kw["batch_size"] = batch_size
            if dtype != "float32":
                kw["dtype"] = dtype
            cfg = parse_labeler(labeler_cfg(model, **kw))
            t0 = time.perf_counter()
            if model == "minilm-l6":
                with torch_threads():
                    embed_texts(model, sub.split("train").x, max_length=mtt, batch_size=cfg.batch_size,
                                dtype=dtype)
            else:
                run_labeler(cfg, sub, "train")
            dt = time.perf_counter() - t0
            record({"what": "throughput", "model": model, "n": n, "max_tokens": mtt, "seconds": round(dt, 2),
                    "texts_per_s": round(n / dt, 3), "batch_size": cfg.batch_size, "dtype": dtype,
                    "threads": labelling_threads()})


def scores(out, y: np.ndarray) -> dict:
    k = out.probs.shape[1]
    p = out.probs
    auc = roc_auc_score(y, p[:, 1]) if k == 2 else roc_auc_score(y, p, multi_class="ovr", average="macro")
    return {"accuracy": round(float((out.labels == y).mean()), 4), "auc": round(float(auc), 4),
            "predicted_counts": np.bincount(out.labels, minlength=k).tolist()}


VARIANTS = {  # (name, overrides) scored from one model run per prompt (score/calibrate reuse cached scores)
    "causal-lm": [("sum", {}), ("sum+cf", {"calibrate": "content-free"}), ("mean", {"score": "mean"}),
                  ("mean+cf", {"score": "mean", "calibrate": "content-free"})],
    "text-embedding": [("default", {})],
}


@app.command()
def pool(models: str = "smollm2-135m,minilm-l6,gemma3-270m", n: int = 0, max_text_tokens: int = 256,
         chat: bool = False, dtype: str = "float32") -> None:
    """Label the pool with each model (cached for the study) and score variants on 5-class and neoplasms tasks."""
    full = load_dataset("medical-abstracts")
    neo = load_dataset("medical-abstracts-neoplasms")
    rest = list(full.class_names)  # X included at its place: prompts (and cached scores) equal the 5-class ones
    for model in models.split(","):
        base = ({"max_length": max_text_tokens} if model == "minilm-l6"
                else {"max_text_tokens": max_text_tokens, "chat_template": chat})
        if dtype != "float32":
            base["dtype"] = dtype
        cfg0 = parse_labeler(labeler_cfg(model, **base))
        t0 = time.perf_counter()
        run_labeler(cfg0, subset(full, n), "train")
        dt = time.perf_counter() - t0
        n_texts = n or len(full.split("train"))
        if dt > 5:  # else it was read from the cache: nothing measured
            record({"what": "pool-label", "model": model, "n": n_texts, "config": cfg0.model_dump(),
                    "seconds": round(dt, 1), "texts_per_s": round(n_texts / dt, 3)})
        for name, over in VARIANTS[cfg0.kind]:
            tasks = [("5-class", full, {}), ("neoplasms-vs-rest", neo, {"rest_classes": rest})]
            if cfg0.kind == "text-embedding":  # cheap: embeddings are cached; for an LM it is another model run
                # the dataset names its rest classes (meta): drop them so the labeler's fallback is measured
                no_rest = dataclasses.replace(neo, meta={k: v for k, v in neo.meta.items() if k != "rest_class_names"})
                tasks.append(("neoplasms-vs-rest(fallback)", no_rest, {}))
            for task, ds, extra in tasks:
                sub = subset(ds, n)
                cfg = parse_labeler(labeler_cfg(model, **base, **over, **extra))
                out = run_labeler(cfg, sub, "train")
                record({"what": "pool-quality", "model": model, "variant": name, "task": task, "n": len(out.ids),
                        "config": cfg.model_dump(), **scores(out, sub.split("train").y)})


DOC = Path(__file__).resolve().parents[1] / "docs" / "bench-parts" / "text-labelers.md"
DOC_HEAD = """# Zero-shot text labelers: throughput and quality (Medical Abstracts)

Generated by `.venv/bin/python benchmarks/bench_text_labelers.py render` from
`benchmarks/results/text_labelers.jsonl` (every figure below is a row of that file). Machine: 2-core AMD EPYC
(x86_64, AVX-512 with bf16), no GPU, **shared with other jobs** (the 1-minute load average at the time of each
measurement is in the tables; a load of 2 means the 2 cores were already busy). `threads` is the torch thread count
used while labelling (`FMGAUGE_THREADS`, default all cores). Timings include loading the model from its local
safetensors (seconds; the one-time GGUF conversion is excluded) and tokenisation; labelling writes to the cache, so
a second call takes no model time. The cores were already saturated by other jobs (load average well above 2),
so the rows were measured with `FMGAUGE_THREADS=1`: with 2 threads each parallel region waits for a core.

Labelers (configs for `run_labeler` / a study's `labelers:` list; see the module docstrings of
`fmgauge.weaklabels.labelers.embedding` and `.causal_lm` for the formulas):

- `{kind: text-embedding, model: minilm-l6}`: cosine similarity of the mean-pooled, normalised sentence embedding
  (`fmgauge.weaklabels.text_embed.embed_texts`, cached and shared with the embedding students) to each class's
  averaged description embeddings; softmax at temperature 0.05 (the scale 20 all-MiniLM-L6-v2 was trained with).
- `{kind: causal-lm, model: smollm2-135m | gemma3-270m}`: log P(class name | instruction prompt listing the
  options), one prompt forward per text with the KV cache reused for all classes, LM head only where needed.
  The timings include a one-time self-check (the first text's scores recomputed by plain unpadded forwards, one
  per class) and three content-free prompts, which weigh on small `n`.
- One-vs-rest tasks use `rest_classes` = all five class names (so the prompts, and the cached model scores, are
  the 5-class ones and P(neoplasms) is the 5-class labeler's P(neoplasms)).
"""


@app.command()
def render() -> None:
    """Write docs/bench-parts/text-labelers.md from the results file."""
    import pandas as pd

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    parts = [DOC_HEAD]
    thr = df[df["what"] == "throughput"]
    if len(thr):
        parts.append("## Throughput (texts/second)\n\nCommand: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 "
                     "[FMGAUGE_THREADS=1] .venv/bin/python benchmarks/bench_text_labelers.py throughput --n N "
                     "--models M [--dtype bfloat16]` (N pool texts not labelled before; minilm-l6: max_length, "
                     "causal LMs: max_text_tokens; prompts add ~45 template tokens).\n")
        cols = ["model", "dtype", "max_tokens", "n", "batch_size", "threads", "seconds", "texts_per_s",
                "load_avg_1m", "time"]
        parts.append(thr[cols].to_markdown(index=False) + "\n")
    lab = df[(df["what"] == "pool-label") & (df["seconds"] > 5)]  # shorter = read from the cache, not measured
    if len(lab):
        parts.append("## Labelling the whole pool\n\nCommand: `.venv/bin/python benchmarks/bench_text_labelers.py "
                     "pool --models M` (train split of medical-abstracts, 2,021 texts, through run_labeler; "
                     "the cache then serves the weak-label study). n < 2,021: the first n pool texts only (`--n`), "
                     "for lack of time on the shared CPU.\n")
        lab = lab.assign(settings=[_settings(c) for c in lab["config"]])
        parts.append(lab[["model", "n", "settings", "seconds", "texts_per_s", "load_avg_1m", "time"]]
                     .to_markdown(index=False) + "\n")
    q = df[df["what"] == "pool-quality"]
    if len(q):
        parts.append("## Accuracy and macro AUC on the pool (true labels)\n\n5-class: macro one-vs-rest AUC. "
                     "neoplasms-vs-rest: P(neoplasms) from the 5 options (`rest_classes` = the 5 class names); "
                     "(fallback): no rest classes, the 'not neoplasms' class as the labeler's fallback describes "
                     "it. Variants of the causal LM: sum or mean of verbaliser-token log-probs, +cf = content-free "
                     "calibration.\n")
        q = q.assign(settings=[_settings(c) for c in q["config"]])
        q = q.drop_duplicates(["model", "variant", "task", "n", "settings"], keep="last")  # re-runs from cache
        parts.append(q[["model", "variant", "task", "n", "accuracy", "auc", "predicted_counts", "settings"]]
                     .to_markdown(index=False) + "\n")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


def _settings(cfg: dict) -> str:
    keys = ["max_length", "max_text_tokens", "dtype", "chat_template", "batch_size", "temperature"]
    return ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    app()
