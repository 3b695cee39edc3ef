"""Calibration capture: one streamed pass that records, for every Linear of a causal LM, what every quantizer and
every sensitivity metric needs.

For each Linear (name -> :class:`LayerStats`), over ``n`` calibration tokens with inputs ``x_t`` (d_in,) and, when
``gradients=True``, ``g_t = ∂L/∂y_t`` (d_out,) the gradient of the summed LM loss (nats, summed over the tokens of
the sequence) at the layer output:

- ``act_abs``  (d_in,)  ``mean_t |x_tj|``                  (AWQ's activation magnitude)
- ``sq``       (d_in,)  ``mean_t x_tj²``                   (diagonal of GPTQ's ``H`` up to the factor 2)
- ``fisher``   (d_in,)  ``S_j = mean_t ‖g_t‖² x_tj²``       (= mean_t Σ_i (g_ti x_tj)², gradient-weighted activation)
- ``H``        (d_in, d_in) ``2/n Σ_t x_t x_tᵀ``            (GPTQ; shared by the Linears that read the same input)
- ``HF``       (d_in, d_in) ``2/n Σ_t ‖g_t‖² x_t x_tᵀ``     (loss-weighted Hessian; its diagonal is ``2 S``)
- ``gnorm``    (N, T)   ``‖g_t‖²`` of every calibration token (lets the sequential pass of :mod:`.sequential`
  weight the inputs of the already-quantized model by the full-precision gradient)

Memory is bounded by one batch of activations plus the accumulators (no activations are kept across batches).
The ``lm_head`` (output embedding) is skipped by default, as in GPTQ and AWQ.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

DEFAULT_SKIP = ("lm_head",)


@dataclass
class LayerStats:
    """Calibration statistics of one Linear (see the module docstring for the definitions)."""

    name: str
    d_in: int
    d_out: int
    n: int = 0
    act_abs: torch.Tensor | None = None
    sq: torch.Tensor | None = None
    fisher: torch.Tensor | None = None
    H: torch.Tensor | None = None
    HF: torch.Tensor | None = None
    gnorm: torch.Tensor | None = None
    input_group: str = ""  # name of the first Linear reading the same input (shares H with it)


@dataclass
class CalibStats:
    """Statistics of every captured Linear, in model order, and how they were gathered."""

    layers: dict[str, LayerStats]
    n_tokens: int
    n_sequences: int
    seqlen: int
    gradients: bool
    full_hessian: bool
    loss: float  # mean LM loss (nats/token) over the calibration tokens
    meta: dict = field(default_factory=dict)

    def input_groups(self) -> dict[str, list[str]]:
        """Leader name -> the Linears sharing its input (q/k/v, gate/up, ...), in model order."""
        return input_groups(self.layers)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"layers": {k: vars(v) for k, v in self.layers.items()},
                    **{k: getattr(self, k) for k in ("n_tokens", "n_sequences", "seqlen", "gradients",
                                                     "full_hessian", "loss", "meta")}}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> CalibStats:
        d = torch.load(path, weights_only=True)  # tensors and plain Python values only: never unpickle code
        layers = {k: LayerStats(**v) for k, v in d.pop("layers").items()}
        return cls(layers=layers, **d)


def input_groups(layers: dict[str, LayerStats]) -> dict[str, list[str]]:
    """Leader name -> the Linears of ``layers`` sharing its input (q/k/v, gate/up, ...), in model order."""
    groups: dict[str, list[str]] = {}
    for name, st in layers.items():
        groups.setdefault(st.input_group or name, []).append(name)
    return groups


def linear_layers(model: torch.nn.Module, skip: Iterable[str] = DEFAULT_SKIP) -> dict[str, torch.nn.Linear]:
    """The ``torch.nn.Linear`` modules of ``model`` by name, minus names matching any regex in ``skip``."""
    pats = [re.compile(p) for p in skip]
    out = {n: m for n, m in model.named_modules()
           if isinstance(m, torch.nn.Linear) and not any(p.search(n) for p in pats)}
    if not out:
        kinds = sorted({type(m).__name__ for m in model.modules()})[:12]
        raise FmgaugeError(
            f"model {type(model).__name__} has no torch.nn.Linear layers to quantize (skipping {list(skip)}); "
            f"its module types are {kinds}. fmgauge quantizes nn.Linear weights only (e.g. not GPT-2's Conv1D)."
        )
    return out


def layer_type(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``q_proj`` (the family of a layer across blocks)."""
    return name.rsplit(".", 1)[-1]


def layer_block(name: str) -> int:
    """Block index of a layer name (the first integer in it), -1 if none."""
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def input_key(x: torch.Tensor, name: str) -> tuple:
    """Identity of the tensor a Linear reads (memory, shape, offset, block): equal keys = one input group.

    Only valid while every input of the forward pass is kept alive (a freed tensor's address can be reused).
    """
    return x.data_ptr(), tuple(x.shape), x.storage_offset(), layer_block(name)


def add_inputs(st: LayerStats, x2: torch.Tensor, *, hessian: bool) -> None:
    """Fold tokens ``x2`` (t, d_in) into the running means ``act_abs``, ``sq`` and (group leader) ``H`` of ``st``.

    ``st.n`` (tokens seen so far) is not advanced: the caller does that once both halves were added.
    """
    t = x2.shape[0]
    w_old, w_new = st.n / (st.n + t), 1 / (st.n + t)
    if st.act_abs is None:
        st.act_abs, st.sq = x2.new_zeros(st.d_in), x2.new_zeros(st.d_in)
    st.act_abs.mul_(w_old).add_(x2.abs().sum(0), alpha=w_new)
    st.sq.mul_(w_old).add_((x2 * x2).sum(0), alpha=w_new)
    if hessian and st.input_group in ("", st.name):
        if st.H is None:
            st.H = x2.new_zeros(st.d_in, st.d_in)
        st.H.addmm_(x2.T, x2, beta=w_old, alpha=2 * w_new)


