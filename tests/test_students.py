"""Students: seed-batched training equals independent runs, every registered kind learns a planted signal, and the
budget rule trains every condition for the same number of steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from fmgauge.core.stats import auc
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.seedbatch import seed_batched, seedwise
from fmgauge.weaklabels.students import (
    CONVEX_STUDENTS,
    STUDENTS,
    TEXT_STUDENTS,
    StudentConfig,
    budget_steps,
    build,
    n_params,
)
from fmgauge.weaklabels.training import (
    fit_predict_convex,
    lr_factor,
    minibatch_schedule,
    train_predict,
)

SHAPE = (1, 12, 12)
KINDS = [k for k in STUDENTS.names() if k not in (*CONVEX_STUDENTS, *TEXT_STUDENTS)]  # the seed-batched torch ones
WIDTH = {"logreg": 1, "mlp": 16, "cnn": 4, "resnet": 4}


def _cfg(kind: str, **kw) -> StudentConfig:
    return StudentConfig(kind=kind, width=WIDTH.get(kind, 4), **kw)


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 12, 12) uint8 noise images; class 1 has a bright 4×4 patch at a fixed place, class 0 has none."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 100, size=(n, *SHAPE), dtype=np.uint8)
    x[y == 1, :, 2:6, 6:10] = 230
    return x, y


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x, y = planted(48, 0)
    xt, yt = planted(40, 1)
    return {"x": x, "y": y, "xt": xt, "yt": yt}


def _stack(x: np.ndarray, y: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """S copies of one training set, each seed's rows in a different order."""
    orders = [np.random.default_rng(r).permutation(len(y)) for r in range(s)]
    return np.stack([x[o] for o in orders]), np.stack([y[o] for o in orders])


def test_param_counts_are_ordered() -> None:
    shape, k = (1, 28, 28), 2
    count = {name: n_params(StudentConfig(kind=kind, width=w), shape, k)
             for name, kind, w in [("logreg", "logreg", 1), ("mlp-w256", "mlp", 256), ("cnn-w4", "cnn", 4),
                                   ("cnn-w8", "cnn", 8), ("resnet-w8", "resnet", 8)]}
    assert count["logreg"] == 785 * 2
    assert count["logreg"] < count["mlp-w256"]
    assert count["cnn-w4"] < count["cnn-w8"] < count["resnet-w8"]


