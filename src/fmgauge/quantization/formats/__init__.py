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
    if cfg.method == "mixed" and not cfg.per_layer_bits:
        raise FmgaugeError(f"format {fmt} stores one bit width per layer; method mixed varies bits per group: "
                           "nearest valid setting: --mixed-unit layer (or --group-size -1), or --format fmgauge.")
    if cfg.method == "mixed" and fmt != "compressed-tensors":
        raise FmgaugeError(f"format {fmt} stores one bit width for the whole model; method mixed: use --format "
                           "compressed-tensors (one config group per bit width) or fmgauge.")
    if fmt == "gguf":
        from fmgauge.quantization.formats.gguf import gguf_type

        gguf_type(cfg.bits, cfg.group_size, cfg.sym)
    if fmt == "gptq":
        from fmgauge.quantization.formats.gptq import check_gptq

        check_gptq(cfg.bits, cfg.group_size, cfg.sym)
    if fmt in ("compressed-tensors", "gguf") and cfg.actorder and not cfg.static_groups:
        raise FmgaugeError(f"format {fmt} has no g_idx for act-order's permuted groups: nearest valid setting: "
                           "--no-actorder (or static_groups: true), or --format gptq.")


def check_model(fmt: str, cfg, widths: dict[str, int], model_type: str) -> None:  # noqa: ANN001
    """The checks that need the loaded model: every quantized layer's input width ``widths`` (name -> d_in) fits the
    format's groups, and the architecture is one the format (and AWQ's scale folding) supports."""
    if fmt == "fmgauge":
        return
    g = cfg.group_size
    bad = {n: d for n, d in widths.items() if g != -1 and d % g}
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


def resolve_format(fmt: str | None, cfg, widths: dict[str, int], model_type: str) -> tuple[str, str | None]:  # noqa: ANN001
    """The format to write and, when the default had to fall back to fmgauge's, why. An explicit ``fmt`` that does
    not fit is refused; the default falls back (with the reason) rather than refusing a run the user did not
    constrain."""
    if fmt is not None:
        check_format(fmt, cfg)
        check_model(fmt, cfg, widths, model_type)
        return fmt, None
    fmt = default_format(cfg)
    try:
        check_format(fmt, cfg)
        check_model(fmt, cfg, widths, model_type)
    except FmgaugeError as e:
        return "fmgauge", f"saved in fmgauge's format because {e}"
    return fmt, None


def weight_files(out: Path) -> dict[str, int]:
    """The weight files of a saved directory and their sizes in bytes (what ships)."""
    return {p.name: p.stat().st_size for p in sorted(Path(out).iterdir()) if p.suffix in WEIGHT_SUFFIXES}


def export(result, out: Path, fmt: str, cfg) -> dict:  # noqa: ANN001  (QuantizationResult, QuantConfig)
    """Write ``result`` as ``fmt`` into directory ``out``; returns what was written (files and bytes on disk).

    For the deployable formats AWQ scales are folded into the model first (in place: the model in memory is then
    the model that ships)."""
    from fmgauge.quantization.formats.fold import fold_input_scales

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folded = any(q.input_scale is not None for q in result.qweights.values())
    qweights = fold_input_scales(result.model, result.qweights)
    model, tok = result.model, result.tokenizer
    if fmt == "compressed-tensors":
        from fmgauge.quantization.formats.compressed import write

        write(model, tok, qweights, out, group_size=cfg.group_size, sym=cfg.sym)
    elif fmt == "gptq":
        from fmgauge.quantization.formats.gptq import write_gptq

        write_gptq(model, tok, qweights, out)
    elif fmt == "gguf":
        from fmgauge.quantization.formats.gguf import write_gguf

        write_gguf(model, tok, qweights, out / GGUF_FILE)
        tok.save_pretrained(out)
    else:
        raise FmgaugeError(f"export: unknown format {fmt!r} (fmgauge's own is written by save_quantized).")
    result.qweights = qweights
    files = weight_files(out)
    return {"format": fmt, "awq_scales_folded": folded, "files": files,
            "on_disk_mb": sum(files.values()) / 1e6}