def add_weighted(st: LayerStats, x2: torch.Tensor, gn: torch.Tensor, *, hessian: bool) -> None:
    """Fold tokens ``x2`` (t, d_in) with squared output-gradient norms ``gn`` (t,) into ``fisher`` and ``HF``."""
    t = x2.shape[0]
    w_old, w_new = st.n / (st.n + t), 1 / (st.n + t)
    if st.fisher is None:
        st.fisher = x2.new_zeros(st.d_in)
    st.fisher.mul_(w_old).add_((gn.unsqueeze(1) * x2 * x2).sum(0), alpha=w_new)
    if hessian:
        if st.HF is None:
            st.HF = x2.new_zeros(st.d_in, st.d_in)
        xg = x2 * gn.sqrt().unsqueeze(1)
        st.HF.addmm_(xg.T, xg, beta=w_old, alpha=2 * w_new)


def capture(
    model: torch.nn.Module, sequences: torch.Tensor, *, gradients: bool = True, full_hessian: bool = True,
    skip: Iterable[str] = DEFAULT_SKIP, batch_size: int = 1, progress: bool = True,
) -> CalibStats:
    """Run ``sequences`` (N, T) token ids through ``model`` (a transformers causal LM) and accumulate statistics.

    With ``gradients`` each batch also gets one backward pass of the summed LM loss, w.r.t. activations only
    (weights are frozen during the pass). ``full_hessian`` adds the (d_in, d_in) matrices ``H`` and ``HF``.
    """
    if sequences.ndim != 2 or sequences.shape[0] < 1 or sequences.shape[1] < 2:
        raise FmgaugeError(f"sequences must be (N >= 1, T >= 2) token ids, got shape {tuple(sequences.shape)}.")
    layers = linear_layers(model, skip)
    dev = next(model.parameters()).device
    stats = {n: LayerStats(n, m.in_features, m.out_features) for n, m in layers.items()}
    for st in stats.values():
        st.act_abs, st.sq = torch.zeros(st.d_in, device=dev), torch.zeros(st.d_in, device=dev)
        if gradients:
            st.fisher = torch.zeros(st.d_in, device=dev)
    gnorms: dict[str, list[torch.Tensor]] = {n: [] for n in stats}
    first_seen: dict[tuple, str] = {}
    pending: dict[str, torch.Tensor] = {}
    keep: list[torch.Tensor] = []
    grouped = False

    def fwd_hook(name: str):
        def hook(mod, inp, out):  # noqa: ANN001, ARG001
            nonlocal grouped
            x = inp[0].detach()
            if not grouped:  # first batch: find the Linears that read the very same tensor
                keep.append(x)  # held until the batch ends, so no other tensor can reuse its memory address
                key = input_key(x, name)
                stats[name].input_group = first_seen.setdefault(key, name)
            st = stats[name]
            x2 = x.reshape(-1, st.d_in).float()
            add_inputs(st, x2, hessian=full_hessian)
            if gradients:
                pending[name] = x2
                out.register_hook(grad_hook(name, x.shape[:-1]))
            else:
                st.n += x2.shape[0]

        return hook

    def grad_hook(name: str, shape: torch.Size):
        def hook(g: torch.Tensor) -> None:
            st = stats[name]
            x2 = pending.pop(name)
            gn = g.detach().reshape(-1, st.d_out).float().pow(2).sum(1)  # (T,) ‖g_t‖²
            add_weighted(st, x2, gn, hessian=full_hessian)
            gnorms[name].append(gn.reshape(shape).cpu())
            st.n += x2.shape[0]

        return hook

    handles = [m.register_forward_hook(fwd_hook(n)) for n, m in layers.items()]
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    was_training = model.training
    model.eval()
    total_loss, total_tok = 0.0, 0
    from fmgauge.core.progress import progress as progress_tracker

    try:
        with progress_tracker("calibration", len(sequences), enabled=progress) as bar:
            for b0 in range(0, len(sequences), batch_size):
                ids = sequences[b0:b0 + batch_size].to(dev)
                n_pred = ids.numel() - ids.shape[0]
                with torch.set_grad_enabled(gradients):
                    emb = model.get_input_embeddings()(ids).detach()
                    if gradients:
                        emb.requires_grad_(True)
                    out = model(inputs_embeds=emb, labels=ids, use_cache=False)
                    loss_sum = out.loss.float() * n_pred
                    if gradients:
                        loss_sum.backward()
                grouped = True
                keep.clear()
                for name in list(pending):  # output does not reach the loss: zero gradient
                    st, t = stats[name], pending.pop(name).shape[0]
                    for acc in (st.fisher, st.HF):
                        if acc is not None:
                            acc.mul_(st.n / (st.n + t))
                    gnorms[name].append(torch.zeros(ids.shape))
                    st.n += t
                total_loss += float(loss_sum.detach())
                total_tok += n_pred
                bar.advance(len(ids))
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.requires_grad_(req[n])
        model.train(was_training)
    for st in stats.values():  # H lives with the group leader; followers point to the same tensor
        if full_hessian and st.input_group != st.name:
            st.H = stats[st.input_group].H
        if gradients:
            st.gnorm = torch.cat(gnorms[st.name])
    return CalibStats(stats, int(sequences.numel()), len(sequences), int(sequences.shape[1]), gradients,
                      full_hessian, total_loss / max(total_tok, 1))
