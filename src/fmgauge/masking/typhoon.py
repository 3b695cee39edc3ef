"""Typhoon: per-token-type masking rates from gradients of the MLM loss w.r.t. the input tokens.

Abdurrahman, Elezabi & Xu, "Typhoon: Towards an Effective Task-Specific Masking Strategy for Pre-trained Language
Models" (2023, arXiv 2303.15619), as in its reference implementation:

1. Score each position i of a batch by the gradient of the MLM loss L with respect to the one-hot input token.
   With word embeddings E (V, d) and e_i = E^T x_i, the derivative for token v is dL/dx_i[v] = <dL/de_i, E[v]>.
   On an unmasked position the token is its own input x_i = v; on a masked position it is the label v = y_i.
2. Per token type v: weight_v = mean over the batch's occurrences of (-g_i on unmasked positions, +g_i on masked
   label positions), smoothed across steps with an EMA: w_v <- ema * w_v + (1 - ema) * weight_v.
3. Rates: rescale the weights linearly into [1 - spread, 1] (min -> 1 - spread, max -> 1), then multiply by the
   constant c that makes the expected masking rate over the dataset equal the target:
   sum_v n_v * min(1, c * r_v) / sum_v n_v = target, with n_v the count of maskable occurrences of v.
   Spread 0 gives every type the target rate (uniform masking).

Notation used throughout: V vocabulary size, B batch, L sequence length, d embedding width. "Maskable" positions
are real tokens (attention mask 1) that are not special tokens ([CLS], [SEP], [PAD], ...).

The gradients come for free from the training step itself: :class:`TyphoonState` hooks the model's input embedding
module and reads dL/de from the backward pass the optimiser runs anyway, so Typhoon costs no extra backward pass
inside ``Trainer`` (:class:`TyphoonCallback` attaches the hooks). :meth:`TyphoonState.warm_start` runs a few
dedicated forward/backward passes (no optimiser step) so the first training batches are not masked uniformly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from fmgauge.core.validation import FmgaugeError, check_choice, check_in_range

log = logging.getLogger(__name__)

Replacement = Literal["mask", "80-10-10"]
REPLACEMENTS = ("mask", "80-10-10")


# ------------------------------------------------------------------------------------------ pure functions

def rescale_weights(weights: np.ndarray, spread: float, *, known: np.ndarray | None = None) -> np.ndarray:
    """Map per-type weights (V,) linearly into [1 - spread, 1] (step 3).

    Only types where ``known`` (V,) bool is true define the min and max; the others (no gradient seen yet) get the
    middle of the range. Equal weights (or none known) give 1 everywhere.
    """
    check_in_range("spread", spread, 0.0, 1.0)
    w = np.asarray(weights, dtype=np.float64)
    known = np.isfinite(w) if known is None else (np.asarray(known, dtype=bool) & np.isfinite(w))
    out = np.full(w.shape, 1.0 - spread / 2)
    if not known.any():
        return np.ones_like(w)
    lo, hi = w[known].min(), w[known].max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.ones_like(w)
    out[known] = 1.0 - spread + spread * (w[known] - lo) / (hi - lo)
    return out


def normalise_rates(scores: np.ndarray, counts: np.ndarray, target: float, *, tol: float = 1e-10) -> np.ndarray:
    """Rates min(1, c * scores) (V,) whose count-weighted mean equals ``target`` (step 3).

    ``scores`` (V,) >= 0 relative masking propensities; ``counts`` (V,) maskable occurrences of each type in the
    dataset. The constant c is found by bisection on the monotone function h(c) = sum n_v min(1, c s_v) / sum n_v,
    so types pushed above 1 are clipped and the others absorb the rest exactly.
    """
    check_in_range("target", target, 0.0, 1.0, inclusive=False)
    s = np.asarray(scores, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if s.shape != n.shape:
        raise FmgaugeError(f"scores has shape {s.shape} and counts has shape {n.shape}; both must be (V,).")
    if (s < 0).any() or (n < 0).any():
        raise FmgaugeError("scores and counts must be non-negative.")
    total = n.sum()
    if total <= 0:
        raise FmgaugeError("counts are all zero: the dataset has no maskable tokens.")
    f = n / total
    reachable = f[s > 0].sum()
    if reachable < target - tol:
        raise FmgaugeError(f"target rate {target} is unreachable: only {reachable:.4f} of the tokens have a "
                           "non-zero masking score (lower the spread or the target).")

    def h(c: float) -> float:
        return float(np.dot(f, np.minimum(1.0, c * s)))

    lo, hi = 0.0, 1.0 / s[(s > 0) & (f > 0)].min()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if h(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * hi:
            break
    return np.minimum(1.0, hi * s)


def expected_rate(rates: np.ndarray, counts: np.ndarray) -> float:
    """Expected share of maskable dataset tokens that get masked: sum n_v rate_v / sum n_v."""
    n = np.asarray(counts, dtype=np.float64)
    return float(np.dot(n, rates) / n.sum())


def typhoon_rates(weights: np.ndarray, counts: np.ndarray, *, target: float, spread: float,
                  known: np.ndarray | None = None) -> np.ndarray:
    """Masking rate per token type (V,): :func:`rescale_weights` then :func:`normalise_rates`."""
    return normalise_rates(rescale_weights(weights, spread, known=known), counts, target)


def position_scores(grad: torch.Tensor, embedding: torch.Tensor, input_ids: torch.Tensor,
                    labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position signed one-hot gradients (step 1-2) and the token type each refers to.

    grad (B, L, d) = dL/de; embedding (V, d) word embeddings; input_ids (B, L); labels (B, L) with -100 where not
    masked (None: nothing masked). Returns (contrib (B, L) = -g on unmasked / +g on masked positions, types (B, L)).
    """
    masked = labels.ne(-100) if labels is not None else torch.zeros_like(input_ids, dtype=torch.bool)
    types = torch.where(masked, labels, input_ids) if labels is not None else input_ids
    g = (grad.float() * embedding.detach().float()[types]).sum(-1)  # (B, L): <dL/de_i, E[type_i]>
    return torch.where(masked, g, -g), types


