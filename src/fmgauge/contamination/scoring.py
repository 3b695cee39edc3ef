"""Token-level statistics of a causal LM over text items: one batched forward per item (or per window).

For an item tokenised as ``x_0 … x_{L-1}`` the model scores targets ``x_1 … x_{L-1}`` (``T = L − 1`` tokens). For each
target ``t`` we keep, from the full next-token distribution ``p = softmax(logits_{t-1})`` over the vocabulary ``V``:

- ``logp[t] = log p(x_t)``
- ``mu[t]   = Σ_v p_v log p_v``                       (expected log-prob; Min-K%++, Zhang et al. 2024, eq. 3)
- ``sigma[t] = sqrt(Σ_v p_v (log p_v)² − mu[t]²)``

Items longer than the context are scored with a sliding window (``context`` tokens, step ``stride``): every target
is scored exactly once, with at least ``context − stride`` tokens of left context after the first window. Nothing
is truncated. Items are sorted by length and batched under a token budget with right padding and an attention
mask (padding never changes a score: checked against unbatched scoring in the tests).

Results are cached (:func:`fmgauge.core.cache.cached_arrays`) under (model identity + weight-file fingerprints,
tokenizer, texts, context, stride, dtype) as flat arrays with ``offsets`` (N + 1,): item ``i`` owns
``[offsets[i], offsets[i+1])``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmgauge.core.cache import cached_arrays, file_fingerprint, stable_hash
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenStats:
    """Flat per-token arrays for ``N`` items; item ``i`` is ``[offsets[i], offsets[i+1])``."""

    token_ids: np.ndarray  # (T_total,) int64, the scored targets
    logp: np.ndarray  # (T_total,) float64, log p(x_t)
    mu: np.ndarray  # (T_total,) float64
    sigma: np.ndarray  # (T_total,) float64
    offsets: np.ndarray  # (N + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logp, mu, sigma) of item ``i``, each (T_i,)."""
        s = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return self.logp[s], self.mu[s], self.sigma[s]

    @property
    def n_tokens(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids, "logp": self.logp, "mu": self.mu, "sigma": self.sigma,
                "offsets": self.offsets}


def model_identity(tm: Any) -> dict:
    """Cache identity of a :class:`~fmgauge.core.text_models.TextModel`, with weight-file fingerprints for local
    directories (a model re-saved into the same folder gets a new key)."""
    ident = dict(tm.identity)
    src = Path(str(tm.source))
    if src.is_dir():
        ident["files"] = [file_fingerprint(p) for p in sorted(src.glob("*.safetensors")) + sorted(src.glob("*.bin"))]
    ident["dtype"] = str(next(tm.model.parameters()).dtype)
    return ident


def check_tokenizer_matches(model: Any, tokenizer: Any, token_ids: Sequence[Sequence[int]] = ()) -> None:
    """Refuse a tokenizer that does not belong to ``model``.

    Refused: a tokenizer whose base vocabulary is larger than the model's embedding table, one more than 2%
    smaller than the table (another model's tokenizer; checkpoints pad their tables by far less, e.g. Pythia 27
    rows of 50,304), or any produced token id outside the table.
    """
    n_embed = int(model.get_input_embeddings().num_embeddings)
    n_tok = int(getattr(tokenizer, "vocab_size", len(tokenizer)))
    name_m = getattr(model.config, "_name_or_path", "?")
    name_t = getattr(tokenizer, "name_or_path", "?")
    if n_tok > n_embed or len(tokenizer) < 0.98 * n_embed:
        raise FmgaugeError(
            f"tokenizer/model mismatch: the tokenizer ({name_t}) has {len(tokenizer)} tokens (base vocabulary "
            f"{n_tok}) but the model ({name_m}) embeds {n_embed}; load both from the same checkpoint.")
    for ids in token_ids:
        if len(ids) and max(ids) >= n_embed:
            raise FmgaugeError(f"tokenizer/model mismatch: token id {max(ids)} is outside the model's embedding "
                               f"table of {n_embed} rows ({name_t} vs {name_m}).")


