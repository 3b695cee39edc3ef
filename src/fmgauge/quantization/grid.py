"""Group-wise uniform quantization grids and round-to-nearest (RTN): the pure functions every quantizer shares.

Notation (fixed for the whole package): a Linear weight ``W`` is (d_out, d_in) (rows = output features, columns =
input channels j). Columns are split into G groups of ``group_size`` consecutive input channels (``-1``: one group =
the whole row, "per-channel" quantization). ``g_idx`` (d_in,) maps column -> group (GPTQ's act-order keeps groups
contiguous in its permuted order, so ``g_idx`` is general). Each (row, group) has a ``scale`` and an integer
``zero`` point; with ``b`` bits and ``maxq = 2**b - 1`` a weight is stored as a code ``q`` in 0..maxq and read back as
``scale * (q - zero)``.

- Asymmetric (default, as in AutoAWQ): ``scale = (max - min) / maxq``, ``zero = clamp(round(-min / scale), 0, maxq)``.
- Symmetric (GPTQ's ``sym=True``): ``scale = 2 max|w| / maxq``, ``zero = (maxq + 1) / 2``.

A width that ``group_size`` does not divide is handled by a shorter last group (``ragged=True``, the default, like
GPTQ's reference) or refused with a clear error (``ragged=False``, like AutoAWQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fmgauge.core.validation import FmgaugeError

BITS_RANGE = (2, 8)
GROUP_SIZES = (32, 64, 128, -1)


def check_bits(bits: int, name: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not BITS_RANGE[0] <= bits <= BITS_RANGE[1]:
        raise FmgaugeError(f"{name} must be an integer in {BITS_RANGE[0]}..{BITS_RANGE[1]}, got {bits!r}.")
    return bits


def check_group_size(group_size: int, width: int | None = None, *, ragged: bool = True, layer: str = "") -> int:
    """``group_size`` is one of 32/64/128/-1 (or any positive int); with ``width`` check it fits the layer."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or (group_size < 1 and group_size != -1):
        raise FmgaugeError(f"group_size must be a positive integer (usually one of {GROUP_SIZES[:3]}) or -1 "
                           f"(per-channel), got {group_size!r}.")
    if width is not None and group_size != -1 and width % group_size and not ragged:
        where = f" of layer {layer!r}" if layer else ""
        divisors = [g for g in (32, 64, 128) if width % g == 0]
        raise FmgaugeError(
            f"group_size {group_size} does not divide the input width {width}{where}; use one of {divisors + [-1]} "
            "or allow a shorter last group (ragged=True / --ragged)."
        )
    return group_size


def group_index(d_in: int, group_size: int) -> torch.Tensor:
    """``g_idx`` (d_in,) long: contiguous groups of ``group_size`` columns (last one shorter if ragged)."""
    if group_size == -1:
        return torch.zeros(d_in, dtype=torch.long)
    return torch.arange(d_in) // group_size


def _per_group(w: torch.Tensor, g_idx: torch.Tensor, n_groups: int, op: str) -> torch.Tensor:
    """Row-wise min or max of ``w`` (d_out, d_in) within each group -> (d_out, G)."""
    fill = float("inf") if op == "amin" else float("-inf")
    out = torch.full((w.shape[0], n_groups), fill, dtype=w.dtype, device=w.device)
    return out.scatter_reduce(1, g_idx.to(w.device).expand_as(w), w, reduce=op, include_self=True)


