"""Simulated and file labelers on real PneumoniaMNIST: target rates, noise structure, alignment, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmgauge.core.data import Dataset, Split
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.labelers import run_labeler
from fmgauge.weaklabels.labelers.simulated import flip_instance, minority_transition


@pytest.fixture(scope="module")
def small(pneumonia) -> Dataset:
    """1,000 pool items and the full test split of PneumoniaMNIST."""
    tr = pneumonia.split("train")
    idx = np.random.default_rng(0).permutation(len(tr))[:1000]
    return Dataset("pneumonia-1k", pneumonia.class_names,
                   {"train": Split(tr.x[idx], tr.y[idx], tr.ids[idx]), "test": pneumonia.split("test")},
                   source="slice")


@pytest.mark.parametrize("noise", ["random", "class-conditional", "instance"])
@pytest.mark.parametrize("accuracy", [0.8, 0.95])
def test_simulated_labeler_hits_target_accuracy(fmgauge_env, small, noise, accuracy):
    out = run_labeler({"kind": "simulated", "noise": noise, "accuracy": accuracy}, small, "train")
    y = small.split("train").y
    # exact counts: round((1 - accuracy) * N) items flipped, not a binomial draw around it
    assert (out.labels != y).sum() == round((1 - accuracy) * len(y))
    assert np.allclose(out.probs.sum(1), 1) and (out.probs.argmax(1) == out.labels).all()
    assert (out.ids == small.split("train").ids).all()


def test_class_conditional_errors_fall_on_one_class(fmgauge_env, small):
    out = run_labeler({"kind": "simulated", "noise": "class-conditional", "accuracy": 0.85}, small, "train")
    y = small.split("train").y
    rare = np.bincount(y).argmin()
    wrong = out.labels != y
    assert wrong[y != rare].sum() == 0 and wrong[y == rare].sum() > 0


@pytest.mark.parametrize("noise", ["random", "class-conditional", "instance"])
def test_each_draw_is_a_new_noise_realisation_at_the_same_rate(fmgauge_env, small, noise):
    """The study gives each sweep seed its own draw: the flipped items change, their number does not."""
    y = small.split("train").y
    outs = [run_labeler({"kind": "simulated", "noise": noise, "accuracy": 0.8, "draw": d}, small, "train")
            for d in (0, 1, 0)]
    wrong = [o.labels != y for o in outs]
    assert wrong[0].sum() == wrong[1].sum() == 200
    assert (wrong[0] != wrong[1]).any()  # another realisation
    assert np.array_equal(outs[0].labels, outs[2].labels)  # the same draw again: the same labels


def test_class_conditional_flips_exact_counts_per_class():
    from fmgauge.weaklabels.labelers.simulated import exact_counts, flip_transition

    y = np.array([0] * 30 + [1] * 70 + [2] * 11)
    t = np.array([[0.8, 0.1, 0.1], [0.05, 0.9, 0.05], [0.0, 0.5, 0.5]])
    out = flip_transition(y, t, np.random.default_rng(0))
    for c in range(3):
        np.testing.assert_array_equal(np.bincount(out[y == c], minlength=3), exact_counts(int((y == c).sum()), t[c]))
    assert exact_counts(11, [0.0, 0.5, 0.5]).tolist() in ([0, 6, 5], [0, 5, 6])
    assert exact_counts(30, [0.8, 0.1, 0.1]).tolist() == [24, 3, 3]


def test_minority_transition_rows_sum_to_one_and_reach_rate():
    y = np.array([0] * 30 + [1] * 70)
    t = minority_transition(y, 2, 0.15)
    assert np.allclose(t.sum(1), 1)
    assert t[0, 1] == pytest.approx(0.15 * 100 / 30)
    with pytest.raises(FmgaugeError, match="cannot reach accuracy 0.6"):
        minority_transition(y, 2, 0.4)


def test_instance_noise_flips_the_hardest_items():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = rng.random(200)
    ref = np.stack([1 - p1, p1], 1)
    out = flip_instance(y, ref, 0.2, rng)
    flipped = out != y
    assert flipped.sum() == 40
    p_true = ref[np.arange(200), y]
    assert p_true[flipped].max() <= p_true[~flipped].min()


def test_transition_of_wrong_size_refused(fmgauge_env, small):
    cfg = {"kind": "simulated", "noise": "class-conditional", "transition": [[0.5, 0.25, 0.25]] * 3}
    with pytest.raises(FmgaugeError, match="2x2"):
        run_labeler(cfg, small, "train")


def test_file_labeler_reads_names_and_probabilities(fmgauge_env, small, tmp_path):
    sp = small.split("train")
    names = np.array(small.class_names)[sp.y[::-1]]  # reversed order: alignment must fix it
    pd.DataFrame({"id": sp.ids[::-1], "label": names}).to_csv(tmp_path / "a.csv", index=False)
    out = run_labeler({"kind": "file", "path": str(tmp_path / "a.csv")}, small, "train")
    assert (out.labels == sp.y).all()
    probs = pd.DataFrame({"id": sp.ids, "p_normal": 0.2, "p_pneumonia": 0.8})
    probs.to_parquet(tmp_path / "b.parquet")
    out = run_labeler({"kind": "file", "path": str(tmp_path / "b.parquet")}, small, "train")
    assert (out.labels == 1).all() and np.allclose(out.probs[:, 1], 0.8)


def test_file_labeler_names_missing_ids(fmgauge_env, small, tmp_path):
    sp = small.split("train")
    pd.DataFrame({"id": sp.ids[5:], "label": sp.y[5:]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(FmgaugeError, match=r"lacks 5 id.*first missing: \['train/"):
        run_labeler({"kind": "file", "path": str(tmp_path / "a.csv")}, small, "train")


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"idx": ["train/0"], "label": [0]}), "needs an 'id' column"),
    (pd.DataFrame({"id": ["train/0"], "label": ["tumour"]}), "not classes of the dataset"),
    (pd.DataFrame({"id": ["train/0", "train/0"], "label": [0, 1]}), "repeats ids"),
    (pd.DataFrame({"id": ["train/0"], "score": [0.3]}), "needs a 'label' column"),
])
def test_file_labeler_bad_files(fmgauge_env, small, tmp_path, frame, message):
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(FmgaugeError, match=message):
        run_labeler({"kind": "file", "path": str(tmp_path / "bad.csv")}, small, "train")


def test_simulated_labels_are_cached(fmgauge_env, small, monkeypatch):
    from fmgauge.weaklabels.labelers import LABELERS
    from fmgauge.weaklabels.labelers.base import LabelerKind

    cfg = {"kind": "simulated", "noise": "random", "accuracy": 0.8, "seed": 3}
    first = run_labeler(cfg, small, "train")

    def boom(*_):
        raise AssertionError("the labeler ran again instead of reading its cache")

    monkeypatch.setitem(LABELERS._items, "simulated", LabelerKind(LABELERS.get("simulated").config, boom))
    again = run_labeler({**cfg, "name": "renamed"}, small, "train")
    assert (again.labels == first.labels).all()
    with pytest.raises(AssertionError, match="ran again"):  # a different seed is a different labeler
        run_labeler({**cfg, "seed": 4}, small, "train")