def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text with the tokenizer's default special tokens; items with < 2 tokens are refused."""
    ids = [list(x) for x in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    short = [i for i, x in enumerate(ids) if len(x) < 2]
    if short:
        raise FmgaugeError(f"{len(short)} item(s) tokenise to fewer than 2 tokens (first: {short[:5]}); a causal LM "
                           "scores no token of them. Remove them from the benchmark.")
    return ids


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over ``length`` tokens: (start, end, first_target) with targets in [first_target, end).

    The first window scores targets 1..end−1; each later window scores only targets past the previous window's end,
    so every target 1..length−1 is scored exactly once.
    """
    if context < 2:
        raise FmgaugeError(f"context must be >= 2 tokens, got {context}.")
    if not 1 <= stride <= context - 1:
        raise FmgaugeError(f"stride must be in [1, context - 1] = [1, {context - 1}], got {stride}.")
    out = [(0, min(length, context), 1)]
    while out[-1][1] < length:
        prev_end = out[-1][1]
        end = min(prev_end + stride, length)
        out.append((max(0, end - context), end, prev_end))
    return out


def config_context(config: Any) -> int | None:
    """``max_position_embeddings`` of a config, or of its text config (Qwen2.5-VL keeps it there); None if absent."""
    n = getattr(config, "max_position_embeddings", None)
    if not n and hasattr(config, "get_text_config"):
        n = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(n) if n else None


def model_context(model: Any, context: int | None) -> int:
    """``context`` or the model's ``max_position_embeddings`` (of its text config for a multimodal model)."""
    if context is not None:
        return int(context)
    n = config_context(model.config)
    if not n:
        raise FmgaugeError("the model config has no max_position_embeddings; pass context= explicitly.")
    return int(n)


@torch.no_grad()
def _distribution_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """logits (M, V), targets (M,) -> logp, mu, sigma (M,) float64 (sums over V in float64, 256 rows at a time)."""
    outs = []
    for a in range(0, len(targets), 256):
        lp = torch.log_softmax(logits[a: a + 256].double(), dim=-1)  # (m, V)
        p = lp.exp()
        mu = (p * lp).sum(-1)
        e2 = (p * lp * lp).sum(-1)
        sigma = (e2 - mu * mu).clamp_min(0).sqrt()
        outs.append((lp.gather(-1, targets[a: a + 256, None])[:, 0], mu, sigma))
    return tuple(torch.cat(z) for z in zip(*outs, strict=True))


@torch.no_grad()
def forward_stats(model: Any, batch: list[list[int]], first_targets: list[int], *,
                  pad_id: int) -> list[tuple[np.ndarray, ...]]:
    """One forward over ``batch`` (B sequences, right-padded); per sequence (logp, mu, sigma) of targets
    ``first_target .. len − 1``."""
    dev = next(model.parameters()).device
    L = max(len(x) for x in batch)
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for b, x in enumerate(batch):
        ids[b, : len(x)] = torch.tensor(x)
        mask[b, : len(x)] = 1
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # (B, L, V)
    out = []
    for b, (x, ft) in enumerate(zip(batch, first_targets, strict=True)):
        tgt = ids[b, ft: len(x)].to(dev)  # (T_b,)
        lp, mu, sd = _distribution_stats(logits[b, ft - 1: len(x) - 1].float(), tgt)
        out.append((lp.cpu().numpy(), mu.cpu().numpy(), sd.cpu().numpy()))
    return out


def token_stats(
    tm: Any, texts: Sequence[str], *, context: int | None = None, stride: int | None = None,
    max_batch_tokens: int = 2048, batch_size: int | None = None, cache: bool = True, progress: bool = False,
) -> TokenStats:
    """Per-token ``logp``, ``mu``, ``sigma`` of every item under ``tm`` (a TextModel).

    Parameters
    ----------
    texts : (N,) str, the items.
    context : window length in tokens (default: the model's max_position_embeddings).
    stride : window step for items longer than ``context`` (default ``context // 2``).
    max_batch_tokens : padded tokens per forward (batch rows = budget // longest row); ``batch_size`` caps rows
        (``batch_size=1`` = one item at a time).
    """
    if len(texts) == 0:
        raise FmgaugeError("no texts to score (empty benchmark).")
    ctx = model_context(tm.model, context)
    stride = stride if stride is not None else max(1, ctx // 2)
    desc = {"model": model_identity(tm), "tokenizer": getattr(tm.tokenizer, "name_or_path", "?"),
            "texts": stable_hash(list(texts)), "n": len(texts), "context": ctx, "stride": stride, "v": 1}

    def compute() -> dict[str, np.ndarray]:
        ids = tokenize(tm.tokenizer, texts)
        check_tokenizer_matches(tm.model, tm.tokenizer, ids)
        return _compute(tm, ids, ctx, stride, max_batch_tokens, batch_size, progress).to_arrays()

    arrays = cached_arrays("contamination-tokens", desc, compute) if cache else compute()
    return TokenStats(**arrays)


def _compute(tm: Any, ids: list[list[int]], ctx: int, stride: int, max_batch_tokens: int,
             batch_size: int | None, progress: bool) -> TokenStats:
    segs = []  # (item, window index, tokens, first target within the window)
    for i, x in enumerate(ids):
        ws = windows(len(x), ctx, stride)
        if len(ws) > 1:
            log.debug("item %d: %d tokens > context %d, scored in %d windows", i, len(x), ctx, len(ws))
        for w, (s, e, ft) in enumerate(ws):
            segs.append((i, w, x[s:e], ft - s))
    order = sorted(range(len(segs)), key=lambda j: -len(segs[j][2]))
    pad = tm.tokenizer.pad_token_id if tm.tokenizer.pad_token_id is not None else 0
    parts: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    batches, cur = [], []
    for j in order:
        rows = len(cur) + 1
        longest = len(segs[cur[0]][2]) if cur else len(segs[j][2])
        if cur and (rows * longest > max_batch_tokens or (batch_size and rows > batch_size)):
            batches.append(cur)
            cur = []
        cur.append(j)
    batches.append(cur)
    with _progress(progress, "scoring tokens", len(segs)) as advance:
        for bj in batches:
            res = forward_stats(tm.model, [segs[j][2] for j in bj], [segs[j][3] for j in bj], pad_id=pad)
            for j, r in zip(bj, res, strict=True):
                parts[(segs[j][0], segs[j][1])] = r
            advance(len(bj))
    logp, mu, sd, tok, offsets = [], [], [], [], [0]
    for i, x in enumerate(ids):
        n_w = len(windows(len(x), ctx, stride))
        for w in range(n_w):
            a, b, c = parts[(i, w)]
            logp.append(a)
            mu.append(b)
            sd.append(c)
        tok.append(np.asarray(x[1:], dtype=np.int64))
        offsets.append(offsets[-1] + len(x) - 1)
    return TokenStats(np.concatenate(tok), np.concatenate(logp), np.concatenate(mu), np.concatenate(sd),
                      np.asarray(offsets, dtype=np.int64))


class _progress:
    """Context manager yielding ``advance(n, **metrics)`` from :func:`fmgauge.core.progress.progress`."""

    def __init__(self, enabled: bool, what: str, total: int) -> None:
        from fmgauge.core.progress import progress

        self._cm = progress(what, total, enabled=enabled)

    def __enter__(self):  # noqa: ANN204
        return self._cm.__enter__().advance

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
