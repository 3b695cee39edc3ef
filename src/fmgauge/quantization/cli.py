"""``fmgauge quantize …``: sensitivity analysis, quantize, evaluate, compare. Thin: parse, build a config, call the
library (heavy imports happen inside the commands)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fmgauge.core.validation import FmgaugeError

app = typer.Typer(help="Which weight channels matter when I quantize this LLM, and which quantizer keeps it best? "
                       "(RTN / AWQ / GPTQ / sensitivity-guided PTQ)", no_args_is_help=True)
console = Console()

Model = Annotated[str | None, typer.Option(
    help="smollm2-135m (default) | gemma3-270m | a local model directory | a hub id.")]
Device = Annotated[str, typer.Option(help="auto|cpu|cuda|mps")]
Dtype = Annotated[str, typer.Option(help="float32|float16|bfloat16 (weights and activations).")]
Calib = Annotated[str | None, typer.Option(
    help="Calibration text: 'wikitext2' (valid split, default) or a UTF-8 text file.")]
NSamples = Annotated[int | None, typer.Option(help="Calibration windows (default 128).", min=1)]
SeqLen = Annotated[int | None, typer.Option(help="Tokens per calibration window (default 512).", min=2)]
Seed = Annotated[int | None, typer.Option(help="Seed of the calibration sampler (default 0).")]
Sampling = Annotated[str | None, typer.Option(
    help="Calibration windows: 'random' offsets (default, GPTQ's sampler) or 'consecutive' from the start.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (CLI options override it).")]


def _ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FmgaugeError(f"{option} must be comma-separated integers like 3,4; got {text!r}.") from None
    if not values:
        raise FmgaugeError(f"{option} needs at least one integer (e.g. 3,4); got {text!r}.")
    return values


_CALIB_OPTIONS = {"text": "--calib", "n_samples": "--n-samples", "seqlen": "--seqlen", "seed": "--seed",
                  "sampling": "--sampling"}


def _calib(calib: str | None, n_samples: int | None, seqlen: int | None, seed: int | None,
           sampling: str | None = None) -> dict:
    return {k: v for k, v in {"text": calib, "n_samples": n_samples, "seqlen": seqlen, "seed": seed,
                              "sampling": sampling}.items() if v is not None}


def _load(model, config: Path | None, overrides: dict, options: dict[str, str] | None = None):  # noqa: ANN001, ANN202
    """``model`` from defaults < --config YAML < the options given (mappings such as ``calib`` merged key by key);
    a bad value is one line naming its option (or the file and key when it came from the file)."""
    from fmgauge.core.config import load_config

    names = {f"calib.{k}": o for k, o in _CALIB_OPTIONS.items() if k in overrides.get("calib", {})}
    names.update({f"eval.{k}": f"--{k.replace('_', '-')}" for k in overrides.get("eval", {})})
    names.update({f"quant.{k}": f"--{k.replace('_', '-')}" for k in overrides.get("quant", {})})
    names.update(options or {})
    return load_config(model, config, {k: v for k, v in overrides.items() if v not in (None, {})}, options=names)


def _devices(device: str, dtype: str) -> None:
    from fmgauge.core.models import check_device_dtype

    check_device_dtype(device, dtype)  # before any model loads


def _model_blocks(model: str) -> int | None:
    """The number of transformer blocks of ``model`` from its config alone (no weights), or None if unknown."""
    from fmgauge.core.text_models import model_config

    cfg = model_config(model)
    return getattr(cfg, "num_hidden_layers", None) if cfg is not None else None


def _out_dir(out: Path):  # noqa: ANN202 - a context manager
    """``--out`` checked writable, then locked for this run (before any model loads)."""
    from fmgauge.core.files import check_output_dir
    from fmgauge.core.store import run_lock

    return run_lock(check_output_dir(out, option="--out"))


@app.command("sensitivity")
def sensitivity_cmd(
    model: Model = None,
    calib: Calib = None,
    n_samples: NSamples = None,
    seqlen: SeqLen = None,
    seed: Seed = None,
    blocks: Annotated[str | None, typer.Option(help="Blocks with ground truth, e.g. 0,15,29 (default first, "
                                                    "middle, last).")] = None,
    gt_group: Annotated[int | None, typer.Option(help="Input channels per perturbed group (default 64).",
                                                 min=1)] = None,
    gt_bits: Annotated[int | None, typer.Option(help="Bits of the one-group RTN perturbation (default 2).",
                                                min=1, max=8)] = None,
    heldout_windows: Annotated[int | None, typer.Option(help="Held-out windows (0 = no ground truth).", min=0)] = None,
    heldout_len: Annotated[int | None, typer.Option(help="Tokens per held-out window (default 256).", min=2)] = None,
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples for the Spearman CIs (default 1000).",
                                               min=0)] = None,
    out: Annotated[Path, typer.Option(help="Run directory for tables, figures and report.")] = Path(
        "runs/quant-sensitivity"),
    config: ConfigOpt = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
) -> None:
    """Per-channel sensitivity of every Linear (act-magnitude, Hessian diag, Fisher S_j, OBD) vs ground truth."""
    from fmgauge.quantization.study import SensitivityConfig, run_sensitivity

    cfg = _load(SensitivityConfig, config, {
        "calib": _calib(calib, n_samples, seqlen, seed), "model": model, "gt_blocks": _ints(blocks, "--blocks"),
        "gt_group": gt_group, "gt_bits": gt_bits, "heldout_windows": heldout_windows, "heldout_len": heldout_len,
        "n_boot": n_boot, "device": device, "dtype": dtype}, {"gt_blocks": "--blocks"})
    if cfg.gt_blocks is not None:  # against the model's config (no weights loaded)
        n_blocks = _model_blocks(cfg.model)
        bad = [b for b in cfg.gt_blocks if b < 0 or (n_blocks is not None and b >= n_blocks)]
        if bad:
            raise FmgaugeError(f"--blocks {bad} out of range: {cfg.model} has {n_blocks} blocks, numbered 0.."
                               f"{(n_blocks or 0) - 1}." if n_blocks is not None else
                               f"--blocks {bad}: block numbers start at 0.")
    _devices(device, dtype)
    with _out_dir(out):
        res = run_sensitivity(cfg, out)
    for target, b in res.summary["best"].items():
        console.print(f"{target}: best metric [bold]{b['metric']}[/] (Spearman {b['spearman']:.2f}); "
                      f"tied within CI: {', '.join(b['tied_within_ci']) or 'none'}")
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]")


@app.command("run")
def run_cmd(
    out: Annotated[Path, typer.Option(help="Directory for the quantized model (HF-loadable).")],
    model: Model = None,
    method: Annotated[str | None, typer.Option(help="rtn | awq | gptq (default) | sens-awq | sens-gptq | mixed")] = None,
    bits: Annotated[int | None, typer.Option(help="Bits per weight, 2..8 (default 4).")] = None,
    group_size: Annotated[int | None, typer.Option(help=(
        "32 | 64 | 128 | -1 (per channel). Default: the largest of 128/64/32 dividing every quantized width "
        "(GGUF: 32); the output states it."))] = None,
    sym: Annotated[bool | None, typer.Option("--sym/--no-sym", help=(
        "Symmetric grid. Default: what the format's consumer loads (symmetric for compressed-tensors and GGUF, "
        "asymmetric for gptq / fmgauge)."))] = None,
    ragged: Annotated[bool | None, typer.Option("--ragged/--no-ragged", help=(
        "Allow a shorter last group if the group size does not divide a layer's width (default), else refuse."))] = None,
    actorder: Annotated[bool | None, typer.Option("--actorder/--no-actorder", help="GPTQ act-order (default off).")] = None,
    sequential: Annotated[bool | None, typer.Option(
        "--sequential/--no-sequential",
        help="Calibrate each block on the outputs of the already-quantized blocks (default: on for the GPTQ family "
             "and mixed, off for AWQ).")] = None,
    clip: Annotated[bool | None, typer.Option("--clip/--no-clip", help="AWQ clipping search (default on).")] = None,
    fisher_mix: Annotated[float | None, typer.Option(help="sens-gptq: weight of the Fisher Hessian (0..1).")] = None,
    mixed_fraction: Annotated[float | None, typer.Option(help="mixed: share of weights at --high-bits.")] = None,
    high_bits: Annotated[int | None, typer.Option(help="mixed: bits of the upgraded groups (default bits+1).")] = None,
    mixed_unit: Annotated[str | None, typer.Option(
        help="mixed: upgrade column 'group's (fmgauge format) or whole 'layer's (one bit width per Linear: "
             "compressed-tensors, one config group per width).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=(
        "compressed-tensors (vLLM / transformers) | gptq (gptqmodel; act-order) | gguf (llama.cpp: 4-bit or 8-bit "
        "sym, group 32) | fmgauge (any grid, mixed precision; an fp32 copy plus codes, only on request). Default: "
        "compressed-tensors, gptq with --actorder."))] = None,
    k_bits: Annotated[int | None, typer.Option(help=(
        "GGUF K-quant grids for Linears whose width is a multiple of 256: 3 (Q3_K) or 6 (Q6_K); the others keep "
        "--bits on 32-blocks (implies --format gguf)."))] = None,
    grid_search: Annotated[bool | None, typer.Option("--grid-search/--no-grid-search", help=(
        "Choose each group's range by the diag-H-weighted rounding error (sens-gptq: S_j-weighted), as llama.cpp's "
        "imatrix quantizers do (default: min-max, as the reference GPTQ)."))] = None,
    embeddings: Annotated[str | None, typer.Option(help=(
        "GGUF: 'quantize' (default: output head / tied embedding as llama-quantize does, Q8_0 or Q6_K) or 'keep' "
        "(16 bits)."))] = None,
    calib: Calib = None,
    n_samples: NSamples = None,
    seqlen: SeqLen = None,
    seed: Seed = None,
    sampling: Sampling = None,
    config: ConfigOpt = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
) -> None:
    """Quantize a causal LM (weight-only) and save a checkpoint an engine loads, with a JSON of what was done."""
    from fmgauge.quantization.pipeline import RunConfig, run_quantization

    quant = {"method": method, "bits": bits, "group_size": group_size, "sym": sym, "ragged": ragged,
             "actorder": actorder, "sequential": sequential, "clip": clip, "fisher_mix": fisher_mix,
             "mixed_fraction": mixed_fraction, "high_bits": high_bits, "mixed_unit": mixed_unit, "k_bits": k_bits,
             "grid_search": grid_search}
    cfg = _load(RunConfig, config, {"calib": _calib(calib, n_samples, seqlen, seed, sampling),
                                    "quant": {k: v for k, v in quant.items() if v is not None}, "model": model,
                                    "format": fmt, "device": device, "dtype": dtype, "embeddings": embeddings})
    given = [o for k, o in _CALIB_OPTIONS.items() if k in _calib(calib, n_samples, seqlen, seed, sampling)]
    if given and not (cfg.quant.needs_hessian or cfg.quant.needs_gradients):
        logging.getLogger(__name__).warning("%s reads no calibration text; ignoring %s", cfg.quant.method,
                                            ", ".join(given))
    _devices(device, dtype)
    with _out_dir(out):  # before the model loads: a quantized model with nowhere to go is an hour lost
        res = run_quantization(cfg, out)
    r = res.record
    c = r["calibration"]
    q = r["config"]
    fp_pass = (f"full-precision calibration {(c.get('usage') or {}).get('seconds', 0):.1f} s"
               f"{' (cached)' if c.get('cached') else ''}, " if "usage" in c else "")
    seq = " (sequential, block-by-block calibration included)" if c["sequential"] else ""
    d = r.get("defaults", {})
    chosen = "; ".join(v for v in (f"group size {q['group_size']} by default ({d['group_size_rule']})"
                                   if "group_size" in d else "", f"{d['sym_rule']} grid by default"
                                   if "sym" in d else "") if v)
    console.print(f"{q['method']} {q['bits']}-bit g{q['group_size']} {'sym' if q['sym'] else 'asym'}: "
                  f"{len(res.qweights)} layers{f' ({chosen})' if chosen else ''}; {fp_pass}quantization "
                  f"{r['quantization_usage']['seconds']:.1f} s{seq}, peak RSS "
                  f"{r['quantization_usage']['peak_rss_mb']:.0f} MB")
    ex = r["export"]
    console.print(f"Saved: [bold]{out}[/] as {ex['format']}: {ex['on_disk_mb']:.1f} MB on disk "
                  f"({', '.join(ex['files'])}), {ex['bits_per_weight']:.3f} bits per weight (tensor bytes × 8 / "
                  f"{ex['n_params']:,} parameters, as llama.cpp counts); `fmgauge quantize eval {out}` loads it as "
                  "a user would.")
    if ex.get("note"):
        console.print(f"[yellow]note:[/] {ex['note']}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Argument(help="A directory from `quantize run`, or any model name/directory.")],
    reference: Annotated[str | None, typer.Option(help="FP model for the KL (default: the one it came from).")] = None,
    context: Annotated[int, typer.Option(help="Tokens per perplexity window.", min=2)] = 512,
    stride: Annotated[int | None, typer.Option(help="Window step (default = context: non-overlapping).",
                                               min=1)] = None,
    max_windows: Annotated[int | None, typer.Option(help="Score only the first N windows.", min=1)] = None,
    kl_windows: Annotated[int, typer.Option(help="Held-out windows for the KL (0 = skip).", min=0)] = 8,
    text: Annotated[str, typer.Option(help="'wikitext2' (test split) or a UTF-8 text file.")] = "wikitext2",
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
    engine: Annotated[str, typer.Option(help=(
        "transformers (default) | llama.cpp: score the directory's GGUF file through llama.cpp on fmgauge's token "
        "ids and windows (no KL; needs `make llama`)."))] = "transformers",
    llama_root: Annotated[str | None, typer.Option(help="A llama.cpp build (default $FMGAUGE_LLAMA_ROOT or "
                                                        "~/.cache/fmgauge/llama-cpp/<version>).")] = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
) -> None:
    """WikiText-2 perplexity (context and stride stated), KL to the FP model, size, time and memory."""
    from fmgauge.core.files import check_output_file
    from fmgauge.core.text_models import model_weights_errors
    from fmgauge.quantization.evaluate import EvalConfig, evaluate_model

    if stride is not None and stride > context:
        raise FmgaugeError(f"--stride must be at most --context ({context}), got {stride}.")
    if text != "wikitext2" and not Path(text).expanduser().is_file():
        raise FmgaugeError(f"--text must be 'wikitext2' or an existing UTF-8 text file; {text!r} is neither.")
    if out is not None:
        check_output_file(out, option="--out")
    _devices(device, dtype)
    if reference is not None:
        from fmgauge.core.text_models import TEXT_MODELS, resolve_text_model

        if reference not in TEXT_MODELS:  # a registered name resolves when it loads (it may convert once)
            resolve_text_model(reference)
    cfg = EvalConfig(text=text, context=context, stride=stride or context, max_windows=max_windows,
                     kl_windows=kl_windows)
    with model_weights_errors(model):
        row = evaluate_model(model, cfg, reference=reference, device=device, dtype=dtype, engine=engine,
                             llama_root=llama_root)
    t = Table("quantity", "value", title=f"{model}")
    t.add_row("protocol", row["protocol"])
    t.add_row("perplexity [95% CI]", f"{row['ppl']:.3f} [{row['ppl_lo']:.3f}, {row['ppl_hi']:.3f}]")
    if "kl" in row:
        t.add_row("KL to FP (nats/token)", f"{row['kl']:.4f} [{row['kl_lo']:.4f}, {row['kl_hi']:.4f}]")
        t.add_row("top-1 agreement", f"{row['top1_agreement']:.3f}")
    for k in ("engine", "format", "loader", "method", "bits", "group_size", "avg_bits", "size_mb", "on_disk_mb",
              "file_bpw", "gguf_types", "eval_seconds", "quant_seconds", "quant_peak_rss_mb"):
        if k in row:
            t.add_row(k, f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]))
    console.print(t)
    if out:
        out.write_text(json.dumps(row, indent=2, default=str))


@app.command("compare")
def compare_cmd(
    model: Model = None,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = "rtn,awq,gptq,sens-awq,sens-gptq",
    bits: Annotated[str, typer.Option(help="Comma-separated bit widths.")] = "3,4",
    group_size: Annotated[str, typer.Option(help="Comma-separated group sizes (-1 = per channel).")] = "128,-1",
    calib: Calib = None,
    n_samples: NSamples = None,
    seqlen: SeqLen = None,
    seed: Seed = None,
    sampling: Sampling = None,
    context: Annotated[int | None, typer.Option(help="Perplexity window (default 512).", min=2)] = None,
    stride: Annotated[int | None, typer.Option(help="Window step (default = context).", min=1)] = None,
    max_windows: Annotated[int | None, typer.Option(help="Score only the first N windows (state it!).",
                                                    min=1)] = None,
    kl_windows: Annotated[int | None, typer.Option(help="Windows for the KL (default 8).", min=0)] = None,
    peers: Annotated[str | None, typer.Option(
        help="Peer tools run side by side on the same weights, calibration tokens and windows: 'llmcompressor' "
             "(its GPTQ and AWQ, for the gptq / awq in --methods), 'gptqmodel' (its GPTQ), 'llama.cpp' "
             "(llama-quantize's types without and with importance matrices; every GGUF, fmgauge's included, scored "
             "by llama.cpp; needs `make llama`).")] = None,
    k_bits: Annotated[int | None, typer.Option(help=(
        "GGUF K-quant grids (3: Q3_K, 6: Q6_K) for the Linears whose width is a multiple of 256, for every "
        "method (rtn, gptq, sens-gptq).")),
    ] = None,
    grid_search: Annotated[bool | None, typer.Option("--grid-search/--no-grid-search", help=(
        "Every method: each group's range chosen by the diag-H-weighted rounding error (default min-max)."))] = None,
    llama_types: Annotated[str | None, typer.Option(
        help="--peers llama.cpp: llama-quantize types (default Q4_0,Q4_K_M,Q3_K_M,Q2_K).")] = None,
    llama_imatrix: Annotated[str | None, typer.Option(
        help="--peers llama.cpp: importance matrices, some of none,llama,act2,fisher (default all four: none, "
             "llama-imatrix's, fmgauge's E[x²], fmgauge's S_j).")] = None,
    llama_root: Annotated[str | None, typer.Option(help="A llama.cpp build (default $FMGAUGE_LLAMA_ROOT or "
                                                        "~/.cache/fmgauge/llama-cpp/<version>).")] = None,
    llama_windows: Annotated[int | None, typer.Option(
        help="--peers llama.cpp: windows scored by llama.cpp (default --max-windows).")] = None,
    peers_python: Annotated[str | None, typer.Option(
        help="The peers' interpreters: PATH, or PEER=PATH,… (default $FMGAUGE_PEERS_PYTHON or "
             "~/.cache/fmgauge/peers/<peer>/bin/python, built by `make peers`).")] = None,
    out: Annotated[Path, typer.Option(help="Run directory (resumes if it exists).")] = Path("runs/quant-compare"),
    config: ConfigOpt = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
) -> None:
    """Compare methods × bits × group sizes from one calibration pass (and, with --peers, the same configurations
    from llmcompressor); table with paired per-window tests + perplexity-vs-bits plot."""
    from fmgauge.quantization.compare import CompareConfig, compare, table_for_report

    if stride is not None and context is not None and stride > context:
        raise FmgaugeError(f"--stride must be at most --context ({context}), got {stride}.")
    if k_bits is not None:
        from fmgauge.quantization.grid import KQUANT_TYPES

        if k_bits not in KQUANT_TYPES:
            raise FmgaugeError(f"--k-bits must be one of {', '.join(map(str, KQUANT_TYPES))} (Q3_K, Q6_K), got {k_bits}.")
    quant = {k: v for k, v in {"k_bits": k_bits, "grid_search": grid_search}.items() if v is not None}
    ev = {"context": context, "stride": stride or context, "max_windows": max_windows, "kl_windows": kl_windows}
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    if not method_list:
        raise FmgaugeError(f"--methods needs at least one method (e.g. rtn,gptq); got {methods!r}.")
    cfg = _load(CompareConfig, config, {
        "calib": _calib(calib, n_samples, seqlen, seed, sampling), "eval": {k: v for k, v in ev.items() if v is not None},
        "model": model, "methods": method_list,
        "bits": _ints(bits, "--bits"), "group_sizes": _ints(group_size, "--group-size"), "device": device,
        "dtype": dtype, **({"peers": [p for p in peers.split(",") if p.strip()]} if peers else {}),
        **({"peers_python": peers_python} if peers_python else {}),
        **({"llama_types": [t for t in llama_types.split(",") if t.strip()]} if llama_types else {}),
        **({"llama_imatrix": [t for t in llama_imatrix.split(",") if t.strip()]} if llama_imatrix else {}),
        "llama_root": llama_root, "llama_windows": llama_windows, "quant": quant},
        {"group_sizes": "--group-size"})
    _devices(device, dtype)
    with _out_dir(out):
        res = compare(cfg, out)
    t = Table(*table_for_report(res.table, res.summary["fp_ppl"]).columns, title=res.summary["protocol"])
    for row in table_for_report(res.table, res.summary["fp_ppl"]).itertuples(index=False):
        t.add_row(*map(str, row))
    console.print(t)
    if res.summary["caveat"]:
        console.print(f"[yellow]caveat:[/] {res.summary['caveat']}")
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]")


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A `quantize compare` run directory.")]) -> None:
    """Rebuild a comparison's report from its store (no recomputation)."""
    from fmgauge.quantization.compare import write_report

    if not (run_dir / "config.yaml").is_file():
        raise FmgaugeError(f"{run_dir} is not a `quantize compare` run directory: it has no config.yaml.")
    res = write_report(run_dir)
    console.print(f"Report: [bold]{res.run_dir / 'report.html'}[/]")
