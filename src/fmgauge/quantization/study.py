"""``fmgauge quantize sensitivity``: the paper's claim made testable on a real model.

One calibration pass (cached) gives every metric of :mod:`.sensitivity` for every Linear; perturbation ground truth
on the sampled blocks gives ΔL per channel group on held-out text (the first ``heldout_windows`` windows of
``heldout_len`` tokens of WikiText-2 *test*); the report shows the rank correlation of each metric with the ground
truth per layer type (95% bootstrap CIs), heat maps across layers and a scatter of ΔL vs each metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fmgauge.core.models import DeviceName
from fmgauge.core.report import Report, Section, render_html, render_markdown
from fmgauge.core.store import RunStore
from fmgauge.quantization.pipeline import CalibConfig, calibrate
from fmgauge.quantization.sensitivity import (
    METRICS,
    SensitivityResult,
    analyse,
    plot_channel_heatmap,
    plot_heatmaps,
    plot_truth_scatter,
)
from fmgauge.quantization.text_data import TextSource, token_stream


class SensitivityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m", description="Registered name, local directory or hub id.")
    calib: CalibConfig = Field(default_factory=CalibConfig)
    heldout_windows: int = Field(4, description="Held-out windows (WikiText-2 test) for the ground truth.")
    heldout_len: int = Field(256, description="Tokens per held-out window.")
    gt_blocks: list[int] | None = Field(None, description="Blocks whose Linears get ground truth (default: first, "
                                                          "middle, last).")
    gt_group: int = Field(64, description="Input channels per perturbed group.")
    gt_bits: int = Field(2, description="Bits of the RTN perturbation of one group.")
    n_boot: int = Field(1000, description="Bootstrap resamples for the correlation CIs.")
    device: DeviceName = Field("auto", description="auto|cpu|cuda|mps")
    dtype: str = Field("float32", description="float32|float16|bfloat16")


@dataclass
class SensitivityStudy:
    run_dir: Path
    result: SensitivityResult
    summary: dict


def heldout_sequences(stream, n: int, length: int):  # noqa: ANN001, ANN201
    """The first ``n`` consecutive windows of ``length`` tokens of ``stream`` -> (n, length)."""
    from fmgauge.core.validation import FmgaugeError

    if len(stream) < n * length:
        raise FmgaugeError(f"held-out text has {len(stream)} tokens; need {n} × {length}.")
    return stream[: n * length].reshape(n, length)


def run_sensitivity(cfg: SensitivityConfig, out: str | Path, *, progress: bool = True) -> SensitivityStudy:
    """Calibrate, compute metrics + ground truth, write tables, figures and the report into ``out``."""
    from fmgauge.core.text_models import load_text_model

    store = RunStore(out)
    store.save_config(cfg.model_dump())
    tm = load_text_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    stats, usage = calibrate(tm, cfg.calib, gradients=True, full_hessian=False, progress=progress)
    heldout = None
    if cfg.heldout_windows > 0:
        heldout = heldout_sequences(token_stream(tm.tokenizer, TextSource("wikitext2", "test")),
                                    cfg.heldout_windows, cfg.heldout_len)
    res = analyse(tm.model, stats, heldout, gt_blocks=cfg.gt_blocks, gt_group=cfg.gt_group, gt_bits=cfg.gt_bits,
                  progress=progress, n_boot=cfg.n_boot)
    root = store.root
    res.layers.to_parquet(root / "layers.parquet", index=False)
    np.savez_compressed(root / "channels.npz", **{f"{n}|{m}": v for n, d in res.channels.items() for m, v in d.items()})
    if len(res.truth):
        res.truth.to_parquet(root / "truth.parquet", index=False)
        res.correlations.to_parquet(root / "correlations.parquet", index=False)
    figs = [("Layer sensitivity per metric", plot_heatmaps(res, root / "figures" / "heatmap_layers.png"))]
    for lt in ("down_proj", "q_proj"):
        if any(n.endswith(lt) for n in res.channels):
            figs.append((f"S_j across {lt} channels",
                         plot_channel_heatmap(res, lt, root / "figures" / f"heatmap_channels_{lt}.png")))
    if len(res.truth):
        figs.append(("Ground truth vs metrics", plot_truth_scatter(res, root / "figures" / "truth_scatter.png")))
    summary = {"model": cfg.model, "calibration": {"n_sequences": stats.n_sequences, "seqlen": stats.seqlen,
                                                   "cached": stats.meta.get("cached"), "usage": usage.to_dict()},
               "meta": res.meta, "best": best_metrics(res.correlations),
               "correlations": res.correlations.to_dict(orient="records")}
    store.write_json("summary.json", summary)
    report = build_report(cfg, res, summary, [(c, str(p.relative_to(root))) for c, p in figs])
    render_html(report, root / "report.html")
    render_markdown(report, root / "report.md")
    return SensitivityStudy(root, res, summary)


def best_metrics(corr: pd.DataFrame) -> dict:
    """Per target, over all sampled groups: the metric with the highest Spearman, and which others' CIs overlap."""
    out = {}
    if corr.empty:
        return out
    for target, d in corr[corr.type == "all"].groupby("target"):
        d = d.sort_values("spearman", ascending=False)
        top = d.iloc[0]
        out[target] = {"metric": top.metric, "spearman": float(top.spearman),
                       "tied_within_ci": [m for m, hi in zip(d.metric[1:], d.spearman_hi[1:], strict=True)
                                          if hi >= top.spearman_lo]}
    return out


