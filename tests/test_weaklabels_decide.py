"""The decision rule: known verdicts on planted cases (with and without the weak-labelled pool), the prior
correction, more-labels advice, and bad gold/labeler files refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmgauge.cli import app
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.confusion import labeler_summary
from fmgauge.weaklabels.decide import Pool, decide
from fmgauge.weaklabels.decide_files import decide_from_files
from fmgauge.weaklabels.gold_auc import extrapolate_crossover


def gaussian(n: int, sep: float, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced binary data whose class signal is ``sep`` standard deviations on the first feature."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, d))
    x[:, 0] += sep * (2 * y - 1) / 2
    return x, y


def labeler(y: np.ndarray, n_wrong: int) -> np.ndarray:
    """Probabilities (n, 2) of a labeler that gets exactly ``n_wrong`` items wrong."""
    w = y.copy()
    w[:n_wrong] = 1 - w[:n_wrong]
    return np.eye(2)[w] * 0.8 + 0.1


def test_labeler_far_better_than_gold_only_says_use_weak_labels():
    x, y = gaussian(40, sep=0.0)  # gold-only can learn nothing from 40 items (its LPO AUC is floored at 0.5)
    d = decide(x, y, labeler(y, 2))  # labeler accuracy 0.95
    assert d.primary == "auc" and d.verdict == "use-weak-labels"  # without a pool: the like-for-like rule
    assert d.rules["accuracy"].verdict == "use-weak-labels"
    assert d.rules["accuracy"].labeler.value == pytest.approx(0.95)
    assert d.gold_auc.value < 0.6
    assert d.gold_auc.hi < d.rules["accuracy"].labeler.lo


def test_labeler_at_chance_says_gold_only():
    x, y = gaussian(30, sep=8.0)  # trivially separable
    d = decide(x, y, labeler(y, 15))  # accuracy exactly 0.5; the default proxy is converged (sk-logreg)
    assert d.rules["auc"].choice == d.rules["accuracy"].choice == "gold-only"
    assert d.verdict == "gold-only" and d.rules["accuracy"].verdict == "gold-only"
    assert d.gold_auc.value > 0.95
    assert d.rules["accuracy"].crossover == pytest.approx(30)  # gold-only already past the labeler


def test_borderline_with_ten_gold_labels_is_uncertain_and_says_how_many_more():
    x, y = gaussian(10, sep=2.0, seed=3)
    d = decide(x, y, labeler(y, 2), primary="accuracy", proxy={"kind": "sk-logreg"}, fallback="lean")  # acc 0.8
    assert d.verdict == "uncertain"
    assert d.rules["accuracy"].choice == d.rules["accuracy"].lean  # uncertain falls back to its lean
    weak = decide(x, y, labeler(y, 2), primary="accuracy", proxy={"kind": "sk-logreg"}, fallback="weak")
    assert weak.verdict == "uncertain" and weak.rules["accuracy"].choice == "use-weak-labels"
    # fallback labeler: the weak labels when the labeler ranks the gold items acceptably (its AUC ≥ 0.7 here)
    lab = decide(x, y, labeler(y, 2), primary="accuracy", proxy={"kind": "sk-logreg"}, fallback="labeler")
    assert lab.rules["accuracy"].fallback == "labeler" and lab.rules["auc"].labeler.value >= 0.7
    assert lab.verdict == "uncertain" and lab.choice == "use-weak-labels" and "ranks your gold items" in lab.explain()
    bad = decide(x, y, labeler(y, 5), primary="accuracy", proxy={"kind": "sk-logreg"},
                 fallback="labeler")  # accuracy 0.5: chance
    assert bad.rules["auc"].labeler.value < 0.7 and bad.choice == "gold-only"
    # the default, auto: 5 gold items of each class are too few to follow the side the estimate leans to; without a
    # pool the labeler must rank the gold items 0.1 better than gold-only (a chance labeler does not)
    auto = decide(x, y, labeler(y, 5), primary="accuracy", proxy={"kind": "sk-logreg"})
    r = auto.rules["accuracy"]
    assert r.fallback == "auto" and r.min_class == 5 and auto.verdict == "uncertain" and auto.agreement is None
    assert auto.choice == "gold-only" and "mostly noise, so this decides" in auto.explain()
    assert "(no pool to read, bar 0.52)" in auto.explain()
    with pytest.raises(FmgaugeError, match="fallback must be"):
        decide(x, y, labeler(y, 2), fallback="coin")
    more = d.rules["accuracy"].more_gold
    assert more is not None and more > 0
    assert "more gold items" in d.explain()


def test_labeler_ranks_known_values():
    from fmgauge.weaklabels.rules import ACCEPTABLE_AUC, labeler_ranks, ranks_bar
    from fmgauge.weaklabels.verdicts import AGREE_BAR, AUTO_MARGIN

    assert ACCEPTABLE_AUC == 0.7 and AUTO_MARGIN == 0.1 and AGREE_BAR == 0.52
    assert labeler_ranks(0.7, 0.95) and labeler_ranks(0.62, 0.6)  # acceptable, or better than gold-only
    assert not labeler_ranks(0.69, 0.75) and not labeler_ranks(0.5, 0.5)  # a tie at chance keeps gold only
    assert not labeler_ranks(float("nan"), 0.5)
    auto, lab = ranks_bar("auto"), ranks_bar("labeler")
    assert labeler_ranks(0.75, 0.6, **auto) and not labeler_ranks(0.65, 0.6, **auto)  # auto: 0.1 above gold-only
    assert not labeler_ranks(0.95, 0.9, **auto) and labeler_ranks(0.95, 0.9, **lab)  # no bar on the AUC alone
    assert labeler_ranks(0.3, 0.9, 0.6, **auto)  # ranks 2 gold positives badly, agrees across the pool
    assert not labeler_ranks(0.3, 0.9, 0.51, **auto)
    assert not labeler_ranks(0.3, 0.9, float("nan"), **auto)  # no pool: the gold items alone
    assert not labeler_ranks(0.3, 0.9, 0.9, **lab)  # the labeler fallback does not read agreement


def test_auto_below_twenty_rarer_class_items_reads_the_pools_agreement():
    """With 3 positives the paired estimate is noise: auto keeps the weak labels of a labeler whose pool labels agree
    with a gold-trained model (flips at random, 15%) and drops those of one at chance, whatever 12 gold items say."""
    x, y = gaussian(2012, sep=2.0, seed=4)
    gold = np.r_[np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[:9]]
    rest = np.setdiff1d(np.arange(len(y)), gold)
    rng = np.random.default_rng(2)
    good = np.where(rng.random(len(y)) < 0.15, 1 - y, y)
    chance = rng.integers(0, 2, len(y))
    for weak, acts in ((good, "use-weak-labels"), (chance, "gold-only")):
        d = decide(x[gold], y[gold], np.eye(2)[weak[gold]], pool=Pool(x[rest], weak[rest]), n_boot=200)
        r = d.rules[d.primary]
        assert r.fallback == "auto" and r.min_class == 3 and d.verdict == "uncertain"
        assert (d.agreement > 0.52) == (acts == "use-weak-labels") and d.choice == acts
        assert "agreement" in d.plain()[0] and "from 20 gold items of each class" in d.plain()[0]
        assert any("agrees with the weak labels at AUC" in line for line in d.plain())


@pytest.mark.parametrize(("min_class", "ranks", "lean", "acts"), [
    (19, True, "gold-only", "use-weak-labels"),  # below LEAN_FROM: the pool's agreement or the labeler decides
    (4, False, "use-weak-labels", "gold-only"),
    (20, False, "use-weak-labels", "use-weak-labels"),  # from LEAN_FROM on: the lean, whatever the ranking
    (40, True, "gold-only", "gold-only"),
])
def test_auto_fallback_acts_on_the_lean_from_twenty_rarer_class_items(min_class, ranks, lean, acts):
    from fmgauge.core.stats import Estimate
    from fmgauge.weaklabels.verdicts import LEAN_FROM, RuleVerdict

    assert LEAN_FROM == 20
    est = Estimate(0.6, 0.5, 0.7, 0.95)
    r = RuleVerdict("delta-worth", "uncertain", lean, est, 0.0, (-0.1, 0.1), 40, None, "auto", ranks=ranks,
                    min_class=min_class)
    assert r.choice == acts
    committed = RuleVerdict("delta-worth", "gold-only", "gold-only", est, 0.1, (0.05, 0.2), None, None, "auto",
                            ranks=True, min_class=min_class)
    assert committed.choice == "gold-only"  # a committed verdict is never overridden


def test_more_labels_shrink_with_the_gap():
    # same interval widths, larger gap -> fewer extra labels
    from fmgauge.core.stats import Estimate
    from fmgauge.weaklabels.rules import interval_verdict as _interval_verdict

    small = _interval_verdict(Estimate(0.80, 0.6, 1.0), Estimate(0.75, 0.55, 0.95), 10)
    large = _interval_verdict(Estimate(0.80, 0.6, 1.0), Estimate(0.65, 0.45, 0.85), 10)
    assert small[0] == large[0] == "uncertain"
    assert small[1] > large[1] > 0


def test_extrapolated_crossover_inverts_a_log_linear_curve():
    curve = [(10, 0.6 + 0.05 * np.log(10)), (20, 0.6 + 0.05 * np.log(20))]
    assert extrapolate_crossover(curve, 0.6 + 0.05 * np.log(80)) == pytest.approx(80, rel=1e-6)
    assert extrapolate_crossover(curve, 0.1) == 20  # already above the target
    assert extrapolate_crossover([(10, 0.7), (20, 0.7)], 0.9) is None  # flat curve never gets there
    # a noisy curve whose fitted line crosses the target before m while its last point is still below it: n* > m
    assert extrapolate_crossover([(10, 0.70), (15, 0.90), (20, 0.84)], 0.85) > 20


def test_fewer_than_two_gold_items_of_a_class_is_refused():
    x, y = gaussian(12, 1.0)
    y[:] = 0
    y[0] = 1
    with pytest.raises(FmgaugeError, match=r"at least 2 items of every class; class\(es\) \['pos'\] have \[1\]"):
        decide(x, y, labeler(y, 1), class_names=("neg", "pos"))
    with pytest.raises(FmgaugeError, match="at least 10 gold labels"):
        decide(x[:6], np.arange(6) % 2, labeler(np.arange(6) % 2, 1))


def _files(tmp_path, n=40, drop_from_labeler=0, class_cols=("a", "b")):
    x, y = gaussian(n, 0.0)
    ids = [f"item{i}" for i in range(n)]
    names = np.array(["a", "b"])
    pd.DataFrame({"id": ids, "label": names[y]}).to_csv(tmp_path / "gold.csv", index=False)
    p = labeler(y, 2)
    keep = slice(drop_from_labeler, None)
    pd.DataFrame({"id": ids[keep], f"p_{class_cols[0]}": p[keep, 0], f"p_{class_cols[1]}": p[keep, 1]}).to_csv(
        tmp_path / "labeler.csv", index=False)
    pd.DataFrame({"id": ids, **{f"f{j}": x[:, j] for j in range(x.shape[1])}}).to_csv(tmp_path / "x.csv", index=False)
    return tmp_path / "gold.csv", tmp_path / "labeler.csv", tmp_path / "x.csv"


def test_decide_from_files_and_cli(tmp_path):
    gold, lab, feats = _files(tmp_path)
    d = decide_from_files(gold, lab, features=feats)
    assert d.verdict == "use-weak-labels"
    out = tmp_path / "decision.json"
    res = CliRunner().invoke(app, ["weak-labels", "decide", "--gold", str(gold), "--labeler-outputs", str(lab),
                                   "--features", str(feats), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "use-weak-labels" in res.output
    assert pd.read_json(out, typ="series")["verdict"] == "use-weak-labels"


def test_gold_ids_missing_from_the_labeler_file_are_named(tmp_path):
    gold, lab, feats = _files(tmp_path, drop_from_labeler=3)
    with pytest.raises(FmgaugeError, match="item0"):
        decide_from_files(gold, lab, features=feats)


def test_class_names_the_labeler_output_lacks_are_refused(tmp_path):
    gold, lab, feats = _files(tmp_path, class_cols=("a", "c"))
    with pytest.raises(FmgaugeError, match=r"has label\(s\) \['b'\] that the labeler-outputs file .* has no "
                                           r"probability column for \(its classes: \['a', 'c'\]\)"):
        decide_from_files(gold, lab, features=feats)


CONVEX = {"kind": "sk-logreg"}  # planted-signal tests of the rules' logic use a proxy that is solved exactly


def test_a_torch_proxy_still_runs_with_a_pool():
    """The rules default to a converged sk-logreg proxy; the zoo's AdamW logreg can still be named."""
    x, y = gaussian(20, sep=1.5, seed=1)
    d = decide(x, y, labeler(y, 2), pool=_weak_pool(400, 1.5, 0.1, seed=2), proxy={"kind": "logreg"}, curve=False,
               rules=("auc", "cv-delta", "weak-student"), primary="cv-delta")
    assert d.primary == "cv-delta" and set(d.rules) == {"auc", "cv-delta", "weak-student"}
    assert all(r.choice in ("use-weak-labels", "gold-only") for r in d.rules.values())


