"""Model-level driver: calibrate (cached), quantize every Linear, save an HF-loadable directory, load it back.

A saved quantized model is a directory that ``AutoModelForCausalLM.from_pretrained(dir)`` loads as is:

- ``config.json``, ``model.safetensors``, tokenizer files: the model with every quantized Linear holding its
  dequantized weight (fp32), so any transformers user gets the quantized model's exact logits;
- ``quantized.safetensors``: the packed form of each quantized Linear (``<name>.codes`` uint8 (d_out, d_in),
  ``.scale`` (d_out, G), ``.zero``, ``.g_idx`` (d_in,), ``.bits`` (G,), AWQ's ``.input_scale`` (d_in,));
- ``quantization_config.json``: method, bits, group size, symmetric, format (kept out of ``config.json`` because
  transformers refuses an unknown ``quant_method``);
- ``quantization.json``: what was done — config, calibration protocol, per-layer facts, time, peak memory, size.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from fmgauge.core.cache import cache_root, stable_hash
from fmgauge.core.files import read_back
from fmgauge.core.models import DeviceName
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.calibration import CalibStats, capture, linear_layers
from fmgauge.quantization.formats import FormatName, check_format, default_format, resolve_format
from fmgauge.quantization.grid import QuantizedWeight
from fmgauge.quantization.methods import QuantConfig, quantize_weights
from fmgauge.quantization.resources import Usage, measure
from fmgauge.quantization.text_data import TextSource, calibration_sequences, token_stream

log = logging.getLogger(__name__)
FORMAT = "fmgauge-fakequant-v1"


class CalibConfig(BaseModel):
    """Calibration text and sampling (AutoAWQ/GPTQ: 128 samples × 512 tokens)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field("wikitext2", description="'wikitext2' or a path to a UTF-8 text file.")
    split: str = Field("valid", description="WikiText-2 split for calibration (test is kept for evaluation).")
    n_samples: int = Field(128, ge=1, description="Number of random windows.")
    seqlen: int = Field(512, ge=2, description="Tokens per window.")
    seed: int = Field(0, description="Seed of the window sampler.")
    batch_size: int = Field(1, ge=1, description="Windows per forward/backward pass (memory vs speed).")
    sampling: Literal["random", "consecutive"] = Field(
        "random", description="'random' offsets (GPTQ's sampler, seeded) or the first n_samples consecutive windows.")

    @field_validator("text")
    @classmethod
    def _text_exists(cls, v: str) -> str:  # checked when the config is built, whether the method reads it or not
        if v != "wikitext2" and not Path(v).expanduser().is_file():
            raise ValueError(f"must be 'wikitext2' or an existing UTF-8 text file; {v!r} is neither")
        return v

    @field_validator("seqlen")
    @classmethod
    def _text_long_enough(cls, v: int, info: ValidationInfo) -> int:
        """A text file shorter than one window whatever the tokenizer (a token covers at least one byte; +1 for a
        special token) is refused here, before any model or tokenizer loads."""
        text = info.data.get("text")
        if text is not None and text != "wikitext2":
            size = Path(text).expanduser().stat().st_size
            if size + 1 < v + 1:
                raise ValueError(f"calibration text {text} has {size} bytes, fewer than the {v} + 1 tokens of one "
                                 "window (a token covers at least one byte); give more text or a smaller --seqlen")
        return v


def calibration_tokens(tm, calib: CalibConfig) -> torch.Tensor:  # noqa: ANN001
    """The (n_samples, seqlen) calibration token ids of ``calib`` for ``tm``'s tokenizer."""
    stream = token_stream(tm.tokenizer, TextSource(calib.text, calib.split))
    return calibration_sequences(stream, calib.n_samples, calib.seqlen, seed=calib.seed, sampling=calib.sampling)


