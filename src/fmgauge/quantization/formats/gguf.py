"""GGUF export: a llama model quantized by fmgauge, written as the file llama.cpp loads, storing fmgauge's codes.

fmgauge's grid (see :mod:`fmgauge.quantization.grid`) reads a weight back as ``scale * (q - zero)`` per (row, group).
ggml's 32-weight block types store five such grids exactly, up to rounding the per-block floats to fp16:

=======  ==========================  ==========================================  ===========================
type     fmgauge grid                block bytes (32 weights)                    value of element j
=======  ==========================  ==========================================  ===========================
Q4_0     4 bits, sym, group 32       fp16 d, 16 B nibbles (18 B)                 ``d * (nib_j - 8)``
Q4_1     4 bits, asym, group 32      fp16 d, fp16 m, 16 B nibbles (20 B)         ``d * nib_j + m``
Q5_0     5 bits, sym, group 32       fp16 d, 4 B high bits, 16 B nibbles (22 B)  ``d * (q_j - 16)``
Q5_1     5 bits, asym, group 32      fp16 d, fp16 m, 4 B high bits, 16 B (24 B)  ``d * q_j + m``
Q8_0     8 bits, sym, group 32       fp16 d, 32 int8 (34 B)                      ``d * i8_j``
=======  ==========================  ==========================================  ===========================

so ``d = scale``, the codes are fmgauge's codes (sym zero is 2**(bits-1)), ``m = -scale * zero`` and
``i8 = q - 128``. Nibble byte ``k`` (0..15) of a block holds element ``k`` in its low and element ``k + 16`` in its
high half; bit ``j`` of the little-endian 32-bit ``qh`` is bit 4 of element ``j``. Nothing is re-quantized: the only
difference from fmgauge's dequantized weight is the fp16 rounding of ``d`` (and ``m``), at most 2**-11 relative.

Everything else is written as llama.cpp's own tools write it (``convert_hf_to_gguf.py`` then ``llama-quantize``):

- 1-D tensors (norms, biases) as F32; other unquantized matrices in 16 bits (``dtype``: F16 or BF16);
- the output head, and the token embedding when it is tied to it, quantized the way ``llama-quantize`` does by
  default for the file's type (``llama_tensor_get_type``): Q8_0 for a Q8_0 file or a width that is not a multiple of
  256 (smollm2's 576), Q6_K otherwise; an untied token embedding in the file's own type. ``embeddings='keep'``
  writes them in 16 bits instead. These are round-to-nearest of the full-precision weight (Q8_0 bit-exact with
  ggml's reference, through gguf-py; Q6_K by :func:`quantize_q6_k`).

With ``update_model=True`` the in-memory model gets the weights the file holds (16-bit rounded matrices, quantized
embeddings), so the model fmgauge evaluates is the model that ships.

Tensor names and the rotary row order of q/k follow llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaModel``
(transformers' GGUF loader undoes that permutation).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import KQUANT_SUB, KQUANT_TYPES, QuantizedWeight, snap_kquant_scales

log = logging.getLogger(__name__)

BLOCK = 32  # weights per ggml block: consecutive input columns of one row
QK_K = 256  # weights per K-quant super-block
BLOCK_TYPES: dict[str, tuple[int, bool]] = {"Q4_0": (4, True), "Q4_1": (4, False), "Q5_0": (5, True),
                                            "Q5_1": (5, False), "Q8_0": (8, True)}  # bits, sym
TYPE_SIZE = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}  # bytes per block of 32 weights
FP16_MAX = 65504.0
FLOAT_TYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
EMBEDDINGS = ("quantize", "keep")
ALTERNATIVE = "--format compressed-tensors"

# gguf.TokenType values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _flags(bits: int, group_size: int, sym: bool) -> str:
    return f"--bits {bits} --group-size {group_size} --{'sym' if sym else 'no-sym'}"


def gguf_type(bits: int, group_size: int, sym: bool) -> str:
    """The ggml type that stores fmgauge's grid exactly (up to fp16 scales): 4-bit sym g32 -> 'Q4_0',
    4-bit asym g32 -> 'Q4_1', 5-bit sym / asym g32 -> 'Q5_0' / 'Q5_1', 8-bit sym g32 -> 'Q8_0'.

    Anything else raises :class:`FmgaugeError` with one line naming the format and the nearest valid setting: never
    fewer bits (2-4 bits -> 4, 5 -> 5, 6-8 -> Q8_0, which is symmetric), group size 32, the same symmetry where the
    bit width allows it.
    """
    for name, (b, s) in BLOCK_TYPES.items():
        if bits == b and group_size == BLOCK and bool(sym) == s:
            return name
    near_bits = 4 if bits <= 4 else 5 if bits == 5 else 8
    near_sym = True if near_bits == 8 else bool(sym)
    kinds = ", ".join(f"{n} = {_flags(b, BLOCK, s)}" for n, (b, s) in BLOCK_TYPES.items())
    grid = f"{bits}-bit weights" if bits != 8 else f"8-bit {'symmetric' if sym else 'asymmetric'} weights"
    groups = "per-channel groups (--group-size -1)" if group_size == -1 else f"group size {group_size}"
    raise FmgaugeError(
        f"format gguf cannot store {grid} with {groups} (its block types are {kinds}); "
        f"nearest valid setting: {_flags(near_bits, BLOCK, near_sym)}; or use {ALTERNATIVE}"
    )


def block_type(name: str, qw: QuantizedWeight) -> str:
    """The ggml type of layer ``name``'s quantized weight, or :class:`FmgaugeError` saying why GGUF cannot hold it.

    Refused: AWQ input scales not folded into the previous op, mixed per-group bits, groups that are not
    contiguous runs of columns (GPTQ act-order), grids other than those of :func:`gguf_type`, and input widths
    ``d_in`` that are not a multiple of 32.
    """
    where = f"format gguf: layer {name!r}"
    if qw.input_scale is not None:
        raise FmgaugeError(f"{where} has AWQ input scales; fold them into the previous op before export "
                           "(GGUF stores plain weights).")
    bits = sorted({int(b) for b in qw.bits.reshape(-1).tolist()})
    if len(bits) != 1:
        raise FmgaugeError(f"{where} mixes {bits} bits across its groups (mixed precision); a GGUF tensor has one "
                           f"block type; quantize with one bit width or use {ALTERNATIVE}.")
    d_out, d_in = qw.codes.shape
    g_idx = qw.g_idx.detach().cpu().long()
    size = int((g_idx == 0).sum())
    if size == 0 or not torch.equal(g_idx, torch.arange(d_in) // size):
        raise FmgaugeError(f"{where} has groups that are not contiguous runs of columns (GPTQ act-order); GGUF "
                           f"blocks are 32 consecutive columns: quantize with --no-actorder or use {ALTERNATIVE}.")
    group_size = -1 if qw.scale.shape[1] == 1 and d_in != BLOCK else size
    if group_size == KQUANT_SUB and bits[0] in KQUANT_TYPES and qw.sym:
        kind, max_sc = KQUANT_TYPES[bits[0]]
        if d_in % QK_K:
            raise FmgaugeError(f"{where}: {kind} needs an input width that is a multiple of {QK_K}, got {d_in}.")
        if not torch.equal(snap_kquant_scales(qw.scale.float(), max_sc), qw.scale.float()):
            raise FmgaugeError(f"{where}: its 16-column scales are not on {kind}'s sub-scale lattice (d · sc per 256 "
                               "columns); quantize with --k-bits to write K-quant blocks.")
        if not bool((qw.zero == 2 ** (bits[0] - 1)).all()):
            raise FmgaugeError(f"{where} is marked symmetric but its zero points are not all {2 ** (bits[0] - 1)}.")
        return kind
    kind = gguf_type(bits[0], group_size, bool(qw.sym))
    if d_in % BLOCK:
        raise FmgaugeError(f"{where} has input width {d_in}, not a multiple of GGUF's block of {BLOCK} columns; "
                           f"leave it unquantized or use {ALTERNATIVE}.")
    if int(qw.codes.max()) >= 2 ** bits[0]:
        raise FmgaugeError(f"{where} has codes above {2 ** bits[0] - 1}, not a {bits[0]}-bit grid.")
    if BLOCK_TYPES[kind][1] and not bool((qw.zero == 2 ** (bits[0] - 1)).all()):
        raise FmgaugeError(f"{where} is marked symmetric but its zero points are not all {2 ** (bits[0] - 1)}.")
    return kind


def _fp16_bytes(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` (...) float -> its little-endian fp16 bytes (..., 2) uint8; refuses values fp16 cannot hold."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all() or np.abs(x).max(initial=0.0) > FP16_MAX:
        raise FmgaugeError(f"format gguf stores block {what}s as fp16 (|x| <= {FP16_MAX:g}); got "
                           f"{np.abs(x).max(initial=0.0):g} (or NaN/inf).")
    return x.astype("<f2").view(np.uint8).reshape(*x.shape, 2)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    """Codes (..., 32) in 0..15 -> (..., 16) bytes: element k in the low nibble of byte k, k + 16 in its high."""
    return ((codes[..., :16] & 0xF) | ((codes[..., 16:] & 0xF) << 4)).astype(np.uint8)


def _high_bits(codes: np.ndarray) -> np.ndarray:
    """Bit 4 of each of 32 codes (..., 32) -> (..., 4) bytes of a little-endian uint32 (bit j = element j)."""
    return np.packbits((codes >> 4) & 1, axis=-1, bitorder="little").astype(np.uint8)


def pack_blocks(kind: str, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> np.ndarray:
    """The ggml bytes of one weight: codes (d_out, d_in) in 0..2**bits-1, scale/zero (d_out, d_in / 32), one
    (scale, zero) per block -> (d_out, d_in / 32 * TYPE_SIZE[kind]) uint8, row-major as ggml reads it.

    The codes are stored as they are (the symmetric types assume the zero 2**(bits-1); see the module docstring).
    """
    c = codes.detach().cpu().numpy().astype(np.uint8)
    s = scale.detach().cpu().double().numpy()
    d_out, d_in = c.shape
    if kind in ("Q3_K", "Q6_K"):
        return pack_kquant(kind, c, s)
    blocks = c.reshape(d_out, d_in // BLOCK, BLOCK)
    if kind in ("Q4_1", "Q5_1"):
        m = -s * zero.detach().cpu().double().numpy()
    if kind == "Q4_0":
        parts = [_fp16_bytes(s, "scale"), _nibbles(blocks)]
    elif kind == "Q4_1":
        parts = [_fp16_bytes(s, "scale"), _fp16_bytes(m, "min"), _nibbles(blocks)]
    elif kind == "Q5_0":
        parts = [_fp16_bytes(s, "scale"), _high_bits(blocks), _nibbles(blocks)]
    elif kind == "Q5_1":
        parts = [_fp16_bytes(s, "scale"), _fp16_bytes(m, "min"), _high_bits(blocks), _nibbles(blocks)]
    elif kind == "Q8_0":
        parts = [_fp16_bytes(s, "scale"), (blocks.astype(np.int16) - 128).astype(np.int8).view(np.uint8)]
    else:
        raise FmgaugeError(f"unknown GGUF block type {kind!r}; expected one of {sorted(BLOCK_TYPES)}.")
    return np.ascontiguousarray(np.concatenate(parts, axis=-1).reshape(d_out, -1))


def stored_grid(kind: str, qw: QuantizedWeight) -> QuantizedWeight:
    """``qw`` with the scale (and zero) the block of ``kind`` stores: ``fp16(scale)`` (K-quant grids: as they are),
    and for Q4_1 / Q5_1 the zero
    ``-fp16(m) / fp16(scale)`` that reproduces the stored ``m = fp16(-scale * zero)``. Codes are unchanged."""
    from dataclasses import replace

    if kind in ("Q3_K", "Q6_K"):  # d (fp16) · sc is exact: the grid is stored as it is
        return qw
    s16 = qw.scale.double().half().double()
    if kind in ("Q4_1", "Q5_1"):
        m16 = (-(qw.scale.double() * qw.zero.double())).half().double()
        zero = torch.where(s16 != 0, -m16 / torch.where(s16 != 0, s16, 1.0), qw.zero.double())
        return replace(qw, scale=s16.float(), zero=zero.float())
    return replace(qw, scale=s16.float())


def _kquant_scales(s: np.ndarray, max_sc: int) -> tuple[np.ndarray, np.ndarray]:
    """Snapped sub-block scales (n_super, 16) -> (fp16 d (n_super,) > 0, signed integer sc (n_super, 16), the largest
    |sc| = max_sc) with d * sc = s."""
    d = (np.abs(s).max(-1) / max_sc).astype(np.float16)
    d = np.where(d == 0, np.float16(2.0**-24), d)
    sc = np.rint(s / d.astype(np.float64)[:, None])
    if not np.allclose(d.astype(np.float64)[:, None] * sc, s, rtol=0, atol=0):
        raise FmgaugeError("K-quant scales are not d · sc with one fp16 d per 256 columns; quantize with --k-bits.")
    return d, sc.astype(np.int16)


def _pack_q6_k(q: np.ndarray, sc: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``block_q6_K`` bytes of codes q (n, 256) in 0..63, int8 sub-scales sc (n, 16), fp16 d (n,) -> (n, 210):
    ``ql`` 128 B low nibbles, ``qh`` 64 B high 2-bit pairs, ``scales`` 16 int8, ``d``. Within each half of 128,
    byte l of ql holds elements l (low) and l + 64 (high), byte l + 32 elements l + 32 and l + 96; byte l of qh the
    high bits of l, l + 32, l + 64, l + 96."""
    n = q.shape[0]
    h = q.reshape(n, 2, 4, 32)
    ql = np.concatenate([(h[:, :, 0] & 0xF) | ((h[:, :, 2] & 0xF) << 4),
                         (h[:, :, 1] & 0xF) | ((h[:, :, 3] & 0xF) << 4)], axis=-1).reshape(n, 128)
    qh = (h[:, :, 0] >> 4) | ((h[:, :, 1] >> 4) << 2) | ((h[:, :, 2] >> 4) << 4) | ((h[:, :, 3] >> 4) << 6)
    return np.concatenate([ql.astype(np.uint8), qh.reshape(n, 64).astype(np.uint8),
                           sc.astype(np.int8).view(np.uint8), d.astype(np.float16).view(np.uint8).reshape(n, 2)],
                          axis=-1)


