"""Noise structure: the projection argument, the projection predictor, and cleanlab's noise estimate."""

from __future__ import annotations

import numpy as np
import pytest

from fmgauge.core.stats import auc
from fmgauge.weaklabels.labelers.simulated import flip_transition
from fmgauge.weaklabels.noise import (
    cleanlab_noise,
    curve_inverse,
    effective_size,
    projected_crossover,
    projection_factor,
    transition_matrix,
)
from fmgauge.weaklabels.students import StudentConfig
from fmgauge.weaklabels.training import fit_predict_convex


def _student_auc(x, y_train, x_test, y_test):
    cfg = StudentConfig(kind="sk-logreg")
    idx = np.arange(len(y_train))[None]
    p = fit_predict_convex(cfg, x, idx, y_train[None], x_test, 2)[0]
    return auc(y_test, p[:, 1])


def test_class_conditional_noise_keeps_auc_instance_noise_does_not():
    """Projection argument (Menon et al. 2015): with rho0 + rho1 < 1 and many samples, class-conditional noise
    leaves a student's AUC near the clean student's; instance-dependent noise at the same rate (positives flipped
    according to a nuisance feature) biases the ranking and costs AUC."""
    rng = np.random.default_rng(0)
    n = 20_000
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2))
    x[:, 0] += 1.5 * y  # class signal on feature 0; feature 1 is a nuisance
    x_test, y_test = x[: n // 4], y[: n // 4]
    x_tr, y_tr = x[n // 4:], y[n // 4:]
    clean = _student_auc(x_tr, y_tr, x_test, y_test)
    t = np.array([[0.8, 0.2], [0.3, 0.7]])  # rho0 + rho1 = 0.5 < 1
    w_cc = flip_transition(y_tr, t, rng)
    rate = float((w_cc != y_tr).mean())
    # instance-dependent at the same overall rate: the positives with the largest nuisance value flip first
    n_flip = int(round(rate * len(y_tr)))
    pos = np.flatnonzero(y_tr == 1)
    w_inst = y_tr.copy()
    w_inst[pos[np.argsort(-x_tr[pos, 1])[:n_flip]]] = 0
    assert (w_inst != y_tr).mean() == pytest.approx(rate, abs=1e-3)
    cc = _student_auc(x_tr, w_cc, x_test, y_test)
    inst = _student_auc(x_tr, w_inst, x_test, y_test)
    assert abs(cc - clean) < 0.01
    assert clean - inst > 0.05


def test_projection_factor_known_values():
    assert projection_factor(np.eye(2)) == 1.0
    assert projection_factor(np.array([[0.8, 0.2], [0.3, 0.7]])) == pytest.approx(0.25)
    assert projection_factor(np.array([[0.5, 0.5], [0.5, 0.5]])) == 0.0  # rho0 + rho1 = 1: no signal left
    assert projection_factor(np.array([[0.2, 0.8], [0.9, 0.1]])) == 0.0  # inverted labels are clipped at 0
    assert projection_factor(np.eye(4)) == 1.0
    assert effective_size(1000, np.array([[0.9, 0.1], [0.1, 0.9]])) == pytest.approx(640)


def test_transition_matrix_counts_rows():
    y = np.array([0, 0, 0, 0, 1, 1])
    w = np.array([0, 0, 0, 1, 1, 0])
    t = transition_matrix(y, w, 3)
    assert t[0].tolist() == [0.75, 0.25, 0.0]
    assert t[1].tolist() == [0.5, 0.5, 0.0]
    assert t[2].tolist() == [0.0, 0.0, 1.0]  # an absent class gets an identity row


def test_projected_crossover_is_n_eff_without_instance_loss():
    grid = np.array([10, 20, 50, 100, 200, 500, 1000.0])
    curve = 0.6 + 0.04 * np.log(grid)
    t = np.array([[0.9, 0.1], [0.2, 0.8]])  # factor 0.49
    pr = projected_crossover(grid, curve, 1000, t)
    assert pr["status"] == "crossover"
    assert pr["n_star"] == pytest.approx(490, rel=1e-6)
    lower = projected_crossover(grid, curve, 1000, t, instance_loss=0.05)
    assert lower["n_star"] < pr["n_star"]
    assert curve_inverse(grid, curve, 0.1) == ("below-range", None)


def test_cleanlab_recovers_a_planted_noise_matrix(pneumonia):
    sp = pneumonia.split("train")
    x, y = sp.x[:3000], sp.y[:3000]
    t = np.array([[0.7, 0.3], [0.1, 0.9]])
    w = flip_transition(y, t, np.random.default_rng(1))
    est = np.asarray(cleanlab_noise(x, w, 2)["transition"])
    assert est.shape == (2, 2)
    np.testing.assert_allclose(est.sum(1), 1, atol=1e-6)
    assert est[0, 1] > est[1, 0]  # the class that was flipped more is found to be the noisier
    assert abs(est[0, 1] - 0.3) < 0.12 and abs(est[1, 0] - 0.1) < 0.12