def grid_params(
    w: torch.Tensor, bits: torch.Tensor | int, g_idx: torch.Tensor, *, sym: bool = False,
    clip: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero (both (d_out, G) float32) of each (row, group) of ``w`` (d_out, d_in).

    ``bits`` is an int or a (G,) tensor (mixed precision); ``clip`` shrinks the range (AWQ's clipping search:
    scalar or (d_out, G) ratio in (0, 1]).
    """
    w = w.float()
    n_groups = int(g_idx.max()) + 1
    maxq = (2 ** torch.as_tensor(bits, device=w.device).float() - 1).expand(n_groups)  # (G,)
    xmin = _per_group(w, g_idx, n_groups, "amin")
    xmax = _per_group(w, g_idx, n_groups, "amax")
    if clip is not None:
        xmin, xmax = xmin * clip, xmax * clip
    if sym:
        amax = torch.maximum(xmax.abs(), xmin.abs()).clamp(min=1e-8)
        scale = 2 * amax / maxq
        zero = ((maxq + 1) / 2).expand_as(scale).clone()
    else:
        scale = (xmax - xmin).clamp(min=1e-8) / maxq
        zero = torch.clamp(torch.round(-xmin / scale), torch.zeros_like(maxq), maxq)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: torch.Tensor | int,
                   g_idx: torch.Tensor) -> torch.Tensor:
    """Integer codes (d_out, d_in) in 0..2**bits-1 (as float) of ``w`` on the grid (scale, zero) of its group."""
    n_groups = scale.shape[1]
    maxq = (2 ** torch.as_tensor(bits, device=w.device).float() - 1).expand(n_groups)[g_idx]  # (d_in,)
    return round_to_grid(w.float(), scale[:, g_idx], zero[:, g_idx], maxq)


def round_to_grid(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, maxq: torch.Tensor | float) -> torch.Tensor:
    """Codes ``clamp(round(w / s) + z, 0, maxq)`` (as float) for broadcastable ``w``, scale ``s``, zero ``z``."""
    q = torch.clamp(torch.round(w / s) + z, min=0)
    return torch.minimum(q, maxq) if isinstance(maxq, torch.Tensor) else q.clamp_(max=maxq)  # no tensor per column


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    """``scale * (q - zero)`` per column's group -> (d_out, d_in) float32."""
    return scale[:, g_idx] * (codes.float() - zero[:, g_idx])


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, *, sym: bool = False,
                  clip: torch.Tensor | float | None = None) -> torch.Tensor:
    """Quantize then dequantize ``w`` (d_out, d_in) with RTN on contiguous groups (the inner loop of AWQ's search)."""
    g_idx = group_index(w.shape[1], group_size).to(w.device)
    scale, zero = grid_params(w, bits, g_idx, sym=sym, clip=clip)
    return dequantize_codes(quantize_codes(w, scale, zero, bits, g_idx), scale, zero, g_idx)


@dataclass
class QuantizedWeight:
    """A quantized Linear weight: what would be stored on disk, and how to read it back.

    ``codes`` (d_out, d_in) uint8 in 0..2**bits-1; ``scale``/``zero`` (d_out, G); ``g_idx`` (d_in,); ``bits`` (G,)
    per group (equal unless mixed precision); ``input_scale`` (d_in,) or None: AWQ's per-channel scale s, the
    stored grid is that of ``W · diag(s)`` and the effective weight is ``dequant / s`` (a deployment folds 1/s
    into the previous op).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor
    bits: torch.Tensor
    sym: bool = False
    input_scale: torch.Tensor | None = None

    def dequantize(self) -> torch.Tensor:
        w = dequantize_codes(self.codes, self.scale, self.zero, self.g_idx)
        return w / self.input_scale if self.input_scale is not None else w

    @property
    def n_bits_weights(self) -> int:
        """Bits spent on codes."""
        return int((self.bits[self.g_idx].long() * self.codes.shape[0]).sum())

    def storage_bits(self) -> int:
        """Bits to store this layer: codes + fp16 scale and ``bits``-bit zero per (row, group) + fp16 input scale."""
        per_group = self.codes.shape[0] * (16 + self.bits.long()).sum()
        extra = 16 * self.input_scale.numel() if self.input_scale is not None else 0
        return self.n_bits_weights + int(per_group) + extra

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file."""
        out = {f"{prefix}.codes": self.codes.to(torch.uint8).contiguous(),
               f"{prefix}.scale": self.scale.float().contiguous(), f"{prefix}.zero": self.zero.to(torch.uint8),
               f"{prefix}.g_idx": self.g_idx.to(torch.int32), f"{prefix}.bits": self.bits.to(torch.uint8)}
        if self.input_scale is not None:
            out[f"{prefix}.input_scale"] = self.input_scale.float().contiguous()
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str, *, sym: bool = False) -> QuantizedWeight:
        return cls(t[f"{prefix}.codes"], t[f"{prefix}.scale"], t[f"{prefix}.zero"].float(),
                   t[f"{prefix}.g_idx"].long(), t[f"{prefix}.bits"].long(), sym, t.get(f"{prefix}.input_scale"))


