"""Benchmark loaders and per-item scoring (Min-K%++ family) on a tiny Llama built from a config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fmgauge.contamination import scoring
from fmgauge.contamination.benchmarks import VQA_TEMPLATE, load_benchmark
from fmgauge.contamination.mink import K_SWEEP, item_scores, k_column, lowest_k_mean, zlib_bytes
from fmgauge.contamination.scoring import token_stats, windows
from fmgauge.contamination.tiny import make_tiny_lm, make_tiny_tokenizer
from fmgauge.core.text_models import load_text_model
from fmgauge.core.validation import FmgaugeError

WORDS = [
    "lung", "liver", "heart", "brain", "kidney", "ct", "mri", "x-ray", "chest", "abdomen", "left", "right", "organ",
    "modality", "image", "abnormal", "normal", "yes", "no", "which", "what", "where", "is", "the", "this", "of", "in",
]


def _corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"Question: {' '.join(rng.choice(WORDS, rng.integers(4, 10)))}?\nAnswer: {rng.choice(WORDS)}"
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm", _corpus(300, 0), context=48, vocab_size=120)
    return load_text_model(str(path), device="cpu")


# ---------------------------------------------------------------------------------------------- loaders

def test_real_benchmarks_load_with_template(fmgauge_env):
    slake = load_benchmark("slake-en", "test")
    assert len(slake) == 1061  # English test split of SLAKE 1.0 (PROVENANCE.md)
    assert slake.texts[0] == VQA_TEMPLATE.format(question="What modality is used to take this image?", answer="CT")
    assert len(load_benchmark("slake-en", "train")) == 4918  # 4919 English rows, one with an empty answer
    assert len(load_benchmark("vqamed2019", "test")) == 2000
    mrpc = load_benchmark("glue-mrpc", "dev", max_items=5)
    assert len(mrpc) == 5 and mrpc.texts[0].count("\n") == 1 and mrpc.ids[0] == "1355540-1355592"


def test_made_up_layouts(tmp_path):
    rows = [{"question": "is this a gland?", "answer": "yes"}, {"question": "what stain?", "answer": "h&e"}]
    (tmp_path / "pv" / "data").mkdir(parents=True)
    pd.DataFrame(rows + [{"question": "q3", "answer": "a3"}]).assign(image=b"x").to_parquet(
        tmp_path / "pv" / "data" / "test-00000-of-00001.parquet")
    pv = load_benchmark(f"pathvqa:{tmp_path / 'pv'}", "test")
    assert pv.texts[:2] == tuple(VQA_TEMPLATE.format(**r) for r in rows) and len(pv) == 3
    (tmp_path / "pv2").mkdir()
    (tmp_path / "pv2" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert len(load_benchmark(f"pathvqa:{tmp_path / 'pv2'}", "train")) == 2

    qa = tmp_path / "omni" / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    item = {"question_id": "Q1", "question": "Which organ?", "gt_answer": "Liver", "option_A": "Liver",
            "option_B": "Lung", "image_path": "x.png", "dataset": "Toy"}
    (qa / "Toy.json").write_text(json.dumps([item]))
    om = load_benchmark(f"omnimedvqa:{tmp_path / 'omni'}", "all")
    assert om.texts == ("Question: Which organ?\nOptions: A. Liver B. Lung\nAnswer: Liver",) and om.ids == ("Q1",)

    (tmp_path / "g.csv").write_text("id,text\na,hello world\nb,second item\n")
    assert load_benchmark(f"csv:{tmp_path / 'g.csv'}").texts == ("hello world", "second item")
    (tmp_path / "named.csv").write_text("key,body,other\nk1,first text,x\nk2,second text,y\n")
    named = load_benchmark(f"csv:{tmp_path / 'named.csv'}?text_column=body&id_column=key")
    assert named.texts == ("first text", "second text") and named.ids == ("k1", "k2")
    (tmp_path / "bare.tsv").write_text("7\tno header here\n9\tstill none\n")
    bare = load_benchmark(f"tsv:{tmp_path / 'bare.tsv'}?header=none&text_column=1&id_column=0")
    assert bare.texts == ("no header here", "still none") and bare.ids == ("7", "9")
    from fmgauge.contamination.benchmarks import with_table_options
    assert load_benchmark(with_table_options(f"tsv:{tmp_path / 'bare.tsv'}", header=False)).texts == ("7", "9")
    (tmp_path / "s.json").write_text(json.dumps([{"question": "q?", "answer": "a", "q_lang": "en", "qid": 7},
                                                 {"question": "问", "answer": "答", "q_lang": "zh", "qid": 8}]))
    assert load_benchmark(f"slake:{tmp_path / 's.json'}").ids == ("7",)


@pytest.mark.parametrize("content, match", [
    ("", "no items"),
    ('{"question": "q?"}', r"missing required field\(s\) \['answer'\]"),
    ('{"question": "q?", "answer": "  "}', "'answer' is empty"),
    ('{"text": "ok"}\n{"id": 3}', r"item 1: missing required field\(s\) \['text'\]"),
])
def test_bad_benchmark_files_refused(tmp_path, content, match):
    f = tmp_path / "b.jsonl"
    f.write_text(content)
    with pytest.raises(FmgaugeError, match=match):
        load_benchmark(f"jsonl:{f}")


def test_mevf_missing_field_names_file_and_item(tmp_path):
    f = tmp_path / "testset.json"
    f.write_text(json.dumps([{"qid": 1, "question": "q", "answer": "a"}, {"qid": 2, "answer": "b"}]))
    with pytest.raises(FmgaugeError, match=r"testset.json item 1: missing required field\(s\) \['question'\]"):
        load_benchmark(f"mevf:{tmp_path}", "test")


# ---------------------------------------------------------------------------------------------- scoring

def _direct(tm, text: str) -> tuple[np.ndarray, np.ndarray]:
    """logp (T,) and Min-K%++ token scores (T,) from the spec's formula, one item, no batching, float64."""
    ids = torch.tensor([tm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        logits = tm.model(input_ids=ids).logits[0, :-1].double()
    lp = torch.log_softmax(logits, -1)
    tgt = ids[0, 1:]
    logp = lp[torch.arange(len(tgt)), tgt]
    p = lp.exp()
    mu = (p * lp).sum(-1)
    var = (p * lp**2).sum(-1) - mu**2
    return logp.numpy(), ((logp - mu) / var.sqrt()).numpy()


def test_minkpp_matches_direct_formula(tiny, fmgauge_env):
    texts = _corpus(12, 1)
    df = item_scores(token_stats(tiny, texts), texts, [str(i) for i in range(len(texts))])
    for i, text in enumerate(texts):
        logp, z = _direct(tiny, text)
        for k in K_SWEEP:
            n = max(1, int(k * len(z)))
            assert df[k_column("minkpp", k)][i] == pytest.approx(np.sort(z)[:n].mean(), abs=1e-5)
            assert df[k_column("mink", k)][i] == pytest.approx(np.sort(logp)[:n].mean(), abs=1e-5)
        assert df["minkpp_100"][i] == pytest.approx(z.mean(), abs=1e-5)  # k = 1: mean of all normalised scores
        assert df["loss"][i] == pytest.approx(-logp.mean(), abs=1e-5)
        assert df["zlib"][i] == pytest.approx(-logp.mean() / zlib_bytes(text), abs=1e-7)
        assert df["n_tokens"][i] == len(z)


def test_batched_equals_one_at_a_time_and_is_cached(tiny, fmgauge_env, monkeypatch):
    texts = _corpus(10, 2)  # different lengths -> padding in the batch
    batched = token_stats(tiny, texts, max_batch_tokens=4096)
    single = token_stats(tiny, texts, batch_size=1, cache=False)
    np.testing.assert_allclose(batched.logp, single.logp, atol=1e-5)
    np.testing.assert_allclose(batched.sigma, single.sigma, atol=1e-5)
    monkeypatch.setattr(scoring, "forward_stats", lambda *a, **k: pytest.fail("cache miss: model was run again"))
    again = token_stats(tiny, texts, max_batch_tokens=4096)
    np.testing.assert_array_equal(again.logp, batched.logp)


def test_long_item_is_windowed_not_truncated(tiny, fmgauge_env):
    long = " ".join(_corpus(12, 3))  # far beyond the 48-token context
    n_tok = len(tiny.tokenizer(long)["input_ids"])
    assert n_tok > 3 * 48
    st = token_stats(tiny, [long], context=48, stride=16)
    assert st.n_tokens[0] == n_tok - 1  # every target scored once
    logp, _ = _direct(tiny, long[: len(long) // 8])  # a prefix inside the first window matches unwindowed scoring
    np.testing.assert_allclose(st.logp[: len(logp) - 1], logp[:-1], atol=1e-4)
    assert np.isfinite(st.logp).all() and (st.sigma > 0).all()


@pytest.mark.parametrize("length, context, stride", [(10, 4, 1), (100, 48, 16), (48, 48, 47), (7, 48, 24)])
def test_windows_cover_every_target_once(length, context, stride):
    covered = [t for s, e, ft in windows(length, context, stride) for t in range(ft, e)]
    assert covered == list(range(1, length))
    assert all(e - s <= context and ft > s for s, e, ft in windows(length, context, stride))


def test_tokenizer_model_mismatch_refused(tiny, tmp_path):
    other = make_tiny_tokenizer(_corpus(50, 4) + ["zebra giraffe " * 50], vocab_size=60)
    mismatched = type(tiny)(tiny.model, other, "mismatch", "mismatch", tiny.device)
    with pytest.raises(FmgaugeError, match="tokenizer/model mismatch"):
        token_stats(mismatched, ["Question: zebra?\nAnswer: giraffe"], cache=False)
    with pytest.raises(FmgaugeError, match="empty benchmark"):
        token_stats(tiny, [], cache=False)


def test_lowest_k_refuses_bad_k():
    with pytest.raises(FmgaugeError, match="k must be a fraction"):
        lowest_k_mean(np.arange(5.0), 0.0)
    assert lowest_k_mean(np.array([3.0, 1.0, 2.0, 5.0]), 0.5) == 1.5


# ------------------------------------------------------------------------------------------ configs, CLI

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "contamination").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    from fmgauge.contamination.audit import AuditConfig
    from fmgauge.contamination.benchmarks import BENCHMARKS, LAYOUTS
    from fmgauge.contamination.plant import PlantConfig
    from fmgauge.core.config import load_config

    cfg = load_config(PlantConfig if path.stem.startswith("plant") else AuditConfig, path)
    for name in (cfg.benchmark, getattr(cfg, "cohort", cfg.benchmark)):
        assert name in BENCHMARKS or name.partition(":")[0] in LAYOUTS, name


def test_cli_score_writes_scores(tiny, fmgauge_env, tmp_path):
    from typer.testing import CliRunner

    from fmgauge.cli import app

    f = tmp_path / "b.jsonl"
    f.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(_corpus(6, 5))))
    out = tmp_path / "s.csv"
    r = CliRunner().invoke(app, ["contamination", "score", "--model", tiny.source, "--benchmark", f"jsonl:{f}",
                                 "--split", "all", "--device", "cpu", "--ks", "0.2,1.0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 6 and {"loss", "zlib", "minkpp_20", "minkpp_100"} <= set(df.columns)


def test_reference_ratio_is_zero_against_itself(tiny, fmgauge_env, tmp_path):
    from fmgauge.contamination.detect import score

    f = tmp_path / "b.jsonl"
    f.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(_corpus(5, 6))))
    res = score(tiny.source, f"jsonl:{f}", split="all", reference_model=tiny.source, ks=(0.2,), device="cpu",
                progress=False)
    np.testing.assert_allclose(res.scores["ref"], 0.0, atol=1e-12)
    assert set(res.summary().column) == {"loss", "zlib", "mink_20", "minkpp_20", "ref"}
