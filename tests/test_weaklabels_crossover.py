"""Crossover estimation: known answers on hand-made ΔAUC curves."""

from __future__ import annotations

import numpy as np
import pytest

from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.crossover import empirical_crossover, first_down_crossing, rate_only_crossover

GRID = np.array([10.0, 100.0, 1000.0])


def test_crossover_interpolates_in_log_n():
    # mean ΔAUC +0.05 at 100 and -0.05 at 1000: the sign change is half-way in log n, at sqrt(100*1000)
    delta = np.array([[0.1, 0.05, -0.05], [0.1, 0.05, -0.05]])
    xo = empirical_crossover(GRID, delta, n_boot=50)
    assert xo.status == "crossover"
    assert xo.n_star == pytest.approx(np.sqrt(1e5))


def test_no_crossover_reports_the_side():
    assert empirical_crossover(GRID, np.full((3, 3), 0.02), n_boot=20).status == "above-range"
    assert empirical_crossover(GRID, np.full((3, 3), -0.02), n_boot=20).status == "below-range"
    assert empirical_crossover(GRID, np.full((3, 3), -0.02), n_boot=20).describe().startswith("< 10")


def test_first_crossing_is_the_first_down_crossing():
    status, n = first_down_crossing(np.array([1.0, 10, 100, 1000]), np.array([0.1, -0.1, 0.1, -0.1]))
    assert status == "crossover" and n == pytest.approx(np.sqrt(10))


def test_bootstrap_ci_brackets_the_estimate_and_reflects_seed_spread():
    rng = np.random.default_rng(0)
    base = np.array([0.08, 0.04, 0.01, -0.02, -0.04])
    grid = np.array([10.0, 30, 100, 300, 1000])
    tight = empirical_crossover(grid, base + rng.normal(0, 0.002, (8, 5)), n_boot=300)
    loose = empirical_crossover(grid, base + rng.normal(0, 0.03, (8, 5)), n_boot=300)
    assert tight.lo <= tight.n_star <= tight.hi
    assert (tight.hi / tight.lo) < (loose.hi / max(loose.lo, 1e-9))
    assert tight.share_in_range == 1.0


def test_rate_only_crossover_is_where_gold_reaches_labeler_accuracy():
    xo = rate_only_crossover(GRID, np.array([0.6, 0.7, 0.9]), labeler_accuracy=0.8)
    assert xo.status == "crossover" and xo.n_star == pytest.approx(np.sqrt(1e5))
    assert rate_only_crossover(GRID, np.array([0.85, 0.9, 0.95]), 0.8).status == "below-range"
    assert rate_only_crossover(GRID, np.array([0.6, 0.65, 0.7]), 0.8).status == "above-range"


@pytest.mark.parametrize("grid", [[10.0], [10.0, 10.0], [100.0, 10.0], [0.0, 10.0]])
def test_bad_grid_is_refused(grid):
    with pytest.raises(FmgaugeError, match="n_grid"):
        empirical_crossover(np.array(grid), np.zeros((2, len(grid))))