# ------------------------------------------------------------------------------------------ state (EMA)

@dataclass
class TyphoonState:
    """The running per-type weights (EMA of gradient scores) and the dataset counts that normalise the rates.

    Parameters
    ----------
    counts : (V,) maskable occurrences of each token type in the training text (see :meth:`from_token_ids`).
    special_ids : ids never masked nor scored (special tokens, padding).
    target : expected masking rate over the dataset (reference: 0.3).
    spread : rates are rescaled into [1 - spread, 1] before normalisation (reference: 0.4; 0 = uniform).
    ema : weight of the old value in the EMA across steps (reference: 0.8).
    """

    counts: np.ndarray
    special_ids: tuple[int, ...]
    target: float = 0.3
    spread: float = 0.4
    ema: float = 0.8
    weights_: np.ndarray = field(init=False, repr=False)
    seen_: np.ndarray = field(init=False, repr=False)
    steps_: int = field(init=False, default=0)
    _rates: np.ndarray | None = field(init=False, default=None, repr=False)
    _hooks: list = field(init=False, default_factory=list, repr=False)
    _pending: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.float64)
        if self.counts.ndim != 1 or self.counts.sum() <= 0:
            raise FmgaugeError(f"counts must be a (V,) array of token counts with a positive sum, got shape "
                               f"{self.counts.shape} and sum {self.counts.sum()}.")
        check_in_range("target", self.target, 0.0, 1.0, inclusive=False)
        check_in_range("spread", self.spread, 0.0, 1.0)
        check_in_range("ema", self.ema, 0.0, 1.0)
        self.counts[list(self.special_ids)] = 0
        self.weights_ = np.zeros(len(self.counts))
        self.seen_ = np.zeros(len(self.counts), dtype=bool)

    @classmethod
    def from_token_ids(cls, sequences: Iterable[Sequence[int]], vocab_size: int, special_ids: Iterable[int],
                       **kwargs: Any) -> TyphoonState:
        """Count maskable occurrences (V,) over tokenised training sequences and build the state."""
        special = tuple(sorted({int(i) for i in special_ids if i is not None}))
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if sequences else np.zeros(0)
        counts = np.bincount(flat.astype(np.int64), minlength=vocab_size).astype(np.float64)[:vocab_size]
        return cls(counts, special, **kwargs)

    # ------------------------------------------------------------------ rates
    def rates(self) -> np.ndarray:
        """Current masking rate per token type (V,); special ids get 0. Cached until the next update."""
        if self._rates is None:
            r = typhoon_rates(self.weights_, self.counts, target=self.target, spread=self.spread,
                              known=self.seen_ & (self.counts > 0))
            r[list(self.special_ids)] = 0.0
            self._rates = r
        return self._rates

    # ------------------------------------------------------------------ updates
    def update(self, contrib: torch.Tensor, types: torch.Tensor, valid: torch.Tensor) -> None:
        """One EMA step from per-position scores: contrib, types (B, L) from :func:`position_scores`, valid (B, L)."""
        t = types[valid].long().cpu()
        c = contrib[valid].double().cpu()
        V = len(self.counts)
        sums = torch.zeros(V, dtype=torch.float64).index_add_(0, t, c).numpy()
        n = torch.bincount(t, minlength=V).numpy()[:V]
        hit = n > 0
        batch_mean = sums[hit] / n[hit]
        old = self.seen_[hit]
        w = self.weights_[hit]
        self.weights_[hit] = np.where(old, self.ema * w + (1 - self.ema) * batch_mean, batch_mean)
        self.seen_[hit] = True
        self.steps_ += 1
        self._rates = None

    def valid_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Maskable positions (B, L): real, non-special tokens."""
        special = torch.as_tensor(self.special_ids, dtype=input_ids.dtype, device=input_ids.device)
        valid = ~torch.isin(input_ids, special)
        if attention_mask is not None:
            valid &= attention_mask.bool()
        return valid

    def update_from_gradients(self, grad: torch.Tensor, embedding: torch.Tensor, input_ids: torch.Tensor,
                              labels: torch.Tensor | None, attention_mask: torch.Tensor | None = None) -> None:
        """EMA step from dL/de (B, L, d) of one batch (see :func:`position_scores`)."""
        contrib, types = position_scores(grad, embedding, input_ids, labels)
        # a masked position whose input is [MASK] is still a real token: validity follows the label's type
        self.update(contrib, types, self.valid_positions(types, attention_mask))

    # ------------------------------------------------------------------ hooks on a model
    def attach(self, model: torch.nn.Module) -> None:
        """Read dL/de from every training backward pass of ``model`` (any HF model with input embeddings)."""
        if self._hooks:
            return
        emb = model.get_input_embeddings()

        def pre_hook(_module, args, kwargs):  # stash the batch the model is called on
            if torch.is_grad_enabled() and model.training:
                ids = kwargs.get("input_ids", args[0] if args else None)
                self._pending = {"input_ids": ids, "labels": kwargs.get("labels"),
                                 "attention_mask": kwargs.get("attention_mask")}
            else:
                self._pending = {}

        def emb_hook(_module, _inputs, output):
            batch = self._pending
            if not batch or batch.get("input_ids") is None or not output.requires_grad:
                return
            self._pending = {}
            weight = emb.weight

            def on_grad(grad: torch.Tensor) -> None:
                with torch.no_grad():
                    self.update_from_gradients(grad, weight, batch["input_ids"], batch["labels"],
                                               batch["attention_mask"])

            output.register_hook(on_grad)

        self._hooks = [model.register_forward_pre_hook(pre_hook, with_kwargs=True),
                       emb.register_forward_hook(emb_hook)]

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._pending = {}

    def warm_start(self, model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Update the weights from dedicated forward/backward passes over ``batches`` (no optimiser step).

        Each batch is a collated MLM batch (input_ids, attention_mask, labels) on the model's device. The model's
        parameter gradients are cleared afterwards.
        """
        was_training = model.training
        model.train()
        emb = model.get_input_embeddings()
        for batch in batches:
            captured: dict[str, torch.Tensor] = {}

            def keep(_m, _i, out, captured=captured):
                out.retain_grad()
                captured["e"] = out

            h = emb.register_forward_hook(keep)
            try:
                out = model(**batch)
                out.loss.backward()
            finally:
                h.remove()
            with torch.no_grad():
                self.update_from_gradients(captured["e"].grad, emb.weight, batch["input_ids"],
                                           batch.get("labels"), batch.get("attention_mask"))
        model.zero_grad(set_to_none=True)
        model.train(was_training)


