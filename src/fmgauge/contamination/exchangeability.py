"""Canonical-order exchangeability test (Oren et al., "Proving Test Set Contamination in Black Box Language
Models", ICLR 2024; reference code tatsu-lab/test_set_contamination).

If a model never saw a benchmark, every ordering of its (exchangeable) examples is equally likely under the model,
so the canonical (published) order is no more likely than a random shuffle. The sharded test: split the first
``max_examples`` examples, in canonical order, into ``S`` contiguous shards; in shard ``s`` compute

    d_s = log p(concat in canonical order) − mean_j log p(concat in random order π_j),   j = 1..m

with sliding-window scoring (``context`` tokens, step ``stride``); then ``t = mean(d) / (sd(d) / sqrt(S))`` and the
one-sided ``p = 1 − F_t(t; df = S − 1)``.

Speed (thousands of sequence scorings): each example is tokenised once and a permutation is a reordering of token
lists, so all ``m + 1`` sequences of a shard have the same length: they are scored in padding-free batches, window
by window, and only the logits of scored targets are formed (``logits_to_keep``: the overlap part of later windows
and the unused last position skip the LM head). Only ``log p`` of the target is computed (a logsumexp and a gather,
no full-vocabulary statistics). Per-shard results are cached, so a killed run resumes at the next shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from scipy import stats as sps

from fmgauge.contamination.scoring import (
    _progress,
    check_tokenizer_matches,
    config_context,
    model_identity,
    windows,
)
from fmgauge.core.cache import cached_arrays, stable_hash
from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)


class ExchangeabilityConfig(BaseModel):
    """Options of the sharded permutation test (defaults = Oren et al.'s reference settings)."""

    shards: int = Field(50, ge=2, description="Contiguous shards of the canonical order (t-test df = shards − 1).")
    permutations: int = Field(250, ge=1, description="Random orderings scored per shard.")
    context: int = Field(2048, ge=2, description="Sliding-window length in tokens (capped at the model's).")
    stride: int = Field(1024, ge=1, description="Window step in tokens.")
    max_examples: int = Field(5000, ge=4, description="Use the first max_examples items in canonical order.")
    separator: str = Field("\n", description="Appended to each example before tokenising.")
    seed: int = Field(0, description="Seed of the permutations (per shard: [seed, shard]).")
    max_batch_tokens: int = Field(4096, ge=1, description="Tokens per forward (rows = budget // window).")


@dataclass
class ExchangeabilityResult:
    """Per-shard log-probs and the test. Arrays: ``canonical`` (S,), ``permuted`` (S, m), ``diffs`` (S,)."""

    canonical: np.ndarray
    permuted: np.ndarray
    t: float
    p: float
    n_examples: int
    shard_sizes: list[int]
    config: dict
    seconds: float = 0.0  # wall time of the shards computed in this call (0 when all came from the cache)
    sequences_scored: int = 0
    tokens_scored: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def diffs(self) -> np.ndarray:
        return self.canonical - self.permuted.mean(1)

    @property
    def shard_p(self) -> np.ndarray:
        """Per-shard permutation p-value: (1 + #{perm ≥ canonical}) / (1 + m)."""
        m = self.permuted.shape[1]
        return (1 + (self.permuted >= self.canonical[:, None]).sum(1)) / (1 + m)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["canonical"] = self.canonical.tolist()
        d["permuted_mean"] = self.permuted.mean(1).tolist()
        d["permuted_sd"] = self.permuted.std(1).tolist()
        d["diffs"] = self.diffs.tolist()
        d["shard_p"] = self.shard_p.tolist()
        d["permuted"] = self.permuted.tolist()  # (S, m): the report's permutation histogram
        return d


def sharded_t_test(diffs: np.ndarray) -> tuple[float, float]:
    """One-sided t-test of mean(diffs) > 0: (t, p) with df = len(diffs) − 1."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        raise FmgaugeError(f"the t-test needs at least 2 shards, got {len(d)}.")
    sd = d.std(ddof=1)
    if sd == 0:
        t = np.inf if d.mean() > 0 else (-np.inf if d.mean() < 0 else 0.0)
    else:
        t = d.mean() / (sd / np.sqrt(len(d)))
    return float(t), float(sps.t.sf(t, df=len(d) - 1))


@torch.no_grad()
def sequence_logprobs(model: Any, seqs: torch.Tensor, *, context: int, stride: int,
                      max_batch_tokens: int = 4096) -> np.ndarray:
    """Total log p of each row of ``seqs`` (R, L) int64 (all the same length), sliding-window scored; (R,) float64.

    Every target 1..L−1 is scored once (see :func:`fmgauge.contamination.scoring.windows`).
    """
    R, L = seqs.shape
    dev = next(model.parameters()).device
    total = torch.zeros(R, dtype=torch.float64)
    for s, e, ft in windows(L, context, stride):
        keep = e - ft + 1  # logits at positions ft−1..e−1 of the window (the last one is dropped)
        rows = max(1, max_batch_tokens // (e - s))
        for a in range(0, R, rows):
            x = seqs[a: a + rows, s:e].to(dev)
            logits = _logits(model, x, keep)[:, :-1].float()  # (B, e − ft, V): predicts targets ft..e−1
            tgt = x[:, ft - s:]  # (B, e − ft)
            lp = logits.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
            total[a: a + rows] += lp.double().sum(1).cpu()
    return total.numpy()


def _logits(model: Any, x: torch.Tensor, keep: int) -> torch.Tensor:
    try:
        out = model(input_ids=x, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: form all logits, keep the tail
        out = model(input_ids=x).logits
    return out[:, -keep:]


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous shards of ``n`` items, sizes differing by at most one (np.array_split)."""
    if shards > n // 2:
        raise FmgaugeError(f"{shards} shards of {n} examples leave fewer than 2 examples per shard; use at most "
                           f"{n // 2} shards or more examples.")
    edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), shards)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def exchangeability_test(tm: Any, texts: Sequence[str], config: ExchangeabilityConfig | None = None, *,
                         cache: bool = True, progress: bool = True) -> ExchangeabilityResult:
    """Run the sharded permutation test of ``tm`` (a TextModel) on ``texts`` (N,) in canonical order."""
    cfg = config or ExchangeabilityConfig()
    texts = list(texts)[: cfg.max_examples]
    if not texts:
        raise FmgaugeError("no examples for the exchangeability test (empty benchmark).")
    ctx = min(cfg.context, config_context(tm.model.config) or cfg.context)
    stride = min(cfg.stride, ctx - 1)
    bounds = shard_bounds(len(texts), cfg.shards)
    enc = tm.tokenizer([t + cfg.separator for t in texts], add_special_tokens=False)["input_ids"]
    check_tokenizer_matches(tm.model, tm.tokenizer, enc)
    ident = {"model": model_identity(tm), "tokenizer": getattr(tm.tokenizer, "name_or_path", "?"),
             "context": ctx, "stride": stride, "m": cfg.permutations, "seed": cfg.seed, "sep": cfg.separator, "v": 1}
    canonical = np.zeros(len(bounds))
    permuted = np.zeros((len(bounds), cfg.permutations))
    stats = {"seconds": 0.0, "sequences": 0, "tokens": 0}
    total = len(bounds) * (cfg.permutations + 1)
    with _progress(progress, "exchangeability (sequences)", total) as advance:
        for k, (a, b) in enumerate(bounds):
            shard = [enc[i] for i in range(a, b)]

            def compute(shard=shard, k=k) -> dict[str, np.ndarray]:
                t0 = time.perf_counter()
                out = _score_shard(tm.model, shard, k, cfg, ctx, stride)
                stats["seconds"] += time.perf_counter() - t0
                stats["sequences"] += cfg.permutations + 1
                stats["tokens"] += (cfg.permutations + 1) * sum(map(len, shard))
                return out

            desc = {**ident, "shard": stable_hash([texts[i] for i in range(a, b)]), "k": k}
            arr = cached_arrays("contamination-exchangeability", desc, compute) if cache else compute()
            canonical[k], permuted[k] = float(arr["canonical"][0]), arr["permuted"]
            advance(cfg.permutations + 1)
    t, p = sharded_t_test(canonical - permuted.mean(1))
    conf = cfg.model_dump() | {"context_used": ctx, "stride_used": stride}
    return ExchangeabilityResult(canonical, permuted, t, p, len(texts), [b - a for a, b in bounds], conf,
                                 stats["seconds"], stats["sequences"], stats["tokens"])


def _score_shard(model: Any, shard: list[list[int]], k: int, cfg: ExchangeabilityConfig, ctx: int,
                 stride: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, k])
    orders = [np.arange(len(shard))] + [rng.permutation(len(shard)) for _ in range(cfg.permutations)]
    seqs = torch.tensor([[t for i in order for t in shard[i]] for order in orders], dtype=torch.long)  # (m+1, L)
    lp = sequence_logprobs(model, seqs, context=ctx, stride=stride, max_batch_tokens=cfg.max_batch_tokens)
    return {"canonical": lp[:1], "permuted": lp[1:]}
