"""``quantize compare --peers llama.cpp``: llama.cpp's own quantizer beside fmgauge's GGUF files, every row scored
by llama.cpp on the same windows and token ids, paired per window.

Rows (``engine = llama.cpp`` in the run's store; trial ids start with ``llama.cpp:``):

- ``fp``: the full-precision model written as an F32 GGUF (llama-quantize's input), scored by llama.cpp;
- ``lq <TYPE>`` for every ``llama_types`` entry (Q4_0, Q4_K_M, Q3_K_M, Q2_K by default) × every importance matrix
  in ``llama_imatrix``: ``none``; ``llama`` = ``llama-imatrix`` run on fmgauge's calibration windows (decoded to
  text, chunks of ``seqlen`` tokens); ``act2`` = fmgauge's E[x²] of the same capture (what llama-imatrix measures,
  from fmgauge's own forward pass); ``fisher`` = fmgauge's gradient-weighted sensitivity S_j (Xu 2026). Which
  tensors fell back to another type (K-quants need widths that are multiples of 256) is read from llama-quantize's
  log and kept per row;
- ``<method> (fmgauge GGUF)`` for every fmgauge configuration GGUF stores (4/5/8 bits, group 32): fmgauge's codes in
  the same block types (written by :func:`fmgauge.quantization.formats.export`, head quantized as llama-quantize
  does), scored by llama.cpp.

Sizes are the files' bytes and llama.cpp's BPW (tensor bytes × 8 / elements); time is the tool's wall / CPU seconds
(llama-quantize, plus the importance matrix's own: llama-imatrix's run, or fmgauge's capture for act2 / fisher).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization import llamacpp
from fmgauge.quantization.evaluate import perplexity_from_windows
from fmgauge.quantization.text_data import eval_windows

log = logging.getLogger(__name__)

ENGINE = "llama.cpp"
IMATRIX = {"none": "none", "llama": "llama-imatrix (E[x²])", "act2": "fmgauge E[x²]", "fisher": "fmgauge S_j"}
# llama-quantize type names accepted by --llama-types (the common ones; llama-quantize itself knows more)
KNOWN_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
               "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS")


def trial_id(qtype: str, imat: str) -> str:
    return f"{ENGINE}:{qtype}" + ("" if imat == "none" else f"+{imat}")


def fmgauge_trial_id(tid: str) -> str:
    return f"{ENGINE}:fmgauge:{tid}"


def llama_eval(cfg):  # noqa: ANN001, ANN201  (CompareConfig -> EvalConfig)
    """The evaluation protocol of the llama.cpp rows: the comparison's, with ``llama_windows`` windows if set."""
    return cfg.eval if cfg.llama_windows is None else cfg.eval.model_copy(update={"max_windows": cfg.llama_windows})


def _windows(stream: torch.Tensor, ev) -> tuple[list[tuple[int, int, int]], int]:  # noqa: ANN001  (EvalConfig)
    wins = eval_windows(stream, ev.context, ev.step)
    return (wins[: ev.max_windows] if ev.max_windows is not None else wins), len(wins)


def _save_windows(store: RunStore, tid: str, nll: list[float]) -> None:
    from fmgauge.quantization.trial_files import save_windows as save

    save(store, tid, nll)


def score_row(llama: llamacpp.LlamaCpp, path: Path, stream, ev, work: Path) -> dict:  # noqa: ANN001
    """Score GGUF ``path`` with llama.cpp on the comparison's windows: perplexity fields, file sizes, eval time."""
    from fmgauge.quantization.formats.gguf import file_sizes

    wins, total = _windows(stream, ev)
    res = llamacpp.score(llama, path, stream, wins, work, n_ctx=ev.context, threads=torch.get_num_threads())
    ppl = perplexity_from_windows(res["window_nll"], [w[2] for w in wins], total, ev)
    sizes = file_sizes(path)
    return {**ppl.to_dict(), "window_nll": res["window_nll"], "engine": ENGINE, "on_disk_mb": sizes["file_bytes"] / 1e6,
            "file_bpw": sizes["bpw"], "gguf_types": ", ".join(f"{k}×{v}" for k, v in sizes["types"].items()),
            "eval_seconds": res["process"]["seconds"], "eval_cpu_seconds": res["process"]["cpu_seconds"],
            "eval_load_avg": res["process"]["load_avg"]}