# ------------------------------------------------------------------------------------------ masking

def mask_positions(input_ids: torch.Tensor, probs: torch.Tensor, *, mask_token_id: int, vocab_size: int,
                   replacement: Replacement = "mask", generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each position with probability ``probs`` (B, L) (0 where not maskable); returns (inputs, labels).

    labels (B, L) hold the original id where masked and -100 everywhere else. ``replacement``: "mask" puts [MASK]
    on every masked position (Typhoon's reference); "80-10-10" is BERT's [MASK] / random token / unchanged split.
    """
    check_choice("replacement", replacement, REPLACEMENTS)
    masked = torch.bernoulli(probs.float(), generator=generator).bool()
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    inputs = input_ids.clone()
    if replacement == "mask":
        inputs[masked] = mask_token_id
        return inputs, labels
    u = torch.rand(input_ids.shape, generator=generator)
    to_mask = masked & (u < 0.8)
    to_random = masked & (u >= 0.8) & (u < 0.9)
    inputs[to_mask] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


@dataclass
class TyphoonCollator:
    """HF ``Trainer`` data collator masking with Typhoon's per-token-type rates.

    Pads tokenised examples (dicts with ``input_ids`` and optionally ``attention_mask``/``token_type_ids``) and
    masks each maskable position with probability ``state.rates()[token]``. Pair it with
    ``TyphoonCallback(state)`` in the Trainer so the rates follow the training gradients.

    >>> state = TyphoonState.from_token_ids(train_ids, len(tok), tok.all_special_ids)
    >>> trainer = Trainer(model, args, train_dataset=ds, data_collator=TyphoonCollator(tok, state, seed=0),
    ...                   callbacks=[TyphoonCallback(state)])
    """

    tokenizer: Any  # a transformers tokenizer with a mask token
    state: TyphoonState
    replacement: Replacement = "mask"
    seed: int | None = None  # None: the global torch RNG; an int (0 included) seeds a private generator
    pad_to_multiple_of: int | None = None
    track: bool = True  # count masked tokens per type in ``masked_counts_`` / ``seen_counts_``
    masked_counts_: np.ndarray = field(init=False, repr=False)
    seen_counts_: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_choice("replacement", self.replacement, REPLACEMENTS)
        if getattr(self.tokenizer, "mask_token_id", None) is None:
            raise FmgaugeError(f"tokenizer {type(self.tokenizer).__name__} has no mask token; masked-language "
                               "modelling needs one (tokenizer.add_special_tokens({'mask_token': '[MASK]'})).")
        if self.tokenizer.pad_token_id is None:
            raise FmgaugeError(f"tokenizer {type(self.tokenizer).__name__} has no pad token; set one first.")
        self.generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        V = len(self.state.counts)
        self.masked_counts_ = np.zeros(V, dtype=np.int64)
        self.seen_counts_ = np.zeros(V, dtype=np.int64)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = [{k: v for k, v in ex.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                 for ex in examples]
        batch = self.tokenizer.pad(feats, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)
        ids = batch["input_ids"]
        valid = self.state.valid_positions(ids, batch.get("attention_mask"))
        rates = torch.from_numpy(self.state.rates()).float()
        probs = torch.where(valid, rates[ids.clamp(0, len(rates) - 1)], torch.zeros(()))
        batch["input_ids"], batch["labels"] = mask_positions(
            ids, probs, mask_token_id=self.tokenizer.mask_token_id, vocab_size=len(self.tokenizer),
            replacement=self.replacement, generator=self.generator)
        if self.track:
            np.add.at(self.seen_counts_, ids[valid].numpy(), 1)
            lab = batch["labels"]
            np.add.at(self.masked_counts_, lab[lab.ne(-100)].numpy(), 1)
        return dict(batch)


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class TyphoonCallback(_trainer_callback_base()):  # type: ignore[misc]
    """Attaches :class:`TyphoonState` to the Trainer's model at train start and detaches it at the end."""

    def __init__(self, state: TyphoonState) -> None:
        self.state = state

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001 - HF signature
        if model is None:
            raise FmgaugeError("TyphoonCallback needs the Trainer's model (transformers passes it as `model`).")
        self.state.attach(model)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
        self.state.detach()