def test_the_default_proxy_follows_the_inputs():
    """Feature vectors get C = 1, sparse TF-IDF rows C = 10, images (before flattening) the image logreg student's
    C; a proxy named by kind alone gets its input's C, an explicit C is kept, and decide trains the image proxy."""
    import scipy.sparse as sp

    from fmgauge.weaklabels.proxy import proxy_student
    from fmgauge.weaklabels.students import LOGREG_C

    images, vectors = np.zeros((4, 1, 5, 5)), np.zeros((4, 25))
    assert proxy_student(vectors, None).c == 1.0
    assert proxy_student(sp.csr_matrix(vectors), None).c == 10.0
    assert proxy_student(images, None).c == LOGREG_C == 0.01
    assert proxy_student(images[:, 0], None).c == LOGREG_C  # (n, H, W) grey images
    assert proxy_student(images, {"kind": "sk-logreg"}).c == LOGREG_C
    assert proxy_student(images, {"kind": "sk-logreg", "c": 2.0}).c == 2.0
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    x = (rng.normal(size=(20, 1, 6, 6)) + 0.6 * y[:, None, None, None]).astype(np.float32)
    run = lambda proxy: decide(x, y, labeler(y, 2), proxy=proxy, rules=("auc",), primary="auc",  # noqa: E731
                               curve=False).gold_auc.value
    assert run(None) == run({"kind": "sk-logreg", "c": LOGREG_C}) != run({"kind": "sk-logreg", "c": 1.0})


