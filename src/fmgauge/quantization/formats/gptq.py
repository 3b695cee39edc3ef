"""GPTQ checkpoint export: fmgauge's grids written as the directory transformers' GPTQ integration and gptqmodel load.

Layout of one quantized ``nn.Linear`` ``name`` (weight (d_out, d_in)) in ``model.safetensors``; GPTQ stores the
weight transposed, input channels along the rows:

- ``name.qweight`` int32 (d_in * bits / 32, d_out): codes packed along the input dim;
- ``name.qzeros`` int32 (G, d_out * bits / 32): zero points packed along the output dim;
- ``name.scales`` float16 (G, d_out);
- ``name.g_idx`` int32 (d_in,): group of each input channel (``i // group_size``, or a permutation of it under
  act-order / ``desc_act``);
- ``name.bias`` if the layer has one, as ``save_pretrained`` wrote it.

Packing (gptqmodel's ``pack_block``): along the packed dim the b-bit values form one little-endian bit stream over
consecutive int32 words, value ``i`` occupying stream bits ``[b*i, b*(i+1))``. For 2/4/8 bits value ``j`` of word
``k`` is value ``k * 32/b + j`` at bits ``[b*j, b*(j+1))``; for 3 bits every 32 values fill 3 words (10 values, one
value split 2+1 bits across the word boundary, 10, one split 1+2, 10). Both packed dims must be multiples of 32.

Zero points: the legacy v1 checkpoint (``checkpoint_format: gptq``, AutoGPTQ, what optimum writes for ``sym=True``)
stores ``zero - 1`` per field; gptqmodel's ``gptq_v2`` stores the true zero. Following optimum/gptqmodel, symmetric
grids (zero = 2**(b-1), never 0) are written as v1 and asymmetric grids as ``gptq_v2``, since v1 cannot store a zero
of 0 (gptqmodel's 2/4/8-bit loader adds the offset to whole packed words, its 3-bit loader per field: they disagree
exactly when a field is 0).

fmgauge's grid is read back exactly: codes, zero and g_idx bit for bit, scales to float16 precision.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import QuantizedWeight

GPTQ_BITS = (2, 3, 4, 8)  # transformers' GPTQConfig / optimum; gptqmodel's 5-7 bit only exist as planar 'gptq_p'
GPTQ_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)  # gptqmodel's TorchLinear.SUPPORTS_GROUP_SIZE
CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
WORD_BITS = 32
QUANTIZED_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


def _refuse(what: str, nearest: str) -> FmgaugeError:
    return FmgaugeError(f"format gptq cannot store {what}; nearest valid setting: {nearest}.")


def check_gptq(bits: int, group_size: int, sym: bool) -> None:
    """Refuse a grid (bits, group_size, sym) the GPTQ format cannot store, naming the nearest valid setting.

    Bits 2, 3, 4, 8 (the packings transformers and gptqmodel share); group sizes -1 (per-channel) and 16..1024 in
    powers of two (what gptqmodel's kernels accept); ``sym`` True or False. Raises :class:`FmgaugeError`.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in GPTQ_BITS:
        b = bits if isinstance(bits, int | float) and not isinstance(bits, bool) else 4
        nearest = min(GPTQ_BITS, key=lambda v: (abs(v - b), -v))  # a tie goes to more bits
        raise _refuse(f"{bits!r}-bit weights (its packing supports bits {', '.join(map(str, GPTQ_BITS))})",
                      f"bits={nearest}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size not in GPTQ_GROUP_SIZES:
        if isinstance(group_size, int | float) and not isinstance(group_size, bool) and group_size > 0:
            sizes = [g for g in GPTQ_GROUP_SIZES if g > 0]
            nearest = min(sizes, key=lambda g: (abs(math.log2(g) - math.log2(group_size)), -g))
        else:
            nearest = -1
        raise _refuse(f"group_size {group_size!r} (gptqmodel's kernels take {list(GPTQ_GROUP_SIZES)})",
                      f"group_size={nearest}")
    if not isinstance(sym, bool):
        raise _refuse(f"sym={sym!r} (a grid is symmetric or not)", "sym=True or sym=False")


# ---------------------------------------------------------------------------------------------------------------
# bit packing


def pack_int32(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack integer ``values`` in 0..2**bits-1 along ``dim`` into int32 words (little-endian bit stream).

    ``values`` (..., n, ...) with ``n * bits`` a multiple of 32 -> int32 (..., n * bits / 32, ...).
    """
    v = values.movedim(dim, -1).cpu().numpy().astype(np.uint8)
    n = v.shape[-1]
    if (n * bits) % WORD_BITS:
        raise FmgaugeError(f"cannot pack {n} {bits}-bit values into whole 32-bit words.")
    planes = (v[..., None] >> np.arange(bits, dtype=np.uint8)) & 1  # (..., n, bits): bit k of each value
    stream = np.packbits(planes.reshape(*v.shape[:-1], n * bits), axis=-1, bitorder="little")
    words = np.ascontiguousarray(stream).view("<i4").astype(np.int32)  # (..., n * bits / 32)
    return torch.from_numpy(words).movedim(-1, dim).contiguous()


def unpack_int32(words: torch.Tensor, bits: int, dim: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_int32`: int32 ``words`` (..., w, ...) -> uint8 (..., n, ...) values along ``dim``."""
    w = np.ascontiguousarray(words.movedim(dim, -1).cpu().numpy().astype("<i4"))
    stream = np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")  # (..., 32 * w)
    if stream.shape[-1] < n * bits:
        raise FmgaugeError(f"{w.shape[-1]} packed words hold fewer than {n} {bits}-bit values.")
    planes = stream[..., : n * bits].reshape(*w.shape[:-1], n, bits)
    vals = (planes << np.arange(bits, dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)
    return torch.from_numpy(vals).movedim(-1, dim).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# the grid -> GPTQ parameters


@dataclass(frozen=True)
class GPTQSpec:
    """What ``quantization_config`` says: one setting for every quantized layer."""

    bits: int
    group_size: int
    sym: bool
    desc_act: bool
    checkpoint_format: str


def _layer_group_size(name: str, qw: QuantizedWeight) -> int | None:
    """The group size a layer's ``g_idx`` implies (None: one group, compatible with any size >= d_in)."""
    counts = torch.bincount(qw.g_idx.long().cpu(), minlength=qw.scale.shape[1])
    if len(counts) == 1:
        return None
    gs = int(counts.max())
    want = torch.full_like(counts, gs)
    want[-1] = qw.g_idx.numel() - gs * (len(counts) - 1)
    if not torch.equal(counts, want):
        raise _refuse(f"the groups of layer {name!r} (sizes {counts.tolist()[:8]}...: GPTQ groups are "
                      f"{gs} columns, the last one possibly shorter, contiguous or permuted by act-order)",
                      "quantize it with one group_size")
    return gs


def gptq_spec(qweights: dict[str, QuantizedWeight], checkpoint_format: str | None = None) -> GPTQSpec:
    """The single GPTQ setting that stores every grid of ``qweights`` exactly, or :class:`FmgaugeError`."""
    if not qweights:
        raise FmgaugeError("format gptq: no quantized layers to write (qweights is empty).")
    bits_seen: dict[int, str] = {}
    sizes: dict[int, str] = {}
    syms: dict[bool, str] = {}
    desc_act = False
    for name, qw in qweights.items():
        if qw.input_scale is not None:
            raise _refuse(f"layer {name!r}'s AWQ input_scale (GPTQ has no per-channel input scale)",
                          "fold input_scale into the previous op and quantize W·diag(s) before export")
        b = torch.unique(qw.bits.long().cpu()).tolist()
        if len(b) != 1:
            raise _refuse(f"mixed per-group bits {b} in layer {name!r} (one bit width per checkpoint)",
                          f"bits={max(b)} for every group")
        bits_seen.setdefault(int(b[0]), name)
        syms.setdefault(bool(qw.sym), name)
        gs = _layer_group_size(name, qw)
        n_groups = qw.scale.shape[1]
        if gs is not None:
            sizes.setdefault(gs, name)
            desc_act |= not torch.equal(qw.g_idx.long().cpu(), torch.arange(qw.g_idx.numel()) // gs)
        elif n_groups != 1:
            raise _refuse(f"layer {name!r}: {n_groups} scales for a single group", "one group per scale column")
    if len(bits_seen) > 1:
        raise _refuse(f"layers with different bits {sorted(bits_seen)} (e.g. {list(bits_seen.values())[:2]})",
                      f"bits={max(bits_seen)} for every layer")
    if len(syms) > 1:
        raise _refuse("symmetric and asymmetric layers in one checkpoint", "sym=False for every layer")
    if len(sizes) > 1:
        raise _refuse(f"layers with different group sizes {sorted(sizes)}",
                      f"group_size={min(sizes)} for every layer")
    bits, sym = next(iter(bits_seen)), next(iter(syms))
    group_size = next(iter(sizes)) if sizes else -1
    for name, qw in qweights.items():  # a one-group layer wider than the group size would be per-channel
        if group_size != -1 and qw.scale.shape[1] == 1 and qw.g_idx.numel() > group_size:
            raise _refuse(f"layer {name!r} quantized per-channel beside group_size {group_size} layers",
                          f"group_size={group_size} for every layer")
    check_gptq(bits, group_size, sym)
    fmt = checkpoint_format or ("gptq" if sym else "gptq_v2")
    if fmt not in CHECKPOINT_FORMATS:
        raise _refuse(f"checkpoint_format {fmt!r} (it has {list(CHECKPOINT_FORMATS)})",
                      f"checkpoint_format={'gptq' if sym else 'gptq_v2'}")
    if fmt == "gptq" and not sym and any(bool((qw.zero == 0).any()) for qw in qweights.values()):
        raise _refuse("an asymmetric grid with a zero point of 0 as checkpoint_format 'gptq' (v1 stores zero - 1)",
                      "checkpoint_format='gptq_v2'")
    return GPTQSpec(bits, group_size, sym, desc_act, fmt)


def gptq_tensors(name: str, qw: QuantizedWeight, spec: GPTQSpec) -> dict[str, torch.Tensor]:
    """The four GPTQ tensors of one layer (see the module docstring for shapes and dtypes)."""
    d_out, d_in = qw.codes.shape
    if d_in % WORD_BITS or d_out % WORD_BITS:
        raise _refuse(f"layer {name!r} of shape ({d_out}, {d_in}) (GPTQ packs 32 values per block: both "
                      "dims must be multiples of 32)", "leave that layer unquantized")
    maxq = 2**spec.bits - 1
    zero = qw.zero.float().cpu()
    if not torch.equal(zero, zero.round()) or zero.min() < 0 or zero.max() > maxq:
        raise _refuse(f"layer {name!r}'s zero points outside the integers 0..{maxq}", "an integer zero grid")
    if spec.sym and not bool((zero == 2 ** (spec.bits - 1)).all()):
        raise _refuse(f"layer {name!r} marked sym with zero != {2 ** (spec.bits - 1)}", "sym=False")
    codes = qw.codes.cpu()
    if int(codes.max()) > maxq:
        raise _refuse(f"layer {name!r}'s codes above {maxq} for {spec.bits} bits", f"bits={spec.bits}")
    scales = qw.scale.t().to(torch.float16).contiguous()  # (G, d_out)
    if not bool(torch.isfinite(scales).all()):
        raise _refuse(f"layer {name!r}'s scales beyond float16's range (|s| > 65504)", "smaller weights")
    stored = zero.t().long()  # (G, d_out)
    if spec.checkpoint_format == "gptq":
        stored = (stored - 1) & maxq  # the v1 offset, per field
    return {f"{name}.qweight": pack_int32(codes.t(), spec.bits, dim=0),
            f"{name}.qzeros": pack_int32(stored, spec.bits, dim=1),
            f"{name}.scales": scales,
            f"{name}.g_idx": qw.g_idx.to(torch.int32).cpu().contiguous()}


def _block_prefix(names: list[str]) -> str:
    """``model.layers`` for ``model.layers.3.mlp.up_proj``: the decoder-block list every layer must sit in."""
    prefixes = {}
    for n in names:
        m = re.match(r"^(.*?)\.\d+\.", n)
        prefixes.setdefault(m.group(1) if m else None, n)
    if None in prefixes or len(prefixes) > 1:
        outside = prefixes.get(None) or sorted(names)[-1]
        raise _refuse(f"layer {outside!r} (transformers quantizes the Linears of one list of decoder blocks, "
                      f"here {sorted(p for p in prefixes if p)})", f"leave {outside!r} unquantized")
    return next(iter(prefixes))


def quantization_config(spec: GPTQSpec, model: torch.nn.Module, names: list[str]) -> dict:
    """The ``quantization_config`` of ``config.json`` (also written as ``quantize_config.json``)."""
    from fmgauge import __version__

    block = _block_prefix(names)
    in_blocks = sorted(n for n, m in model.named_modules()
                       if isinstance(m, torch.nn.Linear) and n.startswith(block + "."))
    cfg = {"quant_method": "gptq", "bits": spec.bits, "group_size": spec.group_size, "desc_act": spec.desc_act,
           "sym": spec.sym, "checkpoint_format": spec.checkpoint_format, "format": spec.checkpoint_format,
           "pack_dtype": "int32", "act_group_aware": False, "lm_head": False, "block_name_to_quantize": block,
           "meta": {"quantizer": [f"fmgauge:{__version__}"]}}
    if sorted(names) != in_blocks:  # optimum keeps the block Linears whose name ends with one of these
        cfg["modules_in_block_to_quantize"] = [sorted(names)]
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# directory I/O


def _shards(out: Path) -> list[Path]:
    index = out / "model.safetensors.index.json"
    if index.exists():
        return [out / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (out / "model.safetensors").exists():
        return [out / "model.safetensors"]
    raise FmgaugeError(f"{out} has no model.safetensors (nor a sharded index): not a saved model directory.")


def write_gptq(model, tokenizer, qweights: dict[str, QuantizedWeight], out: str | Path, *,  # noqa: ANN001
               checkpoint_format: str | None = None) -> Path:
    """Write ``model`` with its Linears ``qweights`` in GPTQ format to the directory ``out``; returns ``out``.

    ``model`` is the transformers model (its quantized Linears' own weights are not written), ``tokenizer`` is
    saved beside it (None: skipped), ``qweights`` maps Linear names to fmgauge grids. Every other tensor is kept as
    ``save_pretrained`` wrote it; ``config.json`` gets the :func:`quantization_config`. ``checkpoint_format``
    overrides the default ('gptq' for symmetric, 'gptq_v2' for asymmetric grids). Refused grids raise
    :class:`FmgaugeError` before anything is written.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    spec = gptq_spec(qweights, checkpoint_format)
    modules = dict(model.named_modules())
    for name, qw in qweights.items():
        m = modules.get(name)
        if not isinstance(m, torch.nn.Linear) or tuple(m.weight.shape) != tuple(qw.codes.shape):
            shape = tuple(m.weight.shape) if isinstance(m, torch.nn.Linear) else type(m).__name__
            raise FmgaugeError(f"format gptq: layer {name!r} of the grid {tuple(qw.codes.shape)} is {shape} in "
                               "the model; pass the model the grids were computed on.")
    packed = {n: gptq_tensors(n, qw, spec) for n, qw in qweights.items()}  # all refusals before writing
    qcfg = quantization_config(spec, model, list(qweights))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved_quantizer = getattr(model, "hf_quantizer", None)
    saved_qcfg = getattr(model.config, "quantization_config", None)
    try:  # a model read from GGUF/another quantizer refuses save_pretrained otherwise (its weights are plain)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
    finally:
        model.hf_quantizer = saved_quantizer
        if saved_qcfg is not None:
            model.config.quantization_config = saved_qcfg
    weight_map: dict[str, str] = {}
    todo = set(qweights)
    for shard in _shards(out):
        with safe_open(shard, "pt") as f:
            metadata = f.metadata() or {"format": "pt"}
        tensors = load_file(shard)
        for name in [n for n in todo if f"{n}.weight" in tensors]:
            del tensors[f"{name}.weight"]
            tensors.update(packed[name])
            todo.discard(name)
        save_file(tensors, shard, metadata=metadata)
        weight_map.update(dict.fromkeys(tensors, shard.name))
    if todo:
        raise FmgaugeError(f"format gptq: save_pretrained wrote no weight for {sorted(todo)[:3]} (renamed keys?); "
                           "cannot place their packed tensors.")
    index = out / "model.safetensors.index.json"
    if index.exists():
        idx = json.loads(index.read_text())
        idx["weight_map"] = dict(sorted(weight_map.items()))
        idx.setdefault("metadata", {})["total_size"] = sum(p.stat().st_size for p in _shards(out))
        index.write_text(json.dumps(idx, indent=2))
    cfg_path = out / "config.json"
    config = json.loads(cfg_path.read_text())
    config["quantization_config"] = qcfg
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    (out / "quantize_config.json").write_text(json.dumps(qcfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _read_config(out: Path) -> dict:
    path = out / "config.json"
    if not path.exists():
        raise FmgaugeError(f"{out} has no config.json: not a GPTQ model directory.")
    qc = json.loads(path.read_text()).get("quantization_config") or {}
    if qc.get("quant_method") != "gptq":
        raise FmgaugeError(f"{out}/config.json has no quantization_config with quant_method 'gptq' "
                           f"(found {qc.get('quant_method')!r}).")
    fmt = (qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if fmt not in CHECKPOINT_FORMATS:
        raise FmgaugeError(f"{out}: GPTQ checkpoint_format {fmt!r} is not one fmgauge reads ({CHECKPOINT_FORMATS}).")
    check_gptq(qc.get("bits"), qc.get("group_size", -1), bool(qc.get("sym", True)))
    return {**qc, "checkpoint_format": fmt}


def read_gptq(out: str | Path) -> dict[str, QuantizedWeight]:
    """Unpack the GPTQ directory ``out`` to fmgauge grids by layer name (no GPTQ kernel library needed).

    Each grid: ``codes`` uint8 (d_out, d_in), ``scale`` float32 (d_out, G) (the stored float16 values),
    ``zero`` float32 (d_out, G) (the true zero, v1's offset undone), ``g_idx`` long (d_in,), ``bits`` long (G,).
    """
    from safetensors.torch import load_file

    out = Path(out)
    qc = _read_config(out)
    bits, sym, maxq = int(qc["bits"]), bool(qc.get("sym", True)), 2 ** int(qc["bits"]) - 1
    result: dict[str, QuantizedWeight] = {}
    for shard in _shards(out):
        t = load_file(shard)
        for key in sorted(k for k in t if k.endswith(".qweight")):
            name = key[: -len(".qweight")]
            missing = [s for s in QUANTIZED_SUFFIXES if f"{name}.{s}" not in t]
            if missing:
                raise FmgaugeError(f"{shard}: layer {name!r} has a qweight but no {missing}.")
            qweight, qzeros, scales = t[f"{name}.qweight"], t[f"{name}.qzeros"], t[f"{name}.scales"]
            g_idx = t[f"{name}.g_idx"].long()
            d_in, (n_groups, d_out) = g_idx.numel(), scales.shape
            if qweight.shape != (d_in * bits // WORD_BITS, d_out) or qzeros.shape != (n_groups, d_out * bits // 32):
                raise FmgaugeError(f"{shard}: layer {name!r} has qweight {tuple(qweight.shape)}, qzeros "
                                   f"{tuple(qzeros.shape)} for {bits} bits, d_in {d_in}, d_out {d_out}.")
            codes = unpack_int32(qweight, bits, dim=0, n=d_in).t().contiguous()  # (d_out, d_in)
            zero = unpack_int32(qzeros, bits, dim=1, n=d_out).long()  # (G, d_out)
            if qc["checkpoint_format"] == "gptq":
                zero = (zero + 1) & maxq
            result[name] = QuantizedWeight(codes, scales.t().float().contiguous(), zero.t().float().contiguous(),
                                           g_idx, torch.full((n_groups,), bits, dtype=torch.long), sym)
    if not result:
        raise FmgaugeError(f"{out}: no '<layer>.qweight' tensor in its safetensors files.")
    return result


def load_gptq_float(out: str | Path, *, dtype: torch.dtype = torch.float32):  # noqa: ANN201
    """A plain transformers model (no GPTQ kernel) from the GPTQ directory ``out``: each quantized Linear holds
    its dequantized weight ``scale * (q - zero)`` (d_out, d_in) in ``dtype``, every other tensor as stored."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    out = Path(out)
    qweights = read_gptq(out)
    config = AutoConfig.from_pretrained(out)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state: dict[str, torch.Tensor] = {}
    for shard in _shards(out):
        state.update(load_file(shard))
    for name, qw in qweights.items():
        for s in QUANTIZED_SUFFIXES:
            del state[f"{name}.{s}"]
        state[f"{name}.weight"] = qw.dequantize()
    res = model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                                strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in res.missing_keys if k not in tied]
    if missing or res.unexpected_keys:
        raise FmgaugeError(f"{out}: tensors do not match {type(model).__name__}: missing {missing[:3]}, "
                           f"unexpected {res.unexpected_keys[:3]}.")
    model.tie_weights()
    return model.eval()