def calibrate(
    tm, calib: CalibConfig, *, gradients: bool = True, full_hessian: bool = True, use_cache: bool = True,  # noqa: ANN001
    progress: bool = True,
) -> tuple[CalibStats, Usage]:
    """Calibration statistics of ``tm`` (a :class:`~fmgauge.core.text_models.TextModel`), cached on disk.

    A cached capture with more (gradients, full Hessians) serves a request for less. Returns the stats and the
    time/memory of the capture (zero time on a cache hit; ``meta['cached']`` says so).
    """
    source = TextSource(calib.text, calib.split)
    key = calib.model_dump(exclude={"sampling"} if calib.sampling == "random" else set())  # old caches stay valid
    desc = {"model": tm.identity, "calib": key, "text": source.describe(), "v": 2}
    usage = Usage()

    def path_for(g: bool, f: bool) -> Path:
        return cache_root() / "quant_calib" / f"{stable_hash({**desc, 'gradients': g, 'full_hessian': f})}.pt"

    for g, f in dict.fromkeys([(gradients, full_hessian), (True, True)]):  # the exact capture, or a superset
        if use_cache and path_for(g, f).exists():
            try:
                stats = CalibStats.load(path_for(g, f))
            except Exception as e:  # noqa: BLE001 - truncated/corrupt/unsafe: a cache entry is recomputed
                from fmgauge.core.files import quarantine

                quarantine(path_for(g, f), e, what="calibration cache file")
                continue
            stats.meta["cached"] = str(path_for(g, f))
            return stats, usage
    seqs = calibration_tokens(tm, calib)
    with measure() as usage:
        stats = capture(tm.model, seqs, gradients=gradients, full_hessian=full_hessian,
                        batch_size=calib.batch_size, progress=progress)
    stats.meta.update(calib=calib.model_dump(), text=source.describe(), usage=usage.to_dict())
    if use_cache:
        stats.save(path_for(gradients, full_hessian))
    return stats, usage


@dataclass
class QuantizationResult:
    """A model whose Linears were quantized in place, with the packed weights and the record of what was done."""

    model: object  # the transformers model (quantized weights, dequantized in place)
    tokenizer: object
    qweights: dict[str, QuantizedWeight]
    record: dict = field(default_factory=dict)


def size_report(model: torch.nn.Module, qweights: dict[str, QuantizedWeight]) -> dict:
    """Model size: quantized Linears packed (codes + fp16 scales + zeros), every other parameter at 16 bits."""
    params = dict(model.named_parameters())
    q_params = {f"{n}.weight" for n in qweights}
    other = sum(p.numel() for n, p in params.items() if n not in q_params)
    q_bits = sum(q.storage_bits() for q in qweights.values())
    q_numel = sum(q.codes.numel() for q in qweights.values())
    total = sum(p.numel() for p in params.values())
    return {"size_mb": (q_bits + 16 * other) / 8 / 1e6, "fp16_size_mb": 16 * total / 8 / 1e6,
            "quantized_params": q_numel, "other_params": other,
            "bits_per_quantized_weight": q_bits / max(q_numel, 1),
            "code_bits_per_weight": sum(q.n_bits_weights for q in qweights.values()) / max(q_numel, 1)}


def quantize_model(tm, cfg: QuantConfig, stats: CalibStats | None, *, sequences: torch.Tensor | None = None,  # noqa: ANN001
                   progress: bool = True) -> QuantizationResult:
    """Quantize the Linears of ``tm.model`` with ``cfg`` (in place) and record it.

    Non-sequential: every Linear covered by ``stats`` (a full-precision capture). Sequential (``cfg.sequential_``):
    every Linear of the decoder blocks, calibrated block by block on ``sequences`` (N, T); ``stats`` is then only
    read for the full-precision gradient weights of the sensitivity methods and mixed precision's allocation.
    """
    from fmgauge.quantization.methods import prepare
    from fmgauge.quantization.sequential import quantize_sequential

    layers = linear_layers(tm.model)
    if cfg.group_size is None or cfg.sym is None:  # defaults that depend on the model (run_quantization resolves
        cfg = cfg.resolved({n: m.in_features for n, m in layers.items()}, default_format(cfg))  # them per format)
    with measure() as usage:
        if cfg.sequential_:
            if sequences is None:
                raise FmgaugeError(f"sequential {cfg.method} needs the calibration sequences (sequences=...).")
            fn, extra, summary = prepare({n: m.weight.data for n, m in layers.items()}, stats, cfg)
            res, _ = quantize_sequential(tm.model, sequences, lambda w, st: fn(w, st, cfg, extra), fp_stats=stats,
                                         weighted=cfg.weighted, batch_size=cfg.seq_batch, progress=progress)
            qweights = {n: r[0] for n, r in res.items()}
            infos = {n: r[1] for n, r in res.items()}
        else:
            if stats is None and (cfg.needs_hessian or cfg.needs_gradients):
                raise FmgaugeError(f"{cfg.method} (sequential: false) needs a full-precision calibration capture.")
            weights = {n: m.weight.data for n, m in layers.items() if stats is None or n in stats.layers}
            qweights, infos, summary = quantize_weights(weights, stats, cfg, progress=progress)
            for n, qw in qweights.items():
                w = layers[n].weight
                w.data = qw.dequantize().to(w.dtype).to(w.device)
    calib = {"sequential": cfg.sequential_}
    if sequences is not None:
        calib.update(n_sequences=len(sequences), seqlen=int(sequences.shape[1]), n_tokens=int(sequences.numel()))
    if stats is not None:
        calib.update(n_sequences=stats.n_sequences, seqlen=stats.seqlen, n_tokens=stats.n_tokens,
                     gradients=stats.gradients, full_hessian=stats.full_hessian, calib_loss=stats.loss,
                     cached=stats.meta.get("cached"), **{k: stats.meta.get(k) for k in ("calib", "text")},
                     usage=stats.meta.get("usage", {}))
    record = {
        "format": FORMAT, "model": tm.identity, "config": cfg.model_dump(), "method_summary": summary,
        "calibration": calib,
        "quantization_usage": usage.to_dict(),
        "size": size_report(tm.model, qweights),
        "layers": {n: {"shape": list(qweights[n].codes.shape), "groups": int(qweights[n].scale.shape[1]),
                       "bits": sorted(set(qweights[n].bits.tolist())), **infos.get(n, {})} for n in qweights},
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
    }
    return QuantizationResult(tm.model, tm.tokenizer, qweights, record)


