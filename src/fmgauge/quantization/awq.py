"""AWQ: activation-aware weight quantization by per-input-channel scaling, and its sensitivity-guided variant.

Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration" (MLSys 2024,
arXiv 2306.00978), §3.2, with the defaults of mit-han-lab/llm-awq and AutoAWQ (``_search_best_scale``,
``_compute_best_clip``):

- a per-channel scale ``s = x̄^α / w̄^(1−α)`` (``x̄_j = mean|x_j|`` over calibration tokens, ``w̄_j`` the mean over rows
  of ``|W_ij| / max_group|W|``; ``duo_scaling=False`` uses ``s = x̄^α``), normalised by ``√(max s · min s)``;
- a grid of ``n_grid = 20`` values ``α ∈ {0, 1/20, …, 19/20}``; for each, ``Q(W·diag(s)) · diag(s)⁻¹`` and the output
  MSE of the layers sharing this input; the ``α`` with the lowest MSE wins (the identity scale — plain RTN — is
  also a candidate, so the result is never worse than RTN on this objective);
- optional clipping search: per (row, group) shrink the range by ``1 − i/20`` for ``i < 0.5 · 20`` and keep the best.

The output MSE over calibration tokens is computed exactly from the input second moment, without storing
activations: ``Σ_t ‖ΔW x_t‖² / n = tr(ΔW H ΔWᵀ) / 2`` with ``H = 2/n Σ x xᵀ`` (see :mod:`.gptq`). The "block" is
the set of Linears reading the same input (q/k/v, gate/up, o, down); AutoAWQ measures q/k/v through the
attention softmax instead, a nonlinearity this objective leaves out.

Sensitivity-guided AWQ (Xu 2026, arXiv 2601.11663): the scale uses ``√S_j`` (S_j = E[‖g‖² x_j²], the
gradient-weighted activation) instead of ``mean|x_j|``, and the search minimises the loss-weighted output error
``tr(ΔW H_F ΔWᵀ)`` with ``H_F = Σ_t ‖g_t‖² x_t x_tᵀ`` (each layer its own ``g``): a first-order estimate of the
loss change rather than an output MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import check_bits, check_group_size, fake_quantize, group_index


@dataclass
class AWQSearch:
    """Result of the scale search for one group of Linears sharing an input.

    ``scales`` (d_in,), ``alpha`` the chosen exponent (None = identity scale won), ``losses`` (n_grid,) the
    objective per α, ``identity_loss`` the objective of plain RTN.
    """

    scales: torch.Tensor
    alpha: float | None
    losses: torch.Tensor
    identity_loss: float


def output_error(dW: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``tr(ΔW H ΔWᵀ)`` for ``dW`` (d_out, d_in), ``H`` (d_in, d_in): summed squared output error (scaled by H)."""
    return ((dW @ H) * dW).sum()


