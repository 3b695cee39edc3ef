"""Benchmark: weight-only PTQ of smollm2-135m — FP, RTN, AWQ, GPTQ and the sensitivity-guided variants at 3 and 4
bits, group 128 and per-channel, from one calibration pass; WikiText-2 perplexity under one stated protocol.

Resumable (the run directory's trial table): run it again after an interruption and it continues. Stages run in
the order given (3-bit first: the setting the issue's goal is about). ``--doc`` rewrites
docs/bench-parts/quantization.md from whatever results exist (numbers are read from the run directories, never
typed).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py compare
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py gptq-timing --n-samples 128
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py gptq-ablation --bits 3 \
        --n-samples 32 --max-windows 16
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py layer-check
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py export-check \
        --out runs/bench/quantization-peers-w3 --checks rtn:3:64,gptq:3:64
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quantization.py doc
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench_runs import run_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_compare(a: argparse.Namespace) -> None:
    from fmgauge.quantization.compare import CompareConfig, compare

    for stage in a.stages.split(","):
        b, g = (int(v) for v in stage.split(":"))
        cfg = CompareConfig.model_validate({
            "model": a.model, "methods": a.methods.split(","), "bits": [b], "group_sizes": [g],
            "calib": {"n_samples": a.n_samples, "seqlen": a.seqlen},
            "eval": {"context": a.context, "stride": a.context, "max_windows": a.max_windows,
                     "kl_windows": a.kl_windows}})
        compare(cfg, a.out, progress=False)
        logging.info("stage %s done", stage)


def run_gptq_timing(a: argparse.Namespace) -> None:
    """End-to-end GPTQ as `fmgauge quantize run` does it (load, tokenize, sequential calibration + quantization of
    every block, save), on an otherwise idle machine; wall time, CPU time and peak memory recorded."""
    import json
    import os
    import shutil
    import tempfile
    import time

    from fmgauge.quantization.pipeline import RunConfig, run_quantization
    from fmgauge.quantization.resources import measure

    cfg = RunConfig.model_validate({"model": a.model, "quant": {"method": "gptq", "bits": a.bits, "group_size": 128},
                                    "calib": {"n_samples": a.n_samples, "seqlen": a.seqlen}})
    out = Path(tempfile.mkdtemp(prefix="gptq-timing-"))
    load_before = os.getloadavg()
    try:
        t0 = time.perf_counter()
        with measure() as total:
            res = run_quantization(cfg, out, progress=False, use_cache=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rec = {**res.record, "command": " ".join(["OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python", *sys.argv]),
           "end_to_end": {**total.to_dict(), "wall_seconds": wall}, "loadavg_before": load_before,
           "loadavg_after": os.getloadavg(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "quantization-gptq-timing.json").write_text(json.dumps(rec, indent=2, default=str))


def run_gptq_ablation(a: argparse.Namespace) -> None:
    """GPTQ at ``--bits`` group 128: sequential or not × 8 or ``--n-samples`` calibration windows, one perplexity
    protocol; separates what the sequential pass and the larger calibration set each bring."""
    import copy
    import json

    from fmgauge.core.text_models import TextModel, load_text_model
    from fmgauge.quantization.evaluate import EvalConfig, perplexity
    from fmgauge.quantization.methods import QuantConfig
    from fmgauge.quantization.pipeline import CalibConfig, calibrate, calibration_tokens, quantize_model
    from fmgauge.quantization.text_data import TextSource, token_stream

    tm = load_text_model(a.model)
    ev = EvalConfig(context=a.context, max_windows=a.max_windows, kl_windows=0)
    stream = token_stream(tm.tokenizer, TextSource(ev.text, ev.split))
    rows = []
    for n in sorted({8, a.n_samples}):
        calib = CalibConfig(n_samples=n, seqlen=a.seqlen)
        for sequential in (False, True):
            qc = QuantConfig(method="gptq", bits=a.bits, group_size=128, sequential=sequential)
            stats = None if sequential else calibrate(tm, calib, gradients=False, progress=False)[0]
            qtm = TextModel(copy.deepcopy(tm.model), tm.tokenizer, tm.name, tm.source, tm.device)
            res = quantize_model(qtm, qc, stats, sequences=calibration_tokens(tm, calib), progress=False)
            ppl = perplexity(qtm.model, stream, ev, progress=False).to_dict()
            rows.append({"n_samples": n, "sequential": sequential, "ppl": ppl["ppl"], "ppl_lo": ppl["ppl_lo"],
                         "ppl_hi": ppl["ppl_hi"], "protocol": ppl["protocol"],
                         "quant_seconds": res.record["quantization_usage"]["seconds"]})
            logging.info("%s", rows[-1])
    (RESULTS / "quantization-gptq-ablation.json").write_text(json.dumps(
        {"bits": a.bits, "group_size": 128, "seqlen": a.seqlen, "rows": rows,
         "command": " ".join(["OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python", *sys.argv])}, indent=1))


def run_layer_check(a: argparse.Namespace) -> None:
    """Per-layer output error ``tr(ΔW H ΔWᵀ)`` of GPTQ and sens-GPTQ relative to RTN on the calibration statistics of
    the compare run (blocks 0, 15, 29), under H and under the loss-weighted H_F: does each method reduce its own
    objective?"""
    import json

    from fmgauge.core.text_models import load_text_model
    from fmgauge.quantization.gptq import gptq_quantize
    from fmgauge.quantization.grid import rtn
    from fmgauge.quantization.methods import fisher_hessian
    from fmgauge.quantization.pipeline import CalibConfig, calibrate

    tm = load_text_model(a.model)
    stats, _ = calibrate(tm, CalibConfig(n_samples=a.n_samples, seqlen=a.seqlen), progress=False)
    mods = dict(tm.model.named_modules())
    rows = []
    for b in (0, 15, 29):
        for t in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"):
            n = f"model.layers.{b}.{t}"
            w, st = mods[n].weight.data.float(), stats.layers[n]
            hs = {"H": st.H, "H_F": fisher_hessian(st, 1.0)}
            dq = {"rtn": rtn(w, 3, 128).dequantize() - w,
                  "gptq": gptq_quantize(w, hs["H"], 3, 128)[0].dequantize() - w,
                  "sens-gptq": gptq_quantize(w, hs["H_F"], 3, 128)[0].dequantize() - w}
            for hn, h in hs.items():
                base = float(((dq["rtn"] @ h) * dq["rtn"]).sum())
                rows.append({"layer": n, "objective": hn, **{m: float(((d @ h) * d).sum()) / base
                                                            for m, d in dq.items() if m != "rtn"}})
    (RESULTS / "quantization-layer-check.json").write_text(json.dumps(
        {"bits": 3, "group_size": 128, "n_samples": a.n_samples, "rows": rows}, indent=1))


def run_export_check(a: argparse.Namespace) -> None:
    """The shipped file's perplexity vs the in-memory figure of a `quantize compare` run (--out): each
    ``method:bits:group[:sym]`` of --checks is quantized again exactly as the compare run did it (same calibration
    config, 1 thread: deterministic), saved in every format of --formats that fits, loaded back the way
    `quantize eval` loads it, and scored on the compare run's windows. Writes quantization-export-check.json."""
    import json
    import tempfile

    from fmgauge.core.store import RunStore
    from fmgauge.core.text_models import load_text_model
    from fmgauge.core.validation import FmgaugeError
    from fmgauge.quantization.calibration import linear_layers
    from fmgauge.quantization.compare import CompareConfig
    from fmgauge.quantization.evaluate import evaluate, evaluate_model
    from fmgauge.quantization.formats import resolve_format
    from fmgauge.quantization.methods import QuantConfig
    from fmgauge.quantization.pipeline import calibration_for, quantize_model, save

    store = RunStore(a.out)
    ccfg = CompareConfig.model_validate(store.load_config())
    rows_in_memory = store.results().set_index("trial_id")
    path = RESULTS / "quantization-export-check.json"
    done = json.loads(path.read_text())["rows"] if path.exists() else []
    for spec in a.checks.split(","):
        method, bits, group, *sym = spec.split(":")
        qc = QuantConfig(**{**ccfg.quant, "method": method, "bits": int(bits), "group_size": int(group),
                            "sym": bool(sym)})
        tid = f"{method}-w{bits}-g{group}"
        tm = load_text_model(ccfg.model, device=ccfg.device, dtype=ccfg.dtype)
        widths = {n: m.in_features for n, m in linear_layers(tm.model).items()}
        fmts = []
        for f in a.formats.split(","):
            try:
                resolve_format(f, qc, widths, tm.model.config.model_type)
                fmts.append(f)
            except FmgaugeError as e:  # a format that does not fit is reported, not run
                logging.info("%s: %s skipped (%s)", spec, f, e)
        stats, seqs = calibration_for(tm, qc, ccfg.calib, progress=False)
        res = quantize_model(tm, qc, stats, sequences=seqs, progress=False)
        here = evaluate(res.model, tm.tokenizer, ccfg.eval, progress=False)["ppl"]  # this process, in memory
        for f in fmts:
            with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
                save(res, tmp, f, qc)
                ev = evaluate_model(tmp, ccfg.eval, reference=ccfg.model, device=ccfg.device, dtype=ccfg.dtype,
                                    progress=False)
            mem = rows_in_memory.loc[tid] if (tid in rows_in_memory.index and not sym) else None
            done = [r for r in done if (r["check"], r["format"]) != (spec, f)]
            done.append({"check": spec, "format": f, "loader": ev["loader"], "on_disk_mb": ev["on_disk_mb"],
                         "ppl_file": ev["ppl"], "ppl_in_memory": here,
                         "ppl_compare_run": None if mem is None else float(mem.ppl),
                         "kl_file": ev.get("kl"), "protocol": ev["protocol"]})
            logging.info("%s as %s: file PPL %.4f, in memory %.4f", spec, f, ev["ppl"], here)
        path.write_text(json.dumps({"command": " ".join(["benchmarks/bench_quantization.py", *sys.argv[1:]]),
                                    "compare_run": str(Path(a.out)), "rows": done}, indent=1))
        del tm, res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("what", choices=["compare", "gptq-timing", "gptq-ablation", "layer-check", "export-check",
                                        "doc"])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", default="rtn,awq,gptq,sens-awq,sens-gptq")
    p.add_argument("--stages", default="3:128,4:128,3:-1,4:-1", help="bits:group_size, comma-separated, in order")
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--bits", type=int, default=4, help="gptq-timing: bits (group 128)")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--kl-windows", type=int, default=2)
    p.add_argument("--out", type=Path, default=run_dir("quantization-compare"),
                   help="the compare run directory (default runs/bench/quantization-compare/, git-ignored)")
    p.add_argument("--checks", default="rtn:3:64,gptq:3:64", help="export-check: method:bits:group[:sym], …")
    p.add_argument("--formats", default="compressed-tensors,gptq,gguf", help="export-check: formats to write")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if a.what == "compare":
        run_compare(a)
    elif a.what == "gptq-timing":
        run_gptq_timing(a)
    elif a.what == "gptq-ablation":
        run_gptq_ablation(a)
    elif a.what == "layer-check":
        run_layer_check(a)
    elif a.what == "export-check":
        run_export_check(a)
    else:
        from bench_quantization_doc import write_doc  # noqa: PLC0415 - sibling script

        write_doc()


if __name__ == "__main__":
    main()
