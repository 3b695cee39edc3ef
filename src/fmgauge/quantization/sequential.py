"""Sequential (block-by-block) quantization: each decoder block is calibrated on the outputs of the blocks before
it *after* they were quantized, as in the reference GPTQ (IST-DASLab/gptq ``llama_sequential``).

The pass keeps the calibration hidden states of every sequence, (N, T, d) floats, and for block i:

1. runs block i (still full precision) on them with hooks that accumulate, per Linear, the statistics its
   method reads (:func:`~fmgauge.quantization.calibration.add_inputs`: mean|x|, E[x²], ``H``; with token weights
   from a full-precision capture also :func:`~fmgauge.quantization.calibration.add_weighted`: ``S_j`` and ``H_F``);
2. quantizes block i's Linears input group by input group with the method of :mod:`.methods`;
3. runs the quantized block i again: its outputs are block i+1's inputs.

Cost: two forwards of every block over the calibration tokens (no LM head, no backward), so plain GPTQ needs no
separate calibration capture at all. The sensitivity variants weight token t by ``‖g_t‖²`` from the
full-precision model (``LayerStats.gnorm``): the gradient of the loss is not recomputed for the quantized prefix.

Block inputs are caught by temporarily replacing each block's ``forward`` with a recorder that stores the
keyword arguments the model passes it (attention mask, rotary embeddings, ... — per layer, since e.g. Gemma 3
alternates sliding and global attention) and returns its input unchanged, so the capture costs one embedding
lookup. This relies on decoder blocks returning their hidden states as a tensor (transformers >= 5) or as the
first element of a tuple.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.calibration import (
    DEFAULT_SKIP,
    CalibStats,
    LayerStats,
    add_inputs,
    add_weighted,
    input_groups,
    input_key,
    linear_layers,
)

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by the last block's recorder: nothing after the blocks needs to run."""


def decoder_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The ``ModuleList`` of transformer blocks (the one holding the most Linears) and its qualified name."""
    best: tuple[int, str, torch.nn.ModuleList | None] = (0, "", None)
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0:
            n_lin = sum(isinstance(m, torch.nn.Linear) for m in mod.modules())
            if n_lin > best[0]:
                best = (n_lin, name, mod)
    if best[2] is None:
        raise FmgaugeError(f"model {type(model).__name__} has no ModuleList of blocks with Linear layers; quantize "
                           "it with sequential: false (one full-precision calibration pass).")
    return best[1], best[2]


@dataclass
class BlockInputs:
    """Calibration hidden states entering block 0, batch by batch, and the keyword arguments of every block.

    ``hidden``: list of (b, T, d) tensors; ``kwargs[shape][i]``: what the model passed block i for a batch of
    ``shape`` (b, T) (every batch of the same shape gets the same masks and positions: no padding).
    ``seq_ids``: the sequence indices of each batch (rows of the calibration tensor).
    """

    hidden: list[torch.Tensor]
    kwargs: dict[tuple[int, int], list[dict]]
    seq_ids: list[torch.Tensor] = field(default_factory=list)


def block_inputs(model: torch.nn.Module, sequences: torch.Tensor, batch_size: int) -> BlockInputs:
    """Run the model's embedding on ``sequences`` (N, T) and catch what enters every decoder block."""
    _, blocks = decoder_blocks(model)
    dev = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    kwargs: dict[tuple[int, int], list[dict]] = {}
    seq_ids: list[torch.Tensor] = []
    state: dict = {}

    def recorder(i: int) -> Callable:
        def forward(hidden_states: torch.Tensor, *args, **kw):  # noqa: ANN002, ANN003
            if args:
                raise FmgaugeError(f"block {i} of {type(model).__name__} got positional arguments beyond the hidden "
                                   "states; sequential quantization needs keyword arguments (use sequential: false).")
            if i == 0:
                hidden.append(hidden_states.detach())
            if state["record"]:
                state["kw"].append({k: v for k, v in kw.items() if k not in ("past_key_values", "past_key_value")})
            if i == len(blocks) - 1:
                raise _Stop
            return hidden_states

        return forward

    own = [b.__dict__.get("forward") for b in blocks]  # an instance-level forward (e.g. accelerate's) to restore
    for i, b in enumerate(blocks):
        b.forward = recorder(i)
    try:
        with torch.no_grad():
            for b0 in range(0, len(sequences), batch_size):
                ids = sequences[b0:b0 + batch_size].to(dev)
                shape = tuple(ids.shape)
                state.update(record=shape not in kwargs, kw=[])
                with contextlib.suppress(_Stop):
                    model(input_ids=ids, use_cache=False)
                if state["record"]:
                    kwargs[shape] = state["kw"]
                seq_ids.append(torch.arange(b0, b0 + len(ids)))
    finally:
        for b, f in zip(blocks, own, strict=True):
            del b.forward  # the recorder shadowed the class method
            if f is not None:
                b.forward = f
    return BlockInputs(hidden, kwargs, seq_ids)


