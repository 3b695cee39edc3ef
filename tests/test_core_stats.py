"""core.stats on data with known answers: hand-computed AUCs, Wilson bounds, t-intervals and planted shifts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from fmgauge.core.stats import auc, auc_ci, binary_auc_batch, mean_ci, paired_bootstrap, wilson_ci
from fmgauge.core.validation import FmgaugeError

Z95 = sps.norm.ppf(0.975)


# ------------------------------------------------------------------------------------------------ auc


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 (pos, neg) pairs ordered
        ([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8], 0.875),  # one tie counts 1/2: (1 + 0.5 + 1 + 1) / 4
        ([1, 0, 1, 0, 1], [3, 2, 2, 1, 1], 4 / 6),  # pos 3, 2, 1 vs neg 2, 1: 1 + 1 + .5 + 1 + 0 + .5
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),  # perfectly reversed
    ],
)
def test_auc_hand_computed(y, s, expected):
    assert auc(np.array(y), np.array(s)) == pytest.approx(expected)


def test_auc_two_column_scores_use_column_one():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, np.c_[1 - p1, p1]) == pytest.approx(0.75)


def test_auc_macro_ovr_k3_matches_sklearn():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert auc(y, p) == pytest.approx(expected)
    # macro = mean of the three one-vs-rest AUCs
    assert auc(y, p) == pytest.approx(np.mean([roc_auc_score(y == k, p[:, k]) for k in range(3)]))


def test_auc_k3_with_one_class_absent_uses_the_present_classes():
    y = np.array([0, 0, 2, 2])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.3, 0.2, 0.5], [0.1, 0.1, 0.8]])
    # renormalised class-2 share: 0.1/0.7, 0.2/0.4, 0.5/0.8, 0.8/0.9 -> both positives above both negatives
    assert auc(y, p) == pytest.approx(1.0)


def test_auc_refuses_single_class_and_length_mismatch():
    with pytest.raises(FmgaugeError, match="single class"):
        auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(FmgaugeError, match="y is length 3 and scores is length 2"):
        auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))


binary_labels = st.lists(st.integers(0, 1), min_size=2, max_size=40).filter(lambda v: 0 < sum(v) < len(v))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), y=binary_labels)
def test_auc_of_complement_scores_sums_to_one(data, y):
    s = np.array(data.draw(st.lists(st.integers(0, 5), min_size=len(y), max_size=len(y)))) / 5.0  # many ties
    y = np.array(y)
    assert auc(y, s) + auc(y, 1 - s) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), y=binary_labels)
def test_auc_invariant_to_monotone_transforms(data, y):
    s = np.array(data.draw(st.lists(st.integers(-20, 20), min_size=len(y), max_size=len(y))), dtype=float)
    y = np.array(y)
    base = auc(y, s)
    assert auc(y, 3 * s + 7) == pytest.approx(base)
    assert auc(y, np.exp(s / 10)) == pytest.approx(base)
    assert auc(y, np.arctan(s)) == pytest.approx(base)


# ------------------------------------------------------------------------------------------- bootstrap


def testbinary_auc_batch_equals_a_loop_of_roc_auc_score():
    rng = np.random.default_rng(1)
    y = (rng.random(40) < 0.4).astype(float)
    s = np.round(rng.random(40) + 0.4 * y, 1)  # rounded: plenty of ties
    idx = rng.integers(0, 40, size=(200, 40))
    idx[0] = np.flatnonzero(y == 1)[0]  # one single-class resample -> NaN
    got = binary_auc_batch(y, s, idx)
    want = np.array([roc_auc_score(y[i], s[i]) if len(np.unique(y[i])) > 1 else np.nan for i in idx])
    assert np.isnan(got[0]) and np.isnan(want[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def _noisy_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, rng.normal(size=n) + y  # true AUC ~ 0.76


def test_auc_ci_contains_the_point_and_narrows_with_more_items():
    ys, ss = _noisy_binary(40, 0)
    yl, sl = _noisy_binary(2000, 0)
    small, large = auc_ci(ys, ss, n_boot=400, seed=0), auc_ci(yl, sl, n_boot=400, seed=0)
    assert small.value == pytest.approx(auc(ys, ss)) and large.value == pytest.approx(auc(yl, sl))
    for est in (small, large):
        assert est.lo < est.value < est.hi
    assert large.hi - large.lo < (small.hi - small.lo) / 3  # width ~ 1/sqrt(N): 7x more narrow expected
    assert large.lo < 0.76 < large.hi


def test_auc_ci_is_seeded_and_handles_multiclass():
    y, s = _noisy_binary(60, 3)
    assert auc_ci(y, s, n_boot=200, seed=5) == auc_ci(y, s, n_boot=200, seed=5)
    rng = np.random.default_rng(2)
    y3 = np.arange(45) % 3
    p = rng.random((45, 3)) + np.eye(3)[y3]
    p /= p.sum(1, keepdims=True)
    est = auc_ci(y3, p, n_boot=50, seed=0)
    assert est.value == pytest.approx(roc_auc_score(y3, p, multi_class="ovr"))
    assert est.lo <= est.value <= est.hi


# ------------------------------------------------------------------------------------------------ wilson


def test_wilson_known_value():
    est = wilson_ci(8, 10)
    assert est.value == pytest.approx(0.8)
    assert est.lo == pytest.approx(0.4902, abs=5e-4)
    assert est.hi == pytest.approx(0.9433, abs=5e-4)


@pytest.mark.parametrize("n", [1, 7, 100])
def test_wilson_edges(n):
    zero, full = wilson_ci(0, n), wilson_ci(n, n)
    assert zero.lo <= zero.value == 0.0 and full.value == 1.0 <= full.hi
    assert zero.lo == 0.0 and zero.hi == pytest.approx(Z95**2 / (n + Z95**2))
    assert full.hi == 1.0 and full.lo == pytest.approx(n / (n + Z95**2))


def test_wilson_wider_at_higher_level():
    assert wilson_ci(8, 10, level=0.99).lo < wilson_ci(8, 10, level=0.95).lo


@pytest.mark.parametrize(("k", "n", "match"), [(-1, 10, "0 <= k <= n"), (11, 10, "0 <= k <= n"), (0, 0, "n > 0")])
def test_wilson_refuses_bad_counts(k, n, match):
    with pytest.raises(FmgaugeError, match=match):
        wilson_ci(k, n)


# ------------------------------------------------------------------------------------------------ mean_ci


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_mean_ci_matches_scipy_t_interval(level):
    v = np.array([0.71, 0.74, 0.69, 0.80, 0.77])
    lo, hi = sps.t.interval(level, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    est = mean_ci(v, level=level)
    assert (est.value, est.lo, est.hi) == pytest.approx((v.mean(), lo, hi))


def test_mean_ci_drops_nan_and_degenerate_cases():
    assert mean_ci(np.array([1.0, np.nan, 3.0])).value == pytest.approx(2.0)
    one = mean_ci(np.array([0.5]))
    assert (one.value, one.lo, one.hi) == (0.5, 0.5, 0.5)
    assert np.isnan(mean_ci(np.array([np.nan])).value)


# ------------------------------------------------------------------------------------------------ paired


def test_paired_bootstrap_finds_a_planted_shift():
    rng = np.random.default_rng(0)
    b = rng.normal(size=40)
    a = b + 0.5 + rng.normal(scale=0.2, size=40)
    res = paired_bootstrap(a, b, n_boot=2000)
    assert res.n == 40
    assert res.p_value == pytest.approx(1 / 2001)  # floor: no centred resample reaches the observed 0.5
    assert res.mean_diff.lo < 0.5 < res.mean_diff.hi
    assert res.mean_diff.lo > 0.3


def test_paired_bootstrap_no_shift_gives_large_p():
    rng = np.random.default_rng(0)
    b = rng.normal(size=30)
    e = rng.normal(scale=0.3, size=15)
    a = b + np.r_[e, -e]  # differences average to exactly zero
    res = paired_bootstrap(a, b, n_boot=2000)
    assert res.mean_diff.value == pytest.approx(0.0, abs=1e-12)
    assert res.p_value > 0.9
    assert res.mean_diff.lo < 0 < res.mean_diff.hi
    noisy = paired_bootstrap(rng.normal(size=50), rng.normal(size=50), n_boot=2000, seed=1)
    assert noisy.p_value > 0.05


def test_paired_bootstrap_refuses_mismatch_and_too_few_pairs():
    with pytest.raises(FmgaugeError, match="a is length 3 and b is length 2"):
        paired_bootstrap(np.zeros(3), np.zeros(2))
    with pytest.raises(FmgaugeError, match="at least 2 pairs"):
        paired_bootstrap(np.zeros(1), np.zeros(1))


def test_newcombe_auc_interval_is_honest_on_small_perfect_rankings():
    """AUC 1.0 from 10 + 10 items: the bootstrap says [1, 1]; the score interval keeps a lower bound near 0.8
    and widens as the sample shrinks, and for large samples it matches the Hanley-McNeil Wald interval."""
    from fmgauge.core.stats import _newcombe_var, auc_score_ci

    y = np.array([0] * 10 + [1] * 10)
    perfect = auc_score_ci(y, np.arange(20.0))
    assert perfect.value == 1.0 and perfect.hi == 1.0 and 0.7 < perfect.lo < 0.9
    assert auc_ci(y, np.arange(20.0), n_boot=200).lo == 1.0  # what the bootstrap would say
    y6 = np.array([0] * 3 + [1] * 3)
    assert auc_score_ci(y6, np.arange(6.0)).lo < perfect.lo
    rng = np.random.default_rng(0)
    yb = np.repeat([0, 1], 400)
    s = rng.normal(size=800) + 1.2 * yb
    big = auc_score_ci(yb, s)
    half = 1.959964 * np.sqrt(_newcombe_var(np.array(big.value), 400, 400))
    assert big.lo < big.value < big.hi
    assert (big.hi - big.lo) / 2 == pytest.approx(float(half), rel=0.05)


def test_sign_flip_test_is_exact_and_says_when_few_seeds_cannot_be_significant():
    from fmgauge.core.stats import sign_flip_test

    two = sign_flip_test(np.array([0.80, 0.82]), np.array([0.70, 0.71]))  # a bootstrap would call this certain
    assert two.p_value == pytest.approx(0.5) and two.min_p == pytest.approx(0.5)
    eight = sign_flip_test(np.arange(8) + 1.0, np.zeros(8))  # all 8 differences positive: 2 of 256 sign patterns
    assert eight.p_value == pytest.approx(2 / 256) and eight.min_p == pytest.approx(2 / 256)
    mixed = sign_flip_test(np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5]), np.zeros(6))
    assert mixed.p_value == pytest.approx(1.0)
    assert eight.mde > 0
