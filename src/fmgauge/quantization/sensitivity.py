"""Per-channel sensitivity metrics, their ground truth by perturbation, and how well each predicts it.

Xu, "Activation Sensitivity as a Unifying Principle for Post-Training Quantization" (2026, arXiv 2601.11663):
the sensitivity of input channel j of a Linear is the expected loss change when that channel's weights are
perturbed; first order, ``S_j = E[Σ_i (g_i x_j)²]`` (g = ∂L/∂y). The metrics compared, per input channel j of a
weight ``W`` (d_out, d_in), from one calibration pass (:mod:`.calibration`):

==================  ============================================  =====================================
``act_magnitude``   ``E|x_j|``                                    AWQ (uniform downstream gradients)
``hessian_diag``    ``H_jj = 2 E[x_j²]``                          GPTQ (output error, no loss weighting)
``fisher``          ``S_j = E[‖g‖² x_j²]``                        gradient-weighted activation (Fisher)
``obd``             ``Σ_i W_ij² H_jj / 2``                        Optimal Brain Damage saliency
``fisher_error``    ``S_j ‖Δw_j‖² / (2 d_out)``                   second-order ΔL of the actual perturbation
==================  ============================================  =====================================

Ground truth: for a sample of layers, quantize ONLY the columns of one channel group (``gt_group`` channels,
round-to-nearest at ``gt_bits`` with one grid per row over those columns) and measure on held-out text ``ΔL`` =
the change of the mean token NLL, and ``ΔL_rms`` = the RMS of the per-token NLL changes (what the first-order
expansion predicts; ΔL itself can have either sign). A group's metric is the sum over its channels. Spearman and Kendall
correlations between each metric and ΔL are reported per layer type (groups pooled over the sampled blocks),
with 95% CIs (Spearman: bootstrap over groups; Kendall: Fieller-Hartley-Pearson z-interval).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fmgauge.core.stats import rank_correlation_ci
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.calibration import CalibStats, LayerStats, layer_block, layer_type, linear_layers
from fmgauge.quantization.grid import fake_quantize, group_index

METRICS = ("act_magnitude", "hessian_diag", "fisher", "obd", "fisher_error")


def channel_metrics(W: torch.Tensor, st: LayerStats, *, bits: int = 2) -> dict[str, torch.Tensor]:
    """Every metric of the module docstring for the d_in input channels of ``W`` (d_out, d_in)."""
    W = W.float()
    h = 2 * st.sq
    out = {"act_magnitude": st.act_abs.clone(), "hessian_diag": h, "obd": W.pow(2).sum(0) * h / 2}
    if st.fisher is not None:
        out["fisher"] = st.fisher.clone()
        dw = (fake_quantize(W, bits, -1) - W).pow(2).sum(0)  # column errors of per-row RTN of the whole layer
        out["fisher_error"] = st.fisher * dw / (2 * W.shape[0])
    return {k: v.cpu() for k, v in out.items()}


def group_metrics(W: torch.Tensor, st: LayerStats, group: int, *, bits: int) -> dict[str, np.ndarray]:
    """Metrics summed over channel groups of ``group`` columns -> (G,) each; ``fisher_error`` uses the group's
    own RTN error (the perturbation of the ground truth)."""
    g_idx = group_index(W.shape[1], group)
    n_groups = int(g_idx.max()) + 1
    m = channel_metrics(W, st, bits=bits)
    if "fisher_error" in m:  # the error of quantizing each group alone at ``bits`` (one grid per row per group)
        dw = (fake_quantize(W.float(), bits, group) - W.float()).pow(2).sum(0).cpu()
        m["fisher_error"] = m["fisher"] * dw / (2 * W.shape[0])
    return {k: torch.zeros(n_groups).index_add_(0, g_idx, v.float()).numpy() for k, v in m.items()}


@torch.no_grad()
def token_nll(model, heldout: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Next-token NLL (nats) of ``model`` at every position of ``heldout`` (N, T) -> (N, T-1)."""
    dev = next(model.parameters()).device
    ids = heldout.to(dev)
    logits = model(ids, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").cpu()


@torch.no_grad()
def perturbation_truth(model, layer: str, heldout: torch.Tensor, group: int, bits: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001,E501
    """Quantize each channel group of Linear ``layer`` alone (others at full precision) -> two (G,) arrays:
    ``ΔL`` (change of the mean token NLL) and ``ΔL_rms`` (root mean square of the per-token NLL changes, the
    quantity the first-order expansion behind S_j predicts: ``E[(Δℓ_t)²] ∝ Σ_i g_ti² x_tj²``)."""
    mod = dict(model.named_modules())[layer]
    W0 = mod.weight.data.clone()
    base = token_nll(model, heldout)
    g_idx = group_index(W0.shape[1], group)
    deltas, rms = [], []
    try:
        for g in range(int(g_idx.max()) + 1):
            cols = (g_idx == g).nonzero().squeeze(1)
            W = W0.clone()
            W[:, cols] = fake_quantize(W0[:, cols].float(), bits, -1).to(W0.dtype)
            mod.weight.data = W
            d = token_nll(model, heldout) - base
            deltas.append(float(d.mean()))
            rms.append(float(d.pow(2).mean().sqrt()))
    finally:
        mod.weight.data = W0
    return np.array(deltas), np.array(rms)


def sample_layers(names: list[str], blocks: list[int] | None) -> list[str]:
    """The Linears of the chosen blocks (default: first, middle and last block)."""
    all_blocks = sorted({layer_block(n) for n in names if layer_block(n) >= 0})
    if not all_blocks:
        raise FmgaugeError("no numbered blocks found in the layer names; pass the layers explicitly.")
    if blocks is None:
        blocks = sorted({all_blocks[0], all_blocks[len(all_blocks) // 2], all_blocks[-1]})
    bad = [b for b in blocks if b not in all_blocks]
    if bad:
        raise FmgaugeError(f"blocks {bad} do not exist; the model has blocks {all_blocks[0]}..{all_blocks[-1]}.")
    return [n for n in names if layer_block(n) in blocks]


@dataclass
class SensitivityResult:
    """Layer summaries, channel metrics of every layer, ground-truth rows and the correlation table."""

    layers: pd.DataFrame  # one row per Linear: name, type, block, d_in, total of each metric, top channel
    channels: dict[str, dict[str, np.ndarray]]  # layer -> metric -> (d_in,)
    truth: pd.DataFrame  # one row per (layer, group): delta_loss and each metric summed over the group
    correlations: pd.DataFrame  # layer type x metric: spearman, kendall (+ CIs), n
    meta: dict = field(default_factory=dict)


TARGETS = ("delta_loss", "delta_loss_rms")


def correlation_table(truth: pd.DataFrame, metrics: tuple[str, ...] = METRICS, *, targets: tuple[str, ...] = TARGETS,
                      n_boot: int = 1000) -> pd.DataFrame:
    """Spearman/Kendall of each metric with each ground-truth target, per layer type and over all groups."""
    rows = []
    for ltype, df in [*truth.groupby("type"), ("all", truth)]:
        for target in targets:
            if target not in df:
                continue
            for m in metrics:
                if m not in df:
                    continue
                r = {"type": ltype, "target": target, "metric": m, "n": len(df)}
                for method in ("spearman", "kendall"):
                    e = rank_correlation_ci(df[m].to_numpy(), df[target].to_numpy(), method=method, n_boot=n_boot)
                    r.update({method: e.value, f"{method}_lo": e.lo, f"{method}_hi": e.hi})
                rows.append(r)
    return pd.DataFrame(rows)


def analyse(
    model, stats: CalibStats, heldout: torch.Tensor | None, *, gt_blocks: list[int] | None = None,  # noqa: ANN001
    gt_group: int = 64, gt_bits: int = 2, progress: bool = True, n_boot: int = 1000,
) -> SensitivityResult:
    """Metrics for every captured Linear; with ``heldout`` (N, T) also ground truth on the sampled blocks."""
    from fmgauge.core.progress import progress as progress_tracker

    if not stats.gradients:
        raise FmgaugeError("the sensitivity analysis needs gradients in the calibration pass (gradients=True).")
    layers = linear_layers(model)
    names = [n for n in stats.layers if n in layers]
    channels, rows = {}, []
    for n in names:
        m = channel_metrics(layers[n].weight.data, stats.layers[n], bits=gt_bits)
        channels[n] = {k: v.numpy() for k, v in m.items()}
        rows.append({"layer": n, "type": layer_type(n), "block": layer_block(n), "d_in": stats.layers[n].d_in,
                     **{f"total_{k}": float(v.sum()) for k, v in m.items()},
                     **{f"top_{k}": int(v.argmax()) for k, v in m.items()}})
    truth = pd.DataFrame()
    corr = pd.DataFrame()
    meta = {"gt_group": gt_group, "gt_bits": gt_bits}
    if heldout is not None:
        sampled = sample_layers(names, gt_blocks)
        recs = []
        with progress_tracker("ground truth (ΔL per channel group)", len(sampled), enabled=progress) as bar:
            for n in sampled:
                W = layers[n].weight.data
                gm = group_metrics(W, stats.layers[n], gt_group, bits=gt_bits)
                dl, rms = perturbation_truth(model, n, heldout, gt_group, gt_bits)
                for g in range(len(dl)):
                    recs.append({"layer": n, "type": layer_type(n), "block": layer_block(n), "group": g,
                                 "delta_loss": float(dl[g]), "delta_loss_rms": float(rms[g]),
                                 **{k: float(v[g]) for k, v in gm.items()}})
                bar.advance(1)
        truth = pd.DataFrame(recs)
        corr = correlation_table(truth, n_boot=n_boot)
        meta.update(gt_layers=sampled, heldout_shape=list(heldout.shape),
                    base_nll=float(token_nll(model, heldout).mean()))
    return SensitivityResult(pd.DataFrame(rows), channels, truth, corr, meta)


def plot_heatmaps(res: SensitivityResult, path: Path, *, metrics: tuple[str, ...] = METRICS[:4]) -> Path:
    """Blocks × layer types of log10(layer total / max over layers), one panel per metric."""
    import matplotlib.pyplot as plt

    from fmgauge.core.report import figure_backend, save_figure

    figure_backend()
    df = res.layers
    metrics = tuple(m for m in metrics if f"total_{m}" in df)
    types = list(dict.fromkeys(df["type"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.18 * df["block"].nunique() + 2.2),
                             squeeze=False, layout="constrained")
    for ax, m in zip(axes[0], metrics, strict=True):
        piv = df.pivot_table(index="block", columns="type", values=f"total_{m}")[types]
        v = np.log10(piv.to_numpy() / np.nanmax(piv.to_numpy()) + 1e-12)
        im = ax.imshow(v, aspect="auto", cmap="magma", vmin=max(np.nanmin(v), -6))
        ax.set_xticks(range(len(types)), types, rotation=60, fontsize=7)
        ax.set_ylabel("block")
        ax.set_title(m, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8, label="log10(total / max)")
    fig.suptitle("Layer sensitivity (sum over input channels)", fontsize=10)
    return save_figure(fig, path)


def plot_channel_heatmap(res: SensitivityResult, ltype: str, path: Path, *, metric: str = "fisher") -> Path:
    """Blocks × input channels of ``metric`` / max within the layer, for layers of type ``ltype``."""
    import matplotlib.pyplot as plt

    from fmgauge.core.report import figure_backend, save_figure

    figure_backend()
    names = [n for n in res.channels if layer_type(n) == ltype and metric in res.channels[n]]
    if not names:
        raise FmgaugeError(f"no layer of type {ltype!r} with metric {metric!r}.")
    mat = np.stack([res.channels[n][metric] / max(res.channels[n][metric].max(), 1e-30) for n in names])
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(names) + 1.8), layout="constrained")
    im = ax.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(names)), [str(layer_block(n)) for n in names], fontsize=6)
    ax.set_xlabel("input channel j")
    ax.set_ylabel("block")
    ax.set_title(f"{metric} of {ltype} input channels (÷ layer max)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def plot_truth_scatter(res: SensitivityResult, path: Path, *, metrics: tuple[str, ...] = METRICS) -> Path:
    """ΔL vs each metric (log-log) over all ground-truth groups, coloured by layer type."""
    import matplotlib.pyplot as plt

    from fmgauge.core.report import figure_backend, save_figure

    figure_backend()
    t = res.truth
    metrics = tuple(m for m in metrics if m in t)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.1 * len(metrics), 3.0), squeeze=False, layout="constrained")
    for ax, m in zip(axes[0], metrics, strict=True):
        for ltype, df in t.groupby("type"):
            ax.scatter(df[m], df["delta_loss"].clip(lower=1e-7), s=6, label=ltype, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(m, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("ΔL (nats/token, clipped at 1e-7)")
    axes[0, 0].legend(fontsize=6)
    return save_figure(fig, path)
