"""Fold AWQ's per-input-channel scales into the op before each Linear, so the shipped weights are plain grids.

fmgauge's AWQ stores the grid of ``W · diag(s)`` and reads the layer back as ``Q(W·diag(s)) · diag(s)⁻¹``
(:attr:`~fmgauge.quantization.grid.QuantizedWeight.input_scale`). A deployment format has no per-input scale, so
``1/s`` moves into whatever produces the Linear's input, exactly as AutoAWQ's ``apply_scale`` does:

==========================  ==========================================================================
q/k/v_proj                  the attention's input RMSNorm weight ``γ ← γ / s`` (Gemma: ``1 + γ ← (1 + γ) / s``)
gate/up_proj                the MLP's input RMSNorm (``post_attention_layernorm``; Gemma 3 ``pre_feedforward_…``)
down_proj                   the rows of ``up_proj`` (``act(gate)·up`` is linear in up's output): its per-row
                            grid scales ``scale[i, :] ← scale[i, :] / s_i`` — the codes do not change
o_proj                      the rows of ``v_proj`` when they match one to one (no grouped-query attention)
==========================  ==========================================================================

Every fold is exact in real arithmetic; in floating point the folded model's logits differ from the in-memory
model's by rounding only (tests pin the tolerance).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import QuantizedWeight

# Linear family -> (where its input comes from: a norm attribute of the decoder block, or a sibling Linear)
_NORM_INPUT = {"q_proj": "input_layernorm", "k_proj": "input_layernorm", "v_proj": "input_layernorm",
               "gate_proj": "post_attention_layernorm", "up_proj": "post_attention_layernorm"}
_GEMMA_NORM_INPUT = {**_NORM_INPUT, "gate_proj": "pre_feedforward_layernorm", "up_proj": "pre_feedforward_layernorm"}
_ROW_INPUT = {"down_proj": "mlp.up_proj", "o_proj": "self_attn.v_proj"}
FOLDABLE_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")


def _block_and_family(name: str) -> tuple[str, str]:
    """``model.layers.3.self_attn.q_proj`` -> (``model.layers.3``, ``q_proj``)."""
    parts = name.split(".")
    return ".".join(parts[:-2]), parts[-1]


def fold_input_scales(model: torch.nn.Module, qweights: dict[str, QuantizedWeight]) -> dict[str, QuantizedWeight]:
    """Move every ``input_scale`` of ``qweights`` into the preceding op of ``model`` (in place: norms are rescaled and
    the Linears' weights set to the folded dequantized grids); returns the folded weights (``input_scale`` None).

    Refuses (FmgaugeError) an architecture or a Linear whose input producer is not known to be foldable.
    """
    scaled = {n: q for n, q in qweights.items() if q.input_scale is not None}
    if not scaled:
        return dict(qweights)
    arch = getattr(model.config, "model_type", "?")
    if arch not in FOLDABLE_ARCHS:
        raise FmgaugeError(f"AWQ's input scales must be folded into the previous op to export; fmgauge knows how for "
                           f"{', '.join(FOLDABLE_ARCHS)}, not {arch!r}: use --format fmgauge.")
    norm_input = _GEMMA_NORM_INPUT if arch.startswith("gemma") else _NORM_INPUT
    out = dict(qweights)
    norms: dict[str, torch.Tensor] = {}  # norm module name -> the s it is divided by (shared by its group)
    changed = set(scaled)  # Linears whose stored grid (and so weight) the fold changes
    for name, q in scaled.items():
        block, family = _block_and_family(name)
        s = q.input_scale.float()
        if family in norm_input:
            norm = f"{block}.{norm_input[family]}"
            if norm in norms and not torch.equal(norms[norm], s):
                raise FmgaugeError(f"{name} and the other Linears reading {norm} carry different AWQ scales; they "
                                   "cannot be folded into one norm.")
            norms[norm] = s
        elif family in _ROW_INPUT:
            src = f"{block}.{_ROW_INPUT[family]}"
            if src not in out or out[src].codes.shape[0] != s.numel():
                raise FmgaugeError(f"cannot fold the AWQ scale of {name} into {src} (its output rows do not match "
                                   f"the {s.numel()} input channels one to one); use --format fmgauge.")
            p = out[src]
            out[src] = replace(p, scale=p.scale / s.to(p.scale).unsqueeze(1))
            changed.add(src)
        else:
            raise FmgaugeError(f"do not know which op feeds {name} ({family}); cannot fold its AWQ scale: use "
                               "--format fmgauge.")
        out[name] = replace(out[name], input_scale=None)
    with torch.no_grad():
        for norm, s in norms.items():
            w = model.get_submodule(norm).weight
            if arch.startswith("gemma"):  # Gemma RMSNorm multiplies by (1 + γ)
                w.data = ((1 + w.data.float()) / s.to(w.device) - 1).to(w.dtype)
            else:
                w.data = (w.data.float() / s.to(w.device)).to(w.dtype)
        for name in changed:
            lin = model.get_submodule(name).weight
            lin.data = out[name].dequantize().to(lin.dtype).to(lin.device)
    return out
