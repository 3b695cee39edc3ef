"""compressed-tensors ``pack-quantized``: the checkpoint format llmcompressor writes and vLLM serves.

Per quantized Linear ``name`` the safetensors hold ``name.weight_packed`` (int32 (d_out, ⌈d_in·b/32⌉): signed codes
``q − 2^(b−1)`` densely packed, 32 codes in ``b`` words, by compressed-tensors' own ``pack_to_int32``),
``name.weight_scale`` ((d_out, G) in the model's dtype), ``name.weight_shape`` ((2,) int) and, for an asymmetric
grid, ``name.weight_zero_point`` (``zero − 2^(b−1)`` packed along the output dim). config.json carries
``quantization_config`` (quant_method ``compressed-tensors``, status ``compressed``), so
``AutoModelForCausalLM.from_pretrained(dir)`` (transformers + compressed-tensors) loads it as a quantized model.

The map from fmgauge's grid is exact: compressed-tensors dequantizes ``(x_q − zp) · scale`` with
``x_q = code − 2^(b−1)`` and ``zp = zero − 2^(b−1)``, i.e. ``scale · (code − zero)``; a symmetric fmgauge grid has
``zero = 2^(b−1)``, hence ``zp = 0`` (not stored). What the format cannot hold is refused up front: per-group mixed
bits, act-order's permuted ``g_idx`` (compressed-tensors ≥ 0.20 has no ``g_idx``), and a group size that does not
divide a layer's width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import QuantizedWeight, group_index

NAME = "compressed-tensors"


def check_grid(qw: QuantizedWeight, name: str) -> None:
    """Refuse a layer whose grid compressed-tensors cannot store (one line naming the format and what to use)."""
    bits = qw.bits.unique()
    if len(bits) > 1:
        raise FmgaugeError(f"format {NAME} stores one bit width per layer; {name} mixes {bits.tolist()} bits per "
                           "group (method mixed): use --format fmgauge.")
    d_in = qw.codes.shape[1]
    n_groups = qw.scale.shape[1]
    if n_groups > 1 and (d_in % n_groups or not torch.equal(qw.g_idx.cpu(), group_index(d_in, d_in // n_groups))):
        raise FmgaugeError(f"format {NAME} needs contiguous groups of equal size, but {name} has "
                           f"{'a permuted g_idx (act-order)' if d_in % n_groups == 0 else 'a shorter last group'}; "
                           "nearest valid setting: --no-actorder (or static_groups: true) and a group size that "
                           "divides every width (--no-ragged refuses the others), or use --format gptq (act-order) or fmgauge.")
    if qw.input_scale is not None:
        raise FmgaugeError(f"{name} still carries AWQ input scales; fold them first (formats.fold).")


def module_tensors(qw: QuantizedWeight, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one Linear (local names: weight_packed, weight_scale, …)."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    b = int(qw.bits[0])
    offset = 1 << (b - 1)
    q = (qw.codes.to(torch.int16) - offset).to(torch.int8)
    out = {"weight_packed": pack_to_int32(q.cpu(), b), "weight_scale": qw.scale.to(dtype).cpu().contiguous(),
           "weight_shape": torch.tensor(list(qw.codes.shape), dtype=torch.int64)}
    if not qw.sym:
        zp = (qw.zero.round().to(torch.int16) - offset).to(torch.int8).cpu()
        out["weight_zero_point"] = pack_to_int32(zp, b, packed_dim=0).contiguous()
    return out


def quantization_config(qweights: dict[str, QuantizedWeight], all_linears: list[str], *, group_size: int,
                        sym: bool) -> dict:
    """``quantization_config`` for config.json: one scheme over every Linear (``targets: [Linear]``), the unquantized
    ones ignored; with per-layer mixed precision one scheme per bit width, each targeting its layers by name."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    by_bits: dict[int, list[str]] = {}
    for n, q in qweights.items():
        by_bits.setdefault(int(q.bits[0]), []).append(n)
    strategy = "channel" if group_size == -1 else "group"

    def scheme(bits: int, targets: list[str]) -> QuantizationScheme:
        return QuantizationScheme(targets=targets, weights=QuantizationArgs(
            num_bits=bits, type="int", symmetric=sym, strategy=strategy,
            group_size=None if group_size == -1 else group_size))

    if len(by_bits) == 1:
        groups = {"group_0": scheme(next(iter(by_bits)), ["Linear"])}
    else:
        groups = {f"group_{i}": scheme(b, sorted(names)) for i, (b, names) in enumerate(sorted(by_bits.items()))}
    qc = QuantizationConfig(config_groups=groups, format="pack-quantized", quantization_status="compressed",
                            ignore=sorted(n for n in all_linears if n not in qweights))
    return qc.to_dict()


def write(model: torch.nn.Module, tokenizer, qweights: dict[str, QuantizedWeight], out: Path, *,  # noqa: ANN001
          group_size: int, sym: bool) -> list[Path]:
    """Save ``model`` (weights already the dequantized, folded grids) with its quantized Linears replaced by their
    packed form; returns the weight files written."""
    from safetensors.torch import load_file, save_file

    for n, qw in qweights.items():
        check_grid(qw, n)
    out.mkdir(parents=True, exist_ok=True)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    qc = quantization_config(qweights, linears, group_size=group_size, sym=sym)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    dtype = next(model.parameters()).dtype
    files = sorted(out.glob("*.safetensors"))
    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else None
    for f in files:
        tensors = load_file(f)
        for n, qw in qweights.items():
            if f"{n}.weight" in tensors:
                del tensors[f"{n}.weight"]
                packed = {f"{n}.{k}": v for k, v in module_tensors(qw, dtype).items()}
                tensors.update(packed)
                if index is not None:
                    index["weight_map"].pop(f"{n}.weight", None)
                    index["weight_map"].update(dict.fromkeys(packed, f.name))
        save_file(tensors, f, metadata={"format": "pt"})
    if index is not None:
        index_path.write_text(json.dumps(index, indent=2))
    cfg_path = out / "config.json"
    config = json.loads(cfg_path.read_text())
    config["quantization_config"] = qc
    cfg_path.write_text(json.dumps(config, indent=2))
    return files


def load_decompressed(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load a ``pack-quantized`` directory with compressed-tensors' own decompression (no transformers quantizer):
    build the model from its config, lay out the compressed modules with ``apply_quantization_config`` +
    ``ModelCompressor.compress_model``, load the checkpoint tensors strictly, then ``decompress_model``.

    The fallback for asymmetric checkpoints, which transformers 5.23 + compressed-tensors 0.20.1 refuse on load: the
    meta-device layout keeps ``weight_zero_point`` unpacked ((d_out, G)) while the checkpoint holds it packed
    ((⌈d_out·b/32⌉, G)), as the library's own compressor writes it.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    qc = QuantizationConfig.model_validate(config.quantization_config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    apply_quantization_config(model, qc, run_compressed=False)
    compressor = ModelCompressor(quantization_config=qc)
    compressor.compress_model(model)
    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise FmgaugeError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    compressor.decompress_model(model)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()
