"""``fmgauge quantize compare``: every method × bits × group size from ONE calibration pass, evaluated under one
perplexity protocol, resumable (a finished configuration is never recomputed), with a table + plot report.

Run directory (see ARCHITECTURE.md): ``config.yaml``, ``trials.sqlite`` (one trial per configuration, the FP
reference included), ``results.parquet``, ``summary.json``, ``report.html``/``report.md``, ``figures/``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fmgauge.core.models import DeviceName
from fmgauge.core.report import Report, Section, figure_backend, render_html, render_markdown, save_figure
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.evaluate import EvalConfig, kl_to_reference, perplexity
from fmgauge.quantization.llama_peer import (
    fmgauge_trial_id,
    is_llama,
    llama_pairs,
    llama_table,
    run_llama_peer,
    score_fmgauge,
)
from fmgauge.quantization.peers import PEERS
from fmgauge.quantization.pipeline import (
    CalibConfig,
    calibrate,
    calibration_tokens,
    quantize_model,
    size_report,
)
from fmgauge.quantization.text_data import TextSource, token_stream
from fmgauge.quantization.trial_files import load_windows as _load_windows
from fmgauge.quantization.trial_files import method_name
from fmgauge.quantization.trial_files import save_windows as _save_windows

log = logging.getLogger(__name__)

PREQUANTIZED = {
    "smollm2-135m": "SmolLM2-135M here comes from a Q4_1 GGUF (4-bit, blocks of 32): its 'full-precision' weights "
                    "already lie on a 4-bit grid, so 4-bit group-32 re-quantization is almost lossless by "
                    "construction; compare methods at 2-3 bits or at group 128 / per-channel.",
    "gemma3-270m": "Gemma-3-270M here comes from a Q4_K_M GGUF (mixed 4-8 bit): its weights were already "
                   "quantized, so 4-bit results flatter every method; compare at 2-3 bits or coarse groups.",
}


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", description="Registered name, local directory or hub id.")
    methods: list[str] = Field(["rtn", "awq", "gptq", "sens-awq", "sens-gptq"], description="Methods to compare.")
    bits: list[int] = Field([3, 4], description="Bit widths.")
    group_sizes: list[int] = Field([128, -1], description="Group sizes (-1 = per channel).")
    calib: CalibConfig = Field(default_factory=CalibConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    quant: dict = Field(default_factory=dict, description="Extra QuantConfig fields for every method.")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|mps")
    dtype: str = Field("float32", description="float32|float16|bfloat16")
    peers: list[str] = Field([], description="Peer tools run side by side (llmcompressor: its GPTQ and AWQ; "
                                             "gptqmodel: its GPTQ; llama.cpp: llama-quantize's types without and "
                                             "with importance matrices, every GGUF scored by llama.cpp).")
    llama_types: list[str] = Field(["Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K"], description="llama.cpp peer: the "
                                   "llama-quantize types.")
    llama_imatrix: list[str] = Field(["none", "llama", "act2", "fisher"], description="llama.cpp peer: importance "
                                     "matrices: none, llama (llama-imatrix), act2 (fmgauge E[x²]), fisher (fmgauge "
                                     "S_j).")
    llama_windows: int | None = Field(None, ge=2, description="llama.cpp peer: windows scored by llama.cpp (default "
                                      "eval.max_windows); fmgauge's own rows keep eval.max_windows.")
    llama_root: str | None = Field(None, description="llama.cpp build (default $FMGAUGE_LLAMA_ROOT or "
                                                     "~/.cache/fmgauge/llama-cpp/<version>, from `make llama`).")
    peers_python: str | None = Field(None, description="Interpreter(s) with the peers installed: PATH or "
                                                       "peer=PATH,… (default $FMGAUGE_PEERS_PYTHON or "
                                                       "~/.cache/fmgauge/peers/<peer>/bin/python).")
    measure_files: bool = Field(True, description="Write each fmgauge configuration in its deployable format to a "
                                                  "temporary directory and report the bytes on disk.")

    def quant_configs(self) -> list:
        """One QuantConfig per method × bits × group size (each validated: bad values are refused here)."""
        from fmgauge.quantization.methods import QuantConfig

        return [QuantConfig(**{**self.quant, "method": m, "bits": b, "group_size": g})
                for m in self.methods for b in self.bits for g in self.group_sizes]

    @model_validator(mode="after")
    def _configs_valid(self) -> CompareConfig:
        from fmgauge.quantization.llama_peer import IMATRIX, KNOWN_TYPES

        self.quant_configs()  # before the run directory or the model is touched
        for p in self.peers:
            if p not in PEERS and p != "llama.cpp":
                raise ValueError(f"peers: unknown peer {p!r}; expected one of {', '.join([*PEERS, 'llama.cpp'])}")
        bad = [t for t in self.llama_types if t not in KNOWN_TYPES]
        if bad:
            raise ValueError(f"llama_types: unknown llama-quantize type {bad[0]!r}; expected some of "
                             f"{', '.join(KNOWN_TYPES)}")
        bad = [m for m in self.llama_imatrix if m not in IMATRIX]
        if bad:
            raise ValueError(f"llama_imatrix: unknown importance matrix {bad[0]!r}; expected some of "
                             f"{', '.join(IMATRIX)}")
        return self

    def peer_configs(self) -> list[tuple[str, str, object]]:
        """(peer, method, QuantConfig) for every peer counterpart of a compared method × bits × group size."""
        return [(p, qc.method, qc) for p in self.peers if p in PEERS for qc in self.quant_configs()
                if qc.method in PEERS[p].methods]


@dataclass
class CompareResult:
    run_dir: Path
    table: pd.DataFrame
    summary: dict


def _gguf_fits(qc) -> bool:  # noqa: ANN001  (QuantConfig)
    from fmgauge.quantization.formats.gguf import gguf_type

    try:
        gguf_type(qc.bits, qc.group_size, qc.sym)
    except FmgaugeError:
        return False
    return True


def _trial_id(method: str, bits: int, gs: int) -> str:
    return f"{method}-w{bits}-g{gs}"


def compare(cfg: CompareConfig, out: str | Path, *, progress: bool = True) -> CompareResult:
    """Run (or resume) the comparison into run directory ``out`` and write its report."""
    from fmgauge.core.progress import progress as progress_tracker
    from fmgauge.core.text_models import TextModel, load_text_model
    from fmgauge.quantization.calibration import linear_layers
    from fmgauge.quantization.formats import default_format
    from fmgauge.quantization.peers import check_peers

    configs = cfg.quant_configs()
    peer_versions = check_peers([p for p in cfg.peers if p in PEERS], cfg.methods, cfg.peers_python)  # before load
    llama = None
    if "llama.cpp" in cfg.peers:
        from fmgauge.quantization.llamacpp import find_llama

        llama = find_llama(cfg.llama_root, option="--peers llama.cpp")
    store = RunStore(out)
    store.save_config(cfg.model_dump())
    done = store.done_ids()
    with progress_tracker(f"loading {cfg.model}", 1, enabled=progress) as bar:
        tm = load_text_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        bar.advance(1)
    widths = {n: m.in_features for n, m in linear_layers(tm.model).items()}
    configs = [qc.resolved(widths, default_format(qc)) for qc in configs]  # symmetric where the format needs it
    stream = token_stream(tm.tokenizer, TextSource(cfg.eval.text, cfg.eval.split))
    if "fp" not in done:
        t0 = time.perf_counter()
        fp_ppl = perplexity(tm.model, stream, cfg.eval, progress=progress)
        _save_windows(store, "fp", fp_ppl.window_nll)
        row = {"method": "fp", "bits": 16, "group_size": 0, **fp_ppl.to_dict(),
               "size_mb": size_report(tm.model, {})["fp16_size_mb"], "avg_bits": 16.0, "kl": 0.0,
               "top1_agreement": 1.0}
        store.record("fp", {"method": "fp"}, [row], time.perf_counter() - t0)
    def missing(qc) -> bool:  # noqa: ANN001  (its own row, or with --peers llama.cpp its llama.cpp-scored GGUF row)
        tid = _trial_id(method_name(qc), qc.bits, qc.group_size)
        return tid not in done or (llama is not None and fmgauge_trial_id(tid) not in done and _gguf_fits(qc))

    todo = [qc for qc in configs if missing(qc)]
    need_grad = any(c.needs_gradients for c in todo)
    need_h = any(c.needs_hessian and not c.sequential_ for c in todo)
    stats = seqs = None
    if todo and (need_grad or need_h):  # one full-precision capture serves every configuration
        stats, _ = calibrate(tm, cfg.calib, gradients=need_grad, full_hessian=need_h, progress=progress)
    if any(c.sequential_ for c in todo):
        seqs = calibration_tokens(tm, cfg.calib)
    for qc in todo:
        tid = _trial_id(method_name(qc), qc.bits, qc.group_size)
        log.info("quantizing: %s", tid)
        t0 = time.perf_counter()
        qtm = TextModel(copy.deepcopy(tm.model), tm.tokenizer, tm.name, tm.source, tm.device)
        reads_capture = qc.needs_gradients or (qc.needs_hessian and not qc.sequential_)
        try:
            res = quantize_model(qtm, qc, stats if reads_capture else None, sequences=seqs, progress=progress)
        except FmgaugeError as e:
            store.record_failure(tid, qc.model_dump(), str(e))
            log.warning("%s failed: %s", tid, e)
            continue
        if tid in done:  # resumed for its llama.cpp row only
            u, cu = res.record["quantization_usage"], res.record["calibration"].get("usage") or {}
            score_fmgauge(cfg, res, qc, tid, stream, store, llama,
                          {"quant_seconds": u["seconds"], "quant_cpu_seconds": u.get("cpu_seconds"),
                           "quant_peak_rss_mb": u["peak_rss_mb"], "calib_seconds": cu.get("seconds"),
                           "threads": res.record["machine"]["threads"]})
            del qtm, res
            continue
        with progress_tracker(f"{tid}: writing its deployable file", 1, enabled=progress) as bar:
            files = _measure_files(res, qc, qtm.model, store) if cfg.measure_files else {}
            bar.advance(1)
        pres = perplexity(qtm.model, stream, cfg.eval, progress=progress)
        _save_windows(store, tid, pres.window_nll)
        ppl = pres.to_dict()
        kl = kl_to_reference(qtm.model, tm.model, stream, cfg.eval, progress=progress) if cfg.eval.kl_windows else {}
        rec = res.record
        cu = rec["calibration"].get("usage") or {}
        row = {"method": method_name(qc), "bits": qc.bits, "group_size": qc.group_size, **ppl, **kl,
               "size_mb": rec["size"]["size_mb"], "avg_bits": rec["size"]["bits_per_quantized_weight"],
               "code_bits": rec["size"]["code_bits_per_weight"],
               "quant_seconds": rec["quantization_usage"]["seconds"],
               "quant_cpu_seconds": rec["quantization_usage"].get("cpu_seconds"),
               "quant_peak_rss_mb": rec["quantization_usage"]["peak_rss_mb"],
               "quant_added_rss_mb": rec["quantization_usage"]["peak_rss_mb"] - rec["quantization_usage"]["start_rss_mb"],
               "calib_seconds": cu.get("seconds"), "calib_peak_rss_mb": cu.get("peak_rss_mb"),
               "calib_tokens": rec["calibration"].get("n_tokens"), "threads": rec["machine"]["threads"],
               "tool": "fmgauge", "engine": "transformers", **files}
        store.record(tid, qc.model_dump(), [row], time.perf_counter() - t0)
        if llama is not None and fmgauge_trial_id(tid) not in done:
            score_fmgauge(cfg, res, qc, tid, stream, store, llama, row)
        del qtm, res
    peer_todo = [(p, m, qc) for p, m, qc in cfg.peer_configs()
                 if _peer_trial_id(p, m, qc.bits, qc.group_size) not in done]
    if peer_todo:
        if seqs is None:
            seqs = calibration_tokens(tm, cfg.calib)
        run_peers(cfg, tm, stream, seqs, peer_todo, store, peer_versions, progress=progress)
    if llama is not None:
        if seqs is None:
            seqs = calibration_tokens(tm, cfg.calib)
        run_llama_peer(cfg, tm, stream, seqs, store, llama, progress=progress)
    return write_report(out)


def _measure_files(res, qc, model, store: RunStore) -> dict:  # noqa: ANN001  (QuantizationResult, QuantConfig)
    """Write ``res`` in its deployable format to a temporary directory and measure it: ``file_format`` and
    ``on_disk_mb`` (None when only fmgauge's own format fits the grid). AWQ scales get folded into the model in the
    process, so the model evaluated afterwards is the one that ships."""
    import tempfile

    from fmgauge.quantization.calibration import linear_layers
    from fmgauge.quantization.formats import resolve_format
    from fmgauge.quantization.pipeline import save

    widths = {n: m.in_features for n, m in linear_layers(model).items()}
    fmt, why = resolve_format(None, qc, widths, getattr(model.config, "model_type", "?"))
    if fmt == "fmgauge":
        return {"file_format": "fmgauge", "on_disk_mb": None, "file_note": why}
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".export-") as tmp:
        save(res, tmp, fmt, qc)
        ex = res.record["export"]
        return {"file_format": fmt, "on_disk_mb": ex["on_disk_mb"], "file_bpw": ex["bits_per_weight"],
                "file_note": None}


def _peer_trial_id(peer: str, method: str, bits: int, gs: int) -> str:
    from fmgauge.quantization.peers import peer_method

    return _trial_id(peer_method(peer, method), bits, gs)


def run_peers(cfg: CompareConfig, tm, stream, seqs, todo: list, store: RunStore, versions: dict, *,  # noqa: ANN001
              progress: bool = True) -> None:
    """Run each peer configuration in its own interpreter on fmgauge's FP weights and calibration tokens, load
    its checkpoint back with fmgauge's loader and evaluate it under the same protocol (a failed or impossible
    configuration is recorded with its reason; the others go on)."""
    import shutil

    from fmgauge.quantization.calibration import linear_layers
    from fmgauge.quantization.formats import weight_files
    from fmgauge.quantization.formats.load import load_artifact
    from fmgauge.quantization.peers import (
        indivisible,
        job_for,
        nominal_bits,
        peer_method,
        run_job,
        write_calibration,
    )

    root = store.root / "peers"
    fp_dir = root / "fp-model"
    if not (fp_dir / "config.json").exists():  # the FP weights the peers quantize: fmgauge's, as loaded
        tm.model.save_pretrained(fp_dir)
        tm.tokenizer.save_pretrained(fp_dir)
    calib = write_calibration(root / "calib.npy", seqs)
    layers = linear_layers(tm.model)
    shapes = {n: (m.out_features, m.in_features) for n, m in layers.items()}
    n_q = sum(a * b for a, b in shapes.values())
    other = sum(p.numel() for p in tm.model.parameters()) - n_q
    for peer, method, qc in todo:
        name = peer_method(peer, method)
        tid = _trial_id(name, qc.bits, qc.group_size)
        bad = indivisible({n: s[1] for n, s in shapes.items()}, qc.group_size)
        if bad:
            w = sorted({shapes[n][1] for n in bad})
            store.record_failure(tid, {"peer": peer, **qc.model_dump()},
                                 f"{peer} needs a group size that divides every Linear's input width ({w} are "
                                 f"not multiples of {qc.group_size}); compare at a divisor or -1.")
            continue
        log.info("peer: %s", tid)
        t0 = time.perf_counter()
        out_dir = root / tid
        from fmgauge.core.progress import progress as progress_tracker

        try:
            with progress_tracker(f"peer {tid} (log: {root / f'{tid}.log'})", 1, enabled=progress) as bar:
                info = run_job(peer, cfg.peers_python, job_for(method, qc, fp_dir, calib, out_dir),
                               root / f"{tid}.log")
                bar.advance(1)
        except FmgaugeError as e:
            store.record_failure(tid, {"peer": peer, **qc.model_dump()}, str(e))
            log.warning("%s failed: %s", tid, e)
            continue
        qtm, loader = load_artifact(out_dir, device=cfg.device, dtype=cfg.dtype)
        pres = perplexity(qtm.model, stream, cfg.eval, progress=progress)
        _save_windows(store, tid, pres.window_nll)
        kl = kl_to_reference(qtm.model, tm.model, stream, cfg.eval, progress=progress) if cfg.eval.kl_windows else {}
        q_bits = nominal_bits(shapes, qc.bits, qc.group_size)
        files = weight_files(out_dir)
        row = {"method": name, "bits": qc.bits, "group_size": qc.group_size, **pres.to_dict(), **kl,
               "size_mb": (q_bits + 16 * other) / 8 / 1e6, "avg_bits": q_bits / n_q, "code_bits": float(qc.bits),
               "quant_seconds": info["seconds"], "quant_cpu_seconds": info["cpu_seconds"],
               "quant_peak_rss_mb": info["peak_rss_mb"], "calib_tokens": info["calib_tokens"],
               "threads": info["threads"], "tool": f"{peer} {versions.get(peer, '')}".strip(),
               "file_format": PEERS[peer].file_format, "on_disk_mb": sum(files.values()) / 1e6, "file_note": None,
               "loader": loader}
        store.record(tid, {"peer": peer, **qc.model_dump()}, [row], time.perf_counter() - t0)
        del qtm
    shutil.rmtree(fp_dir, ignore_errors=True)  # 4 bytes per weight; a resumed run writes it again in seconds


def paired_tests(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods at the same (bits, group size), paired per evaluation window: mean ΔNLL (A − B, nats
    per token; < 0 = A better) with a 95% bootstrap CI over windows, the sign-flip permutation p-value, the minimum
    detectable difference (5% two-sided, 80% power) for the windows run, and the ΔPPL of the point estimates."""
    from fmgauge.core.stats import paired_bootstrap, sign_flip_test

    rows = []
    q = df[df.method != "fp"]
    for (b, g), d in q.groupby(["bits", "group_size"]):
        d = d.sort_values("ppl")
        windows = {m: _load_windows(root, _trial_id(m, b, g)) for m in d.method}  # each file read once
        for i, j in itertools.combinations(range(len(d)), 2):
            a, c = d.iloc[i], d.iloc[j]
            wa, wc = windows[a.method], windows[c.method]
            if wa is None or wc is None or len(wa) != len(wc) or len(wa) < 2:
                continue
            boot = paired_bootstrap(wa, wc, n_boot=5000)
            sf = sign_flip_test(wa, wc, n_resamples=20_000)
            rows.append({"bits": int(b), "group_size": int(g), "a": a.method, "b": c.method,
                         "ppl_a": float(a.ppl), "ppl_b": float(c.ppl), "mean_dnll": boot.mean_diff.value,
                         "dnll_lo": boot.mean_diff.lo, "dnll_hi": boot.mean_diff.hi, "p_sign_flip": sf.p_value,
                         "mde_nll": sf.mde, "windows": sf.n,
                         "a_wins_windows": int((wa < wc).sum())})
    return pd.DataFrame(rows)