def save_quantized(result: QuantizationResult, out: str | Path) -> Path:
    """Write fmgauge's own format (the directory of the module docstring; :func:`save` adds quantization.json)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = result.model
    model.hf_quantizer = None  # models read from GGUF refuse save_pretrained otherwise (weights are plain fp)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    result.tokenizer.save_pretrained(out)
    tensors: dict[str, torch.Tensor] = {}
    for n, qw in result.qweights.items():
        tensors.update({k: v.cpu() for k, v in qw.tensors(n).items()})
    save_file(tensors, out / "quantized.safetensors", metadata={"format": FORMAT})
    cfg = result.record["config"]
    (out / "quantization_config.json").write_text(json.dumps({
        "quant_method": f"fmgauge-{cfg['method']}", "format": FORMAT, "bits": cfg["bits"],
        "group_size": cfg["group_size"], "sym": cfg["sym"], "layers": sorted(result.qweights),
        "packed_file": "quantized.safetensors"}, indent=2))
    return out


def load_packed(out: str | Path) -> dict[str, QuantizedWeight]:
    """The packed quantized weights of a saved directory, by layer name."""
    from safetensors.torch import load_file

    out = Path(out)
    path = out / "quantized.safetensors"
    if not path.exists():
        raise FmgaugeError(f"{out} is not a quantized model directory: it has no quantized.safetensors.")
    t = load_file(path)
    qc = json.loads((out / "quantization_config.json").read_text())
    return {n: QuantizedWeight.from_tensors(t, n, sym=qc["sym"]) for n in qc["layers"]}


def read_record(out: str | Path) -> dict:
    p = Path(out) / "quantization.json"
    if not p.exists():
        raise FmgaugeError(f"{out} has no quantization.json; was it written by `fmgauge quantize run`?")
    return read_back(p, lambda f: json.loads(f.read_text()), what="quantization record",
                     fix="rerun `fmgauge quantize run` into a fresh --out.")


class RunConfig(BaseModel):
    """``fmgauge quantize run``: which model, how to quantize it, on what calibration text."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", description="Registered name, local directory or hub id.")
    quant: QuantConfig = Field(default_factory=QuantConfig)
    calib: CalibConfig = Field(default_factory=CalibConfig)
    format: FormatName | None = Field(None, description="compressed-tensors | gptq | gguf | fmgauge (default: the "
                                                         "deployable one that fits the method).")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|mps")
    dtype: str = Field("float32", description="float32|float16|bfloat16 (compute; a 16-bit value is also the "
                                               "dtype unquantized tensors are saved in, else the model's own 16-bit "
                                               "dtype or float16).")
    embeddings: Literal["quantize", "keep"] = Field(
        "quantize", description="GGUF: quantize the output head / tied token embedding as llama-quantize does by "
                                "default for the file's type (Q8_0 or Q6_K), or keep them in 16 bits.")

    @model_validator(mode="after")
    def _format_fits(self) -> RunConfig:
        if self.format is not None:
            check_format(self.format, self.quant)
        elif default_format(self.quant) == "fmgauge":
            from fmgauge.quantization.formats import FMGAUGE_FORMAT_SIZE

            raise ValueError(f"method {self.quant.method} with per-group bits is stored only by "
                             f"{FMGAUGE_FORMAT_SIZE}: pass --format fmgauge explicitly, or --mixed-unit layer "
                             "(compressed-tensors)")
        return self


def calibration_for(tm, q: QuantConfig, calib: CalibConfig, *, use_cache: bool = True, progress: bool = True,  # noqa: ANN001
                    ) -> tuple[CalibStats | None, torch.Tensor | None]:
    """What method ``q`` reads: a full-precision capture only when it needs one (never for RTN), and the
    calibration token ids (n_samples, seqlen) when it calibrates block by block."""
    stats = None
    if q.needs_gradients or (q.needs_hessian and not q.sequential_):
        stats, _ = calibrate(tm, calib, gradients=q.needs_gradients, full_hessian=q.needs_hessian and not q.sequential_,
                             use_cache=use_cache, progress=progress)
    return stats, calibration_tokens(tm, calib) if q.sequential_ else None


