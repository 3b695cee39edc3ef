"""Masking strategies behind one registry: ``random`` and ``whole-word`` (transformers' own collator) and ``typhoon``.

A strategy turns (tokenizer, :class:`MaskingConfig`, tokenised training text, seed) into a :class:`MaskingSetup`:
the collator for the MLM Trainer, the Trainer callbacks it needs, and (Typhoon) the state holding its rates.
Every strategy masks at the same expected rate ``MaskingConfig.rate`` so a comparison changes only *which* tokens
are masked. Drivers never special-case names: they call ``STRATEGIES.get(name)(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError

MLM_KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "offset_mapping")


class MaskingConfig(BaseModel):
    """How tokens are masked during the MLM stage (shared by every strategy)."""

    model_config = ConfigDict(extra="forbid")
    rate: float = Field(0.3, gt=0, lt=1, description="expected share of maskable tokens masked (reference: 0.3)")
    replacement: str = Field("mask", pattern="^(mask|80-10-10)$",
                             description="mask: every masked token -> [MASK] (Typhoon reference); 80-10-10: BERT's "
                                         "[MASK]/random/unchanged split (whole-word always uses mask)")
    spread: float = Field(0.4, ge=0, le=1, description="typhoon: rates rescaled into [1 - spread, 1] (0 = uniform)")
    ema: float = Field(0.8, ge=0, le=1, description="typhoon: EMA weight of the previous per-type weight")
    warm_batches: int = Field(4, ge=0, description="typhoon: gradient passes before training (no optimiser step)")


@dataclass
class MaskingSetup:
    collator: Any  # callable(list[dict]) -> batch dict with input_ids / attention_mask / labels
    callbacks: list = field(default_factory=list)
    state: Any = None  # TyphoonState for typhoon

    def masked_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(masked, seen) token counts per type (V,) over every batch collated so far."""
        return self.collator.masked_counts_, self.collator.seen_counts_


StrategyFactory = Callable[[Any, MaskingConfig, Sequence[Sequence[int]], int], MaskingSetup]
STRATEGIES: Registry[StrategyFactory] = Registry("masking strategy")


@dataclass
class TrackingCollator:
    """Wraps a transformers MLM collator, dropping keys it must not see and counting masked tokens per type."""

    inner: Any
    vocab_size: int
    special_ids: tuple[int, ...]
    masked_counts_: np.ndarray = field(init=False, repr=False)
    seen_counts_: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.masked_counts_ = np.zeros(self.vocab_size, dtype=np.int64)
        self.seen_counts_ = np.zeros(self.vocab_size, dtype=np.int64)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        feats = [{k: v for k, v in ex.items() if k in MLM_KEYS} for ex in examples]
        if feats and "offset_mapping" in feats[0]:  # tokenizer.pad leaves offsets ragged: pad them with (0, 0)
            width = max(len(f["input_ids"]) for f in feats)
            side = getattr(self.inner.tokenizer, "padding_side", "right")
            for f in feats:
                pad = [(0, 0)] * (width - len(f["offset_mapping"]))
                f["offset_mapping"] = (pad + list(f["offset_mapping"]) if side == "left"
                                       else list(f["offset_mapping"]) + pad)
        batch = self.inner(feats)
        labels = batch["labels"]
        orig = batch["input_ids"].clone()
        orig[labels.ne(-100)] = labels[labels.ne(-100)]
        real = batch["attention_mask"].bool() if "attention_mask" in batch else orig.ge(0)
        import torch

        real &= ~torch.isin(orig, torch.as_tensor(self.special_ids, dtype=orig.dtype))
        np.add.at(self.seen_counts_, orig[real].numpy(), 1)
        np.add.at(self.masked_counts_, labels[labels.ne(-100)].numpy(), 1)
        return batch


def _hf_collator(tokenizer: Any, cfg: MaskingConfig, seed: int, *, whole_word: bool) -> TrackingCollator:
    from transformers import DataCollatorForLanguageModeling

    if getattr(tokenizer, "mask_token_id", None) is None:
        raise FmgaugeError(f"tokenizer {type(tokenizer).__name__} has no mask token; masked-language modelling "
                           "needs one.")
    if whole_word and not getattr(tokenizer, "is_fast", False):
        raise FmgaugeError(
            f"whole-word masking needs a fast tokenizer (word boundaries come from its offset mapping); "
            f"{type(tokenizer).__name__} is a slow one. Load it with AutoTokenizer.from_pretrained(..., "
            "use_fast=True) or pick the random or typhoon strategy.")
    all_mask = cfg.replacement == "mask" or whole_word
    inner = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=cfg.rate, whole_word_mask=whole_word,
        mask_replace_prob=1.0 if all_mask else 0.8, random_replace_prob=0.0 if all_mask else 0.1, seed=seed)
    import torch

    # seed the generator here: transformers refuses to seed it inside a worker process that is not a DataLoader's
    inner.generator = torch.Generator().manual_seed(int(seed))
    return TrackingCollator(inner, len(tokenizer), tuple(tokenizer.all_special_ids))


@STRATEGIES.register("random")
def random_strategy(tokenizer: Any, cfg: MaskingConfig, train_ids: Sequence[Sequence[int]], seed: int
                    ) -> MaskingSetup:
    """Uniform random token masking at ``cfg.rate`` (transformers' DataCollatorForLanguageModeling)."""
    return MaskingSetup(_hf_collator(tokenizer, cfg, seed, whole_word=False))


@STRATEGIES.register("whole-word")
def whole_word_strategy(tokenizer: Any, cfg: MaskingConfig, train_ids: Sequence[Sequence[int]], seed: int
                        ) -> MaskingSetup:
    """Whole-word masking: a word's first piece is drawn at ``cfg.rate`` and all its pieces are masked together.

    Needs a fast tokenizer and ``offset_mapping`` + ``special_tokens_mask`` in the examples (see tasks.tokenize).
    """
    return MaskingSetup(_hf_collator(tokenizer, cfg, seed, whole_word=True))


@STRATEGIES.register("typhoon")
def typhoon_strategy(tokenizer: Any, cfg: MaskingConfig, train_ids: Sequence[Sequence[int]], seed: int
                     ) -> MaskingSetup:
    """Typhoon: per-token-type rates from MLM-loss gradients (see :mod:`fmgauge.masking.typhoon`)."""
    from fmgauge.masking.typhoon import TyphoonCallback, TyphoonCollator, TyphoonState

    special = set(tokenizer.all_special_ids)
    if tokenizer.pad_token_id is not None:
        special.add(tokenizer.pad_token_id)
    state = TyphoonState.from_token_ids(train_ids, len(tokenizer), special, target=cfg.rate, spread=cfg.spread,
                                        ema=cfg.ema)
    collator = TyphoonCollator(tokenizer, state, replacement=cfg.replacement, seed=seed)
    return MaskingSetup(collator, [TyphoonCallback(state)], state)


def make_strategy(name: str, tokenizer: Any, cfg: MaskingConfig, train_ids: Sequence[Sequence[int]], seed: int
                  ) -> MaskingSetup:
    """The :class:`MaskingSetup` of strategy ``name`` (raises with did-you-mean on an unknown name)."""
    return STRATEGIES.get(name)(tokenizer, cfg, train_ids, seed)
