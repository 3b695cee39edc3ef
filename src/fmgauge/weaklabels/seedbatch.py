"""Seed batching: S same-architecture students (one per seed) run as one module, so one optimizer step advances
all S training runs.

:func:`seed_batched` stacks the seeds' parameters on a seed axis. The loss is the sum over seeds of each seed's
mean cross-entropy and AdamW is elementwise, so this is the same computation as S independent runs (each with its
own init and minibatch order), up to float reduction order, with the per-step overhead paid once instead of S times.

Seed-batched layouts (S seeds, B items per seed):

- images ``(S, B, C, H, W)``: what the training loop feeds the model;
- packed ``(B, S·C, H, W)``, channels-last: seed s owns channels ``[s·C, (s+1)·C)``. A conv becomes a grouped
  conv (``groups = S``) over stacked weights, GroupNorm gets S× the groups, pools and ReLU act per channel;
- features ``(S, B, F)``: a linear layer is a batched matmul over stacked ``(S, out, in)`` weights.

Modules made of other layer types fall back to ``torch.func.vmap`` over the stacked parameters (same math, slower).

Speed (measured on 1 CPU thread; docs/benchmarks.md §1): activations stay channels-last (CPU pooling is several
times faster on it); ``ReLU → MaxPool2d`` runs as ``MaxPool2d → ReLU`` (they commute, gradients included: a window
whose max is ≤ 0 passes no gradient either way) so the ReLU touches 4× fewer values; a linear layer's weight
gradient is formed as gᵀ·x (MKL is slow on the K = 2-column GEMM autograd would use).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def _packed(x: torch.Tensor) -> torch.Tensor:
    """(S, B, C, H, W) -> packed (B, S·C, H, W) channels-last; packed input passes through."""
    if x.dim() == 4:
        return x
    s, b, c, h, w = x.shape
    x = x.permute(1, 3, 4, 0, 2).reshape(b, h, w, s * c).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)  # a no-op unless the reshape was a view


def _cat(mods: list[nn.Module], name: str) -> nn.Parameter:
    """The seeds' ``name`` tensors concatenated on dim 0 (packed layout: seed s's block s)."""
    return nn.Parameter(torch.cat([getattr(m, name).detach() for m in mods]))


class _BatchedLinear(torch.autograd.Function):
    """y = x Wᵀ + b per seed, x (S, B, F), W (S, K, F), b (S, K) or None -> (S, B, K).

    Autograd's own backward forms ∂W as xᵀ·g, a GEMM with K (often 2) output columns, which MKL runs up to 7×
    slower than the same sums as gᵀ·x; the rest is the textbook backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None  # (S, B, F)
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None  # (S, K, F)
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (S, K)
        return gx, gw, gb