def score_fmgauge(cfg, res, qc, tid: str, stream, store: RunStore, llama: llamacpp.LlamaCpp,  # noqa: ANN001
                  base_row: dict) -> None:
    """Write fmgauge's quantized model ``res`` (config ``qc``) as GGUF and score it with llama.cpp (a trial of its
    own). Skipped, with nothing recorded, when GGUF cannot store the grid. Changes ``res.model`` (the export rounds it
    to what the file holds): call after fmgauge's own evaluation."""
    import shutil

    from fmgauge.quantization.formats import export
    from fmgauge.quantization.formats.gguf import gguf_type

    try:
        gguf_type(qc.bits, qc.group_size, qc.sym)
    except FmgaugeError:
        return
    ftid = fmgauge_trial_id(tid)
    root = store.root / "llama.cpp"
    out = root / f"fm-{tid}"
    try:
        info = export(res, out, "gguf", qc, dtype=cfg.dtype)
        row = score_row(llama, out / "model.gguf", stream, llama_eval(cfg), root / "work")
    except FmgaugeError as e:
        store.record_failure(ftid, {"engine": ENGINE, **qc.model_dump()}, str(e))
        log.warning("%s failed: %s", ftid, e)
        shutil.rmtree(out, ignore_errors=True)
        return
    _save_windows(store, ftid, row.pop("window_nll"))
    keep = {k: base_row.get(k) for k in ("quant_seconds", "quant_cpu_seconds", "quant_peak_rss_mb", "calib_seconds",
                                         "calib_peak_rss_mb", "calib_tokens", "threads")}
    from fmgauge.quantization.trial_files import method_name

    row.update(method=f"{method_name(qc)} (fmgauge GGUF)", bits=qc.bits, group_size=qc.group_size, tool="fmgauge",
               imatrix="–", file_format="gguf", fallbacks="", avg_bits=info["bits_per_weight"], **keep)
    store.record(ftid, {"engine": ENGINE, **qc.model_dump()}, [row], 0.0)
    shutil.rmtree(out, ignore_errors=True)