def test_principal_coordinates_keep_inner_products_with_orthogonal_columns():
    """(n, D) rows become (n, rank) coordinates (n < D) or (n, D) ones (n >= D) with the same Gram matrix and
    orthogonal columns; sparse rows too many to densify (n >= D) come back as they are."""
    import scipy.sparse as sp

    from fmgauge.weaklabels.proxy import principal_coordinates

    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 40))
    x[11] = x[0] + x[1]  # rank 11
    tall = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8))
    for rows, width in ((x, 11), (tall, 8)):
        z = principal_coordinates(rows)
        assert z.shape == (len(rows), width)
        np.testing.assert_allclose(z @ z.T, rows @ rows.T, atol=1e-9)
        gram = z.T @ z
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-8)
    wide = sp.random(30, 100, density=0.1, random_state=0, format="csr")
    z = principal_coordinates(wide, max_dense=100)  # from the (n, n) Gram matrix: the rows are never densified
    np.testing.assert_allclose(z @ z.T, (wide @ wide.T).toarray(), atol=1e-9)
    tall = sp.random(100, 30, density=0.1, random_state=0, format="csr")
    z = principal_coordinates(tall)  # n >= D: densified and rotated
    np.testing.assert_allclose(z @ z.T, (tall @ tall.T).toarray(), atol=1e-9)
    assert principal_coordinates(tall, max_dense=100) is tall