class _SeedLinear(nn.Module):
    """S linear layers: features (S, B, F) -> (S, B, K) with weight (S, K, F) and bias (S, K)."""

    def __init__(self, mods: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in mods]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in mods])) if mods[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BatchedLinear.apply(x, self.weight, self.bias)


class _SeedConv2d(nn.Module):
    """S convolutions as one grouped convolution on the packed layout (seed s: channel block s)."""

    def __init__(self, mods: list[nn.Conv2d]) -> None:
        super().__init__()
        m = mods[0]
        w = torch.cat([o.weight.detach() for o in mods])  # (S·Cout, Cin/groups, kh, kw)
        self.weight = nn.Parameter(w.contiguous(memory_format=torch.channels_last))  # keeps activations NHWC
        self.bias = _cat(mods, "bias") if m.bias is not None else None
        self.kw = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups * len(mods)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last throughout (pools are several times faster on it); a 1-channel input is ambiguous and
        # oneDNN answers it in NCHW
        return F.conv2d(_packed(x), self.weight, self.bias, **self.kw).contiguous(memory_format=torch.channels_last)


class _SeedGroupNorm(nn.Module):
    """S GroupNorms: a group never straddles two seeds' channel blocks, so S·g groups over S·C channels."""

    def __init__(self, mods: list[nn.GroupNorm]) -> None:
        super().__init__()
        m = mods[0]
        self.groups, self.eps = m.num_groups * len(mods), m.eps
        self.weight = _cat(mods, "weight") if m.affine else None
        self.bias = _cat(mods, "bias") if m.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(_packed(x), self.groups, self.weight, self.bias, self.eps)


class _PerChannel(nn.Module):
    """A parameter-free per-channel spatial op (pooling): acts on the packed layout unchanged."""

    def __init__(self, mod: nn.Module) -> None:
        super().__init__()
        self.mod = mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mod(_packed(x))


class _SeedFlatten(nn.Module):
    """Packed (B, S·C, H, W) or images (S, B, C, H, W) -> features (S, B, C·H·W), in nn.Flatten's order."""

    def __init__(self, s: int) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            b, sc, h, w = x.shape
            return x.view(b, self.s, sc // self.s, h, w).transpose(0, 1).reshape(self.s, b, -1)
        return x.flatten(2)


class Residual(nn.Module):
    """relu(body(x) + skip(x)): the residual block shape this engine batches over seeds (students subclass it)."""

    body: nn.Module
    skip: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class _SeedBlock(nn.Module):
    """S residual blocks (:class:`Residual`) from their seed-batched body and skip."""

    def __init__(self, body: nn.Module, skip: nn.Module) -> None:
        super().__init__()
        self.body, self.skip = body, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _packed(x)
        return torch.relu(self.body(x) + self.skip(x))


_POINTWISE = (nn.ReLU, nn.Identity, nn.Tanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU)
_PER_CHANNEL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _seed_sequential(mods: list[nn.Sequential]) -> nn.Module | None:
    cols = list(zip(*mods, strict=True))  # cols[i]: the S seeds' i-th layer
    layers: list[nn.Module] = []
    i = 0
    while i < len(cols):
        here, nxt = cols[i][0], cols[i + 1][0] if i + 1 < len(cols) else None
        if type(here) is nn.ReLU and type(nxt) is nn.MaxPool2d and not nxt.return_indices:
            layers += [_PerChannel(copy.deepcopy(nxt)), nn.ReLU()]  # they commute; pooling first is cheaper
            i += 2
            continue
        layer = seedwise(list(cols[i]))
        if layer is None:
            return None
        layers.append(layer)
        i += 1
    return nn.Sequential(*layers)


def seedwise(mods: list[nn.Module]) -> nn.Module | None:
    """One module running the S same-architecture modules ``mods`` side by side, or None if unsupported.

    Input: images (S, B, C, H, W), features (S, B, F) or packed (B, S·C, H, W) (module docstring); a
    classifier's output is (S, B, K). Its parameters are copies of the modules' parameters stacked on the seed axis.
    Known: Sequential, Linear, Conv2d (zero padding), GroupNorm, Flatten, pooling, pointwise activations, Residual.
    """
    m, s = mods[0], len(mods)
    t = type(m)
    if any(type(o) is not t for o in mods):
        return None
    if t is nn.Sequential:
        return _seed_sequential(mods)
    if t is nn.Linear:
        return _SeedLinear(mods)
    if t is nn.Conv2d and m.padding_mode == "zeros":
        return _SeedConv2d(mods)
    if t is nn.GroupNorm:
        return _SeedGroupNorm(mods)
    if t is nn.Flatten and m.start_dim == 1 and m.end_dim == -1:
        return _SeedFlatten(s)
    if isinstance(m, Residual):
        body, skip = seedwise([o.body for o in mods]), seedwise([o.skip for o in mods])
        return None if body is None or skip is None else _SeedBlock(body, skip)
    if t in _POINTWISE:
        return copy.deepcopy(m)
    if t in _PER_CHANNEL and not getattr(m, "return_indices", False):
        return _PerChannel(copy.deepcopy(m))
    return None


class _VmapStack(nn.Module):
    """Fallback for modules :func:`seedwise` does not know: ``vmap`` of the module over stacked parameters."""

    def __init__(self, mods: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(mods)  # each (S, ...)
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[k].detach()) for k in self.names])
        self._buffers_stacked = buffers
        self._base = [copy.deepcopy(mods[0]).to("meta")]  # a list: not registered as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (S, B, C, H, W) -> (S, B, K)
        def f(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base[0], (p, b), (xb,))

        return vmap(f)(dict(zip(self.names, self.stacked, strict=True)), self._buffers_stacked, x)


def seed_batched(mods: list[nn.Module]) -> nn.Module:
    """The S same-architecture modules ``mods`` (one per seed) as one seed-batched module: :func:`seedwise`, or
    ``vmap`` over stacked parameters when it does not know a layer."""
    batched = seedwise(mods)
    return _VmapStack(mods) if batched is None else batched