def planned_layers(model: str) -> tuple[dict[str, int], str] | None:
    """The input width of every Linear that would be quantized, by name, and the model type of ``model``, read from
    its config alone (the architecture built on torch's meta device: shapes, no weights, no load); None when the
    config cannot be read before the load (the load then says what is wrong)."""
    import transformers

    from fmgauge.core.text_models import model_config

    config = model_config(model)
    if config is None:
        return None
    try:
        with torch.device("meta"):
            meta = transformers.AutoModelForCausalLM.from_config(config)
    except Exception as e:  # noqa: BLE001 - not a causal LM transformers builds from a config: the load decides
        log.debug("no meta model for %s: %s", model, e)
        return None
    return {n: m.in_features for n, m in linear_layers(meta).items()}, getattr(config, "model_type", "?")


def check_before_load(cfg: RunConfig) -> None:
    """The refusals that depend on the model's layer widths (group size vs every width, the format's grid), made
    from its config before any weights load; the same checks as after the load (:func:`run_quantization`)."""
    plan = planned_layers(cfg.model)
    if plan is None:
        return
    widths, model_type = plan
    quant = cfg.quant.resolved(widths, cfg.format or default_format(cfg.quant))
    quant.validate_for(widths)
    resolve_format(cfg.format, quant, widths, model_type, fallback=False)


def run_quantization(cfg: RunConfig, out: str | Path, *, progress: bool = True, use_cache: bool = True,
                     ) -> QuantizationResult:
    """Load, calibrate (only what the method needs), quantize and save to ``out`` in ``cfg.format``.

    Everything that can be refused is refused before the model loads: the config when it is built (bits, group size,
    method, format vs grid), the layer widths and architecture from the model's config (:func:`check_before_load`),
    and again from the loaded model.
    """
    from fmgauge.core.progress import progress as progress_tracker
    from fmgauge.core.text_models import load_text_model

    check_before_load(cfg)
    with progress_tracker(f"loading {cfg.model}", 1, enabled=progress) as bar:
        tm = load_text_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        bar.advance(1)
    layers = linear_layers(tm.model)
    widths = {n: m.in_features for n, m in layers.items()}
    chosen = {"group_size": cfg.quant.group_size, "sym": cfg.quant.sym}
    quant = cfg.quant.resolved(widths, cfg.format or default_format(cfg.quant))
    quant.validate_for(widths)
    fmt, _ = resolve_format(cfg.format, quant, widths, getattr(tm.model.config, "model_type", "?"), fallback=False)
    defaults = {k: getattr(quant, k) for k, v in chosen.items() if v is None}
    stats, seqs = calibration_for(tm, quant, cfg.calib, use_cache=use_cache, progress=progress)
    result = quantize_model(tm, quant, stats, sequences=seqs, progress=progress)
    result.record["run_config"] = cfg.model_dump()
    result.record["defaults"] = {**defaults, **({"group_size_rule": "largest of 128/64/32 dividing every quantized "
                                                 "width (GGUF: 32)"} if "group_size" in defaults else {}),
                                 **({"sym_rule": f"symmetric for {fmt}" if quant.sym else f"asymmetric for {fmt}"}
                                    if "sym" in defaults else {})}
    with progress_tracker(f"writing {fmt}", 1, enabled=progress) as bar:
        save(result, out, fmt, quant, dtype=cfg.dtype, embeddings=cfg.embeddings)
        bar.advance(1)
    return result


def save(result: QuantizationResult, out: str | Path, fmt: str, quant: QuantConfig, *, note: str | None = None,
         dtype: str | None = None, embeddings: str = "quantize") -> Path:
    """Write ``result`` into ``out`` as ``fmt`` with ``quantization.json`` (the record, with the files written, their
    bytes on disk and the bits per weight counted from them, next to the computed size). ``dtype`` / ``embeddings``:
    see :func:`fmgauge.quantization.formats.export`."""
    from fmgauge.quantization.formats import export, file_sizes

    out = Path(out)
    if fmt == "fmgauge":
        save_quantized(result, out)
        info = {"format": "fmgauge", **file_sizes(out, result.model)}
    else:
        info = export(result, out, fmt, quant, dtype=dtype, embeddings=embeddings)
    if note:
        info["note"] = note
    result.record["export"] = info
    if fmt != "fmgauge":
        result.record["format"] = fmt
    (out / "quantization.json").write_text(json.dumps(result.record, indent=2, default=str))
    return out