@pytest.mark.parametrize("n_classes", [2, 4])
def test_convex_proxy_fits_give_the_optimum_in_principal_coordinates(n_classes):
    """The representer theorem and the preconditioned solver, checked: an L2 logistic regression trained on rows of
    x and scored on rows of x gives the tightly solved optimum's probabilities both on x (1,100 dimensions) and on
    its (m, m) principal coordinates, warm-started or not, and nearer to it than scikit-learn's L-BFGS gets."""
    from sklearn.linear_model import LogisticRegression

    from fmgauge.weaklabels.proxy import Proxy
    from fmgauge.weaklabels.students import StudentConfig

    rng = np.random.default_rng(5)
    m, d = 40, 1100
    y = np.arange(m) % n_classes
    x = rng.normal(size=(m, d)) + 0.3 * y[:, None] * rng.normal(size=d)
    proxy = Proxy(StudentConfig(kind="sk-logreg", c=0.01), 0)
    z = proxy.coordinates(x)
    assert z.shape == (m, m)
    keep = [np.setdiff1d(np.arange(m), [i, i + 1]) for i in range(0, 10, 2)]
    wide = proxy.fit_predict([x[k] for k in keep], [y[k] for k in keep], x, n_classes)
    small = proxy.fit_predict([z[k] for k in keep], [y[k] for k in keep], z, n_classes)
    warm = proxy.fit_predict([z[k] for k in keep], [y[k] for k in keep], z, n_classes, init=proxy.warm_model(z, y))
    exact = np.stack([LogisticRegression(C=0.01, tol=1e-12, max_iter=100_000).fit(x[k], y[k]).predict_proba(x)
                      for k in keep])
    sk = np.stack([LogisticRegression(C=0.01).fit(x[k], y[k]).predict_proba(x) for k in keep])
    for got in (wide, small, warm):
        assert np.abs(got - exact).max() < 1e-5
    assert np.abs(small - exact).max() < np.abs(sk - exact).max()
    assert (small.argmax(-1) == exact.argmax(-1)).all()


def test_pair_sampling_control_variate_is_unbiased_and_cuts_the_noise():
    """The leave-pair-out AUC from a sample of pairs, with the approximate leave-pair-out outcomes as control
    variate: equal to the plain share when every pair is sampled; over 300 samples of 60 of 900 pairs both centre on
    the all-pairs value, and the control variate's spread is under half the plain share's."""
    from fmgauge.weaklabels.gold_auc import PairOutcomes, leave_pair_out, pair_auc
    from fmgauge.weaklabels.proxy import Proxy
    from fmgauge.weaklabels.students import StudentConfig

    x, y = gaussian(60, sep=1.0, d=30, seed=4)
    full = leave_pair_out(Proxy(StudentConfig(kind="sk-logreg", c=1.0), 0), x, y, 2, max_pairs=900)
    assert len(full.hit) == 900 and full.approx is not None
    assert (full.approx == full.hit).mean() > 0.97  # one Newton step ranks the pairs as the exact refits do
    ones = np.ones((1, len(y)))
    truth = float(full.hit.mean())
    assert float(pair_auc(full, y, 1, ones)[0]) == pytest.approx(truth, abs=1e-12)
    rng = np.random.default_rng(0)
    plain, cv = [], []
    for _ in range(300):
        s = rng.choice(900, 60, replace=False)
        sub = PairOutcomes(full.c[s], full.i[s], full.j[s], full.hit[s], full.approx[s], full.approx_grid)
        cv.append(float(pair_auc(sub, y, 1, ones)[0]))
        plain.append(float(pair_auc(PairOutcomes(sub.c, sub.i, sub.j, sub.hit), y, 1, ones)[0]))
    assert 0.6 < truth < 0.95
    assert abs(np.mean(cv) - truth) < 0.01 and abs(np.mean(plain) - truth) < 0.01
    assert np.std(cv) < 0.5 * np.std(plain)


