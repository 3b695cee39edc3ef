"""Where weak labels stop helping: the empirical crossover n* and the rate-only predicted crossover.

Notation: a grid of G gold-set sizes ``n_grid`` (G,), increasing; ``delta`` (S, G) = AUC(gold+weak) − AUC(gold)
per seed and grid point (seeds paired: the same gold set in both conditions).

- Empirical crossover (spec): the first point where the seed-mean ΔAUC changes sign from + to −, linearly
  interpolated in log n_gold; CI by resampling seeds with replacement. Outcomes: ``crossover``,
  ``above-range`` (weak labels still help at the largest n_gold: n* > max) and ``below-range`` (they already
  hurt at the smallest: n* < min).
- Rate-only predicted crossover: where the gold-only learning curve (seed-mean AUC) reaches the labeler's
  accuracy — the classical bound compares a student trained on gold labels with the labeler itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fmgauge.core.validation import FmgaugeError


@dataclass(frozen=True)
class Crossover:
    status: str  # crossover | above-range | below-range
    n_star: float | None  # None unless status == "crossover"
    lo: float | None = None  # CI bounds; 0 / inf mean "below" / "above" the grid
    hi: float | None = None
    share_in_range: float | None = None  # share of bootstrap resamples with a crossover inside the grid
    grid: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lo_g, hi_g = self.grid
        if self.status == "above-range":
            return f"> {hi_g:g} (above the grid)"
        if self.status == "below-range":
            return f"< {lo_g:g} (below the grid)"
        ci = ""
        if self.lo is not None and self.hi is not None:
            lo = f"<{lo_g:g}" if self.lo <= lo_g * (1 - 1e-9) else f"{self.lo:.0f}"
            hi = f">{hi_g:g}" if not np.isfinite(self.hi) else f"{self.hi:.0f}"
            ci = f" [{lo}, {hi}]"
        return f"{self.n_star:.0f}{ci}"


def first_down_crossing(n_grid: np.ndarray, f: np.ndarray) -> tuple[str, float | None]:
    """First + to − sign change of ``f`` (G,) over ``n_grid``, interpolated in log n."""
    if f[0] <= 0:
        return "below-range", None
    for i in range(len(f) - 1):
        if f[i] > 0 >= f[i + 1]:
            a, b = np.log(n_grid[i]), np.log(n_grid[i + 1])
            t = f[i] / (f[i] - f[i + 1])
            return "crossover", float(np.exp(a + t * (b - a)))
    return "above-range", None


def _as_number(status: str, n: float | None, n_grid: np.ndarray) -> float:
    return n if status == "crossover" else (np.inf if status == "above-range" else 0.0)


def _check(n_grid: np.ndarray, values: np.ndarray) -> None:
    if len(n_grid) < 2 or np.any(np.diff(n_grid) <= 0) or n_grid[0] <= 0:
        raise FmgaugeError(f"n_grid must be >= 2 increasing positive sizes, got {n_grid.tolist()}.")
    if values.shape[-1] != len(n_grid):
        raise FmgaugeError(f"curve has {values.shape[-1]} points but n_grid has {len(n_grid)}.")


def empirical_crossover(
    n_grid: np.ndarray, delta: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Crossover:
    """Crossover of the seed-mean ΔAUC curve with a bootstrap-over-seeds CI. ``delta`` is (S, G)."""
    n_grid = np.asarray(n_grid, dtype=float)
    delta = np.atleast_2d(np.asarray(delta, dtype=float))
    _check(n_grid, delta)
    status, n_star = first_down_crossing(n_grid, delta.mean(0))
    rng = np.random.default_rng(seed)
    s = delta.shape[0]
    boots = np.array([
        _as_number(*first_down_crossing(n_grid, delta[rng.integers(0, s, s)].mean(0)), n_grid)
        for _ in range(n_boot)
    ])
    a = (1 - level) / 2
    q = [float(np.quantile(boots, p, method="inverted_cdf")) for p in (a, 1 - a)]  # no inf - inf
    lo, hi = q if s > 1 else (None, None)
    share = float(np.mean(np.isfinite(boots) & (boots > 0)))
    return Crossover(status, n_star, lo, hi, share, (float(n_grid[0]), float(n_grid[-1])))


def rate_only_crossover(n_grid: np.ndarray, gold_auc: np.ndarray, labeler_accuracy: float) -> Crossover:
    """Where the seed-mean gold-only AUC (G,) first reaches the labeler's accuracy (interpolated in log n)."""
    n_grid = np.asarray(n_grid, dtype=float)
    gold_auc = np.asarray(gold_auc, dtype=float)
    _check(n_grid, gold_auc)
    status, n = first_down_crossing(n_grid, labeler_accuracy - gold_auc)
    return Crossover(status, n, grid=(float(n_grid[0]), float(n_grid[-1])))
