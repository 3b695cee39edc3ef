"""Calibration and evaluation text: WikiText-2 (tokenized release) or any text file, as token-id tensors.

Protocol (stated in every result): the split file (``wikitext2_tokenized/{valid,test}.txt``, with its ``<unk>``) is
read verbatim, lines joined by newlines, and tokenized ONCE as one stream with the model's tokenizer (no special
tokens). Calibration draws ``n_samples`` random windows of ``seqlen`` tokens from the *valid* split (seeded, as
GPTQ's ``get_wikitext2`` draws from train, absent here); evaluation and held-out text use the *test* split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fmgauge.core.validation import FmgaugeError

WIKITEXT_SPLITS = ("valid", "test")


def wikitext2_path(split: str) -> Path:
    from fmgauge.core.data import find_data_file

    if split not in WIKITEXT_SPLITS:
        raise FmgaugeError(f"WikiText-2 split must be one of {list(WIKITEXT_SPLITS)}, got {split!r}.")
    return find_data_file(f"wikitext2_tokenized/{split}.txt", how_to_get=(
        "WikiText-2 (tokenized, v1) valid/test files as wikitext2_tokenized/{valid,test}.txt under a data directory "
        "(CC BY-SA 3.0, Merity et al. 2016)"))


@dataclass(frozen=True)
class TextSource:
    """Where text comes from: ``wikitext2`` (with a split) or a path to a UTF-8 text file."""

    name: str
    split: str = "test"

    def read(self) -> str:
        if self.name == "wikitext2":
            return wikitext2_path(self.split).read_text(encoding="utf-8")
        p = Path(self.name).expanduser()
        if not p.is_file():
            raise FmgaugeError(f"text source must be 'wikitext2' or a path to a UTF-8 text file; {self.name!r} is "
                               "neither.")
        return p.read_text(encoding="utf-8")

    def describe(self) -> dict:
        if self.name == "wikitext2":
            from fmgauge.core.cache import file_fingerprint

            return {"text": "wikitext2", "split": self.split, **file_fingerprint(wikitext2_path(self.split))}
        from fmgauge.core.cache import file_fingerprint

        return {"text": "file", **file_fingerprint(self.name)}


_STREAMS: dict[str, torch.Tensor] = {}


def token_stream(tokenizer, source: TextSource) -> torch.Tensor:  # noqa: ANN001 - a transformers tokenizer
    """All tokens of ``source`` (1-D long tensor), tokenized as one stream without special tokens.

    Memoised per process on (tokenizer files, vocabulary size, text file identity): a comparison tokenizes once.
    """
    import json

    key = json.dumps([getattr(tokenizer, "name_or_path", ""), len(tokenizer), source.describe()], default=str)
    if key not in _STREAMS:
        text = source.read()
        ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        _STREAMS[key] = torch.tensor(ids, dtype=torch.long)
    return _STREAMS[key]


def calibration_sequences(stream: torch.Tensor, n_samples: int, seqlen: int, *, seed: int = 0,
                          sampling: str = "random") -> torch.Tensor:
    """``n_samples`` windows (n_samples, seqlen) of ``stream``: at seeded random offsets (``random``, GPTQ's sampler)
    or the first ``n_samples`` consecutive windows from the start (``consecutive``, what a chunked dataset loader
    such as llmcompressor's gives on a concatenated text)."""
    if n_samples < 1 or seqlen < 2:
        raise FmgaugeError(f"calibration needs n_samples >= 1 and seqlen >= 2, got {n_samples} and {seqlen}.")
    if len(stream) <= seqlen:
        raise FmgaugeError(f"calibration text has {len(stream)} tokens, shorter than one sequence of seqlen={seqlen} "
                           "(+1); give more text or a smaller seqlen.")
    if sampling == "consecutive":
        if len(stream) < n_samples * seqlen:
            raise FmgaugeError(f"calibration text has {len(stream)} tokens; {n_samples} consecutive windows of "
                               f"{seqlen} need {n_samples * seqlen}: use fewer --n-samples or sampling 'random'.")
        return stream[: n_samples * seqlen].reshape(n_samples, seqlen).clone()
    if sampling != "random":
        raise FmgaugeError(f"calibration sampling must be 'random' or 'consecutive', got {sampling!r}.")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen, (n_samples,), generator=g)
    return torch.stack([stream[s:s + seqlen] for s in starts.tolist()])


def eval_windows(stream: torch.Tensor, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows ``(begin, end, n_target)`` of the Hugging Face perplexity recipe.

    Each window holds ``context`` tokens; it starts ``stride`` after the previous one and scores only the tokens
    not scored before (``n_target``; all but the first token of the first window). ``stride == context`` is the
    non-overlapping protocol of GPTQ/AWQ papers.
    """
    if not 1 <= stride <= context:
        raise FmgaugeError(f"stride must be in 1..context ({context}), got {stride}.")
    if len(stream) < 2:
        raise FmgaugeError(f"evaluation text has {len(stream)} tokens; need at least 2.")
    out, prev_end = [], 0
    for begin in range(0, len(stream), stride):
        end = min(begin + context, len(stream))
        n_target = end - max(prev_end, begin + 1) if begin == 0 else end - prev_end
        if n_target > 0 and end - begin >= 2:
            out.append((begin, end, min(n_target, end - begin - 1)))
        prev_end = end
        if end == len(stream):
            break
    return out