def test_preconditioned_logreg_handles_sparse_rows_and_missing_classes():
    """logreg_fit on sparse rows gives the dense rows' optimum; a training set without class 1 of 3 gets a
    two-class fit whose probability of class 1 is 0 everywhere."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from fmgauge.weaklabels.convex import logreg_fit

    rng = np.random.default_rng(2)
    x = sp.random(60, 30, density=0.2, random_state=1, format="csr")
    y = (np.asarray(x.sum(1)).ravel() > np.median(np.asarray(x.sum(1)))).astype(int)
    exact = LogisticRegression(C=10, tol=1e-12, max_iter=100_000).fit(x.toarray(), y).predict_proba(x.toarray())
    np.testing.assert_allclose(logreg_fit(x, y, 10.0).proba(x, 2), exact, atol=1e-5)
    y3 = np.where(y == 1, 2, 0)
    p = logreg_fit(x.toarray() + rng.normal(0, 0.01, x.shape), y3, 10.0).proba(x.toarray(), 3)
    assert (p[:, 1] == 0).all() and np.allclose(p.sum(1), 1)


def _weak_pool(n: int, sep: float, wrong: float, seed: int, *, systematic: bool = False, d: int = 20) -> Pool:
    """A pool of ``n`` items like :func:`gaussian` whose weak labels are wrong on a share ``wrong`` at random, or
    (``systematic``) all inverted, so the weak labels point the wrong way."""
    x, y = gaussian(n, sep, d, seed=seed)
    w = y.copy()
    k = int(round(wrong * n))
    if systematic:
        w = 1 - y  # every label inverted: a student trained on them ranks backwards
    else:
        flip = np.random.default_rng(seed).permutation(n)[:k]
        w[flip] = 1 - w[flip]
    return Pool(x, w)


def test_pool_rules_see_weak_labels_that_help():
    """30 gold items carry too little to learn a 2.5-sd signal in 100 dimensions; 1,000 weak labels at 90% do."""
    x, y = gaussian(30, sep=2.5, d=100, seed=1)
    d = decide(x, y, labeler(y, 3), pool=_weak_pool(1000, 2.5, 0.1, seed=2, d=100), proxy=CONVEX)
    assert d.primary == "delta-worth"
    assert set(d.rules) == {"accuracy", "auc", "cv-delta", "delta-worth", "weak-student", "projection"}
    assert d.choice == "use-weak-labels", d.explain()
    assert d.crossover is None or d.crossover > 30  # the weak labels still help beyond the 30 gold labels
    assert d.n_eff is not None and 0.4 * 1030 < d.n_eff.value < 0.9 * 1030  # (1 - 0.1 - 0.1)^2 = 0.64
    assert d.rules["weak-student"].choice == "use-weak-labels"
    assert d.rules["cv-delta"].gap < -0.05 and d.rules["cv-delta"].gap_ci[1] < 0.05  # gold − gold+weak
    assert d.pool_size == 1000


def test_pool_rules_see_weak_labels_that_point_the_wrong_way():
    """The labeler looks accurate on the gold items (it was right there) but its pool labels are inverted: only
    the rules that train on the pool can see it."""
    x, y = gaussian(30, sep=2.5, d=100, seed=1)
    d = decide(x, y, labeler(y, 1), pool=_weak_pool(800, 2.5, 0.0, seed=2, systematic=True, d=100), proxy=CONVEX)
    assert d.rules["auc"].choice == "use-weak-labels"  # fooled: the labeler ranks the gold items well
    assert d.rules["cv-delta"].verdict == "gold-only", d.explain()
    assert d.rules["weak-student"].verdict == "gold-only"
    assert d.verdict == "gold-only" and d.rules["delta-worth"].worthless is False  # the gold items look fine


def test_labeler_quality_is_post_stratified_on_the_weak_labels():
    """Pool 90% class 0, the labeler's recall 0.9 / 0.5 (T = [[0.9, 0.1], [0.5, 0.5]]): accuracy 0.86 on the pool.
    A gold set of 20 items drawn at random within each weak-label stratum (20 + 20, as sample-gold would) is far from
    the pool's class balance, yet q (the weak-label shares, from the pool) and P(y | ŷ) (from the gold items) recover
    the pool's accuracy, prior, recall and precision."""
    pool_y = np.array([0] * 900 + [1] * 100)
    pool_w = np.concatenate([np.repeat([0, 1], [810, 90]), np.repeat([0, 1], [50, 50])])  # T applied exactly
    rng = np.random.default_rng(0)
    gold = np.concatenate([rng.choice(np.flatnonzero(pool_w == k), 20, replace=False) for k in (0, 1)])
    s = labeler_summary(pool_y[gold], pool_w[gold], 2, pool_labels=np.delete(pool_w, gold), class_names=("a", "b"))
    assert s.unusable is None and s.source == "pool + gold"
    assert abs(s.accuracy.value - 0.86) < 0.08 and s.accuracy.lo < 0.86 < s.accuracy.hi
    assert abs(s.prior[1].value - 0.1) < 0.05 and s.majority_class == "a"
    assert s.recall[1].lo < 0.5 < s.recall[1].hi and s.precision[1].lo < 50 / 140 < s.precision[1].hi
    assert s.factor.value == pytest.approx((s.recall[0].value + s.recall[1].value - 1) ** 2)  # (1 - ρ0 - ρ1)²
    assert s.youden.value == pytest.approx(2 * s.balanced_accuracy.value - 1)
    # a labeler that says "a" to everything: accuracy = the majority rate, and the summary says so
    allneg = labeler_summary(pool_y, np.zeros(1000, int), 2, class_names=("not b", "b"), truth=True)
    assert allneg.worse_than_majority and "always answering 'not b'" in allneg.warning()
    assert np.isnan(allneg.precision[1].value)  # never says "b": precision undefined, not 0
    # no gold item the labeler called "b" although 14% of the pool is: the population estimate is unusable
    none = labeler_summary(pool_y[:20], pool_w[:20] * 0, 2, pool_labels=pool_w, class_names=("a", "b"))
    assert none.unusable and "'b'" in none.unusable and np.isnan(none.accuracy.value)
    assert "unusable" in none.lines()[0]


