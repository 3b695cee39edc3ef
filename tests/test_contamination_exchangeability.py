"""Oren et al.'s sharded permutation test on tiny Llamas: uniform p without exposure, small p after memorising."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as sps

from fmgauge.contamination import exchangeability as ex
from fmgauge.contamination.exchangeability import (
    N_DRAWS,
    ExchangeabilityConfig,
    exchangeability_test,
    sequence_logprobs,
    shard_bounds,
    sharded_t_test,
)
from fmgauge.contamination.plant import PlantConfig, finetune
from fmgauge.contamination.tiny import make_tiny_lm
from fmgauge.core.text_models import load_text_model
from fmgauge.core.validation import FmgaugeError

WORDS = [
    "lung", "liver", "heart", "brain", "kidney", "ct", "mri", "x-ray", "chest", "abdomen", "left", "right", "organ",
    "modality", "image", "abnormal", "normal", "yes", "no", "which", "what", "where", "is", "the", "this", "of", "in",
]
CFG = ExchangeabilityConfig(shards=10, permutations=20, context=128, stride=64, max_batch_tokens=4096)


def _corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"Question: {' '.join(rng.choice(WORDS, rng.integers(4, 10)))}?\nAnswer: {rng.choice(WORDS)}"
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("tinyx") / "lm", _corpus(300, 0), context=128, vocab_size=120,
                        hidden=64)


def test_p_roughly_uniform_without_exposure(tiny_dir, fmgauge_env):
    tm = load_text_model(str(tiny_dir), device="cpu")
    ps = np.array([exchangeability_test(tm, _corpus(40, 1000 + r), CFG, progress=False).p for r in range(8)])
    assert (ps < 0.05).sum() <= 1  # 8 draws from U(0, 1): P(two or more below 0.05) = 0.057
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    assert 0.2 < ps.mean() < 0.8


def test_p_small_after_memorising_canonical_order(tiny_dir, fmgauge_env):
    tm = load_text_model(str(tiny_dir), device="cpu")
    texts = _corpus(40, 7)
    before = exchangeability_test(tm, texts, CFG, progress=False)
    docs = ["\n".join(texts[a: a + 4]) + "\n" for a in range(0, 40, 4)]  # the shards, in canonical order
    torch.manual_seed(0)
    tm.model, losses = finetune(tm.model, tm.tokenizer, [docs] * 60,
                                PlantConfig(method="full", lr=3e-3, batch_size=10), progress=False)
    assert losses[-1] < 0.5 * losses[0]
    after = exchangeability_test(tm, texts, CFG, cache=False, progress=False)
    assert before.p > 0.05
    # the permutation p reaches its floor 1 / (draws + 1); the Student-t reference agrees
    assert after.p == pytest.approx(1 / (N_DRAWS + 1)) and after.p_t < 1e-4 and after.t > 5 and (after.diffs > 0).all()
    # 4 items per shard have 24 orders, so a few of the 20 random ones are the canonical order itself (ties)
    assert after.shard_p.max() < 0.25 < before.shard_p.mean()


def test_windowed_sequence_logprob_matches_token_scoring(tiny_dir, fmgauge_env):
    tm = load_text_model(str(tiny_dir), device="cpu")
    ids = tm.tokenizer(" ".join(_corpus(12, 3)), add_special_tokens=False)["input_ids"]
    assert len(ids) > 100
    seqs = torch.tensor([ids, ids[::-1]])  # two rows, same length
    got = sequence_logprobs(tm.model, seqs, context=40, stride=16, max_batch_tokens=40)  # one row per forward
    full = sequence_logprobs(tm.model, seqs, context=len(ids), stride=1, max_batch_tokens=10_000)
    with torch.no_grad():
        logits = tm.model(input_ids=seqs).logits[:, :-1].double()
    direct = torch.log_softmax(logits, -1).gather(-1, seqs[:, 1:, None])[..., 0].sum(1).numpy()
    np.testing.assert_allclose(full, direct, rtol=1e-5)
    assert np.all(np.abs(got - direct) < 0.05 * np.abs(direct))  # less context per token, same targets
    # the first window (40 tokens) scores targets 1..39 exactly as the unwindowed forward does
    first = sequence_logprobs(tm.model, seqs[:, :40], context=40, stride=16)
    lp = torch.log_softmax(logits, -1).gather(-1, seqs[:, 1:, None])[..., 0]
    np.testing.assert_allclose(first, lp[:, :39].sum(1).numpy(), rtol=1e-5)


def test_t_statistic_matches_scipy_and_bad_shards_refused():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.05])
    t, p = sharded_t_test(d)
    ref = sps.ttest_1samp(d, 0.0, alternative="greater")
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert [b - a for a, b in shard_bounds(11, 5)] == [3, 2, 2, 2, 2]
    with pytest.raises(FmgaugeError, match="fewer than 2 per shard"):
        shard_bounds(9, 5)


def test_shards_are_cached_and_resume(tiny_dir, fmgauge_env, monkeypatch):
    tm = load_text_model(str(tiny_dir), device="cpu")
    texts = _corpus(20, 11)
    cfg = CFG.model_copy(update={"shards": 5, "permutations": 4})
    first = exchangeability_test(tm, texts, cfg, progress=False)
    assert first.sequences_scored == 25
    monkeypatch.setattr(ex, "_score_shard", lambda *a, **k: pytest.fail("cached shard recomputed"))
    again = exchangeability_test(tm, texts, cfg, progress=False)
    np.testing.assert_array_equal(again.permuted, first.permuted)
    assert again.p == first.p and again.sequences_scored == 0