def rtn(w: torch.Tensor, bits: int, group_size: int, *, sym: bool = False, ragged: bool = True,
        clip: torch.Tensor | float | None = None, group_bits: torch.Tensor | None = None, search: bool = False,
        ) -> QuantizedWeight:
    """Round-to-nearest quantization of ``w`` (d_out, d_in) on contiguous groups.

    ``group_bits`` (G,) overrides ``bits`` per group (mixed precision); ``search`` chooses each group's range by
    :func:`searched_grid` (unweighted; one bit width only).
    """
    check_bits(bits)
    check_group_size(group_size, w.shape[1], ragged=ragged)
    g_idx = group_index(w.shape[1], group_size).to(w.device)
    n_groups = int(g_idx.max()) + 1
    b = torch.full((n_groups,), bits, dtype=torch.long) if group_bits is None else group_bits.long().cpu()
    if search and group_bits is None and clip is None:
        scale, zero = searched_grid(w, bits, g_idx, sym=sym)
    else:
        scale, zero = grid_params(w, b.to(w.device), g_idx, sym=sym, clip=clip)
    codes = quantize_codes(w, scale, zero, b.to(w.device), g_idx)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, g_idx, b, sym)


SEARCH_RANGE = (0.8, 1.1)  # range factors tried by the grid search (shrink to clip outliers; widen for the sym grid's
SEARCH_STEPS = 16            # one-sided level), as llama.cpp's make_qx_quants tries scales around max / nmax