def weight_mean(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """AutoAWQ's ``w̄`` (d_in,): per input channel, the row-mean of ``|W| / max|W|`` within each (row, group)."""
    W = torch.cat([w.float() for w in weights], 0)
    g_idx = group_index(W.shape[1], group_size).to(W.device)
    n_groups = int(g_idx.max()) + 1
    gmax = torch.zeros(W.shape[0], n_groups, device=W.device).scatter_reduce(
        1, g_idx.expand_as(W), W.abs(), reduce="amax", include_self=False)
    return (W.abs() / (gmax[:, g_idx] + 1e-6)).mean(0)


def search_scales(
    weights: list[torch.Tensor], act_stat: torch.Tensor, hessians: list[torch.Tensor], bits: int, group_size: int,
    *, n_grid: int = 20, duo_scaling: bool = True, sym: bool = False, ragged: bool = True,
) -> AWQSearch:
    """Grid search of AWQ's per-channel scale for Linears ``weights`` (each (d_out_k, d_in)) sharing one input.

    ``act_stat`` (d_in,) is the channel statistic the scale is a power of (``mean|x|`` for AWQ, ``√S_j`` for the
    sensitivity-guided variant); ``hessians`` one (d_in, d_in) per weight (the same ``H`` for all in AWQ, each
    layer's ``H_F`` in the sensitivity variant) define the objective ``Σ_k tr(ΔW_k H_k ΔW_kᵀ)``.
    """
    check_bits(bits)
    d_in = weights[0].shape[1]
    for k, w in enumerate(weights):
        if w.shape[1] != d_in or hessians[k].shape != (d_in, d_in):
            raise FmgaugeError(f"weights[{k}] {tuple(w.shape)} / hessians[{k}] {tuple(hessians[k].shape)} must share "
                               f"the input width {d_in}.")
        check_group_size(group_size, d_in, ragged=ragged)
    if act_stat.shape != (d_in,):
        raise FmgaugeError(f"act_stat must have shape ({d_in},), got {tuple(act_stat.shape)}.")
    x = act_stat.float().clamp(min=0)
    w_mean = weight_mean(weights, group_size) if duo_scaling else None

    def loss_of(s: torch.Tensor) -> float:
        total = 0.0
        for w, H in zip(weights, hessians, strict=True):
            w = w.float()
            dW = fake_quantize(w * s, bits, group_size, sym=sym) / s - w
            total += float(output_error(dW, H))
        return total

    ident = torch.ones(d_in, device=x.device)
    identity_loss = loss_of(ident)
    best, best_s, best_alpha = identity_loss, ident, None
    losses = torch.empty(n_grid)
    for k in range(n_grid):
        alpha = k / n_grid
        s = (x.pow(alpha) / (w_mean.pow(1 - alpha) + 1e-4)) if duo_scaling else x.pow(alpha)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        losses[k] = loss_of(s)
        if losses[k] < best:
            best, best_s, best_alpha = float(losses[k]), s, alpha
    return AWQSearch(best_s, best_alpha, losses, identity_loss)


def search_clip(
    w: torch.Tensor, H: torch.Tensor, bits: int, group_size: int, *, n_grid: int = 20, max_shrink: float = 0.5,
    sym: bool = False,
) -> torch.Tensor:
    """AutoAWQ's clipping search: per (row, group) ratio (d_out, G) in (0, 1] minimising that group's output error.

    ``w`` (d_out, d_in) is the (already scaled) weight and ``H`` the second moment of its (scaled) input. The error
    of (row o, group g) is ``Δ_og H_gg Δ_ogᵀ`` (the group's own block of H, as AutoAWQ's per-group outputs).
    """
    w = w.float()
    g_idx = group_index(w.shape[1], group_size).to(w.device)
    n_groups = int(g_idx.max()) + 1
    best_err = torch.full((w.shape[0], n_groups), float("inf"), device=w.device)
    best_ratio = torch.ones(w.shape[0], n_groups, device=w.device)
    for i in range(int(max_shrink * n_grid)):
        ratio = 1 - i / n_grid
        amax = torch.zeros(w.shape[0], n_groups, device=w.device).scatter_reduce(
            1, g_idx.expand_as(w), w.abs(), reduce="amax", include_self=False) * ratio
        lim = amax[:, g_idx]
        wc = torch.maximum(torch.minimum(w, lim), -lim)
        dW = fake_quantize(wc, bits, group_size, sym=sym) - w
        err = torch.stack([((dW[:, g_idx == g] @ H[g_idx == g][:, g_idx == g]) * dW[:, g_idx == g]).sum(1)
                           for g in range(n_groups)], 1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return best_ratio


def clip_weight(w: torch.Tensor, ratio: torch.Tensor, group_size: int) -> torch.Tensor:
    """Clamp ``w`` (d_out, d_in) to ``±ratio · max|w|`` of each (row, group) (AutoAWQ's ``apply_clip``)."""
    g_idx = group_index(w.shape[1], group_size).to(w.device)
    amax = torch.zeros(w.shape[0], ratio.shape[1], device=w.device).scatter_reduce(
        1, g_idx.expand_as(w), w.abs(), reduce="amax", include_self=False) * ratio
    lim = amax[:, g_idx]
    return torch.maximum(torch.minimum(w, lim), -lim)
