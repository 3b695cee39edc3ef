"""A tiny causal LM built from a config, with a BPE tokenizer trained on a given corpus: for tests and offline
demos of the audit (never a stand-in for a real model in a reported number).

``make_tiny_lm(path, corpus)`` writes a directory ``load_text_model(path)`` reads (config.json, safetensors,
tokenizer.json): a Llama with ``hidden`` dims and ``layers`` layers, random init from ``seed``.
``make_tiny_vlm(path, corpus, kind=...)`` does the same for the vision-language models of
:mod:`fmgauge.core.vlm_models` (Qwen2.5-VL, BLIP-2 with OPT or T5), processor included.
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


QWEN_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# The Qwen2.5-VL Instruct prompt layout (default system turn, image placeholder, generation prompt), as
# vlm_scoring renders it through the processor's apply_chat_template.
TINY_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
VLM_KINDS = ("qwen2.5-vl", "blip2-opt", "blip2-t5")


def make_tiny_vlm(path: str | Path, corpus: Sequence[str], *, kind: str = "qwen2.5-vl", hidden: int = 32,
                  layers: int = 2, vocab_size: int = 200, image_size: int = 56, seed: int = 0) -> Path:
    """Save a random tiny vision-language model + processor into ``path`` (what ``load_vlm_model(path)`` reads).

    ``kind``: ``qwen2.5-vl`` (Qwen2_5_VLForConditionalGeneration: ``layers`` text layers, a 2-block vision tower
    of width ``hidden``, a Qwen2-VL image processor capped at ``image_size``² pixels, i.e. (image_size/28)² image
    tokens, and a chat template in the Qwen layout), ``blip2-opt`` (Blip2ForConditionalGeneration with a
    ``layers``-layer OPT, a 1-layer ViT and Q-Former, 4 query tokens, images resized to ``image_size``) or
    ``blip2-t5`` (the same with a T5 encoder-decoder). The tokenizer is a BPE trained on ``corpus``.
    """
    import torch
    import transformers

    if kind not in VLM_KINDS:
        raise FmgaugeError(f"kind must be one of {list(VLM_KINDS)}, got {kind!r}.")
    tok = make_tiny_tokenizer(corpus, vocab_size=vocab_size)
    torch.manual_seed(seed)
    if kind == "qwen2.5-vl":
        tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL)})
        sid = dict(zip(QWEN_SPECIAL, tok.convert_tokens_to_ids(list(QWEN_SPECIAL)), strict=True))
        ip = transformers.Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=image_size * image_size)
        proc = transformers.Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok,
                                                video_processor=transformers.Qwen2VLVideoProcessor(),
                                                chat_template=TINY_QWEN_CHAT_TEMPLATE)
        head_dim = hidden // 4
        cfg = transformers.Qwen2_5_VLConfig(
            text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]}),
            vision_config=dict(depth=2, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=2,
                               out_hidden_size=hidden, window_size=56, fullatt_block_indexes=[1]),
            image_token_id=sid["<|image_pad|>"], video_token_id=sid["<|video_pad|>"],
            vision_start_token_id=sid["<|vision_start|>"], vision_end_token_id=sid["<|vision_end|>"])
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    else:
        ip = transformers.BlipImageProcessor(size={"height": image_size, "width": image_size})
        proc = transformers.Blip2Processor(image_processor=ip, tokenizer=tok, num_query_tokens=4)
        if kind == "blip2-opt":
            text = dict(model_type="opt", vocab_size=len(tok), hidden_size=hidden, ffn_dim=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=256,
                        word_embed_proj_dim=hidden, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id)
        else:
            text = dict(model_type="t5", vocab_size=len(tok), d_model=hidden, d_kv=hidden // 2, d_ff=2 * hidden,
                        num_layers=layers, num_decoder_layers=layers, num_heads=2, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
        cfg = transformers.Blip2Config(
            vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                               num_attention_heads=2, image_size=image_size, patch_size=14),
            qformer_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                                num_attention_heads=2, cross_attention_frequency=1, vocab_size=len(tok)),
            text_config=text, num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
        model = transformers.Blip2ForConditionalGeneration(cfg)
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path