def searched_grid(w: torch.Tensor, bits: int, g_idx: torch.Tensor, *, sym: bool, weights: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero (d_out, G) of each (row, group) of ``w`` (d_out, d_in), the range factor of each chosen among
    ``SEARCH_STEPS`` values in ``SEARCH_RANGE`` to minimise the rounding error weighted per column by ``weights``
    (d_in,) — e.g. diag H, E[x²] or S_j — as llama.cpp's importance-matrix quantizers choose block scales. Without
    weights every column counts alike. Factor 1 (the min-max grid) is always among the candidates."""
    w = w.float()
    n_groups = int(g_idx.max()) + 1
    maxq = float(2**bits - 1)
    cw = torch.ones(w.shape[1], device=w.device) if weights is None else weights.float().to(w.device).clamp(min=0)
    alphas = torch.cat([torch.linspace(*SEARCH_RANGE, SEARCH_STEPS), torch.ones(1)]).tolist()
    best_err = best_s = best_z = None
    for a in alphas:
        sc, zc = grid_params(w, bits, g_idx, sym=sym, clip=a)
        q = round_to_grid(w, sc[:, g_idx], zc[:, g_idx], maxq)
        e = (w - sc[:, g_idx] * (q - zc[:, g_idx])) ** 2 * cw
        err = torch.zeros(w.shape[0], n_groups, device=w.device).index_add_(1, g_idx, e)
        if best_err is None:
            best_err, best_s, best_z = err, sc, zc
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s, best_z = torch.where(better, sc, best_s), torch.where(better, zc, best_z)
    return best_s, best_z


# GGUF K-quant grids: 256-weight super-blocks of 16-weight sub-blocks, each sub-block a symmetric grid whose scale is
# an integer multiple ``sc`` (1..max_sc) of one fp16 ``d`` per super-block: ggml's Q3_K (3 bits, 6-bit sub-scales)
# and Q6_K (6 bits, int8 sub-scales). value = d * sc * (q - 2**(bits-1)), exactly fmgauge's symmetric grid with
# scale d * sc; the product is exact in float32 (11-bit d times a 7-bit sc), so a round trip is bit for bit.
KQUANT_TYPES = {3: ("Q3_K", 31), 6: ("Q6_K", 127)}  # bits -> (ggml type, largest sub-scale multiple)
KQUANT_SUPER = 256
KQUANT_SUB = 16
FP16_TINY = 2.0**-24  # smallest positive (subnormal) fp16


def kquant_fits(d_in: int) -> bool:
    """Whether a layer of input width ``d_in`` can use a K-quant grid (a multiple of 256 columns)."""
    return d_in % KQUANT_SUPER == 0


def snap_kquant_scales(scale: torch.Tensor, max_sc: int) -> torch.Tensor:
    """Sub-block scales (d_out, G), of either sign, -> the nearest scales a K-quant block stores: per run of 16
    sub-blocks (one super-block) ``d = fp16(max |scale| / max_sc)``, ``sc = round(scale / d)`` with ``1 <= |sc| <=
    max_sc`` and the sign of the scale; returns ``d * sc`` (float32, exact). (A negative scale reads the grid
    mirrored: its one-sided extra level ``-2**(bits-1)`` lands on the positive side, as ggml's signed sub-scales
    allow.)"""
    d_out, n_groups = scale.shape
    per = KQUANT_SUPER // KQUANT_SUB
    if n_groups % per:
        raise FmgaugeError(f"a K-quant grid needs groups in runs of {per} (width a multiple of {KQUANT_SUPER}); got "
                           f"{n_groups} groups of {KQUANT_SUB}.")
    s = scale.double().reshape(d_out, n_groups // per, per)
    d = (s.abs().amax(-1, keepdim=True) / max_sc).half().double().clamp(min=FP16_TINY)
    sign = torch.where(s < 0, -1.0, 1.0).double()
    sc = sign * (s.abs() / d).round().clamp(1, max_sc)
    return (d * sc).float().reshape(d_out, n_groups)


def _weighted_group_error(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bits: int, g_idx: torch.Tensor,
                          cw: torch.Tensor) -> torch.Tensor:
    """Σ over each (row, group) of ``cw_j (w - s (q - z))²`` with q the rounded codes -> (d_out, G)."""
    q = round_to_grid(w, s[:, g_idx], z[:, g_idx], float(2**bits - 1))
    e = (w - s[:, g_idx] * (q - z[:, g_idx])) ** 2 * cw
    return torch.zeros(w.shape[0], s.shape[1], device=w.device).index_add_(1, g_idx, e)


def kquant_grid(w: torch.Tensor, bits: int, *, weights: torch.Tensor | None = None, search: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K-quant grid of ``w`` (d_out, d_in), d_in a multiple of 256: the symmetric grid per 16 columns with its
    scale snapped (:func:`snap_kquant_scales`). Min-max by default; with ``search`` each sub-block gets the better
    of the two orientations (a positive or a negative scale, so the extra level covers its largest weight, as
    ggml's signed sub-scales allow) of the :func:`searched_grid` under column ``weights``, and after snapping each
    sub-scale is re-chosen among sc - 1, sc, sc + 1 by the same weighted error. Returns (scale, zero, g_idx) for
    ``bits`` in 3 / 6."""
    if bits not in KQUANT_TYPES:
        raise FmgaugeError(f"K-quant grids exist for {sorted(KQUANT_TYPES)} bits here, got {bits}.")
    if not kquant_fits(w.shape[1]):
        raise FmgaugeError(f"a K-quant grid needs an input width that is a multiple of {KQUANT_SUPER}, got "
                           f"{w.shape[1]}.")
    g_idx = group_index(w.shape[1], KQUANT_SUB).to(w.device)
    max_sc = KQUANT_TYPES[bits][1]
    if not search:
        scale, zero = grid_params(w, bits, g_idx, sym=True)
        return snap_kquant_scales(scale, max_sc).to(w.device), zero, g_idx
    w = w.float()
    cw = torch.ones(w.shape[1], device=w.device) if weights is None else weights.float().to(w.device).clamp(min=0)
    pos, zero = searched_grid(w, bits, g_idx, sym=True, weights=cw)
    neg = -searched_grid(-w, bits, g_idx, sym=True, weights=cw)[0]  # the mirrored grid: w ≈ (-s)(q - z)
    use_neg = _weighted_group_error(w, neg, zero, bits, g_idx, cw) < _weighted_group_error(w, pos, zero, bits, g_idx, cw)
    snapped = snap_kquant_scales(torch.where(use_neg, neg, pos), max_sc).to(w.device)
    d_out, n_groups = snapped.shape
    per = KQUANT_SUPER // KQUANT_SUB
    d = (snapped.double().abs().reshape(d_out, -1, per).amax(-1, keepdim=True) / max_sc).expand(-1, -1, per).reshape(
        d_out, n_groups).float()  # the super-block's d (its largest |sub-scale| is max_sc · d)
    sc0 = torch.round(snapped / d)
    best_err = best = None
    for step in (0, -1, 1):  # the super-block's largest |sc| stays: it fixes d
        mag = (sc0.abs() + step).clamp(1, max_sc)
        sc = torch.where(sc0.abs() == max_sc, sc0, torch.sign(sc0) * mag)
        err = _weighted_group_error(w, d * sc, zero, bits, g_idx, cw)
        if best is None:
            best_err, best = err, d * sc
        else:
            better = err < best_err
            best_err, best = torch.where(better, err, best_err), torch.where(better, d * sc, best)
    return best, zero, g_idx


def rtn_kquant(w: torch.Tensor, bits: int, *, search: bool = False) -> QuantizedWeight:
    """Round-to-nearest of ``w`` on its K-quant grid (:func:`kquant_grid`)."""
    scale, zero, g_idx = kquant_grid(w, bits, search=search)
    codes = quantize_codes(w, scale, zero, bits, g_idx)
    b = torch.full((scale.shape[1],), bits, dtype=torch.long)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, g_idx, b, True)
