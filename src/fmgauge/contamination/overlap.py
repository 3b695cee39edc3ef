"""Image-side near-neighbour overlap: τ from an out-of-domain control, flagged fraction with a Wilson interval.

Notation: ``s_b`` (N_b,) top-1 cosine similarity of each benchmark image to the reference corpus, ``s_c``
(N_c,) the same for the control images (known not to be in the reference). Following the source paper (image-side
detector; spec detector 4):

    τ(α) = the (α + 1)-th largest of s_c          (α = 0: τ = max s_c)
    flagged_i = s_b,i > τ                          (strictly greater)
    flagged fraction = k / N_b with k = Σ flagged_i, and its Wilson score interval

so at most α control images satisfy s_c > τ (fewer under ties) whatever the distribution, and the control's own
flag count is reported next to the benchmark's. α counts control images (0 <= α < N_c). A new image
exchangeable with the control images (same distribution, not in the reference) clears τ with probability at most
(α + 1) / (N_c + 1) (the rank argument of conformal prediction): that is the false-flag rate τ guarantees.
"""

from __future__ import annotations

import numpy as np

from fmgauge.core.stats import Estimate, wilson_ci
from fmgauge.core.validation import FmgaugeError


def threshold_from_control(control_top1: np.ndarray, alpha: int = 0) -> float:
    """τ such that at most ``alpha`` of ``control_top1`` (N_c,) are > τ: the (alpha + 1)-th largest value."""
    s = np.asarray(control_top1, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise FmgaugeError("the control set has no embedded images; τ needs at least one control image.")
    if not np.isfinite(s).all():
        raise FmgaugeError("control similarities contain NaN/inf; every control image needs a reference neighbour.")
    if isinstance(alpha, bool) or not float(alpha).is_integer() or not 0 <= alpha < len(s):
        raise FmgaugeError(f"--alpha must be a whole number of control images in 0..{len(s) - 1} (the control has "
                           f"{len(s)} images), got {alpha!r}.")
    return float(np.sort(s)[::-1][int(alpha)])


def flags(top1: np.ndarray, tau: float) -> np.ndarray:
    """(N,) bool: similarity strictly above τ."""
    return np.asarray(top1, dtype=np.float64) > tau


def flagged_fraction(flagged: np.ndarray, *, level: float = 0.95) -> Estimate:
    """k / N of a (N,) bool mask with its Wilson score interval at ``level``."""
    f = np.asarray(flagged, dtype=bool)
    return wilson_ci(int(f.sum()), len(f), level=level)


def similarity_histograms(benchmark_top1: np.ndarray, control_top1: np.ndarray, *,
                          bins: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared bin edges (bins + 1,) and the counts (bins,) of benchmark and control top-1 similarities."""
    both = np.concatenate([benchmark_top1, control_top1]).astype(np.float64)
    edges = np.histogram_bin_edges(both, bins=bins)
    return edges, np.histogram(benchmark_top1, edges)[0], np.histogram(control_top1, edges)[0]


def plot_histograms(benchmark_top1: np.ndarray, control_top1: np.ndarray, tau: float, path, *,
                    embedder: str = "", control_label: str = "control", xlabel: str | None = None) -> None:
    """Density histograms of benchmark vs control top-1 similarity with τ marked, saved to ``path``."""
    import matplotlib.pyplot as plt

    from fmgauge.core.report import figure_backend, save_figure

    figure_backend()
    edges, _, _ = similarity_histograms(benchmark_top1, control_top1)
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    ax.hist(control_top1, bins=edges, alpha=0.55, density=True, color="tab:gray",
            label=f"{control_label} (n={len(control_top1)})")
    ax.hist(benchmark_top1, bins=edges, alpha=0.55, density=True, color="tab:red",
            label=f"benchmark (n={len(benchmark_top1)})")
    ax.axvline(tau, color="k", ls="--", lw=1, label=f"τ = {tau:.4f}")
    ax.set_xlabel(xlabel or f"top-1 cosine similarity to the reference{f' ({embedder})' if embedder else ''}")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    save_figure(fig, path)