def test_decide_from_files_uses_the_labelled_ids_beyond_the_gold_set_as_the_pool(tmp_path):
    rng = np.random.default_rng(0)
    n_pool, names = 300, np.array(["a", "b"])
    x, y = gaussian(20 + n_pool, sep=2.0, seed=4)
    w = np.where(rng.random(len(y)) < 0.9, y, 1 - y)
    ids = [f"item{i}" for i in range(len(y))]
    pd.DataFrame({"id": ids[:20], "label": names[y[:20]]}).to_csv(tmp_path / "gold.csv", index=False)
    pd.DataFrame({"id": ids, "label": names[w]}).to_csv(tmp_path / "labeler.csv", index=False)
    np.savez(tmp_path / "x.npz", ids=np.array(ids), features=x)
    d = decide_from_files(tmp_path / "gold.csv", tmp_path / "labeler.csv", features=tmp_path / "x.npz",
                          proxy=CONVEX)
    assert d.pool_size == n_pool and d.primary == "delta-worth"
    assert abs(d.labeler_summary.prior[1].value - y.mean()) < 0.15
    res = CliRunner().invoke(app, ["weak-labels", "decide", "--gold", str(tmp_path / "gold.csv"),
                                   "--labeler-outputs", str(tmp_path / "labeler.csv"),
                                   "--features", str(tmp_path / "x.npz")])
    assert res.exit_code == 0, res.output
    assert "cv-delta" in res.output and "weak-student" in res.output


@pytest.mark.parametrize("extra, message", [
    (["--primary", "vote"], "--primary must be one of accuracy, auc, cv-delta, delta-worth, weak-student, projection, got 'vote'"),
    (["--proxy", "cnn"], "proxy must be one of"),
    (["--max-pairs", "0"], "--max-pairs"),
])
def test_bad_decide_options_exit_2_with_one_line(tmp_path, extra, message):
    import subprocess
    import sys

    gold, lab, feats = _files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "fmgauge", "weak-labels", "decide", "--gold", str(gold),
                           "--labeler-outputs", str(lab), "--features", str(feats), *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_one_class_gold_file_is_named_as_such(tmp_path):
    gold, lab, feats = _files(tmp_path)
    pd.DataFrame({"id": [f"item{i}" for i in range(40)], "label": "a"}).to_csv(gold, index=False)
    with pytest.raises(FmgaugeError, match="holds a single class"):
        decide_from_files(gold, lab, features=feats)


def test_projection_verdict_reads_the_crossover_interval_against_m():
    from fmgauge.weaklabels.rules import crossover_verdict

    assert crossover_verdict(300.0, (120.0, 900.0), 20) == ("use-weak-labels", "use-weak-labels")
    assert crossover_verdict(20.0, (20.000000000000004, 20.000000000000004), 20)[0] == "gold-only"  # n* = m
    assert crossover_verdict(15.0, (8.0, float("inf")), 20) == ("uncertain", "gold-only")
    assert crossover_verdict(None, (30.0, float("inf")), 20) == ("use-weak-labels", "use-weak-labels")
    assert crossover_verdict(None, None, 20) == ("uncertain", "use-weak-labels")


def test_from_200_gold_items_the_gold_side_is_cross_validated():
    """At m >= 200 the gold side ranks pairs by pooled 5-fold out-of-fold scores: every (pos, neg) pair up to the
    cap, and an AUC close to the truth of a clearly learnable task."""
    from fmgauge.weaklabels.gold_auc import CV_FROM, CV_PAIRS, gold_only_auc, gold_pairs
    from fmgauge.weaklabels.proxy import Proxy
    from fmgauge.weaklabels.students import StudentConfig

    x, y = gaussian(CV_FROM, sep=2.0, d=5, seed=7)
    p = gold_pairs(Proxy(StudentConfig(kind="sk-logreg"), 0), x, y, 2, max_pairs=20)
    assert len(p.c) == min((y == 1).sum() * (y == 0).sum(), CV_PAIRS)  # every pair up to the cap, not max_pairs
    assert abs(gold_only_auc(p, y, 2).value - 0.92) < 0.04  # Φ(2/√2) = 0.92 for a 2-sd shift


def test_leave_pair_out_auc_is_floored_at_chance():
    """Pairs ranked backwards every time (an artefact of holding out one of 2 items of a class) read as 0.5."""
    from fmgauge.weaklabels.gold_auc import PairOutcomes, gold_only_auc, weighted_aucs

    y = np.array([1, 1] + [0] * 8)
    pairs = PairOutcomes(np.ones(16, int), np.repeat([0, 1], 8), np.tile(np.arange(2, 10), 2), np.zeros(16))
    assert gold_only_auc(pairs, y, 2).value == 0.5
    assert weighted_aucs(y, 2, np.ones((1, 10)), pairs=pairs)[0] == 0.5
    good = PairOutcomes(pairs.c, pairs.i, pairs.j, np.ones(16))
    assert gold_only_auc(good, y, 2).value == 1.0 and gold_only_auc(good, y, 2).lo < 0.9  # Newcombe: not [1, 1]


