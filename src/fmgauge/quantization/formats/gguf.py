"""GGUF export: a llama model quantized by fmgauge, written as a file llama.cpp loads, storing fmgauge's codes.

fmgauge's grid (see :mod:`fmgauge.quantization.grid`) reads a weight back as ``scale * (q - zero)`` per (row, group).
ggml's legacy 32-weight block types store three such grids exactly, up to rounding the per-block floats to fp16:

=======  ==========================  =====================================  ===========================
type     fmgauge grid                block bytes (32 weights)               value of element j
=======  ==========================  =====================================  ===========================
Q4_0     4 bits, sym, group 32       fp16 d, 16 B nibbles (18 B)            ``d * (nib_j - 8)``
Q4_1     4 bits, asym, group 32      fp16 d, fp16 m, 16 B nibbles (20 B)    ``d * nib_j + m``
Q8_0     8 bits, sym, group 32       fp16 d, 32 int8 (34 B)                 ``d * i8_j``
=======  ==========================  =====================================  ===========================

so ``d = scale``, the nibbles are fmgauge's codes (sym zero is 8), ``m = -scale * zero`` and ``i8 = q - 128`` (sym
zero is 128). Nibble byte ``k`` (0..15) of a block holds element ``k`` in its low and element ``k + 16`` in its high
half. Nothing is re-quantized: the only difference from fmgauge's dequantized weight is the fp16 rounding of ``d``
(and ``m``), a relative error of at most 2**-11 on each.

Tensor names and the rotary row order of q/k follow llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaModel``
(transformers' GGUF loader undoes that permutation); every tensor that is not a quantized Linear (embeddings, norms,
an unquantized ``lm_head``, biases) is stored as F32.
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
from fmgauge.quantization.grid import QuantizedWeight

log = logging.getLogger(__name__)

BLOCK = 32  # weights per ggml block: consecutive input columns of one row
BLOCK_TYPES: dict[str, tuple[int, bool]] = {"Q4_0": (4, True), "Q4_1": (4, False), "Q8_0": (8, True)}  # bits, sym
TYPE_SIZE = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}  # bytes per block of 32 weights
FP16_MAX = 65504.0
FILE_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # llama.cpp's LlamaFileType.MOSTLY_*; 0 = ALL_F32
ALTERNATIVE = "--format compressed-tensors"

# gguf.TokenType values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _flags(bits: int, group_size: int, sym: bool) -> str:
    return f"--bits {bits} --group-size {group_size} --{'sym' if sym else 'no-sym'}"


def gguf_type(bits: int, group_size: int, sym: bool) -> str:
    """The ggml type that stores fmgauge's grid exactly (up to fp16 scales): 4-bit sym g32 -> 'Q4_0',
    4-bit asym g32 -> 'Q4_1', 8-bit sym g32 -> 'Q8_0'.

    Anything else raises :class:`FmgaugeError` with one line naming the format and the nearest valid setting: never
    fewer bits (2-4 bits -> 4 bits, 5-8 bits -> Q8_0, which is symmetric), group size 32, the same symmetry where
    the bit width allows it.
    """
    for name, (b, s) in BLOCK_TYPES.items():
        if bits == b and group_size == BLOCK and bool(sym) == s:
            return name
    near_bits = 4 if bits <= 4 else 8
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
    contiguous runs of columns (GPTQ act-order), grids other than the three of :func:`gguf_type`, and input widths
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
    return (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)


def pack_blocks(kind: str, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> np.ndarray:
    """The ggml bytes of one weight: codes (d_out, d_in) in 0..2**bits-1, scale/zero (d_out, d_in / 32), one
    (scale, zero) per block -> (d_out, d_in / 32 * TYPE_SIZE[kind]) uint8, row-major as ggml reads it.

    The codes are stored as they are (``Q4_0``/``Q8_0`` assume the symmetric zero 8/128; see the module docstring).
    """
    c = codes.detach().cpu().numpy().astype(np.uint8)
    s = scale.detach().cpu().double().numpy()
    d_out, d_in = c.shape
    blocks = c.reshape(d_out, d_in // BLOCK, BLOCK)
    if kind == "Q4_0":
        parts = [_fp16_bytes(s, "scale"), _nibbles(blocks)]
    elif kind == "Q4_1":
        m = -s * zero.detach().cpu().double().numpy()
        parts = [_fp16_bytes(s, "scale"), _fp16_bytes(m, "minimum"), _nibbles(blocks)]
    elif kind == "Q8_0":
        parts = [_fp16_bytes(s, "scale"), (blocks.astype(np.int16) - 128).astype(np.int8).view(np.uint8)]
    else:
        raise FmgaugeError(f"unknown GGUF block type {kind!r}; expected one of {sorted(BLOCK_TYPES)}.")
    return np.ascontiguousarray(np.concatenate(parts, axis=-1).reshape(d_out, -1))


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


def write_gguf(model, tokenizer, qweights: dict[str, QuantizedWeight], path) -> Path:  # noqa: ANN001
    """Write a llama.cpp-loadable GGUF file at `path` for a HF LlamaForCausalLM `model` whose quantized Linears
    are `qweights` (name -> QuantizedWeight, e.g. 'model.layers.0.self_attn.q_proj'), every other tensor F32.

    Every layer is checked (:func:`block_type`) before anything is written. The quantized Linears are written from
    their codes/scales/zeros (the model's own weight for them is not read); q/k rows are put in llama.cpp's rotary
    order (:func:`rope_row_order`). Returns the path.
    """
    import gguf

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

    def gguf_name(hf: str) -> str:
        base, suffix = hf.rsplit(".", 1)
        mapped = names.get_name(base)
        if mapped is None:
            raise FmgaugeError(f"format gguf: tensor {hf!r} has no llama.cpp name for arch llama.")
        return f"{mapped}.{suffix}"

    def row_order(module: str, n_rows: int) -> torch.Tensor | None:
        if module.endswith("self_attn.q_proj"):
            return rope_row_order(n_rows, shape.n_head)
        if module.endswith("self_attn.k_proj"):
            return rope_row_order(n_rows, shape.n_kv_head)
        return None

    tensors: list[tuple[str, np.ndarray, str]] = []  # gguf name, data, ggml type
    for hf, p in params.items():
        if hf == "lm_head.weight" and shape.tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        module = hf.rsplit(".", 1)[0]
        order = row_order(module, p.shape[0])
        if module in qweights and hf.endswith(".weight"):
            qw = qweights[module]
            codes, scale, zero = qw.codes, qw.scale, qw.zero
            if order is not None:
                codes, scale, zero = codes[order], scale[order], zero[order]
            tensors.append((gguf_name(hf), pack_blocks(kinds[module], codes, scale, zero), kinds[module]))
        else:
            data = p.detach().float().cpu()
            data = data[order] if order is not None else data
            tensors.append((gguf_name(hf), np.ascontiguousarray(data.numpy()), "F32"))
    if shape.vocab != model.get_input_embeddings().weight.shape[0]:
        raise FmgaugeError(f"format gguf: config.vocab_size {shape.vocab} != embedding rows "
                           f"{model.get_input_embeddings().weight.shape[0]}.")
    vocab = gguf_vocab(tokenizer, shape.vocab)
    common = Counter(kinds.values()).most_common(1)
    file_type = FILE_TYPES[common[0][0]] if common else 0

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    _write_metadata(writer, shape, file_type, str(getattr(model.config, "_name_or_path", "") or "fmgauge-quantized"))
    _write_vocab(writer, vocab)
    for name, data, kind in tensors:
        raw = None if kind == "F32" else gguf.GGMLQuantizationType[kind]
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return path


def expected_tensor_bytes(model, qweights: dict[str, QuantizedWeight]) -> int:  # noqa: ANN001
    """Bytes of tensor data :func:`write_gguf` stores (before alignment padding and metadata): 18/20/34 bytes per
    32 quantized weights (Q4_0/Q4_1/Q8_0), 4 bytes per other parameter (a tied ``lm_head`` is not stored)."""
    total = 0
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for hf, p in model.named_parameters():
        module = hf.rsplit(".", 1)[0]
        if hf == "lm_head.weight" and tied:
            continue
        if module in qweights and hf.endswith(".weight"):
            total += p.numel() // BLOCK * TYPE_SIZE[block_type(module, qweights[module])]
        else:
            total += 4 * p.numel()
    return total


__all__ = ["BLOCK", "BLOCK_TYPES", "TYPE_SIZE", "GGUFVocab", "LlamaShape", "block_type", "expected_tensor_bytes",
           "gguf_type", "gguf_vocab", "llama_shape", "pack_blocks", "rope_row_order", "write_gguf"]