@pytest.mark.parametrize("kind", KINDS)
def test_seedwise_model_equals_the_single_models(kind: str) -> None:
    """Forward and parameter gradients of the seed-batched model are those of each seed's own module."""
    seeds = [3, 11, 4]
    cfg = _cfg(kind)
    singles = [build(cfg, SHAPE, 3, s) for s in seeds]
    batched = seedwise([build(cfg, SHAPE, 3, s) for s in seeds])
    assert batched is not None, f"{kind} should not need the vmap fallback"
    x = torch.randn(len(seeds), 5, *SHAPE, generator=torch.Generator().manual_seed(0))
    out = batched(x)  # (S, B, K)
    out.square().sum().backward()
    for r, m in enumerate(singles):
        ref = m(x[r])
        ref.square().sum().backward()
        torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=1e-4)
    per_seed = list(zip(*[m.parameters() for m in singles], strict=True))  # per parameter: the S seeds' tensors
    stacked = list(batched.parameters())  # per parameter: (S, ...) or seed-major blocks on dim 0
    assert len(stacked) == len(per_seed)
    for p, ps in zip(stacked, per_seed, strict=True):
        for r, q in enumerate(ps):
            torch.testing.assert_close(p.detach().reshape(len(seeds), -1)[r], q.detach().flatten())
            scale = float(q.grad.abs().max()) + 1e-6  # float32 noise through a deep net is relative to this
            torch.testing.assert_close(p.grad.reshape(len(seeds), -1)[r], q.grad.flatten(), atol=1e-4 * scale,
                                       rtol=1e-3)
    assert sum(p.numel() for p in batched.parameters()) == len(seeds) * n_params(cfg, SHAPE, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_run_matches_each_seed_alone(kind: str, data: dict) -> None:
    seeds = [5, 0, 9]
    cfg = _cfg(kind, epochs=1, min_steps=20, batch_size=8)
    x, y = _stack(data["x"], data["y"], len(seeds))
    together = train_predict(cfg, x, y, data["xt"], seeds, 2)
    alone = np.concatenate([train_predict(cfg, x[r:r + 1], y[r:r + 1], data["xt"], [s], 2)
                            for r, s in enumerate(seeds)])
    np.testing.assert_allclose(together, alone, atol=1e-4)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_one_seed_equals_a_plain_pytorch_loop(data: dict, schedule: str) -> None:
    """S = 1 is the textbook loop: build(seed), AdamW with a cosine (or constant) learning rate, mean cross-entropy
    over the seed's minibatch schedule."""
    seed, steps, bs = 7, 20, 8
    cfg = _cfg("mlp", epochs=1, min_steps=steps, batch_size=bs, schedule=schedule)
    got = train_predict(cfg, data["x"][None], data["y"][None], data["xt"], [seed], 2, steps=steps)[0]
    model = build(cfg, SHAPE, 2, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(data["x"]).float() * (4 / 255) - 2
    y = torch.from_numpy(data["y"]).long()
    for t, rows in enumerate(minibatch_schedule(len(y), [seed], bs, steps)[:, 0]):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.5 * (1 + np.cos(np.pi * t / steps)) if schedule == "cosine" else 1.0)
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(data["xt"]).float() * (4 / 255) - 2), -1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_learns_a_planted_signal(kind: str, data: dict) -> None:
    seeds = [0, 1]
    x, y = _stack(data["x"], data["y"], len(seeds))
    probs = train_predict(_cfg(kind, epochs=1, min_steps=40, batch_size=16), x, y, data["xt"], seeds, 2)
    assert probs.shape == (2, len(data["yt"]), 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    for p in probs:
        assert auc(data["yt"], p[:, 1]) > 0.95


def test_same_seeds_give_bitwise_identical_output(data: dict) -> None:
    cfg = _cfg("cnn", epochs=1, min_steps=10, batch_size=8)
    x, y = _stack(data["x"], data["y"], 2)
    a = train_predict(cfg, x, y, data["xt"], [1, 2], 2)
    b = train_predict(cfg, x, y, data["xt"], [1, 2], 2)
    c = train_predict(cfg, x, y, data["xt"], [1, 3], 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1], c[1])