def _pack_q3_k(q: np.ndarray, sc: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``block_q3_K`` bytes of codes q (n, 256) in 0..7 (value ``q - 4``), 6-bit sub-scales sc (n, 16) in -32..31,
    fp16 d (n,) -> (n, 110): ``hmask`` 32 B (bit b of byte l: bit 2 of element 32 b + l), ``qs`` 64 B (2-bit pairs:
    element 128 h + 32 k + l at bits 2k of byte 32 h + l), ``scales`` 12 B (sc + 32: low nibbles of 0..7 in bytes
    0..7, of 8..15 in their high nibbles, the top 2 bits of sub-block j at bit 2 (j // 4) of byte 8 + j % 4), d."""
    n = q.shape[0]
    low, high = (q & 3).astype(np.uint8), (q >> 2).astype(np.uint8)
    qs = np.zeros((n, 64), dtype=np.uint8)
    lo = low.reshape(n, 2, 4, 32)
    for k in range(4):
        qs.reshape(n, 2, 32)[:] |= lo[:, :, k] << (2 * k)
    hmask = np.zeros((n, 32), dtype=np.uint8)
    hi = high.reshape(n, 8, 32)
    for b in range(8):
        hmask |= hi[:, b] << b
    u = (sc + 32).astype(np.uint8)  # (n, 16) in 0..63
    scales = np.zeros((n, 12), dtype=np.uint8)
    scales[:, :8] = (u[:, :8] & 0xF) | ((u[:, 8:] & 0xF) << 4)
    for j in range(16):
        scales[:, 8 + j % 4] |= (u[:, j] >> 4) << (2 * (j // 4))
    return np.concatenate([hmask, qs, scales, d.astype(np.float16).view(np.uint8).reshape(n, 2)], axis=-1)


def pack_kquant(kind: str, codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """fmgauge's K-quant grid (codes (d_out, d_in) uint8, snapped scales (d_out, d_in / 16)) as ggml ``Q3_K`` /
    ``Q6_K`` blocks (d_out, d_in / 256 * 110 or 210): the codes as they are, ``d`` and ``sc`` recovered exactly
    from the snapped scales (:func:`~fmgauge.quantization.grid.snap_kquant_scales`)."""
    d_out, d_in = codes.shape
    n = d_out * d_in // QK_K
    bits = {"Q3_K": 3, "Q6_K": 6}[kind]
    d, sc = _kquant_scales(scale.reshape(n, QK_K // KQUANT_SUB), KQUANT_TYPES[bits][1])
    q = codes.reshape(n, QK_K)
    raw = _pack_q3_k(q, sc, d) if kind == "Q3_K" else _pack_q6_k(q, sc, d)
    return np.ascontiguousarray(raw.reshape(d_out, -1))


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest Q6_K of ``x`` (rows, width) float, width a multiple of 256 -> (rows, width / 256 * 210) bytes.

    Per 16 weights a 6-bit symmetric grid ``d * sc * (q - 32)``: the sub-block scale maps its largest-magnitude
    weight to -32 (as ggml's ``Q4_0`` maps its block), the 16 sub-block scales of a super-block are int8 multiples
    ``sc`` of one fp16 ``d``. (llama.cpp's own Q6_K searches each sub-block scale; this is the plain grid.)
    Layout (``block_q6_K``): ``ql`` 128 B low nibbles, ``qh`` 64 B high 2-bit pairs, ``scales`` 16 int8, fp16 ``d``.
    """
    x = np.asarray(x, dtype=np.float32)
    rows, width = x.shape
    if width % QK_K:
        raise FmgaugeError(f"Q6_K needs a width that is a multiple of {QK_K}; got {width}.")
    b = x.reshape(-1, QK_K // 16, 16)  # (n_super, 16 sub-blocks, 16)
    imax = np.abs(b).argmax(-1)[..., None]
    sub = np.take_along_axis(b, imax, -1)[..., 0] / -32.0  # (n_super, 16) signed sub-block scales
    big = np.abs(sub).argmax(-1)[..., None]
    max_scale = np.take_along_axis(sub, big, -1)  # (n_super, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(max_scale != 0, -128.0 / max_scale, 0.0)
    d = (1.0 / np.where(iscale != 0, iscale, np.inf)).astype(np.float16)
    sc = np.clip(np.round(iscale * sub), -128, 127).astype(np.int8)
    dl = d.astype(np.float32) * sc.astype(np.float32)  # (n_super, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(dl[..., None] != 0, np.round(b / dl[..., None]), 0.0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, QK_K)  # (n_super, 256) in 0..63
    out = _pack_q6_k(q, sc, d.reshape(-1))
    return np.ascontiguousarray(out.reshape(rows, -1))


def head_types(file_kind: str | None, width: int, tied: bool) -> tuple[str | None, str | None]:
    """(token embedding type, output head type) ``llama-quantize`` picks by default for a file of ``file_kind``
    whose embedding width is ``width`` (``llama_tensor_get_type``): the output head (and a tied embedding) Q8_0 for a
    Q8_0 file or a width that is not a multiple of 256, else Q6_K; an untied embedding in the file's own type (16
    bits when the width is not a multiple of 32). None: nothing is quantized (no quantized Linear)."""
    if file_kind is None:
        return None, None
    out = "Q8_0" if file_kind == "Q8_0" or width % QK_K else "Q6_K"
    emb = out if tied else (file_kind if width % BLOCK == 0 else None)
    return emb, out


def quantize_rows(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest of ``x`` (rows, width) into ggml ``kind`` -> (bytes (rows, n), what the file holds as
    float32 (rows, width)), through gguf-py (bit-exact with ggml's reference for the 32-blocks) or
    :func:`quantize_q6_k`."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    raw = quantize_q6_k(x) if kind == "Q6_K" else gguf.quants.quantize(x, qtype)
    return raw, gguf.quants.dequantize(raw, qtype).reshape(x.shape).astype(np.float32)


def rope_row_order(n_rows: int, n_head: int) -> torch.Tensor:
    """Row order (n_rows,) long of a q/k projection in llama.cpp's layout: GGUF row i is HF row ``order[i]``.

    HF's rotary embedding pairs dimension k with k + head_dim/2 in each head ("rotate half"); llama.cpp pairs 2k with
    2k+1, so ``convert_hf_to_gguf.py`` interleaves the two halves of every head. A row permutation keeps each row's
    32-column blocks intact, so it applies to codes, scales and zeros alike.
    """
    if n_rows % (2 * n_head):
        raise FmgaugeError(f"a q/k projection of {n_rows} rows does not split into {n_head} heads of even size.")
    return torch.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2).transpose(1, 2).reshape(-1)


@dataclass
class GGUFVocab:
    """A tokenizer in llama.cpp's terms: ``tokens`` / ``types`` (and ``scores``) indexed by id, ``merges`` "a b"."""

    model: str  # tokenizer.ggml.model: 'gpt2' (byte-level BPE) or 'llama' (sentencepiece-style BPE)
    pre: str | None
    tokens: list[str]
    types: list[int]
    merges: list[str]
    scores: list[float] | None = None
    special: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad -> id
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def _find(node: object, kind: str) -> list[dict]:
    """Every dict with ``"type": kind`` nested in a tokenizer.json component."""
    if isinstance(node, dict):
        return ([node] if node.get("type") == kind else []) + [d for v in node.values() for d in _find(v, kind)]
    if isinstance(node, list):
        return [d for v in node for d in _find(v, kind)]
    return []


def _bpe_pre(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer ('default' with a warning when it is not known)."""
    kinds = [d["type"] for d in ([pre_tokenizer] if pre_tokenizer and pre_tokenizer.get("type") != "Sequence"
                                 else (pre_tokenizer or {}).get("pretokenizers", []))]
    levels = _find(pre_tokenizer, "ByteLevel")
    if kinds == ["ByteLevel"] and levels[0].get("use_regex", True):
        return "gpt-2"
    digits = _find(pre_tokenizer, "Digits")
    if kinds == ["Digits", "ByteLevel"] and digits[0].get("individual_digits") and levels[0].get("use_regex", True):
        return "smollm"
    log.warning("GGUF export: pre-tokenizer %s has no llama.cpp name here; writing 'default', so llama.cpp may "
                "split text differently from transformers.", kinds)
    return "default"


def _merge_strings(merges: list) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def gguf_vocab(tokenizer, n_vocab: int) -> GGUFVocab:  # noqa: ANN001
    """The vocabulary of a transformers fast ``tokenizer`` padded to the model's ``n_vocab`` embedding rows.

    A byte-level BPE becomes ``'gpt2'``; a BPE with byte fallback (sentencepiece converted to tokenizer.json)
    becomes ``'llama'`` with scores ``-rank`` of the merge that makes each token (``-n_merges`` for the rest), so
    llama.cpp's highest-score merging follows the BPE merge order. Ids the tokenizer does not use are ``[PAD<id>]`` tokens of type UNUSED.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise FmgaugeError("format gguf needs a fast (tokenizers) tokenizer to write the vocabulary; "
                           f"got {type(tokenizer).__name__}.")
    spec = json.loads(backend.to_str())
    model = spec["model"]
    byte_level = model.get("type") == "BPE" and bool(_find(spec.get("pre_tokenizer"), "ByteLevel"))
    spm = model.get("type") == "BPE" and bool(model.get("byte_fallback"))
    if not (byte_level or spm):
        raise FmgaugeError(f"format gguf: tokenizer model {model.get('type')!r} is neither a byte-level BPE "
                           "(tokenizer.ggml.model 'gpt2') nor a sentencepiece-style BPE with byte fallback ('llama').")
    by_id: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in model["vocab"].items()}
    for a in spec.get("added_tokens", []):
        by_id[a["id"]] = (a["content"], CONTROL if a.get("special") else USER_DEFINED)
    if max(by_id) >= n_vocab:
        raise FmgaugeError(f"format gguf: the tokenizer has ids up to {max(by_id)} but the model only {n_vocab} "
                           "embedding rows.")
    tokens = [by_id.get(i, (f"[PAD{i}]", UNUSED))[0] for i in range(n_vocab)]
    types = [by_id.get(i, ("", UNUSED))[1] for i in range(n_vocab)]
    merges = _merge_strings(model.get("merges", []))
    special = {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "unk", "pad")}
    special = {k: int(v) for k, v in special.items() if isinstance(v, int)}
    probe = tokenizer("a")["input_ids"]
    vocab = GGUFVocab(
        "gpt2" if byte_level else "llama", None, tokens, types, merges, special=special,
        add_bos="bos" in special and probe[:1] == [special["bos"]],
        add_eos="eos" in special and probe[-1:] == [special["eos"]],
        chat_template=tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else None)
    if byte_level:
        vocab.pre = _bpe_pre(spec.get("pre_tokenizer"))
        return vocab
    made_by = {}  # token -> rank of the merge producing it
    for rank, m in enumerate(merges):
        made_by.setdefault(m.replace(" ", ""), rank)
    vocab.scores = [-float(made_by.get(t, len(merges))) for t in tokens]  # unmerged pieces: lowest
    for i, t in enumerate(tokens):
        if types[i] == NORMAL and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types[i] = BYTE
    if "unk" in special:
        types[special["unk"]] = UNKNOWN
    meta = _find(spec.get("pre_tokenizer"), "Metaspace")
    vocab.add_space_prefix = bool(meta) and meta[0].get("prepend_scheme", "always") != "never"
    return vocab


@dataclass
class LlamaShape:
    """The hyper-parameters llama.cpp reads for ``general.architecture = 'llama'``."""

    n_layers: int
    hidden: int
    intermediate: int
    n_head: int
    n_kv_head: int
    head_dim: int
    context: int
    rope_theta: float
    rope_linear_factor: float | None
    rms_eps: float
    vocab: int
    tied: bool


def llama_shape(config) -> LlamaShape:  # noqa: ANN001
    """The :class:`LlamaShape` of a transformers ``LlamaConfig``; other architectures and rope types are refused."""
    arch = getattr(config, "model_type", None)
    if arch != "llama":
        raise FmgaugeError(f"format gguf: architecture {arch!r} is not supported; only llama (LlamaForCausalLM) is "
                           f"supported for GGUF export here; use {ALTERNATIVE}.")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise FmgaugeError(f"format gguf: llama.cpp's llama uses SiLU; this model uses {config.hidden_act!r}.")
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "linear"):
        raise FmgaugeError(f"format gguf: rope type {kind!r} is not written by this exporter (default and linear "
                           "are).")
    n_head = config.num_attention_heads
    return LlamaShape(
        n_layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
        n_head=n_head, n_kv_head=getattr(config, "num_key_value_heads", None) or n_head,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // n_head,
        context=config.max_position_embeddings, rope_theta=float(theta if theta is not None else 10000.0),
        rope_linear_factor=float(rope["factor"]) if kind == "linear" else None, rms_eps=float(config.rms_norm_eps),
        vocab=config.vocab_size, tied=bool(getattr(config, "tie_word_embeddings", False)))


def _write_metadata(writer, shape: LlamaShape, file_type: int, name: str) -> None:  # noqa: ANN001
    import gguf

    writer.add_name(name)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(file_type)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_kv_head)
    writer.add_rope_dimension_count(shape.head_dim)
    if shape.head_dim * shape.n_head != shape.hidden:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    if shape.rope_linear_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(shape.rope_linear_factor)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(shape.vocab)


def _write_vocab(writer, v: GGUFVocab) -> None:  # noqa: ANN001
    writer.add_tokenizer_model(v.model)
    if v.pre is not None:
        writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.types)
    if v.scores is not None:
        writer.add_token_scores(v.scores)
    if v.merges:
        writer.add_token_merges(v.merges)
    for key, fn in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                    ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if key in v.special:
            fn(v.special[key])
    writer.add_add_bos_token(v.add_bos)
    writer.add_add_eos_token(v.add_eos)
    if v.add_space_prefix is not None:
        writer.add_add_space_prefix(v.add_space_prefix)
    if v.chat_template:
        writer.add_chat_template(v.chat_template)


@dataclass
class PlannedTensor:
    """One tensor of the file: its HF parameter, GGUF name and ggml type, and where its bytes come from
    ('codes': fmgauge's quantized Linear; 'rtn': round-to-nearest of the weight; 'float': F32/F16/BF16)."""

    hf: str
    name: str
    kind: str
    source: str


def tensor_plan(model, qweights: dict[str, QuantizedWeight], *, dtype: str = "float16",  # noqa: ANN001
                embeddings: str = "quantize") -> list[PlannedTensor]:
    """What :func:`write_gguf` writes for ``model``: every tensor with its type (checks every layer first)."""
    import gguf

    if dtype not in FLOAT_TYPES:
        raise FmgaugeError(f"format gguf: unquantized matrices are written as {', '.join(FLOAT_TYPES)}; got {dtype!r}.")
    if embeddings not in EMBEDDINGS:
        raise FmgaugeError(f"format gguf: embeddings must be one of {', '.join(EMBEDDINGS)}; got {embeddings!r}.")
    shape = llama_shape(model.config)
    kinds = {n: block_type(n, qw) for n, qw in qweights.items()}
    params = dict(model.named_parameters())
    missing = [n for n in qweights if f"{n}.weight" not in params]
    if missing:
        raise FmgaugeError(f"format gguf: quantized layers {missing[:3]} are not Linears of this model.")
    for n, qw in qweights.items():
        if tuple(params[f"{n}.weight"].shape) != tuple(qw.codes.shape):
            raise FmgaugeError(f"format gguf: layer {n!r} has codes {tuple(qw.codes.shape)} but weight "
                               f"{tuple(params[f'{n}.weight'].shape)}.")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, shape.n_layers)
    file_kind = file_type_kind(kinds)
    emb_kind, out_kind = head_types(file_kind, shape.hidden, shape.tied) if embeddings == "quantize" else (None, None)
    plan = []
    for hf, p in params.items():
        if hf == "lm_head.weight" and shape.tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        base, suffix = hf.rsplit(".", 1)
        mapped = names.get_name(base)
        if mapped is None:
            raise FmgaugeError(f"format gguf: tensor {hf!r} has no llama.cpp name for arch llama.")
        name = f"{mapped}.{suffix}"
        if base in qweights and suffix == "weight":
            plan.append(PlannedTensor(hf, name, kinds[base], "codes"))
        elif name == "token_embd.weight" and emb_kind is not None:
            plan.append(PlannedTensor(hf, name, emb_kind, "rtn"))
        elif name == "output.weight" and out_kind is not None:
            plan.append(PlannedTensor(hf, name, out_kind, "rtn"))
        else:
            plan.append(PlannedTensor(hf, name, FLOAT_TYPES[dtype] if p.dim() >= 2 else "F32", "float"))
    return plan


def file_type_kind(kinds: dict[str, str]) -> str | None:
    """The block type a file is named after (``general.file_type``): the most common one of its Linears."""
    common = Counter(kinds.values()).most_common(1)
    return common[0][0] if common else None


def write_gguf(model, tokenizer, qweights: dict[str, QuantizedWeight], path, *, dtype: str = "float16",  # noqa: ANN001
               embeddings: str = "quantize", update_model: bool = False) -> Path:
    """Write a llama.cpp-loadable GGUF file at `path` for a HF LlamaForCausalLM `model` whose quantized Linears
    are `qweights` (name -> QuantizedWeight, e.g. 'model.layers.0.self_attn.q_proj').

    Quantized Linears are written from their codes/scales/zeros (the model's own weight for them is not read);
    q/k rows are put in llama.cpp's rotary order (:func:`rope_row_order`); the other tensors as the module docstring
    says (``dtype`` for unquantized matrices, ``embeddings`` 'quantize' or 'keep'). Every layer is checked
    (:func:`tensor_plan`) before anything is written. With ``update_model`` the model's parameters are set to what
    the file holds (the quantized Linears to their fp16-scale grids). Returns the path.
    """
    import gguf

    shape = llama_shape(model.config)
    plan = tensor_plan(model, qweights, dtype=dtype, embeddings=embeddings)
    if shape.vocab != model.get_input_embeddings().weight.shape[0]:
        raise FmgaugeError(f"format gguf: config.vocab_size {shape.vocab} != embedding rows "
                           f"{model.get_input_embeddings().weight.shape[0]}.")
    vocab = gguf_vocab(tokenizer, shape.vocab)
    params = dict(model.named_parameters())

    def row_order(module: str, n_rows: int) -> torch.Tensor | None:
        if module.endswith("self_attn.q_proj"):
            return rope_row_order(n_rows, shape.n_head)
        if module.endswith("self_attn.k_proj"):
            return rope_row_order(n_rows, shape.n_kv_head)
        return None

    tensors: list[tuple[str, np.ndarray, str]] = []  # gguf name, data, ggml type
    new_values: dict[str, torch.Tensor] = {}  # hf parameter -> what the file holds (update_model)
    for t in plan:
        p = params[t.hf]
        module = t.hf.rsplit(".", 1)[0]
        order = row_order(module, p.shape[0])
        if t.source == "codes":
            qw = qweights[module]
            codes, scale, zero = qw.codes, qw.scale, qw.zero
            if order is not None:
                codes, scale, zero = codes[order], scale[order], zero[order]
            tensors.append((t.name, pack_blocks(t.kind, codes, scale, zero), t.kind))
            if update_model:
                new_values[t.hf] = stored_grid(t.kind, qw).dequantize()
            continue
        data = p.detach().float().cpu()
        data = data[order] if order is not None else data
        if t.source == "rtn":
            raw, held = quantize_rows(t.kind, data.numpy())
            tensors.append((t.name, raw, t.kind))
            held = torch.from_numpy(held)
            if order is not None:
                held = held[torch.argsort(order)]
            new_values[t.hf] = held
        elif t.kind == "F32":
            tensors.append((t.name, np.ascontiguousarray(data.numpy()), "F32"))
        else:
            tdt = torch.float16 if t.kind == "F16" else torch.bfloat16
            held = data.to(tdt)
            arr = held.numpy() if t.kind == "F16" else held.view(torch.int16).numpy().view(np.uint8).reshape(
                data.shape[0], -1)
            tensors.append((t.name, np.ascontiguousarray(arr), t.kind))
            new_values[t.hf] = held.float()[torch.argsort(order)] if order is not None else held.float()
    kinds = {t.hf: t.kind for t in plan if t.source == "codes"}
    kind = file_type_kind(kinds)
    file_type = int(gguf.LlamaFileType[f"MOSTLY_{kind}"]) if kind else int(
        gguf.LlamaFileType["ALL_F32" if dtype == "float32" else f"MOSTLY_{FLOAT_TYPES[dtype]}"])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    _write_metadata(writer, shape, file_type, str(getattr(model.config, "_name_or_path", "") or "fmgauge-quantized"))
    _write_vocab(writer, vocab)
    for name, data, k in tensors:
        raw = None if k in ("F32", "F16") else gguf.GGMLQuantizationType[k]
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    if update_model:
        with torch.no_grad():
            for hf, v in new_values.items():
                params[hf].data = v.to(params[hf].dtype).to(params[hf].device)
    return path


def expected_tensor_bytes(model, qweights: dict[str, QuantizedWeight], *, dtype: str = "float16",  # noqa: ANN001
                          embeddings: str = "quantize") -> int:
    """Bytes of tensor data :func:`write_gguf` stores (before alignment padding and metadata): ggml's bytes per
    block for every quantized tensor (18/20/22/24/34 per 32 weights, 210 per 256 for Q6_K), 2 per 16-bit and 4 per
    F32 element (a tied ``lm_head`` is not stored)."""
    import gguf

    params = dict(model.named_parameters())
    total = 0
    for t in tensor_plan(model, qweights, dtype=dtype, embeddings=embeddings):
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.kind]]
        total += params[t.hf].numel() // block * size
    return total


def file_sizes(path: str | Path) -> dict:
    """What a GGUF file holds, read back from it: ``file_bytes`` on disk, ``tensor_bytes`` and ``n_elements`` of its
    tensors, ``bpw`` = 8 · tensor_bytes / n_elements (the "BPW" llama.cpp prints when it loads the file), and the
    tensor count per ggml type."""
    import gguf

    reader = gguf.GGUFReader(path)
    tb = sum(int(t.n_bytes) for t in reader.tensors)
    ne = sum(int(t.n_elements) for t in reader.tensors)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    return {"file_bytes": Path(path).stat().st_size, "tensor_bytes": tb, "n_elements": ne,
            "bpw": 8 * tb / max(ne, 1), "types": dict(sorted(types.items()))}


__all__ = ["BLOCK", "BLOCK_TYPES", "TYPE_SIZE", "GGUFVocab", "LlamaShape", "PlannedTensor", "block_type",
           "expected_tensor_bytes", "file_sizes", "gguf_type", "gguf_vocab", "head_types", "llama_shape",
           "pack_blocks", "quantize_q6_k", "quantize_rows", "rope_row_order", "stored_grid", "tensor_plan",
           "write_gguf"]
