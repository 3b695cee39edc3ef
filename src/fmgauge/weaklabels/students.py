"""Students: the classifiers trained on gold and/or weak labels, with the seeds of one trial trained together.

Every student is a small torch module on images ``x`` (N, C, H, W) uint8, scaled to [-2, 2]; :func:`build` makes
one seed's module. :func:`train_predict` trains S seeds *at once*: it builds each seed's module, stacks their
parameters on a seed axis and runs one seed-batched model (:func:`seedwise`), so one optimizer step advances all
S runs. The loss is the sum over seeds of each seed's mean cross-entropy and AdamW is elementwise, so this is the
same computation as S independent runs (each with its own init and minibatch order), up to float reduction order,
with the per-step overhead paid once instead of S times.

Seed-batched layouts (S seeds, B items per seed):

- images ``(S, B, C, H, W)``: what :func:`train_predict` feeds the model;
- packed ``(B, S·C, H, W)``, channels-last: seed s owns channels ``[s·C, (s+1)·C)``. A conv becomes a grouped
  conv (``groups = S``) over stacked weights, GroupNorm gets S× the groups, pools and ReLU act per channel;
- features ``(S, B, F)``: a linear layer is a batched matmul over stacked ``(S, out, in)`` weights.

Modules made of other layer types fall back to ``torch.func.vmap`` over the stacked parameters (same math, slower).

Speed (measured on 1 CPU thread; docs/benchmarks.md): activations stay channels-last (CPU pooling is several times
faster on it); ``ReLU → MaxPool2d`` runs as ``MaxPool2d → ReLU`` (they commute, gradients included: a window whose
max is ≤ 0 passes no gradient either way) so the ReLU touches 4× fewer values; a linear layer's weight gradient is
formed as gᵀ·x (MKL is slow on the K = 2-column GEMM autograd would use); the training set is scaled to float once
and every step's rows are precomputed; AdamW is the fused kernel; glibc keeps freed memory (no page faults per step).

Training budget: ``epochs`` passes over the training set, at least ``min_steps`` steps, minibatches of
``batch_size`` drawn with each seed's own generator (a fresh permutation per epoch; the ragged tail is dropped).

Students (parameter counts for 28×28 grey images, K = 2):
``logreg`` 1.6k · ``mlp`` (width h) 785h · ``cnn`` (width w) two conv blocks + linear head ·
``resnet`` ResNet-18 topology for 28×28 (3×3 stem, no max-pool, GroupNorm, stage widths w, 2w, 4w, 8w).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError


class StudentConfig(BaseModel):
    """One student architecture and its training recipe."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(..., description="architecture family: a registered student (logreg, mlp, cnn, resnet, "
                      "sk-logreg)")
    name: str = Field("", description="display name (default: [features-]kind[-w<width>])")
    features: str = Field("raw", description="input representation: raw | tfidf | embed:<model> "
                          "(see weaklabels.features; tfidf and embed apply to text datasets)")
    width: int = Field(32, ge=1, description="mlp: hidden units; cnn/resnet: channels of the first stage")
    epochs: float = Field(8.0, gt=0, description="passes over the training set")
    min_steps: int = Field(60, ge=1, description="lower bound on optimizer steps (tiny gold sets)")
    batch_size: int = Field(128, ge=1, description="minibatch size (capped at the training-set size)")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decoupled weight decay")
    c: float = Field(1.0, gt=0, description="sk-logreg: inverse L2 regularisation strength (scikit-learn C)")
    model: str = Field("minilm-l6", description="finetune: the encoder to fine-tune (registered name or path)")
    max_length: int = Field(128, ge=8, description="finetune: tokens per text (longer texts are truncated)")

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        STUDENTS.get(v)  # raises with the known kinds and near names
        return v

    @field_validator("features")
    @classmethod
    def _features(cls, v: str) -> str:
        from fmgauge.weaklabels.features import check_features

        return check_features(v)

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.kind == "finetune":
            return f"{self.model}-finetune"
        base = self.kind if self.kind in ("logreg", "sk-logreg") else f"{self.kind}-w{self.width}"
        feats = self.features.removeprefix("embed:")
        return base if self.features == "raw" else f"{feats}-{base}"