def test_delta_worth_leans_gold_only_for_a_labeler_shown_no_better_than_chance():
    """The guard reads the upper end of J's interval: a J estimated at −0.14 from 2 positives (interval up to +0.29,
    a labeler whose J was +0.45, docs §8) does not fire it; an interval at or below 0 does."""
    from fmgauge.weaklabels.rules import worth_verdict

    assert worth_verdict(("uncertain", "use-weak-labels"), 0.29) == ("uncertain", "use-weak-labels", False)
    assert worth_verdict(("uncertain", "use-weak-labels"), -0.04) == ("gold-only", "gold-only", True)
    assert worth_verdict(("uncertain", "use-weak-labels"), 0.0) == ("gold-only", "gold-only", True)
    # a committed cv-delta verdict stands: J from a 2-positive gold set can be wrong
    assert worth_verdict(("use-weak-labels", "use-weak-labels"), -0.04) == ("use-weak-labels", "use-weak-labels", True)
    assert worth_verdict(("gold-only", "gold-only"), -0.4) == ("gold-only", "gold-only", True)
    assert worth_verdict(("use-weak-labels", "use-weak-labels"), 0.4) == ("use-weak-labels", "use-weak-labels", False)
    assert worth_verdict(("uncertain", "use-weak-labels"), float("nan"))[1] == "use-weak-labels"  # unusable
    # with 2 items of the rarer class the guard leans but does not commit (COMMIT_FROM)
    assert worth_verdict(("uncertain", "use-weak-labels"), -0.04, 2) == ("uncertain", "gold-only", True)


def test_paired_rules_commit_only_from_three_rarer_class_items():
    """An interval that excludes 0 commits from COMMIT_FROM items of the rarer class on; below, the verdict is
    uncertain and the advice names the labels that reach COMMIT_FROM at the class's current share."""
    from fmgauge.weaklabels.rules import paired_verdict
    from fmgauge.weaklabels.verdicts import COMMIT_FROM

    assert COMMIT_FROM == 3
    assert paired_verdict(-0.3, -0.5, -0.1, 20, 3) == ("gold-only", None)
    assert paired_verdict(0.3, 0.1, 0.5, 20, 10) == ("use-weak-labels", None)
    assert paired_verdict(-0.3, -0.5, -0.1, 20, 2) == ("uncertain", 10)  # 1 more positive at 2 in 20: 10 labels
    assert paired_verdict(0.3, 0.1, 0.5, 10, 2) == ("uncertain", 5)


def test_rule_eval_scores_stored_trials_as_decide_now_commits():
    """Trials stored before COMMIT_FROM committed from 2 rarer-class items: the evaluation re-derives them as
    uncertain acting on their lean (and delta-worth from them), leaving the other trials as stored."""
    from fmgauge.weaklabels.rule_eval import _commit_verdicts, _worth_verdicts

    key = {"labeler": "l", "features": "raw", "n_gold": 10, "seed": 0, "gap": 0.2, "lab_youden_hi": 0.5}
    rows = pd.DataFrame([{**key, "rule": r, "verdict": "gold-only", "lean": "gold-only", "choice": "gold-only",
                          "gold_min_class": mc, "seed": mc} for r in ("cv-delta", "weak-student", "auc")
                         for mc in (2, 3)])
    got = _worth_verdicts(_commit_verdicts(rows)).set_index(["rule", "seed"])
    assert got.loc[("cv-delta", 2), "verdict"] == got.loc[("weak-student", 2), "verdict"] == "uncertain"
    assert got.loc[("delta-worth", 2), "verdict"] == "uncertain" and got.loc[("delta-worth", 2), "choice"] == "gold-only"
    assert got.loc[("cv-delta", 3), "verdict"] == got.loc[("delta-worth", 3), "verdict"] == "gold-only"
    assert got.loc[("auc", 2), "verdict"] == "gold-only"  # the unpaired rules are not paired_verdict's


def test_pool_agreement_tracks_the_weak_labels_markedness():
    """Planted class-conditional noise on a pool: agreement − 0.5 = (a − 0.5)·(PPV + NPV − 1), a the gold model's
    AUC on the pool; a labeler at chance agrees at 0.5 and one labelling the opposite concept below it."""
    from fmgauge.core.stats import auc
    from fmgauge.weaklabels.proxy import Proxy, proxy_student
    from fmgauge.weaklabels.rules import pool_agreement

    x, y = gaussian(4020, sep=1.5, seed=5)
    xg, yg, xp, yp = x[:20], y[:20], x[20:], y[20:]
    proxy = Proxy(proxy_student(xg, None), 0, 0)
    a = auc(yp, proxy.fit_predict([xg], [yg], xp, 2)[0])
    rng = np.random.default_rng(1)
    for t0, t1 in ((0.9, 0.3), (0.7, 0.6), (0.5, 0.5), (0.2, 0.8)):  # P(weak = 0 | y = 0), P(weak = 1 | y = 1)
        weak = np.where(yp == 1, rng.random(len(yp)) < t1, rng.random(len(yp)) >= t0).astype(int)
        ppv, npv = yp[weak == 1].mean(), 1 - yp[weak == 0].mean()
        got = pool_agreement(proxy, xg, yg, 2, xp, weak)
        assert got - 0.5 == pytest.approx((a - 0.5) * (ppv + npv - 1), abs=0.025)
    assert np.isnan(pool_agreement(proxy, xg, yg, 2, xp, np.zeros(len(yp), int)))  # one weak class: undefined


