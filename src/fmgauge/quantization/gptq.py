"""GPTQ: accurate post-training quantization by approximate second-order error compensation.

Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers" (ICLR 2023, arXiv 2210.17323), Algorithm 1; symbols as in the paper and IST-DASLab/gptq (gptq.py):

- ``H = 2/n Σ x xᵀ`` (d_in, d_in), accumulated as a running average by :meth:`Hessian.add_batch`;
- dead columns (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``; damping ``λ = percdamp · mean(diag H)``;
- ``Hinv`` = upper Cholesky factor of ``H⁻¹``; for each column ``i``: ``q = quant(w_i)``,
  ``err = (w_i − q) / Hinv[i, i]``, ``W[:, i:] −= err · Hinv[i, i:]``, with lazy batch updates of ``blocksize``
  columns (the rest of the matrix is updated once per block);
- act-order: process columns by decreasing ``diag H`` (groups then follow the permuted order, recorded in ``g_idx``;
  ``static_groups`` fixes the grids on the original column order first).

The sensitivity-guided variant (Xu 2026, arXiv 2601.11663) passes a loss-weighted Hessian
``H_F = Σ_t ‖g_t‖² x_t x_tᵀ`` (g_t = ∂L/∂y_t at the layer output) instead of ``H``: its diagonal is the Fisher
sensitivity ``S_j``, so the same algorithm then minimises a loss-weighted rather than plain output error.
"""

from __future__ import annotations

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import (
    QuantizedWeight,
    check_bits,
    check_group_size,
    grid_params,
    group_index,
    round_to_grid,
    searched_grid,
)