def paired_table(pairs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in pairs.itertuples():
        verdict = (f"{r.a} better" if r.dnll_hi < 0 else f"{r.b} better" if r.dnll_lo > 0 else "not resolved")
        rows.append({"setting": f"w{r.bits} {'per-channel' if r.group_size == -1 else f'g{r.group_size}'}",
                     "A vs B": f"{r.a} vs {r.b}", "PPL A / B": f"{r.ppl_a:.2f} / {r.ppl_b:.2f}",
                     "ΔNLL A−B [95% CI]": f"{r.mean_dnll:+.4f} [{r.dnll_lo:+.4f}, {r.dnll_hi:+.4f}]",
                     "sign-flip p": f"{r.p_sign_flip:.4f}", "MDE (nats)": f"{r.mde_nll:.4f}",
                     "A wins windows": f"{r.a_wins_windows}/{r.windows}", "verdict (CI)": verdict})
    return pd.DataFrame(rows)


def write_report(out: str | Path) -> CompareResult:
    """(Re)build results.parquet, summary.json and the report from the run's store."""
    store = RunStore(out)
    cfg = CompareConfig.model_validate(store.load_config())
    df = store.results()
    if df.empty:
        raise FmgaugeError(f"{out} has no finished trials yet.")
    llama_df = df[is_llama(df)].reset_index(drop=True)  # scored by llama.cpp: their own table and pairs
    df = df[~is_llama(df)].drop(columns=["trial_id"])
    df = df.assign(_fp=df.method != "fp", _g=df.group_size.replace(-1, 10**9)).sort_values(
        ["_fp", "bits", "_g", "method"]).drop(columns=["_fp", "_g"]).reset_index(drop=True)
    store.write_results(df)
    fp = df[df.method == "fp"]
    fp_ppl = float(fp.ppl.iloc[0]) if len(fp) else float("nan")
    protocol = df.protocol.iloc[0]
    caveat = PREQUANTIZED.get(cfg.model, "")
    summary = {"model": cfg.model, "protocol": protocol, "fp_ppl": fp_ppl, "caveat": caveat,
               "calibration": cfg.calib.model_dump(), "rows": df.to_dict(orient="records"),
               "failed": store.trial_table().query("status == 'failed'").to_dict(orient="records")}
    summary["best_at"] = {}
    q = df[df.method != "fp"]
    for (b, g), d in q.groupby(["bits", "group_size"]):
        best = d.loc[d.ppl.idxmin()]
        summary["best_at"][f"w{b}-g{g}"] = {"method": best.method, "ppl": float(best.ppl)}
    pairs = paired_tests(store.root, df)
    summary["paired"] = pairs.to_dict(orient="records")
    if len(llama_df):
        store.write_json("llama_cpp.json", {"rows": llama_df.to_dict(orient="records"),
                                            "table": llama_table(llama_df).to_dict(orient="records"),
                                            "paired": llama_pairs(store.root, llama_df).to_dict(orient="records")})
        summary["llama_cpp"] = "llama_cpp.json"
    store.write_json("summary.json", summary)
    fig_path = plot_ppl_vs_bits(df, store.root / "figures" / "ppl_vs_bits.png", fp_ppl)
    report = build_report(cfg, df, summary, fig_path.relative_to(store.root), llama_df=llama_df,
                          root=store.root)
    render_html(report, store.root / "report.html")
    render_markdown(report, store.root / "report.md")
    return CompareResult(store.root, df, summary)


CAPTURE_METHODS = ("awq", "sens-awq", "sens-gptq", "mixed")  # read the full-precision capture (AWQ's statistics,
# the sensitivity methods' gradient weights); rtn and sequential gptq do not


def capture_seconds(r) -> float | None:  # noqa: ANN001  (a results row)
    """The full-precision capture a row's method depends on (wall seconds), None when it reads none."""
    base = str(r.method).split("+")[0]
    return _num(r, "calib_seconds") if base in CAPTURE_METHODS else None


def _num(r, key: str) -> float | None:  # noqa: ANN001  (a results row)
    v = getattr(r, key, None)
    return None if v is None or pd.isna(v) else float(v)


def table_for_report(df: pd.DataFrame, fp_ppl: float) -> pd.DataFrame:
    """One row per configuration. Sizes are the written files' (``file MB``; ``BPW`` = tensor bytes × 8 /
    parameters, as llama.cpp counts); ``capture s`` is the full-precision capture the method reads (AWQ, the
    sensitivity methods), counted in ``total s`` with the quantization itself."""
    rows = []
    for r in df.itertuples():
        fp = r.method == "fp"
        gs = "–" if fp else ("per-channel" if r.group_size == -1 else str(r.group_size))
        quant, capture = _num(r, "quant_seconds"), capture_seconds(r)
        bpw = _num(r, "file_bpw")
        rows.append({
            "method": r.method, "bits": r.bits, "group": gs,
            "BPW (file)": "–" if fp else (f"{bpw:.3f}" if bpw is not None else f"{float(r.avg_bits):.3f} (computed)"),
            "file MB": _file_cell(r),
            "PPL [95% CI]": f"{r.ppl:.2f} [{r.ppl_lo:.2f}, {r.ppl_hi:.2f}]",
            "ΔPPL vs FP": "–" if fp else f"{r.ppl - fp_ppl:+.2f}",
            "KL to FP (nats)": ("–" if fp or _num(r, "kl_lo") is None else
                                f"{r.kl:.4f} [{max(0.0, r.kl_lo):.4f}, {r.kl_hi:.4f}]"),
            "top-1 agree": "–" if _num(r, "top1_agreement") is None else f"{r.top1_agreement:.3f}",
            "quant s": "–" if fp or quant is None else f"{quant:.1f}",
            "capture s": "–" if fp or capture is None else f"{capture:.1f}",
            "total s": "–" if fp or quant is None else f"{quant + (capture or 0.0):.1f}",
            "peak RSS MB": "–" if fp else f"{r.quant_peak_rss_mb:.0f}",
        })
    return pd.DataFrame(rows)


def _file_cell(r) -> str:  # noqa: ANN001  (a results row)
    mb, fmt = getattr(r, "on_disk_mb", None), getattr(r, "file_format", None)
    if mb is None or pd.isna(mb):
        return "– (fmgauge format only)" if fmt == "fmgauge" else "–"
    return f"{mb:.1f} ({'CT' if fmt == 'compressed-tensors' else fmt})"


def method_colors(methods) -> dict[str, tuple]:  # noqa: ANN001
    """One fixed colour per method name (sorted, tab10 / tab20), the same in every panel and figure."""
    import matplotlib.pyplot as plt

    names = sorted(set(methods))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(names)}


