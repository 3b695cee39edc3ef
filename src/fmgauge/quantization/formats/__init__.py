"""Export formats for quantized models (one module per on-disk format) and the one place that picks and checks them.

==================  ====================================================================================
compressed-tensors  ``pack-quantized`` (llmcompressor's format, vLLM serves it): :mod:`.compressed`
gptq                qweight / qzeros / scales / g_idx (transformers' GPTQ integration, gptqmodel): :mod:`.gptq`
gguf                Q4_0 / Q4_1 / Q8_0 blocks for llama.cpp: :mod:`.gguf`
fmgauge             fp32 dequantized weights + fmgauge's uint8 codes (any grid, mixed precision, AWQ scales)
==================  ====================================================================================

Checks come in two stages, both before any calibration: :func:`check_format` on the config alone (called when a
run's config is built, before the model loads), :func:`check_model` on the loaded model's layer widths and
architecture. Export folds AWQ's input scales into the previous op first (:mod:`.fold`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from fmgauge.core.validation import FmgaugeError

FormatName = Literal["compressed-tensors", "gptq", "gguf", "fmgauge"]
FORMATS: tuple[str, ...] = ("compressed-tensors", "gptq", "gguf", "fmgauge")
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
GGUF_FILE = "model.gguf"


def default_format(cfg) -> str:  # noqa: ANN001  (QuantConfig)
    """The deployable format that fits the method: compressed-tensors, GPTQ for act-order (the format with a
    ``g_idx``), fmgauge's own for mixed precision per group (bits no engine format stores); mixed precision by
    whole layers goes to compressed-tensors (one config group per bit width)."""
    if not cfg.per_layer_bits:
        return "fmgauge"
    if getattr(cfg, "k_bits", None) is not None:
        return "gguf"
    if cfg.actorder and not cfg.static_groups:
        return "gptq"
    return "compressed-tensors"


def check_format(fmt: str, cfg) -> None:  # noqa: ANN001  (QuantConfig)
    """Refuse a format that cannot store ``cfg``'s grid (one line naming the format and the nearest valid setting).
    Needs no model: called when the config is built."""
    if fmt not in FORMATS:
        raise FmgaugeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if fmt == "fmgauge":
        return
    if getattr(cfg, "k_bits", None) is not None and fmt != "gguf":
        raise FmgaugeError(f"format {fmt} has no K-quant blocks; --k-bits {cfg.k_bits} writes GGUF: use --format "
                           "gguf (or drop --k-bits).")
    if cfg.method == "mixed" and not cfg.per_layer_bits:
        raise FmgaugeError(f"format {fmt} stores one bit width per layer; method mixed varies bits per group: "
                           "nearest valid setting: --mixed-unit layer (or --group-size -1), or --format fmgauge.")
    if cfg.method == "mixed" and fmt != "compressed-tensors":
        raise FmgaugeError(f"format {fmt} stores one bit width for the whole model; method mixed: use --format "
                           "compressed-tensors (one config group per bit width) or fmgauge.")
    if fmt == "gguf":
        from fmgauge.quantization.formats.gguf import gguf_type

        gguf_type(cfg.bits, 32 if cfg.group_size is None else cfg.group_size, True if cfg.sym is None else cfg.sym)
    if fmt == "gptq" and cfg.group_size is not None:
        from fmgauge.quantization.formats.gptq import check_gptq

        check_gptq(cfg.bits, cfg.group_size, bool(cfg.sym))
    if fmt in ("compressed-tensors", "gguf") and cfg.actorder and not cfg.static_groups:
        raise FmgaugeError(f"format {fmt} has no g_idx for act-order's permuted groups: nearest valid setting: "
                           "--no-actorder (or static_groups: true), or --format gptq.")


def check_model(fmt: str, cfg, widths: dict[str, int], model_type: str) -> None:  # noqa: ANN001
    """The checks that need the loaded model: every quantized layer's input width ``widths`` (name -> d_in) fits the
    format's groups, and the architecture is one the format (and AWQ's scale folding) supports."""
    if fmt == "fmgauge":
        return
    g = cfg.group_size
    bad = {n: d for n, d in widths.items() if g not in (None, -1) and d % g}  # None: the default fits
    if bad:
        n, d = next(iter(bad.items()))
        fits = [s for s in (32, 64, 128) if all(w % s == 0 for w in widths.values())]
        raise FmgaugeError(f"format {fmt} needs groups that divide every layer's width; group size {g} does not "
                           f"divide {d} ({n} and {len(bad) - 1} more): nearest valid setting: --group-size "
                           f"{' or '.join(map(str, fits + [-1]))}, or --format fmgauge (ragged last group).")
    if fmt == "gguf" and model_type != "llama":
        raise FmgaugeError(f"format gguf: architecture {model_type!r} is not supported; only llama (e.g. "
                           "smollm2-135m): use --format compressed-tensors.")
    if cfg.method in ("awq", "sens-awq"):
        from fmgauge.quantization.formats.fold import FOLDABLE_ARCHS

        if model_type not in FOLDABLE_ARCHS:
            raise FmgaugeError(f"format {fmt}: AWQ's input scales must be folded into the previous op, which "
                               f"fmgauge does for {', '.join(FOLDABLE_ARCHS)}, not {model_type!r}: use --format "
                               "fmgauge.")


FMGAUGE_FORMAT_SIZE = ("fmgauge's own format (an fp32 copy of the model plus the codes: bigger than the original "
                       "model, only for analysis)")


def resolve_format(fmt: str | None, cfg, widths: dict[str, int], model_type: str, *,  # noqa: ANN001
                   fallback: bool = True) -> tuple[str, str | None]:
    """The format to write and, when the default had to fall back to fmgauge's, why. An explicit ``fmt`` that does
    not fit is refused. With ``fallback`` (what ``compare`` uses to label a row) the default falls back to fmgauge's
    format with the reason; without it (``quantize run``) that is refused too, naming the settings that deploy:
    no default writes a file bigger than the original model."""
    if fmt is not None:
        check_format(fmt, cfg)
        check_model(fmt, cfg, widths, model_type)
        return fmt, None
    fmt = default_format(cfg)
    try:
        if fmt == "fmgauge":
            raise FmgaugeError(f"method {cfg.method} with per-group bits is stored only by {FMGAUGE_FORMAT_SIZE}: "
                               "nearest deployable setting: --mixed-unit layer (compressed-tensors)")
        check_format(fmt, cfg)
        check_model(fmt, cfg, widths, model_type)
    except FmgaugeError as e:
        if not fallback:
            raise FmgaugeError(f"{str(e).rstrip('.')}; or pass --format fmgauge explicitly for {FMGAUGE_FORMAT_SIZE}."
                               ) from None
        return "fmgauge", f"saved in fmgauge's format because {e}"
    return fmt, None


def weight_files(out: Path) -> dict[str, int]:
    """The weight files of a saved directory and their sizes in bytes (what ships)."""
    return {p.name: p.stat().st_size for p in sorted(Path(out).iterdir()) if p.suffix in WEIGHT_SUFFIXES}


SIXTEEN_BIT = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def storage_dtype(model, requested: str | None = None) -> str:  # noqa: ANN001
    """The 16-bit dtype unquantized tensors are written in: ``requested`` (``--dtype``) when it is 16-bit, else the
    model's own dtype (``config.dtype``) when that is 16-bit, else float16 (what ``convert_hf_to_gguf.py`` writes by
    default)."""
    if requested in SIXTEEN_BIT:
        return requested
    own = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    own = str(own).replace("torch.", "") if own is not None else None
    return own if own in SIXTEEN_BIT else "float16"


def round_for_storage(model, qweights: dict, dtype: str, *, scale_dtype: str | None = None) -> dict:  # noqa: ANN001
    """Make the model in memory the model the file holds: every parameter that is not a quantized Linear's weight
    rounded to ``dtype`` (kept in the model's compute dtype), every grid's scale rounded to ``scale_dtype``
    (default ``dtype``) and the quantized Linears set to the rounded grids. Returns the rounded ``qweights``."""
    from dataclasses import replace

    tdt, sdt = SIXTEEN_BIT[dtype], SIXTEEN_BIT[scale_dtype or dtype]
    q_params = {f"{n}.weight" for n in qweights}
    out = {n: replace(q, scale=q.scale.to(sdt).to(q.scale.dtype)) for n, q in qweights.items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in q_params and p.is_floating_point():
                p.data = p.data.to(tdt).to(p.dtype)
        for n, q in out.items():
            w = model.get_submodule(n).weight
            w.data = q.dequantize().to(w.dtype).to(w.device)
    return out


def cast_safetensors(out: Path, dtype: str) -> None:
    """Rewrite every floating tensor of 32 bits in the directory's safetensors files in ``dtype`` and record it in
    config.json (``dtype``), as llmcompressor writes a 16-bit model's checkpoint. Exact when the values were first
    rounded with :func:`round_for_storage`."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tdt = SIXTEEN_BIT[dtype]
    for f in sorted(Path(out).glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            metadata = fh.metadata() or {"format": "pt"}
        tensors = load_file(f)
        tensors = {k: v.to(tdt) if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(tensors, f, metadata=metadata)
    cfg_path = Path(out) / "config.json"
    if cfg_path.exists():
        config = json.loads(cfg_path.read_text())
        config["dtype"] = dtype
        config.pop("torch_dtype", None)
        cfg_path.write_text(json.dumps(config, indent=2))


def file_sizes(out: Path, model) -> dict:  # noqa: ANN001
    """Sizes read from the written files: ``on_disk_mb`` (all weight files), ``tensor_bytes`` (their tensor data,
    without headers and metadata), ``n_params`` (the model's parameters, a tied embedding once) and
    ``bits_per_weight`` = 8 · tensor_bytes / n_params, which is how llama.cpp counts "BPW" when it loads a file."""
    import json

    out = Path(out)
    files = weight_files(out)
    n_params = sum(p.numel() for p in model.parameters())
    tensor_bytes = 0
    for name in files:
        p = out / name
        if p.suffix == ".gguf":
            from fmgauge.quantization.formats.gguf import file_sizes as gguf_sizes

            tensor_bytes += gguf_sizes(p)["tensor_bytes"]
        else:
            with open(p, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            tensor_bytes += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
                                if k != "__metadata__")
    return {"files": files, "on_disk_mb": sum(files.values()) / 1e6, "tensor_bytes": tensor_bytes,
            "n_params": n_params, "bits_per_weight": 8 * tensor_bytes / max(n_params, 1)}


def export(result, out: Path, fmt: str, cfg, *, dtype: str | None = None, embeddings: str = "quantize") -> dict:  # noqa: ANN001
    """Write ``result`` as ``fmt`` into directory ``out``; returns what was written (files, bytes on disk, bits per
    weight counted from them).

    Unquantized tensors are written in 16 bits (:func:`storage_dtype` of ``dtype``); GGUF also quantizes the output
    head / tied embedding as llama-quantize does unless ``embeddings='keep'``. The model in memory is changed to what
    the file holds (AWQ scales folded, 16-bit rounding, quantized embeddings), so it is the model that ships."""
    from fmgauge.quantization.formats.fold import fold_input_scales

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folded = any(q.input_scale is not None for q in result.qweights.values())
    qweights = fold_input_scales(result.model, result.qweights)
    model, tok = result.model, result.tokenizer
    sdt = storage_dtype(model, dtype)
    info: dict = {"format": fmt, "awq_scales_folded": folded, "dtype": sdt}
    if fmt == "compressed-tensors":
        from fmgauge.quantization.formats.compressed import write

        qweights = round_for_storage(model, qweights, sdt)
        write(model, tok, qweights, out, group_size=cfg.group_size, sym=cfg.sym)
        cast_safetensors(out, sdt)
    elif fmt == "gptq":
        from fmgauge.quantization.formats.gptq import write_gptq

        qweights = round_for_storage(model, qweights, sdt, scale_dtype="float16")
        write_gptq(model, tok, qweights, out)
        cast_safetensors(out, sdt)
    elif fmt == "gguf":
        from fmgauge.quantization.formats.gguf import file_sizes as gguf_sizes
        from fmgauge.quantization.formats.gguf import write_gguf

        write_gguf(model, tok, qweights, out / GGUF_FILE, dtype=sdt, embeddings=embeddings, update_model=True)
        tok.save_pretrained(out)
        info.update(embeddings=embeddings, gguf_types=gguf_sizes(out / GGUF_FILE)["types"])
    else:
        raise FmgaugeError(f"export: unknown format {fmt!r} (fmgauge's own is written by save_quantized).")
    result.qweights = qweights
    info.update(file_sizes(out, model))
    return info