def test_three_classes(data: dict) -> None:
    y = np.arange(len(data["y"])) % 3
    probs = train_predict(_cfg("logreg", epochs=1, min_steps=5), data["x"][None], y[None], data["xt"], [0], 3)
    assert probs.shape == (1, len(data["xt"]), 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_minibatch_schedule_reshuffles_each_epoch_per_seed() -> None:
    n, bs, steps = 10, 3, 7  # 3 full batches per epoch; the ragged tail (1 item) is dropped
    rows = minibatch_schedule(n, [0, 1], bs, steps)
    assert rows.shape == (steps, 2, bs)
    for s in range(2):
        first_epoch = rows[:3, s].reshape(-1)
        assert len(set(first_epoch.tolist())) == 9 and int(first_epoch.max()) < n
    assert not torch.equal(rows[:, 0], rows[:, 1])
    assert torch.equal(rows, minibatch_schedule(n, [0, 1], bs, steps))


class _Scale(nn.Module):
    """A layer :func:`seedwise` does not know: forces the vmap fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x


def _scaled_mlp(cfg: StudentConfig, shape: tuple[int, int, int], k: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 8), _Scale(), nn.ReLU(), nn.Linear(8, k))


def test_unknown_layers_fall_back_to_vmap(data: dict) -> None:
    if "test-scaled-mlp" not in STUDENTS:
        STUDENTS.add("test-scaled-mlp", _scaled_mlp)
    cfg = StudentConfig(kind="test-scaled-mlp", epochs=1, min_steps=20, batch_size=8)
    assert seedwise([build(cfg, SHAPE, 2, s) for s in (0, 1)]) is None
    assert not isinstance(seed_batched([build(cfg, SHAPE, 2, s) for s in (0, 1)]), nn.Sequential)
    x, y = _stack(data["x"], data["y"], 2)
    together = train_predict(cfg, x, y, data["xt"], [0, 1], 2)
    alone = np.concatenate([train_predict(cfg, x[r:r + 1], y[r:r + 1], data["xt"], [r], 2) for r in range(2)])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_unknown_kind_suggests_near_names() -> None:
    with pytest.raises(ValidationError, match="Did you mean 'resnet'"):
        StudentConfig(kind="resnt")


@pytest.mark.parametrize("bad", ["x_rows", "y_seeds", "seeds", "x_test", "labels"])
def test_mismatched_inputs_raise(bad: str, data: dict) -> None:
    x, y = _stack(data["x"], data["y"], 2)
    xt, seeds = data["xt"], [0, 1]
    if bad == "x_rows":
        x = x[:, :-1]
    elif bad == "y_seeds":
        y = y[:1]
    elif bad == "seeds":
        seeds = [0]
    elif bad == "x_test":
        xt = xt[:, :, :-1]
    else:
        y = y + 2
    with pytest.raises(FmgaugeError):
        train_predict(_cfg("logreg", min_steps=1), x, y, xt, seeds, 2)


def test_elr_with_zero_weight_is_plain_training_and_resists_heavy_noise(pneumonia):
    """ELR (beta 0.7, lambda 3) keeps an over-parametrised MLP from memorising 40% symmetric label noise better
    than plain cross-entropy; with lambda = 0 it is exactly plain training."""
    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.labelers.simulated import flip_random

    tr, te = pneumonia.split("train"), pneumonia.split("test")
    n = 1500
    y = flip_random(tr.y[:n], 2, 0.4, np.random.default_rng(0))
    cfg = StudentConfig(kind="mlp", width=256, epochs=40, batch_size=64)
    x, yy = np.stack([tr.x[:n]] * 2), np.stack([y, y])
    small = StudentConfig(kind="mlp", width=16, epochs=1, min_steps=10)
    np.testing.assert_allclose(train_predict(small, x[:, :300], yy[:, :300], te.x, [0, 1], 2),
                               train_predict(small, x[:, :300], yy[:, :300], te.x, [0, 1], 2, elr=(0.7, 0.0)),
                               atol=1e-6)
    plain = train_predict(cfg, x, yy, te.x, [0, 1], 2)
    elr = train_predict(cfg, x, yy, te.x, [0, 1], 2, elr=(0.7, 3.0))
    aucs = [np.mean([auc(te.y, p[r, :, 1]) for r in range(2)]) for p in (plain, elr)]
    assert aucs[1] > aucs[0] + 0.01, aucs


def test_budget_is_the_same_for_every_training_set_size() -> None:
    """The budget rule: steps depend on the student and the study's pool, never on the condition's set size."""
    cfg = StudentConfig(kind="mlp", epochs=8, batch_size=128)
    assert budget_steps(cfg, 4708) == 295  # ceil(8 * 4708 / 128)
    assert budget_steps(cfg.model_copy(update={"steps": 40}), 4708) == 40
    assert budget_steps(cfg, 100) == 60  # min_steps for a tiny study
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("constant", 9, 10) == 1.0


def test_zero_weight_padding_trains_like_each_set_alone(data: dict) -> None:
    """Sets of different sizes padded with weight-0 rows train like each set alone (full batch): the same
    gradients, up to float summation order (which AdamW amplifies where a gradient is ~0, hence 5e-3)."""
    cfg = _cfg("logreg", batch_size=64)
    sizes = [20, 26]
    x = np.zeros((2, 26, *SHAPE), dtype=np.uint8)
    y = np.zeros((2, 26), dtype=np.int64)
    w = np.zeros((2, 26), dtype=np.float32)
    for r, n in enumerate(sizes):
        x[r, :n], y[r, :n], w[r, :n] = data["x"][:n], data["y"][:n], 1
    # padding rows are real images with the wrong label: they must not matter
    x[0, 20:], y[0, 20:] = data["x"][20:26], 1 - data["y"][20:26]
    together = train_predict(cfg, x, y, data["xt"], [0, 1], 2, steps=30, weights=w)
    for r, n in enumerate(sizes):
        alone = train_predict(cfg.model_copy(update={"batch_size": n}), x[r:r + 1, :n], y[r:r + 1, :n],
                              data["xt"], [r], 2, steps=30)
        np.testing.assert_allclose(together[r], alone[0], atol=5e-3)
    unweighted = train_predict(cfg, x, y, data["xt"], [0, 1], 2, steps=30)  # the mislabelled padding counts
    assert np.abs(unweighted[0] - together[0]).max() > 0.02


def test_convex_student_fits_images_on_standardised_pixels(pneumonia) -> None:
    """sk-logreg on an image dataset (the issue: it passed validation, then every trial failed)."""
    tr, te = pneumonia.split("train"), pneumonia.split("test")
    cfg = StudentConfig(kind="sk-logreg", c=0.01)
    idx = np.random.default_rng(0).permutation(len(tr.y))[:600].reshape(2, 300)
    p = fit_predict_convex(cfg, tr.x, idx, tr.y[idx], te.x, 2)
    assert p.shape == (2, len(te.y), 2)
    assert min(auc(te.y, p[r][:, 1]) for r in range(2)) > 0.85


def test_logreg_is_the_converged_l2_fit(data: dict) -> None:
    """logreg = scikit-learn's L2 logistic regression on the same inputs at its optimum (softmax over 2 classes:
    a binary fit at C = 2c); the step budget, learning rate and seed cannot move it, and ELR is refused."""
    from sklearn.linear_model import LogisticRegression

    cfg = StudentConfig(kind="logreg", c=0.05)
    x, y = _stack(data["x"], data["y"], 2)
    got = train_predict(cfg, x, y, data["xt"], [0, 1], 2)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64) * (4 / 255) - 2  # noqa: E731
    ref = LogisticRegression(C=0.1, tol=1e-10, max_iter=10_000).fit(flat(data["x"]), data["y"])
    for r in range(2):
        np.testing.assert_allclose(got[r, :, 1], ref.predict_proba(flat(data["xt"]))[:, 1], atol=1e-4)
    other = cfg.model_copy(update={"lr": 0.5, "epochs": 1.0, "steps": 3})
    np.testing.assert_allclose(train_predict(other, x, y, data["xt"], [7, 8], 2, steps=2), got, atol=1e-5)
    with pytest.raises(FmgaugeError, match="ELR"):
        train_predict(cfg, x, y, data["xt"], [0, 1], 2, elr=(0.7, 3.0))
    assert StudentConfig(kind="logreg").c == 0.01 and StudentConfig(kind="sk-logreg").c == 1.0


def test_logreg_on_shared_rows_equals_per_seed_rows(data: dict) -> None:
    """The pool conditions (every seed on the same rows, labels differ) take one shared-input solve; it equals
    the per-seed solve, and a class missing from a training set gets probability 0."""
    from fmgauge.weaklabels.training import fit_predict

    cfg = StudentConfig(kind="logreg", c=0.1)
    n = len(data["y"])
    labels = np.stack([data["y"], np.where(np.arange(n) < 6, 1 - data["y"], data["y"])])  # seed 1: 6 flips
    idx = np.stack([np.arange(n)] * 2)
    shared = fit_predict(cfg, data["x"], idx, labels, data["xt"], [0, 1], 2, n_pool=n)
    per_seed = train_predict(cfg, data["x"][idx], labels, data["xt"], [0, 1], 2)
    np.testing.assert_allclose(shared, per_seed, atol=1e-4)
    assert not np.allclose(shared[0], shared[1], atol=1e-3)
    three = train_predict(cfg, data["x"][None], data["y"][None], data["xt"], [0], 3)  # class 2 never seen
    assert np.all(three[0, :, 2] == 0) and np.allclose(three.sum(-1), 1, atol=1e-5)
