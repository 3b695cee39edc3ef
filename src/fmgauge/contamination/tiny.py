"""A tiny causal LM built from a config, with a BPE tokenizer trained on a given corpus: for tests and offline
demos of the audit (never a stand-in for a real model in a reported number).

``make_tiny_lm(path, corpus)`` writes a directory ``load_text_model(path)`` reads (config.json, safetensors,
tokenizer.json): a Llama with ``hidden`` dims and ``layers`` layers, random init from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmgauge.core.validation import FmgaugeError


def make_tiny_tokenizer(corpus: Sequence[str], *, vocab_size: int = 400):  # noqa: ANN201 - PreTrainedTokenizerFast
    """A whitespace/punctuation-split BPE tokenizer trained on ``corpus`` (special tokens <unk> <pad> <s> </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not corpus:
        raise FmgaugeError("make_tiny_tokenizer needs a non-empty corpus to learn its vocabulary from.")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<pad>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def make_tiny_lm(path: str | Path, corpus: Sequence[str], *, hidden: int = 32, layers: int = 2, context: int = 256,
                 vocab_size: int = 400, seed: int = 0, tokenizer=None) -> Path:  # noqa: ANN001
    """Save a random tiny Llama + tokenizer (trained on ``corpus`` unless ``tokenizer`` is given) into ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else make_tiny_tokenizer(corpus, vocab_size=vocab_size)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=context, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
