"""The decision rule: known verdicts on planted cases, more-labels advice, and bad gold/labeler files refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fmgauge.cli import app
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.decide import decide, decide_from_files, extrapolate_crossover


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
    x, y = gaussian(20, sep=0.0)  # gold-only can learn nothing from 20 items
    d = decide(x, y, labeler(y, 1))  # labeler accuracy 0.95
    assert d.verdict == "use-weak-labels"
    assert d.rules["auc"].verdict == "use-weak-labels"
    assert d.rules["accuracy"].labeler.value == pytest.approx(0.95)
    assert d.gold_auc.hi < d.rules["accuracy"].labeler.lo


def test_labeler_at_chance_says_gold_only():
    x, y = gaussian(30, sep=8.0)  # trivially separable
    d = decide(x, y, labeler(y, 15))  # accuracy exactly 0.5
    assert d.verdict == "gold-only"
    assert d.gold_auc.value > 0.95
    assert d.rules["accuracy"].crossover == pytest.approx(30)  # gold-only already past the labeler


def test_borderline_with_ten_gold_labels_is_uncertain_and_says_how_many_more():
    x, y = gaussian(10, sep=2.0, seed=3)
    d = decide(x, y, labeler(y, 2))  # accuracy 0.8, near the gold-only AUC
    assert d.verdict == "uncertain"
    more = d.rules["accuracy"].more_gold
    assert more is not None and more > 0
    assert "more gold items" in d.explain()


def test_more_labels_shrink_with_the_gap():
    # same interval widths, larger gap -> fewer extra labels
    from fmgauge.core.stats import Estimate
    from fmgauge.weaklabels.decide import _verdict

    small = _verdict(Estimate(0.80, 0.6, 1.0), Estimate(0.75, 0.55, 0.95), 10)
    large = _verdict(Estimate(0.80, 0.6, 1.0), Estimate(0.65, 0.45, 0.85), 10)
    assert small[0] == large[0] == "uncertain"
    assert small[1] > large[1] > 0


def test_extrapolated_crossover_inverts_a_log_linear_curve():
    curve = [(10, 0.6 + 0.05 * np.log(10)), (20, 0.6 + 0.05 * np.log(20))]
    assert extrapolate_crossover(curve, 0.6 + 0.05 * np.log(80)) == pytest.approx(80, rel=1e-6)
    assert extrapolate_crossover(curve, 0.1) == 20  # already above the target
    assert extrapolate_crossover([(10, 0.7), (20, 0.7)], 0.9) is None  # flat curve never gets there


def test_fewer_than_two_gold_items_of_a_class_is_refused():
    x, y = gaussian(12, 1.0)
    y[:] = 0
    y[0] = 1
    with pytest.raises(FmgaugeError, match="at least 2 items of every class"):
        decide(x, y, labeler(y, 1))
    with pytest.raises(FmgaugeError, match="at least 10 gold labels"):
        decide(x[:6], np.arange(6) % 2, labeler(np.arange(6) % 2, 1))


def _files(tmp_path, n=20, drop_from_labeler=0, class_cols=("a", "b")):
    x, y = gaussian(n, 0.0)
    ids = [f"item{i}" for i in range(n)]
    names = np.array(["a", "b"])
    pd.DataFrame({"id": ids, "label": names[y]}).to_csv(tmp_path / "gold.csv", index=False)
    p = labeler(y, 1)
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
    with pytest.raises(FmgaugeError, match=r"p_c.*none for class\(es\) \['p_b'\]"):
        decide_from_files(gold, lab, features=feats)