def _corr_table(corr: pd.DataFrame, target: str) -> pd.DataFrame:
    d = corr[corr.target == target]
    rows = []
    for ltype, g in d.groupby("type", sort=False):
        r = {"layer type": ltype, "groups": int(g.n.iloc[0])}
        for m in METRICS:
            x = g[g.metric == m]
            if len(x):
                x = x.iloc[0]
                r[m] = f"{x.spearman:.2f} [{x.spearman_lo:.2f}, {x.spearman_hi:.2f}] / τ {x.kendall:.2f}"
        rows.append(r)
    return pd.DataFrame(rows)


def build_report(cfg: SensitivityConfig, res: SensitivityResult, summary: dict, figs: list[tuple[str, str]]) -> Report:
    c = cfg.calib
    lead = (f"Which input channels of {cfg.model} matter when quantizing? {len(res.layers)} Linear layers, "
            f"calibration {summary['calibration']['n_sequences']} × {summary['calibration']['seqlen']} tokens.")
    from fmgauge.quantization.compare import PREQUANTIZED

    paras = [f"Calibration: {c.n_samples} random windows × {c.seqlen} tokens of {c.text} {c.split} (seed {c.seed}); "
             "one forward + backward pass of the summed LM loss; metrics per input channel j: act_magnitude = "
             "E|x_j| (AWQ), hessian_diag = 2E[x_j²] (GPTQ), fisher = S_j = E[‖g‖²x_j²], obd = Σ_i W_ij² H_jj/2, "
             "fisher_error = S_j‖Δw_j‖²/(2 d_out)."]
    if PREQUANTIZED.get(cfg.model):
        paras.append("CAVEAT: " + PREQUANTIZED[cfg.model])
    sections = [Section("Setup", paras)]
    if len(res.truth):
        m = res.meta
        gt = [f"Ground truth: each group of {m['gt_group']} input channels of every Linear in blocks "
              f"{sorted({int(b) for b in res.truth.block})} quantized alone (RTN, {m['gt_bits']} bits, one grid per "
              f"row), on {m['heldout_shape'][0]} × {m['heldout_shape'][1]} held-out WikiText-2 test tokens (base NLL "
              f"{m['base_nll']:.3f}). Cells: Spearman ρ [95% bootstrap CI over groups] / Kendall τ; groups of the "
              "sampled blocks pooled per layer type."]
        for target, b in summary["best"].items():
            tied = ", ".join(b["tied_within_ci"]) or "none"
            gt.append(f"Against {target}: best metric {b['metric']} (ρ = {b['spearman']:.2f}); metrics whose CI "
                      f"reaches its lower bound: {tied}.")
        sections.append(Section("Metrics vs ground truth", gt, [
            ("Rank correlation with ΔL_rms (RMS per-token loss change)", _corr_table(res.correlations,
                                                                                     "delta_loss_rms")),
            ("Rank correlation with ΔL (mean loss change)", _corr_table(res.correlations, "delta_loss"))]))
    sections.append(Section("Where the sensitivity is", [], [], figs))
    return Report(f"fmgauge quantize sensitivity — {cfg.model}", lead, sections,
                  footer="Xu 2026, 'Activation Sensitivity as a Unifying Principle for Post-Training Quantization', "
                         "arXiv 2601.11663.")