def run_llama_peer(cfg, tm, stream, seqs, store: RunStore, llama: llamacpp.LlamaCpp, *,  # noqa: ANN001
                   progress: bool = True) -> None:
    """The llama.cpp rows of a comparison (see the module docstring); resumes (finished trials are skipped), and a
    failed configuration is recorded with its reason while the others go on."""
    import shutil

    from fmgauge.core.progress import progress as progress_tracker
    from fmgauge.quantization.formats.gguf import write_gguf
    from fmgauge.quantization.formats.imatrix import entries_from_stats, write_imatrix
    from fmgauge.quantization.pipeline import calibrate

    done = store.done_ids()
    root = store.root / "llama.cpp"
    work = root / "work"
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    todo = [(t, m) for t in cfg.llama_types for m in cfg.llama_imatrix if trial_id(t, m) not in done]
    fp_tid = f"{ENGINE}:fp"
    if not todo and fp_tid in done:
        return
    fp = root / "fp-f32.gguf"
    if not fp.exists():
        write_gguf(tm.model, tm.tokenizer, {}, fp.with_suffix(".tmp"), dtype="float32", embeddings="keep")
        fp.with_suffix(".tmp").replace(fp)
    if fp_tid not in done:
        row = score_row(llama, fp, stream, llama_eval(cfg), work)
        _save_windows(store, fp_tid, row.pop("window_nll"))
        row.update(method="fp (F32 GGUF)", bits=32, group_size=0, tool=f"llama.cpp {llama.describe()}",
                   imatrix="–", file_format="gguf", fallbacks="", avg_bits=row["file_bpw"])
        store.record(fp_tid, {"engine": ENGINE, "type": "F32"}, [row], 0.0)
    imatrices: dict[str, tuple[Path, dict]] = {}
    need = {m for _, m in todo} - {"none"}
    n_tokens = int(seqs.numel())
    if "llama" in need:
        text = root / "calib.txt"
        text.write_text(llamacpp.calibration_text(tm.tokenizer, seqs), encoding="utf-8")
        path = root / "imatrix-llama.gguf"
        with progress_tracker("llama-imatrix", 1, enabled=progress) as bar:
            run = llamacpp.imatrix(llama, fp, text, path, n_ctx=int(seqs.shape[1]), chunks=int(seqs.shape[0]),
                                   threads=threads)
            bar.advance(1)
        imatrices["llama"] = (path, {"imatrix_seconds": run["seconds"], "imatrix_cpu_seconds": run["cpu_seconds"]})
    if need & {"act2", "fisher"}:
        stats, _ = calibrate(tm, cfg.calib, gradients="fisher" in need, full_hessian=False, progress=progress)
        usage = stats.meta.get("usage", {})
        n_layers = tm.model.config.num_hidden_layers
        for m in sorted(need & {"act2", "fisher"}):
            path = write_imatrix(root / f"imatrix-{m}.gguf", entries_from_stats(stats, m, n_layers),
                                 n_tokens=stats.n_tokens, chunk_size=stats.seqlen,
                                 dataset=f"fmgauge {cfg.calib.text} {cfg.calib.split} ({m})")
            imatrices[m] = (path, {"imatrix_seconds": usage.get("seconds"),
                                   "imatrix_cpu_seconds": usage.get("cpu_seconds"),
                                   "imatrix_note": "fmgauge capture" + (" with the backward pass" if stats.gradients
                                                                        else "")})
    with progress_tracker("llama-quantize + llama.cpp perplexity", len(todo), enabled=progress) as bar:
        for qtype, m in todo:
            tid = trial_id(qtype, m)
            dst = root / f"q-{qtype}-{m}.gguf"
            imat, extra = imatrices.get(m, (None, {}))
            t0 = time.perf_counter()
            try:
                q = llamacpp.quantize(llama, fp, dst, qtype, imatrix=imat, threads=threads)
                row = score_row(llama, dst, stream, llama_eval(cfg), work)
            except FmgaugeError as e:
                store.record_failure(tid, {"engine": ENGINE, "type": qtype, "imatrix": m}, str(e))
                log.warning("%s failed: %s", tid, e)
                bar.advance(1)
                continue
            finally:
                dst.unlink(missing_ok=True)
            _save_windows(store, tid, row.pop("window_nll"))
            fb = q["fallbacks"]
            kinds = sorted({v.split(" (")[0] for v in fb.values()})
            row.update(method=f"lq {qtype}", bits=llamacpp.PEER_TYPES.get(qtype, 0), group_size=0,
                       tool=f"llama-quantize ({llama.describe()})", imatrix=IMATRIX[m], file_format="gguf",
                       fallbacks=f"{len(fb)} tensors: {', '.join(kinds)}" if fb else "none",
                       avg_bits=row["file_bpw"], quant_seconds=q["seconds"], quant_cpu_seconds=q["cpu_seconds"],
                       quant_peak_rss_mb=q["peak_rss_mb"], quant_load_avg=q["load_avg"], threads=threads,
                       calib_tokens=n_tokens if m != "none" else None, **extra)
            store.record(tid, {"engine": ENGINE, "type": qtype, "imatrix": m}, [row], time.perf_counter() - t0)
            bar.advance(1)
    fp.unlink(missing_ok=True)  # 4 bytes per weight; a resumed run writes it again in seconds
    shutil.rmtree(work, ignore_errors=True)  # job files and the token ids


def is_llama(df: pd.DataFrame) -> pd.Series:
    """Rows scored by llama.cpp (older runs have no ``engine`` column)."""
    return df.get("engine", pd.Series(index=df.index, dtype=object)).fillna("transformers") == ENGINE


def llama_table(df: pd.DataFrame) -> pd.DataFrame:
    """The llama.cpp rows as a report table (file size, llama.cpp's BPW, fallbacks, perplexity, time)."""
    d = df[is_llama(df)].copy()
    d = d.sort_values(["on_disk_mb", "method"])
    fp = d[d.method.str.startswith("fp")]
    fp_ppl = float(fp.ppl.iloc[0]) if len(fp) else float("nan")
    rows = []
    for r in d.itertuples():
        quant = getattr(r, "quant_seconds", None)
        imat = getattr(r, "imatrix_seconds", None)
        calib = getattr(r, "calib_seconds", None)
        extra = imat if imat is not None and not pd.isna(imat) else calib
        total = None if quant is None or pd.isna(quant) else float(quant) + (0.0 if extra is None or pd.isna(extra)
                                                                            else float(extra))
        rows.append({
            "method": r.method, "imatrix": r.imatrix, "file MB": round(float(r.on_disk_mb), 1),
            "BPW (llama.cpp)": round(float(r.file_bpw), 3), "tensor types": r.gguf_types,
            "fallbacks": r.fallbacks or "–",
            "PPL [95% CI]": f"{r.ppl:.2f} [{r.ppl_lo:.2f}, {r.ppl_hi:.2f}]",
            "ΔPPL vs FP": "–" if r.method.startswith("fp") else f"{r.ppl - fp_ppl:+.2f}",
            "quant s": "–" if quant is None or pd.isna(quant) else f"{float(quant):.1f}",
            "imatrix / capture s": "–" if extra is None or pd.isna(extra) else f"{float(extra):.1f}",
            "total s": "–" if total is None else f"{total:.1f}",
        })
    return pd.DataFrame(rows)


