"""Sensitivity-based mixed precision: keep the most loss-sensitive column groups at higher precision.

Each allocation unit is one (Linear, column group) — ``group_size`` consecutive input channels, or the whole layer
when ``group_size == -1`` or ``unit == "layer"`` (one bit width per Linear: what compressed-tensors stores, one
config group per bit width). Its score is the second-order Fisher estimate of the loss saved by the upgrade, per
weight (Xu 2026, §3: ``ΔL ≈ ½ Σ_ij F_ij Δw_ij²`` with ``F_ij ≈ S_j / d_out``):

    gain(u) = Σ_{j ∈ u} S_j · (‖Δw_j^(b)‖² − ‖Δw_j^(b_high)‖²) / (2 d_out) / (d_out · |u|)

where ``Δw_j^(b)`` is column j's round-to-nearest error at ``b`` bits. Units are upgraded greedily by gain until
``fraction`` of all quantized weights are at ``high_bits``, so the average bit width is
``bits + fraction · (high_bits − bits)`` (the bit budget, reported with the result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import fake_quantize, group_index


@dataclass
class Allocation:
    """Per layer: bits per column group (G,); plus the average bits per weight achieved."""

    group_bits: dict[str, torch.Tensor]
    avg_bits: float
    n_upgraded: int


def column_error(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """``‖Δw_j‖²`` (d_in,): squared RTN error of each column of ``w`` (d_out, d_in)."""
    return (fake_quantize(w.float(), bits, group_size) - w.float()).pow(2).sum(0)


def allocate_bits(
    weights: dict[str, torch.Tensor], sensitivity: dict[str, torch.Tensor], bits: int, group_size: int, *,
    high_bits: int, fraction: float, unit: str = "group",
) -> Allocation:
    """Choose which column groups (``unit="group"``) or whole Linears (``unit="layer"``) of ``weights``
    (name -> (d_out, d_in)) get ``high_bits``.

    ``sensitivity`` name -> (d_in,) ``S_j``. ``fraction`` in [0, 1] of all weights are upgraded.
    """
    if unit not in ("group", "layer"):
        raise FmgaugeError(f"mixed unit must be 'group' or 'layer', got {unit!r}.")
    if not 0 <= fraction <= 1:
        raise FmgaugeError(f"fraction must be in [0, 1], got {fraction}.")
    if high_bits <= bits:
        raise FmgaugeError(f"high_bits ({high_bits}) must exceed bits ({bits}).")
    units: list[tuple[float, str, int, int]] = []  # (gain per weight, layer, group, n weights)
    total = 0
    group_bits = {}
    for name, w in weights.items():
        d_out, d_in = w.shape
        g_idx = group_index(d_in, group_size)
        n_groups = int(g_idx.max()) + 1
        group_bits[name] = torch.full((n_groups,), bits, dtype=torch.long)
        saved = sensitivity[name].float().cpu() * (column_error(w, bits, group_size)
                                                   - column_error(w, high_bits, group_size)).cpu() / (2 * d_out)
        if unit == "layer":  # the whole layer is one unit: all its groups move together
            units.append((float(saved.sum()) / (d_out * d_in), name, -1, d_out * d_in))
        else:
            per_group = torch.zeros(n_groups).index_add_(0, g_idx, saved)
            counts = torch.bincount(g_idx, minlength=n_groups) * d_out
            for g in range(n_groups):
                units.append((float(per_group[g]) / int(counts[g]), name, g, int(counts[g])))
        total += d_out * d_in
    budget = fraction * total
    used = 0
    n_up = 0
    for _, name, g, n in sorted(units, key=lambda u: -u[0]):
        if used + n > budget:
            continue
        if g == -1:
            group_bits[name][:] = high_bits
        else:
            group_bits[name][g] = high_bits
        used += n
        n_up += 1
    return Allocation(group_bits, bits + (high_bits - bits) * used / max(total, 1), n_up)