def plot_ppl_vs_bits(df: pd.DataFrame, path: Path, fp_ppl: float) -> Path:
    """Perplexity vs bits per method, one panel per group size, FP as a dashed line (log y). Each method keeps one
    colour in every panel; the legend lists every method drawn in any panel."""
    import matplotlib.pyplot as plt

    figure_backend()
    q = df[df.method != "fp"]
    colors = method_colors(q.method)
    groups = sorted(q.group_size.unique(), key=lambda g: (g == -1, g))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.4 * max(len(groups), 1), 3.4), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, g in zip(axes[0], groups, strict=False):
        d = q[q.group_size == g]
        for m, dm in d.groupby("method"):
            dm = dm.sort_values("bits")
            ax.errorbar(dm.bits, dm.ppl, yerr=[dm.ppl - dm.ppl_lo, dm.ppl_hi - dm.ppl], marker="o", ms=4, capsize=2,
                        label=m, color=colors[m])
        ax.axhline(fp_ppl, color="k", ls="--", lw=1, label="FP")
        ax.set_yscale("log")
        ax.set_xlabel("bits")
        ax.set_xticks(sorted(d.bits.unique()))
        ax.set_title("per-channel" if g == -1 else f"group {g}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("perplexity")
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes[0, -1].legend(list(handles.values()), list(handles), fontsize=7)
    return save_figure(fig, path)


def build_report(cfg: CompareConfig, df: pd.DataFrame, summary: dict, fig: Path, *,
                 llama_df: pd.DataFrame | None = None, root: Path | None = None) -> Report:
    fp_ppl = summary["fp_ppl"]
    wins = [f"{k}: {v['method']} (PPL {v['ppl']:.2f})" for k, v in summary["best_at"].items()]
    lead = f"Weight-only PTQ of {cfg.model}: perplexity on {summary['protocol']}."
    if summary["caveat"]:
        lead += " CAVEAT: " + summary["caveat"]
    c = cfg.calib
    paras = [
        f"Calibration: {c.n_samples} random windows × {c.seqlen} tokens of {c.text} {c.split} (seed {c.seed}). "
        "Sequential methods (the GPTQ family by default) calibrate each block on the outputs of the blocks already "
        "quantized; the others read one full-precision pass shared by all methods, and the sensitivity methods "
        "weight tokens by the full-precision gradient norms of that pass.",
        f"Full-precision perplexity {fp_ppl:.2f}. Best method per setting — " + "; ".join(wins) + ".",
        "Size counts quantized Linears packed (codes + fp16 scale + zero per group; AWQ adds an fp16 scale per input "
        "channel) and every other parameter at 16 bits. Times and peak resident memory are for the quantization "
        "step only; calibration is listed separately in results.parquet.",
    ]
    sections = [Section("Comparison", paras, [("All configurations", table_for_report(df, fp_ppl))],
                        [("Perplexity vs bits", str(fig))])]
    if summary.get("paired"):
        sections.append(Section("Which method beats which (paired per window)", [
            "Each pair of methods at the same bits and group size is compared on the same evaluation windows: the "
            "mean per-token NLL difference A − B (negative: A is better) with a 95% bootstrap CI over windows, an "
            "exact/Monte-Carlo sign-flip permutation p-value, and the minimum detectable difference (MDE: 5% "
            "two-sided, 80% power) for the number of windows run. A claim that one method beats another needs a CI "
            "that excludes 0; differences below the MDE are ones this run could not see."],
            [("Paired comparisons", paired_table(pd.DataFrame(summary["paired"])))]))
    if llama_df is not None and len(llama_df) and root is not None:
        lp = llama_pairs(root, llama_df)
        sections.append(Section("llama.cpp: llama-quantize beside fmgauge's GGUF, all scored by llama.cpp", [
            "Every row here is a GGUF file scored by llama.cpp (llama-cpp-python over the libraries `make llama` "
            "builds) on the same windows and token ids as above; pairs are per window. 'lq TYPE' rows are "
            "llama-quantize of the full-precision F32 GGUF, without an importance matrix, with llama-imatrix's "
            "(run on fmgauge's calibration windows), with fmgauge's E[x²] and with fmgauge's S_j. K-quant types "
            "need widths that are multiples of 256; the 'fallbacks' column lists the types llama-quantize used "
            "instead. Time: llama-quantize's wall seconds, plus the importance matrix's (llama-imatrix, or fmgauge's "
            "capture) in 'total s'; fmgauge GGUF rows: quantization plus the capture it reads."],
            [("llama.cpp rows", llama_table(llama_df))]
            + ([("Paired per window (llama.cpp NLLs)", lp.drop(columns=[c for c in lp.columns if c.startswith("_")]))]
               if len(lp) else [])))
    if summary["failed"]:
        sections.append(Section("Failed configurations", [f"{r['id']}: {r['error']}" for r in summary["failed"]]))
    return Report(f"fmgauge quantize compare — {cfg.model}", lead, sections,
                  footer="Methods: RTN; AWQ (Lin et al. 2024); GPTQ (Frantar et al. 2023); sensitivity-guided "
                         "variants (Xu 2026, arXiv 2601.11663).")
