"""The quantizers behind ``--method``: one registry, one config, one driver that applies them to a model.

Every method is a function ``(weights, stats, cfg) -> {name: (QuantizedWeight, info)}`` over one *input group*
(the Linears reading the same input: q/k/v, gate/up, o, down), so AWQ can share one scale across the group.
Statistics come either from one full-precision calibration pass (:class:`~fmgauge.quantization.calibration.CalibStats`)
or, with ``sequential`` (the default for the GPTQ family, as in the reference), block by block from the outputs of
the already-quantized blocks (:mod:`.sequential`).

==========  ===========================================================================================
rtn         round-to-nearest on the group grid
gptq        GPTQ with ``H = 2/n Σ x xᵀ`` (:mod:`.gptq`)
sens-gptq   GPTQ with the loss-weighted Hessian ``H_F = 2/n Σ ‖g‖² x xᵀ`` (``fisher_mix`` blends it with H)
awq         AWQ scale search on mean|x| + clipping search (:mod:`.awq`)
sens-awq    AWQ scale search driven by S_j, objective ``tr(ΔW H_F ΔWᵀ)``
mixed       ``mixed_base`` quantizer with per-group bits from the sensitivity allocation (:mod:`.mixed`)
==========  ===========================================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.awq import clip_weight, search_clip, search_scales
from fmgauge.quantization.calibration import CalibStats, LayerStats
from fmgauge.quantization.gptq import gptq_quantize
from fmgauge.quantization.grid import GROUP_SIZES, QuantizedWeight, check_bits, check_group_size, rtn

log = logging.getLogger(__name__)


class QuantConfig(BaseModel):
    """What to quantize and how (defaults of the reference implementations, see the spec)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("gptq", description="rtn | gptq | sens-gptq | awq | sens-awq | mixed")
    bits: int = Field(4, description="Bits per weight, 2..8.")
    group_size: int | None = Field(None, description="Input channels per quantization group (32/64/128), -1 = per "
                                   "row; None: the largest of 128/64/32 dividing every quantized width (GGUF: 32).")
    sym: bool | None = Field(None, description="Symmetric grid (zero point fixed at the middle); None: what the "
                                               "output format's consumer loads (symmetric for compressed-tensors "
                                               "and GGUF, asymmetric otherwise).")
    ragged: bool = Field(True, description="Allow a shorter last group when group_size does not divide the width.")
    grid_search: bool = Field(False, description="Choose each group's range among 16 factors in [0.8, 1.1] by the "
                                                 "rounding error weighted by diag H (sens-gptq: diag H_F, i.e. S_j; "
                                                 "rtn: unweighted), as llama.cpp's imatrix quantizers choose block "
                                                 "scales (rtn, gptq, sens-gptq; default min-max, as the references).")
    k_bits: int | None = Field(None, description="GGUF K-quant grids: Linears whose input width is a multiple of 256 "
                                                 "get a k_bits-bit K-quant grid (3: Q3_K, 6: Q6_K; 16-weight "
                                                 "sub-blocks, sub-scales per 256), the others `bits` on 32-blocks "
                                                 "(rtn, gptq, sens-gptq; format gguf).")
    # GPTQ (IST-DASLab/gptq defaults)
    percdamp: float = Field(0.01, description="GPTQ damping, as a fraction of mean(diag H).")
    blocksize: int = Field(128, description="GPTQ lazy-batch block size (columns).")
    actorder: bool = Field(False, description="GPTQ act-order: columns by decreasing diag H.")
    static_groups: bool = Field(False, description="GPTQ: grids fixed on the original column order first.")
    sequential: bool | None = Field(None, description="Calibrate each block on the outputs of the already-quantized "
                                                      "blocks (reference GPTQ). None: on for gptq, sens-gptq and "
                                                      "mixed; off for AWQ (its reference searches on full-"
                                                      "precision inputs) and RTN (no statistics).")
    seq_batch: int = Field(8, ge=1, description="sequential: calibration sequences per block forward.")
    fisher_mix: float = Field(1.0, description="sens-gptq: weight of H_F in (1-λ)·H/tr + λ·H_F/tr (1 = pure H_F).")
    # AWQ (AutoAWQ defaults)
    n_grid: int = Field(20, description="AWQ: number of α values in [0, 1).")
    duo_scaling: bool = Field(True, description="AWQ: s = x^α / w^(1-α) (AutoAWQ default); False: s = x^α.")
    clip: bool = Field(True, description="AWQ: clipping search after scaling (AutoAWQ apply_clip).")
    max_shrink: float = Field(0.5, description="AWQ clipping search: largest range shrink.")
    # mixed precision
    mixed_base: Literal["rtn", "gptq", "sens-gptq"] = Field("sens-gptq", description="Quantizer used by 'mixed'.")
    high_bits: int | None = Field(None, description="mixed: bits of the upgraded groups (default bits + 1).")
    mixed_fraction: float = Field(0.1, description="mixed: fraction of weights kept at high_bits.")
    mixed_unit: Literal["group", "layer"] = Field(
        "group", description="mixed: upgrade column groups, or whole layers (one bit width per Linear, which "
                             "compressed-tensors stores).")

    # Everything that can be checked without the model is checked when the config is built (before any load).
    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        QUANTIZERS.get(v)  # FmgaugeError with "did you mean"
        return v

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        return check_bits(v)

    @field_validator("high_bits")
    @classmethod
    def _high_bits(cls, v: int | None) -> int | None:
        return None if v is None else check_bits(v, "high_bits")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int | None) -> int | None:
        if v is not None and v not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {', '.join(map(str, GROUP_SIZES))} (-1 = per channel), "
                             f"got {v}")
        return v

    @field_validator("k_bits")
    @classmethod
    def _k_bits(cls, v: int | None) -> int | None:
        from fmgauge.quantization.grid import KQUANT_TYPES

        if v is not None and v not in KQUANT_TYPES:
            raise ValueError(f"k_bits must be one of {', '.join(map(str, KQUANT_TYPES))} (Q3_K, Q6_K), got {v}")
        return v

    @field_validator("fisher_mix", "mixed_fraction")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError(f"must be in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _high_above_bits(self) -> QuantConfig:
        if self.method == "mixed" and self.high_bits_ <= self.bits:
            raise ValueError(f"high_bits ({self.high_bits_}) must exceed bits ({self.bits})")
        if self.k_bits is not None and (self.method not in ("rtn", "gptq", "sens-gptq") or self.actorder
                                        or self.sym is False):
            raise ValueError("k_bits (GGUF K-quant grids) works with rtn, gptq and sens-gptq, symmetric, "
                             "without act-order")
        return self

    def k_layer(self, d_in: int) -> bool:
        """Whether a Linear of input width ``d_in`` gets the K-quant grid of ``k_bits``."""
        from fmgauge.quantization.grid import kquant_fits

        return self.k_bits is not None and kquant_fits(d_in)

    def resolved(self, widths: dict[str, int], fmt: str | None) -> QuantConfig:
        """This config with the defaults that depend on the model and the output format filled in: the group size
        (:func:`auto_group_size`) and the grid's symmetry (symmetric where the consumer of ``fmt`` needs it:
        transformers refuses asymmetric compressed-tensors zero points; GGUF's Q4_0 / Q5_0 / Q8_0 are symmetric)."""
        update: dict = {}
        if self.group_size is None:
            update["group_size"] = auto_group_size(widths, fmt)
        if self.sym is None:
            update["sym"] = fmt in SYMMETRIC_FORMATS
        return self.model_copy(update=update) if update else self

    def validate_for(self, widths: dict[str, int]) -> None:
        """The checks that need the model: the group size against every layer's input width."""
        if self.group_size is None:
            raise FmgaugeError("group_size is not resolved yet; call QuantConfig.resolved(widths, fmt) first.")
        for name, d_in in widths.items():
            check_group_size(self.group_size, d_in, ragged=self.ragged, layer=name)

    @property
    def high_bits_(self) -> int:
        return self.high_bits if self.high_bits is not None else min(8, self.bits + 1)

    @property
    def per_layer_bits(self) -> bool:
        """Whether every Linear ends with one bit width (not mixed, or mixed by whole layers / per channel)."""
        return self.method != "mixed" or self.mixed_unit == "layer" or self.group_size == -1

    @property
    def needs_gradients(self) -> bool:
        return self.method.startswith("sens") or self.method == "mixed"

    @property
    def needs_hessian(self) -> bool:
        """Whether the method reads H / H_F (everything but RTN, plain or as the base of 'mixed')."""
        return not (self.method == "rtn" or (self.method == "mixed" and self.mixed_base == "rtn"))

    @property
    def sequential_(self) -> bool:
        """Whether statistics are gathered block by block (see ``sequential``); never for RTN."""
        if not self.needs_hessian:
            return False
        if self.sequential is None:
            return self.method in ("gptq", "sens-gptq", "mixed")
        return self.sequential

    @property
    def weighted(self) -> bool:
        """Whether the method reads the loss-weighted statistics S_j / H_F."""
        return self.method in ("sens-gptq", "sens-awq") or (self.method == "mixed" and self.mixed_base == "sens-gptq")


SYMMETRIC_FORMATS = ("compressed-tensors", "gguf")
AUTO_GROUPS = (128, 64, 32)


def auto_group_size(widths: dict[str, int], fmt: str | None = None) -> int:
    """The default group size for layers of input widths ``widths`` (name -> d_in): 32 for GGUF (its blocks), else
    the largest of 128 / 64 / 32 that divides every width (smollm2-135m's 576 and 1536: 64), else -1 (per channel)."""
    if fmt == "gguf":
        return 32
    for g in AUTO_GROUPS:
        if all(w % g == 0 for w in widths.values()):
            return g
    return -1


Method = Callable[[dict[str, torch.Tensor], dict[str, LayerStats], QuantConfig, dict], dict]
QUANTIZERS: Registry[Method] = Registry("quantization method")


def _norm(h: torch.Tensor) -> torch.Tensor:
    return h / torch.diag(h).mean().clamp(min=1e-30)


def fisher_hessian(st: LayerStats, mix: float) -> torch.Tensor:
    """``(1-λ) H/mean diag + λ H_F/mean diag`` (H_F = 0 for a layer with no gradient falls back to H)."""
    _require(st, "H", "sens-gptq")
    if st.HF is None or float(torch.diag(st.HF).sum()) == 0 or mix == 0:
        return st.H
    return _norm(st.HF) if mix == 1 else (1 - mix) * _norm(st.H) + mix * _norm(st.HF)


def _require(st: LayerStats, attr: str, method: str) -> torch.Tensor:
    v = getattr(st, attr)
    if v is None:
        raise FmgaugeError(f"method {method!r} needs calibration statistic {attr!r} for layer {st.name}; capture "
                           "with full_hessian=True (and gradients=True for sensitivity methods).")
    return v


@QUANTIZERS.register("rtn")
def _rtn(weights, stats, cfg, extra):  # noqa: ANN001, ARG001
    from fmgauge.quantization.grid import rtn_kquant

    gb = extra.get("group_bits", {})
    return {n: (rtn_kquant(w, cfg.k_bits, search=cfg.grid_search) if cfg.k_layer(w.shape[1]) else
                rtn(w, cfg.bits, cfg.group_size, sym=cfg.sym, ragged=cfg.ragged, group_bits=gb.get(n),
                    search=cfg.grid_search), {})
            for n, w in weights.items()}


def _gptq_with(hessian: Callable[[LayerStats], torch.Tensor]):
    def run(weights, stats, cfg, extra):  # noqa: ANN001
        out = {}
        gb = extra.get("group_bits", {})
        for n, w in weights.items():
            h = hessian(stats[n])
            if cfg.k_layer(w.shape[1]):  # a GGUF K-quant grid, fixed before the column loop
                from fmgauge.quantization.grid import KQUANT_SUB, kquant_grid

                scale, zero, _ = kquant_grid(w, cfg.k_bits, weights=torch.diag(h), search=cfg.grid_search)
                qw, loss = gptq_quantize(w, h, cfg.k_bits, KQUANT_SUB, sym=True, percdamp=cfg.percdamp,
                                         blocksize=cfg.blocksize, grid=(scale, zero))
            else:
                qw, loss = gptq_quantize(w, h, cfg.bits, cfg.group_size, sym=cfg.sym,
                                         percdamp=cfg.percdamp, blocksize=cfg.blocksize, actorder=cfg.actorder,
                                         static_groups=cfg.static_groups, ragged=cfg.ragged, group_bits=gb.get(n),
                                         search=cfg.grid_search)
            out[n] = (qw, {"gptq_loss": loss})
        return out

    return run


QUANTIZERS.add("gptq", _gptq_with(lambda st: _require(st, "H", "gptq")))
QUANTIZERS.add("sens-gptq", lambda w, s, c, e: _gptq_with(lambda st: fisher_hessian(st, c.fisher_mix))(w, s, c, e))


def unfoldable_inputs(weights: dict[str, torch.Tensor]) -> set[str]:
    """Linears whose input channels no preceding op can absorb a per-channel scale for: ``o_proj`` under
    grouped-query attention (``v_proj`` has fewer output rows than ``o_proj`` has inputs). AutoAWQ skips their scale
    search (``if v_proj.weight.shape == o_proj.weight.shape``); so does fmgauge, so every AWQ scale can be folded
    into the deployed model (:mod:`.formats.fold`)."""
    out = set()
    for n, w in weights.items():
        if n.endswith("self_attn.o_proj"):
            v = weights.get(n[: -len("o_proj")] + "v_proj")
            if v is None or v.shape[0] != w.shape[1]:
                out.add(n)
    return out


def _awq(weights, stats, cfg, extra, *, sensitivity: bool):  # noqa: ANN001
    names = list(weights)
    method = "sens-awq" if sensitivity else "awq"
    if sensitivity:
        hs = [fisher_hessian(stats[n], 1.0) for n in names]
    else:
        hs = [_require(stats[n], "H", method) for n in names]
    ws = [weights[n] for n in names]
    s = None  # no op to fold a scale into (o_proj under GQA): clipping search + RTN only
    info: dict = {"alpha": None, "scale_search": "skipped (input not foldable)"}
    if not set(names) <= extra.get("unscaled", set()):
        if sensitivity:
            act = torch.stack([_require(stats[n], "fisher", method) for n in names]).sum(0).sqrt()
        else:
            act = _require(stats[names[0]], "act_abs", method)
        res = search_scales(ws, act, hs, cfg.bits, cfg.group_size, n_grid=cfg.n_grid, duo_scaling=cfg.duo_scaling,
                            sym=cfg.sym, ragged=cfg.ragged)
        s = res.scales
        info = {"alpha": res.alpha, "identity_loss": res.identity_loss, "best_loss": float(res.losses.min())}
    out = {}
    for n, w, h in zip(names, ws, hs, strict=True):
        ws_ = w.float() if s is None else w.float() * s
        layer_info = dict(info)
        if cfg.clip:
            hs_ = h if s is None else h / s.unsqueeze(0) / s.unsqueeze(1)
            ratio = search_clip(ws_, hs_, cfg.bits, cfg.group_size, n_grid=cfg.n_grid, max_shrink=cfg.max_shrink,
                                sym=cfg.sym)
            ws_ = clip_weight(ws_, ratio, cfg.group_size)
            layer_info["mean_clip"] = float(ratio.mean())
        qw = rtn(ws_, cfg.bits, cfg.group_size, sym=cfg.sym, ragged=cfg.ragged)
        qw.input_scale = None if s is None else s.clone()
        out[n] = (qw, layer_info)
    return out


QUANTIZERS.add("awq", lambda w, s, c, e: _awq(w, s, c, e, sensitivity=False))
QUANTIZERS.add("sens-awq", lambda w, s, c, e: _awq(w, s, c, e, sensitivity=True))


@QUANTIZERS.register("mixed")
def _mixed(weights, stats, cfg, extra):  # noqa: ANN001
    return QUANTIZERS.get(cfg.mixed_base)(weights, stats, cfg, extra)


def prepare(weights: dict[str, torch.Tensor], stats: CalibStats | None, cfg: QuantConfig
            ) -> tuple[Method, dict, dict]:
    """Validate ``cfg`` for ``weights`` (name -> (d_out, d_in)); returns the method, its ``extra`` arguments (mixed:
    the bit allocation from the full-precision ``S_j`` of ``stats``) and method-level facts for the record."""
    cfg.validate_for({n: w.shape[1] for n, w in weights.items()})
    if cfg.needs_gradients and (stats is None or not stats.gradients):
        raise FmgaugeError(f"method {cfg.method!r} needs gradients in the calibration pass (gradients=True).")
    extra: dict = {"unscaled": unfoldable_inputs(weights)}
    summary: dict = {}
    if cfg.method == "mixed":
        from fmgauge.quantization.mixed import allocate_bits

        alloc = allocate_bits(weights, {n: stats.layers[n].fisher for n in weights}, cfg.bits, cfg.group_size,
                              high_bits=cfg.high_bits_, fraction=cfg.mixed_fraction, unit=cfg.mixed_unit)
        extra["group_bits"] = alloc.group_bits
        summary.update(avg_bits=alloc.avg_bits, n_upgraded_groups=alloc.n_upgraded)
    return QUANTIZERS.get(cfg.method), extra, summary


def quantize_weights(
    weights: dict[str, torch.Tensor], stats: CalibStats | None, cfg: QuantConfig, *, progress: bool = True,
) -> tuple[dict[str, QuantizedWeight], dict[str, dict], dict]:
    """Quantize every weight in ``weights`` (name -> (d_out, d_in)) with ``cfg``; returns (qweights, info, extra).

    ``stats`` may be None for a method that reads no statistics (RTN). ``extra`` holds method-level facts (mixed:
    the bit allocation and its average bits).
    """
    if stats is None:
        if cfg.needs_hessian or cfg.needs_gradients:
            raise FmgaugeError(f"method {cfg.method!r} needs a calibration capture (stats=None given).")
        fn, extra, summary = prepare(weights, None, cfg)
        groups = {n: [n] for n in weights}
        layer_stats: dict = {}
    else:
        missing = [n for n in weights if n not in stats.layers]
        if missing:
            raise FmgaugeError(f"no calibration statistics for {len(missing)} layer(s), e.g. {missing[:3]}.")
        fn, extra, summary = prepare(weights, stats, cfg)
        groups = stats.input_groups()
        layer_stats = stats.layers
    qweights: dict[str, QuantizedWeight] = {}
    infos: dict[str, dict] = {}
    from fmgauge.core.progress import progress as progress_tracker

    todo = [[n for n in members if n in weights] for members in groups.values()]
    todo = [t for t in todo if t]
    with progress_tracker(f"{cfg.method} {cfg.bits}-bit g{cfg.group_size}", len(todo), enabled=progress) as bar:
        for members in todo:
            res = fn({n: weights[n] for n in members}, layer_stats, cfg, extra)
            for n, (qw, info) in res.items():
                qweights[n] = qw
                infos[n] = info
            bar.advance(1)
    return qweights, infos, summary