def run_block(block: torch.nn.Module, h: torch.Tensor, kw: dict) -> torch.Tensor:
    """One block's output hidden states (b, T, d) for input ``h``."""
    out = block(h, **kw)
    return out[0] if isinstance(out, tuple) else out


QuantizeGroup = Callable[[dict[str, torch.Tensor], dict[str, LayerStats]], dict[str, tuple]]


def quantize_sequential(
    model: torch.nn.Module, sequences: torch.Tensor, quantize_group: QuantizeGroup, *,
    fp_stats: CalibStats | None = None, needs_hessian: bool = True, weighted: bool = False,
    skip: tuple[str, ...] = DEFAULT_SKIP, batch_size: int = 8, progress: bool = True,
) -> tuple[dict[str, tuple], dict[str, LayerStats]]:
    """Quantize every Linear of ``model``'s decoder blocks in place, block by block (module docstring).

    ``quantize_group(weights, layer_stats)`` quantizes one input group (name -> (d_out, d_in) weight) and returns
    name -> (QuantizedWeight, info); the dequantized weights are written into the model before the block's outputs
    are recomputed. ``weighted`` also accumulates ``S_j`` / ``H_F`` with the token weights ``gnorm`` of
    ``fp_stats`` (a full-precision capture with gradients on the same ``sequences``). Returns the per-layer results
    and the statistics each layer was quantized with (the ``H`` are freed after use).
    """
    targets = linear_layers(model, skip)
    prefix, blocks = decoder_blocks(model)
    inside = {n for n in targets if n.startswith(prefix + ".")}
    outside = sorted(set(targets) - inside)
    if outside:
        raise FmgaugeError(f"Linear layers outside the decoder blocks ({outside[:3]}) cannot be quantized "
                           "sequentially; use sequential: false or skip them.")
    if weighted and (fp_stats is None or any(fp_stats.layers.get(n) is None or fp_stats.layers[n].gnorm is None
                                             for n in targets)):
        raise FmgaugeError("a sensitivity-weighted sequential pass needs a full-precision capture with gradients "
                           "(per-token ‖g‖², LayerStats.gnorm) of every Linear on the same calibration sequences.")
    if weighted and fp_stats.n_sequences != len(sequences):
        raise FmgaugeError(f"fp_stats covers {fp_stats.n_sequences} sequences, the sequential pass got "
                           f"{len(sequences)}; both must use the same calibration sequences.")
    from fmgauge.core.progress import progress as progress_tracker

    inputs = block_inputs(model, sequences, batch_size)
    hs = inputs.hidden
    results: dict[str, tuple] = {}
    used: dict[str, LayerStats] = {}
    with progress_tracker("sequential quantization", len(blocks), enabled=progress) as bar, torch.no_grad():
        for i, block in enumerate(blocks):
            names = {f"{prefix}.{i}.{n}": m for n, m in block.named_modules() if f"{prefix}.{i}.{n}" in targets}
            stats = {n: LayerStats(n, m.in_features, m.out_features) for n, m in names.items()}
            _accumulate_block(block, names, stats, hs, inputs, fp_stats if weighted else None, needs_hessian, i)
            for members in input_groups(stats).values():
                res = quantize_group({n: names[n].weight.data for n in members}, stats)
                for n, (qw, info) in res.items():
                    w = names[n].weight
                    w.data = qw.dequantize().to(w.dtype).to(w.device)
                    results[n] = (qw, info)
            for st in stats.values():
                st.H = st.HF = None
                used[st.name] = st
            hs = [run_block(block, h, inputs.kwargs[tuple(h.shape[:2])][i]) for h in hs]
            bar.advance(1)
    return results, used


def _accumulate_block(block: torch.nn.Module, names: dict[str, torch.nn.Linear], stats: dict[str, LayerStats],
                      hs: list[torch.Tensor], inputs: BlockInputs, fp_stats: CalibStats | None, hessian: bool,
                      i: int) -> None:
    """Run ``block`` on every batch in ``hs`` with hooks that fill ``stats`` (and find the input groups)."""
    first_seen: dict[tuple, str] = {}
    current: dict = {}

    def hook(name: str) -> Callable:
        def fn(mod, inp, out) -> None:  # noqa: ANN001, ARG001
            x = inp[0].detach()
            st = stats[name]
            if not st.input_group:
                key = input_key(x, name)
                st.input_group = first_seen.setdefault(key, name)
                current.setdefault("keep", []).append(x)
            x2 = x.reshape(-1, st.d_in).float()
            add_inputs(st, x2, hessian=hessian)
            if fp_stats is not None:
                gn = fp_stats.layers[name].gnorm[current["ids"]].reshape(-1).to(x2.device, torch.float32)
                add_weighted(st, x2, gn, hessian=hessian)
            st.n += x2.shape[0]

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in names.items()]
    try:
        for h, ids in zip(hs, inputs.seq_ids, strict=True):
            current["ids"] = ids
            run_block(block, h, inputs.kwargs[tuple(h.shape[:2])][i])
            current.pop("keep", None)
    finally:
        for hd in handles:
            hd.remove()
    for st in stats.values():  # followers share the leader's H
        if st.input_group != st.name:
            st.H = stats[st.input_group].H