def test_decide_imports_without_torch():
    """decide and its proxy name students without building them: importing them must not import torch (about 2 s of
    every `weak-labels decide`), and the package's entry points still resolve."""
    import subprocess
    import sys

    code = ("import sys, fmgauge.weaklabels.decide, fmgauge.weaklabels.proxy; assert 'torch' not in sys.modules; "
            "import fmgauge.weaklabels as w; assert callable(w.decide) and w.Pool is not None; "
            "assert 'torch' not in sys.modules; assert callable(w.calibrate) and w.StudyConfig.__name__ == 'StudyConfig'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_cli_and_the_labeler_configs_import_without_torch():
    """`weak-labels decide` reads its labeler file through the labelers package: importing the CLI, the package
    and every labeler kind's config (the torch ones included) must not import torch."""
    import subprocess
    import sys

    code = """
import sys
import fmgauge.cli, fmgauge.weaklabels.decide_files, fmgauge.weaklabels.labelers.file
from fmgauge.weaklabels.labelers import LABELERS, LabelerConfig, parse_labeler
from pydantic import TypeAdapter
assert parse_labeler({"kind": "simulated", "noise": "random", "accuracy": 0.8}).accuracy == 0.8
configs = [{"kind": "simulated", "noise": "random", "accuracy": 0.8}, {"kind": "file", "path": "out.csv"},
           {"kind": "open_clip"}, {"kind": "text-embedding"}, {"kind": "causal-lm", "dtype": "bfloat16"}]
adapter = TypeAdapter(LabelerConfig)
assert sorted(type(adapter.validate_python(c)).__name__ for c in configs) == sorted(
    LABELERS.get(c["kind"]).config.__name__ for c in configs)
assert set(LABELERS.names()) == {c["kind"] for c in configs}
from fmgauge.core.models import check_device_dtype
check_device_dtype(None, "float16")
assert 'torch' not in sys.modules, 'torch imported'
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_weak_labels_decide_runs_without_torch(tmp_path, fmgauge_env, monkeypatch):
    """The whole `weak-labels decide` run, on features, a feature-file dataset and a text dataset whose sentence
    embeddings are cached, never imports torch (computing new embeddings may)."""
    import json
    import subprocess
    import sys

    import fmgauge.core.text_models as text_models
    import fmgauge.weaklabels.text_embed as text_embed
    from fmgauge.core.data import load_dataset
    from fmgauge.weaklabels.features import EMBED_MAX_LENGTH

    n, names = 60, np.array(["a", "b"])
    x, y = gaussian(n, sep=1.5, d=8, seed=5)
    ids = [f"train/{i}" for i in range(n)]
    gold_ids = ids[:20]
    pd.DataFrame({"id": gold_ids, "label": names[y[:20]]}).to_csv(tmp_path / "gold.csv", index=False)
    p = labeler(y, 6)
    pd.DataFrame({"id": ids, "p_a": p[:, 0], "p_b": p[:, 1]}).to_csv(tmp_path / "labeler.csv", index=False)
    np.savez(tmp_path / "x.npz", ids=np.array(ids), features=x)
    np.savez(tmp_path / "ds.npz", train_features=x.astype(np.float32), train_labels=y, class_names=names)
    pd.DataFrame({"text": [f"text number {i} of class {names[c]}" for i, c in enumerate(y)], "label": names[y],
                  "split": "train"}).to_csv(tmp_path / "texts.csv", index=False)
    encoder = tmp_path / "encoder"  # a local model directory: resolved by path, never loaded on a cache hit
    encoder.mkdir()
    (encoder / "config.json").write_text("{}")

    class Loaded:
        model = tokenizer = device = None

    texts = load_dataset(f"text:{tmp_path / 'texts.csv'}").split("train").x
    monkeypatch.setattr(text_models, "load_text_model", lambda *a, **k: Loaded())
    monkeypatch.setattr(text_embed, "mean_pooled", lambda *a, **k: np.c_[x[:, :4], np.ones((n, 4))].astype(
        np.float32) / 3)
    text_embed.embed_texts(str(encoder), texts, max_length=EMBED_MAX_LENGTH)  # fills the cache the run reads

    common = ["--gold", str(tmp_path / "gold.csv"), "--labeler-outputs", str(tmp_path / "labeler.csv"),
              "--max-pairs", "20", "--no-curve"]
    runs = [["--features", str(tmp_path / "x.npz")],
            ["--dataset", f"features:{tmp_path / 'ds.npz'}", "--split", "train"],
            ["--dataset", f"text:{tmp_path / 'texts.csv'}", "--representation", f"embed:{encoder}"]]
    code = f"""
import json, sys
from typer.testing import CliRunner
from fmgauge.cli import app
for i, args in enumerate({runs!r}):
    out = {str(tmp_path)!r} + f"/decision{{i}}.json"
    res = CliRunner().invoke(app, ["weak-labels", "decide", *{common!r}, *args, "--json", out])
    assert res.exit_code == 0, (args, res.output, repr(res.exception))
torch = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not torch, torch[:5]
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i in range(len(runs)):
        d = json.loads((tmp_path / f"decision{i}.json").read_text())
        assert d["verdict"] in ("use-weak-labels", "gold-only", "uncertain") and d["pool_size"] == n - 20


def test_builtin_student_kinds_are_the_registered_ones():
    """StudentConfig accepts the built-in kinds without importing the torch modules that build them: the list it
    reads must be exactly what students.py registers."""
    from fmgauge.weaklabels.student_config import BUILTIN_KINDS
    from fmgauge.weaklabels.students import STUDENTS

    shipped = {n for n in STUDENTS.names() if STUDENTS.get(n).__module__ == "fmgauge.weaklabels.students"}
    assert shipped == set(BUILTIN_KINDS)  # other tests may register their own students beside these