class Hessian:
    """Running average ``H = 2/n Σ_t x_t x_tᵀ`` over calibration tokens (the ``add_batch`` of the reference).

    ``weights`` (optional, (T,)) weight each token: with ``‖g_t‖²`` this accumulates the Fisher-weighted ``H_F``.
    """

    def __init__(self, d_in: int, *, device: torch.device | str = "cpu") -> None:
        self.H = torch.zeros(d_in, d_in, device=device)
        self.nsamples = 0

    def add_batch(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """``x`` (..., d_in) layer inputs of one batch (all leading dims are tokens)."""
        x = x.reshape(-1, x.shape[-1]).float()
        t = x.shape[0]
        self.H *= self.nsamples / (self.nsamples + t)
        self.nsamples += t
        if weights is not None:
            x = x * weights.reshape(-1, 1).float().sqrt()
        x = (2 / self.nsamples) ** 0.5 * x
        self.H += x.T @ x

    def free(self) -> None:
        self.H = None


def gptq_quantize(
    W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int, *, sym: bool = False, percdamp: float = 0.01,
    blocksize: int = 128, actorder: bool = False, static_groups: bool = False, ragged: bool = True,
    group_bits: torch.Tensor | None = None, grid: tuple[torch.Tensor, torch.Tensor] | None = None,
    search: bool = False,
) -> tuple[QuantizedWeight, float]:
    """Quantize ``W`` (d_out, d_in) column by column with error feedback through ``H`` (d_in, d_in).

    Returns the quantized weight and the summed proxy loss ``Σ (w − q)² / Hinv_ii² / 2`` (the reference's
    ``Losses``). ``group_bits`` (G,) gives per-group bits (mixed precision); groups are then fixed in original
    column order (static), as a bit allocation refers to original columns. ``grid`` = (scale, zero), each (d_out, G)
    for the contiguous groups of ``group_size``, fixes the grids instead (static; e.g. a GGUF K-quant grid whose
    scales are snapped to what the block stores: :func:`~fmgauge.quantization.grid.kquant_grid`). ``search``: each
    group's grid (computed when the column loop reaches it) is chosen by
    :func:`~fmgauge.quantization.grid.searched_grid` with ``diag H`` of its columns as weights, instead of min-max.
    """
    check_bits(bits)
    d_out, d_in = W.shape
    check_group_size(group_size, d_in, ragged=ragged)
    if H.shape != (d_in, d_in):
        raise FmgaugeError(f"H must be ({d_in}, {d_in}) for a weight of shape {tuple(W.shape)}, got {tuple(H.shape)}.")
    if not 0 <= percdamp < 1:
        raise FmgaugeError(f"percdamp must be in [0, 1), got {percdamp}.")
    if group_size != -1 and blocksize % group_size and not static_groups and group_bits is None:
        blocksize = group_size * max(1, blocksize // group_size)  # a group never straddles two lazy blocks
    W = W.detach().clone().float()
    H = H.detach().clone().float()
    dev = W.device
    g_orig = group_index(d_in, group_size).to(dev)
    n_groups = int(g_orig.max()) + 1
    gbits = (torch.full((n_groups,), bits, dtype=torch.long) if group_bits is None else group_bits.long().cpu())
    static = static_groups or group_bits is not None or grid is not None

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    if grid is not None:
        scale_o, zero_o = grid[0].to(dev).float(), grid[1].to(dev).float()
        if scale_o.shape != (d_out, n_groups) or zero_o.shape != (d_out, n_groups):
            raise FmgaugeError(f"grid must be two ({d_out}, {n_groups}) tensors, got {tuple(scale_o.shape)}.")
    elif static:  # grids on the original column order, before any update (the reference's static_groups)
        scale_o, zero_o = grid_params(W, gbits.to(dev), g_orig, sym=sym)
    perm = torch.argsort(torch.diag(H), descending=True) if actorder else torch.arange(d_in, device=dev)
    W, H = W[:, perm], H[perm][:, perm]
    invperm = torch.argsort(perm)

    hdiag = torch.diag(H).clone()  # (permuted) column weights of the grid search, before damping
    damp = percdamp * torch.mean(torch.diag(H))
    H[range(d_in), range(d_in)] += damp
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except torch.linalg.LinAlgError as e:
        raise FmgaugeError(f"H is not positive definite even after damping {percdamp}; raise percdamp. ({e})") from e

    if static:
        static_group = g_orig[perm].tolist()
        static_maxq = [float(2**b - 1) for b in gbits.tolist()]
    Q = torch.zeros_like(W)
    losses = torch.zeros(d_out, device=dev)
    g_perm: list[int] = []  # group of each processed (permuted) column
    scales_dyn: list[torch.Tensor] = []
    zeros_dyn: list[torch.Tensor] = []
    s = z = None
    gsz = d_in if group_size == -1 else group_size
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            w = W1[:, i]
            if static:
                g = static_group[col]
                s, z, maxq = scale_o[:, g], zero_o[:, g], static_maxq[g]
            else:
                if col % gsz == 0:  # a new group: its grid from the error-updated columns it covers
                    block = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :gsz] if col + gsz > i2 else W1[:, i:i + gsz]
                    g0 = torch.zeros(block.shape[1], dtype=torch.long, device=dev)
                    if search:
                        sc, zc = searched_grid(block, bits, g0, sym=sym, weights=hdiag[col:col + block.shape[1]])
                    else:
                        sc, zc = grid_params(block, bits, g0, sym=sym)
                    s, z = sc[:, 0], zc[:, 0]
                    scales_dyn.append(s)
                    zeros_dyn.append(z)
                g, maxq = len(scales_dyn) - 1, float(2**bits - 1)
            g_perm.append(g)
            q = round_to_grid(w, s, z, maxq)
            Q1[:, i] = q
            err1 = (w - s * (q - z)) / Hinv1[i, i]
            losses += err1**2 / 2
            W1[:, i:].addr_(err1, Hinv1[i, i:], alpha=-1)
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    codes = Q[:, invperm]
    g_idx = torch.tensor(g_perm, dtype=torch.long, device=dev)[invperm]
    if static:
        scale, zero = scale_o, zero_o
    else:
        scale, zero = torch.stack(scales_dyn, 1), torch.stack(zeros_dyn, 1)
        gbits = torch.full((scale.shape[1],), bits, dtype=torch.long)
    qw = QuantizedWeight(codes.to(torch.uint8), scale, zero, g_idx, gbits, sym)
    return qw, float(losses.sum())