def llama_pairs(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    """The paired tests the goal asks for, all on llama.cpp's per-window NLLs:

    - every fmgauge GGUF vs every ``lq`` row whose file is at least as large (fmgauge at equal or smaller size),
      without and with llama-imatrix;
    - per llama-quantize type: fmgauge's S_j imatrix vs llama-imatrix, fmgauge's E[x²] vs llama-imatrix, S_j vs
      E[x²], and llama-imatrix vs none.
    """
    from fmgauge.core.stats import paired_bootstrap, sign_flip_test
    from fmgauge.quantization.trial_files import load_windows as _load_windows

    d = df[is_llama(df)]
    tids = dict(zip(d.method + "|" + d.imatrix.astype(str), d.trial_id, strict=False)) if "trial_id" in d else {}
    rows_by = {k: r for k, r in zip(d.method + "|" + d.imatrix.astype(str), d.itertuples(), strict=False)}
    pairs: list[tuple[str, str, str]] = []
    fm = [k for k in rows_by if "(fmgauge GGUF)" in k]
    lq = [k for k in rows_by if k.startswith("lq ")]
    for a in fm:
        for b in lq:
            if rows_by[b].imatrix in (IMATRIX["none"], IMATRIX["llama"]) and rows_by[a].on_disk_mb <= rows_by[b].on_disk_mb:
                pairs.append(("fmgauge GGUF vs llama-quantize (file ≤)", a, b))
    for t in sorted({k.split("|")[0] for k in lq}):
        for x, y in (("fisher", "llama"), ("act2", "llama"), ("fisher", "act2"), ("llama", "none")):
            a, b = f"{t}|{IMATRIX[x]}", f"{t}|{IMATRIX[y]}"
            if a in rows_by and b in rows_by:
                pairs.append((f"{t}: imatrix", a, b))
    out = []
    for what, a, b in pairs:
        wa, wb = _load_windows(root, tids[a]), _load_windows(root, tids[b])
        if wa is None or wb is None or len(wa) != len(wb) or len(wa) < 2:
            continue
        boot = paired_bootstrap(wa, wb, n_boot=5000).mean_diff
        sf = sign_flip_test(wa, wb, n_resamples=20_000)
        ra, rb = rows_by[a], rows_by[b]
        out.append({"comparison": what, "A": _label(ra), "B": _label(rb),
                    "file MB A / B": f"{ra.on_disk_mb:.1f} / {rb.on_disk_mb:.1f}",
                    "PPL A / B": f"{ra.ppl:.2f} / {rb.ppl:.2f}",
                    "ΔNLL A−B [95% CI]": f"{boot.value:+.4f} [{boot.lo:+.4f}, {boot.hi:+.4f}]",
                    "ΔPPL A−B (%)": f"{100 * (ra.ppl / rb.ppl - 1):+.1f}",
                    "sign-flip p": f"{sf.p_value:.4f}", "A wins windows": f"{int((wa < wb).sum())}/{len(wa)}",
                    "verdict": ("A better" if boot.hi < 0 and sf.p_value < 0.05 else "B better"
                                if boot.lo > 0 and sf.p_value < 0.05 else "not resolved"),
                    "_d": float(boot.value), "_lo": float(boot.lo), "_hi": float(boot.hi),
                    "_p": float(sf.p_value)})
    return pd.DataFrame(out)


def _label(r) -> str:  # noqa: ANN001
    return r.method if r.imatrix in ("–", IMATRIX["none"]) else f"{r.method} + {r.imatrix}"


__all__ = ["ENGINE", "IMATRIX", "KNOWN_TYPES", "is_llama", "llama_pairs", "llama_table", "run_llama_peer",
           "score_fmgauge", "score_row", "trial_id"]