ModelFactory = Callable[[StudentConfig, tuple[int, int, int], int], nn.Module]
STUDENTS: Registry[ModelFactory] = Registry("student")


@STUDENTS.register("logreg")
def _logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), k))


@STUDENTS.register("mlp")
def _mlp(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), cfg.width), nn.ReLU(), nn.Linear(cfg.width, k))


@STUDENTS.register("sk-logreg")
def _sk_logreg(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    """Multinomial logistic regression fit to convergence by scikit-learn (:func:`fit_predict_convex`); this
    module only stands for its parameters (n_params). Works on sparse inputs (TF-IDF)."""
    return nn.Linear(math.prod(shape), k)


CONVEX_STUDENTS = ("sk-logreg",)


@STUDENTS.register("finetune")
def _finetune(cfg: StudentConfig, shape: tuple[int, ...], k: int) -> nn.Module:
    """A pretrained encoder + fresh classification head, fine-tuned by
    :func:`fmgauge.weaklabels.finetune.fit_predict_finetune` (features: text)."""
    from fmgauge.core.text_models import load_text_model

    return load_text_model(cfg.model, "sequence-classification", device="cpu", num_labels=k).model


TEXT_STUDENTS = ("finetune",)


def _image_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise FmgaugeError(f"student {kind!r} needs images (C, H, W); this dataset holds inputs of shape {shape} "
                           "(features). Use logreg or mlp students on features.")
    return shape  # type: ignore[return-value]


@STUDENTS.register("cnn")
def _cnn(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    c, h, w = _image_shape("cnn", shape)
    wd = cfg.width
    return nn.Sequential(
        nn.Conv2d(c, wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # (wd, h/2, w/2)
        nn.Conv2d(wd, 2 * wd, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # (2wd, h/4, w/4)
        nn.Flatten(), nn.Linear(2 * wd * (h // 4) * (w // 4), k),
    )


class _Block(nn.Module):
    """ResNet basic block with GroupNorm (seed-batching friendly: no running statistics)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        g = min(8, cout)
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(g, cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(g, cout),
        )
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(g, cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


@STUDENTS.register("resnet")
def _resnet18(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    w = cfg.width
    c = _image_shape("resnet", shape)[0]
    layers: list[nn.Module] = [nn.Conv2d(c, w, 3, 1, 1, bias=False), nn.GroupNorm(min(8, w), w), nn.ReLU()]
    cin = w
    for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
        layers += [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, k)]
    return nn.Sequential(*layers)


def build(cfg: StudentConfig, shape: tuple[int, int, int], n_classes: int, seed: int) -> nn.Module:
    """A freshly initialised student; the init depends only on ``seed``."""
    factory = STUDENTS.get(cfg.kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(cfg, shape, n_classes)


def n_params(cfg: StudentConfig, shape: tuple[int, int, int], n_classes: int) -> int:
    return sum(p.numel() for p in build(cfg, shape, n_classes, 0).parameters())


# --- seed-batched modules -------------------------------------------------------------------------------------

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


class _SeedBlock(nn.Module):
    """S residual blocks (:class:`_Block`) from their seed-batched body and skip."""

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
    Known: Sequential, Linear, Conv2d (zero padding), GroupNorm, Flatten, pooling, pointwise activations, _Block.
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
    if t is _Block:
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


def seed_batched(cfg: StudentConfig, shape: tuple[int, int, int], n_classes: int, seeds: list[int]) -> nn.Module:
    """The S students ``build(cfg, shape, n_classes, seed)`` for ``seeds`` as one seed-batched module."""
    mods = [build(cfg, shape, n_classes, s) for s in seeds]
    batched = seedwise(mods)
    return _VmapStack(mods) if batched is None else batched


# --- training ---------------------------------------------------------------------------------------------------

@functools.cache
def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of unmapping it.

    Each training step frees and re-allocates the same activation buffers (MBs each); by default glibc returns
    them to the OS and the next step page-faults them back in, which cost up to a third of a CNN step here.
    Process-wide and harmless elsewhere; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the (reused) heap, not fresh mmaps
    except (OSError, AttributeError):  # pragma: no cover - musl or unusual libc
        pass


def _scale(x: torch.Tensor) -> torch.Tensor:
    """Images uint8 [0, 255] -> float [-2, 2]; float features pass through (as float32)."""
    if x.dtype != torch.uint8:
        return x.float()
    return x.float().mul_(4.0 / 255.0).sub_(2.0)


def minibatch_schedule(n: int, seeds: list[int], batch_size: int, steps: int) -> torch.Tensor:
    """(steps, S, B) row indices into each seed's training set; seed s shuffles with its own generator.

    Seed s draws a fresh ``randperm(n)`` per epoch and takes ``n // B`` full batches from it.
    """
    per_epoch = n // batch_size
    epochs = math.ceil(steps / per_epoch)
    out = torch.empty(len(seeds), epochs * per_epoch * batch_size, dtype=torch.long)
    for r, s in enumerate(seeds):
        g = torch.Generator().manual_seed(10_007 * s + 1)
        out[r] = torch.cat([torch.randperm(n, generator=g)[:per_epoch * batch_size] for _ in range(epochs)])
    return out[:, :steps * batch_size].view(len(seeds), steps, batch_size).transpose(0, 1)


def _check_inputs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seeds: list[int],
                  n_classes: int) -> None:
    if y_train.ndim != 2:
        raise FmgaugeError(f"train_predict: y_train must be (S, N), got shape {y_train.shape}.")
    s_count, n = y_train.shape
    if x_train.ndim not in (3, 5) or x_train.shape[:2] != (s_count, n) or len(seeds) != s_count:
        raise FmgaugeError(
            f"train_predict: x_train {x_train.shape} (expected (S, N, C, H, W) images or (S, N, D) features), "
            f"y_train {y_train.shape} and {len(seeds)} seeds disagree; seed s trains on x_train[s] with labels "
            "y_train[s]."
        )
    if x_test.ndim != x_train.ndim - 1 or x_test.shape[1:] != x_train.shape[2:]:
        raise FmgaugeError(f"train_predict: x_test {x_test.shape} must be (M, ...) with the per-item shape of "
                           f"x_train {x_train.shape[2:]}.")
    if n == 0:
        raise FmgaugeError("train_predict: the training sets are empty (N = 0).")
    if y_train.min() < 0 or y_train.max() >= n_classes:
        raise FmgaugeError(f"train_predict: y_train must hold class indices in 0..{n_classes - 1}, "
                           f"got values {np.unique(y_train)[:10].tolist()}.")


def train_predict(
    cfg: StudentConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    seeds: list[int],
    n_classes: int,
    *,
    elr: tuple[float, float] | None = None,
) -> np.ndarray:
    """Train one student per seed and return their test-set class probabilities.

    Parameters
    ----------
    x_train : (S, N, C, H, W) uint8 images, or (S, N, D) float features (logreg/mlp only) — seed s trains on
        ``x_train[s]`` (all seeds have the same N).
    y_train : (S, N) int — labels (gold, weak or mixed) for each seed's training set.
    x_test : (M, C, H, W) or (M, D) — shared test inputs, like ``x_train``.
    seeds : S ints — each seed fixes its model's init and its minibatch order.
    elr : (β, λ) to train with early-learning regularisation (Liu et al. 2020, "Early-Learning Regularization
        Prevents Memorization of Noisy Labels"): every training item keeps a target t ← β·t + (1−β)·p̂ (its
        running mean prediction, updated when it is in a minibatch) and the loss adds λ·mean log(1 − ⟨t, p̂⟩),
        which pulls the model toward its early predictions and away from memorising wrong labels. CIFAR-10
        defaults: β = 0.7, λ = 3.

    Returns
    -------
    (S, M, K) float32 softmax probabilities.
    """
    x_train, y_train, x_test = np.asarray(x_train), np.asarray(y_train), np.asarray(x_test)
    _check_inputs(x_train, y_train, x_test, seeds, n_classes)
    _keep_freed_memory()
    s_count, n = y_train.shape
    shape = tuple(x_train.shape[2:])
    model = seed_batched(cfg, shape, n_classes, list(seeds))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    bs = min(cfg.batch_size, n)
    steps = max(cfg.min_steps, math.ceil(cfg.epochs * n / bs))
    # every seed's training set as one float table (S·N, C·H·W), and each step's rows into it
    xf = _scale(torch.from_numpy(np.ascontiguousarray(x_train)).view(s_count * n, -1))
    yf = torch.from_numpy(np.ascontiguousarray(y_train)).long().view(-1)
    rows = minibatch_schedule(n, list(seeds), bs, steps) + (torch.arange(s_count) * n)[:, None]  # (T, S, B)
    targets = torch.zeros(s_count * n, n_classes) if elr else None  # ELR: running mean prediction per item
    model.train()
    for t in range(steps):
        r = rows[t].reshape(-1)
        xb = xf.index_select(0, r).view(s_count, bs, *shape)  # (S, B, C, H, W)
        logits = model(xb)  # (S, B, K)
        loss = F.cross_entropy(logits.reshape(-1, n_classes), yf.index_select(0, r), reduction="sum") / bs
        if targets is not None:
            beta, lam = elr
            prob = torch.softmax(logits.reshape(-1, n_classes), -1).clamp(1e-4, 1 - 1e-4)
            with torch.no_grad():
                tgt = beta * targets.index_select(0, r) + (1 - beta) * (prob / prob.sum(1, keepdim=True))
                targets.index_copy_(0, r, tgt)
            loss = loss + lam * torch.log(1 - (tgt * prob).sum(1)).sum() / bs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    del xf
    return _predict(model, x_test, s_count)


def fit_predict_convex(
    cfg: StudentConfig, x_pool, idx: np.ndarray, y_train: np.ndarray, x_test, n_classes: int,
) -> np.ndarray:
    """Convex students (``sk-logreg``): one L2 logistic regression per seed, solved to convergence (lbfgs).

    ``x_pool`` (N_pool, D) dense or sparse; ``idx`` (S, N) rows of each seed's training set; ``y_train`` (S, N);
    ``x_test`` (M, D). A seed changes only the training set (the optimum does not depend on an init). A training
    set missing some class gets probability 0 for it. Returns (S, M, K) float32 probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    if cfg.kind not in CONVEX_STUDENTS:
        raise FmgaugeError(f"fit_predict_convex: student kind {cfg.kind!r} is not one of {CONVEX_STUDENTS}.")
    idx, y_train = np.asarray(idx), np.asarray(y_train)
    if idx.shape != y_train.shape or idx.ndim != 2:
        raise FmgaugeError(f"fit_predict_convex: idx {idx.shape} and y_train {y_train.shape} must both be (S, N).")
    out = np.zeros((len(idx), x_test.shape[0], n_classes), dtype=np.float32)
    for r in range(len(idx)):
        present = np.unique(y_train[r])
        if len(present) == 1:
            out[r, :, present[0]] = 1.0
            continue
        clf = LogisticRegression(C=cfg.c, max_iter=2000)
        clf.fit(x_pool[idx[r]], y_train[r])
        out[r][:, clf.classes_] = clf.predict_proba(x_test)
    return out


def _predict(model: nn.Module, x_test: np.ndarray, s_count: int, chunk: int = 256) -> np.ndarray:
    """(S, M, K) float32 softmax probabilities of the seed-batched ``model`` on the shared ``x_test``."""
    model.eval()
    xs = torch.from_numpy(np.ascontiguousarray(x_test))
    out = []
    with torch.no_grad():
        for i in range(0, len(xs), chunk):
            xb = _scale(xs[i:i + chunk])
            out.append(torch.softmax(model(xb.expand(s_count, *xb.shape)), -1))
    return torch.cat(out, 1).numpy().astype(np.float32)
