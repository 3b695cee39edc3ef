"""Canonical-order exchangeability test (Oren et al., "Proving Test Set Contamination in Black Box Language
Models", ICLR 2024; reference code tatsu-lab/test_set_contamination).

If a model never saw a benchmark, every ordering of its (exchangeable) examples is equally likely under the model,
so the canonical (published) order is no more likely than a random shuffle. The sharded test: split the first
``max_examples`` examples, in canonical order, into ``S`` contiguous shards; in shard ``s`` compute

    d_s = log p(concat in canonical order) − mean_j log p(concat in random order π_j),   j = 1..m

with sliding-window scoring (``context`` tokens, step ``stride``); then ``t = mean(d) / (sd(d) / sqrt(S))``.

**p-value.** Oren et al. read ``t`` against Student's t (``p_t = 1 − F_t(t; df = S − 1)``, kept in the result as
``p_t``). fmgauge calibrates it the way the null itself states: without exposure the canonical order is just one
more random order, so in every shard it is exchangeable with the ``m`` scored permutations. The permutation
p-value re-draws, independently per shard, which of the ``m + 1`` scored orders plays the canonical one, recomputes
``t``, and counts how often it reaches the observed ``t`` (:func:`permutation_p`; no extra model call). It is exact
under the null whatever the shards' distribution (skewed log-probs, few shards), where the t reference is not.

**Structure.** Items that belong together (SLAKE's questions about one image, the two sentences of a paraphrase
pair, a plant group's ``group`` units) make the canonical order more predictable to any LM when they sit next to
each other: a paraphrase is likely right after its partner. Given ``units`` (N,) labels, the test permutes whole
**blocks** — maximal runs of consecutive items sharing a label — keeping each block's items together and in their
order, and shard boundaries fall between blocks; the question becomes "is the order of the blocks special?".

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
    """Per-shard log-probs and the test. Arrays: ``canonical`` (S,), ``permuted`` (S, m), ``diffs`` (S,).

    ``p`` is the permutation-calibrated p-value (the one verdicts use), ``p_t`` the Student-t reference;
    ``shard_sizes`` count items, ``units`` says what was permuted (``items`` or the blocks of a unit column)."""

    canonical: np.ndarray
    permuted: np.ndarray
    t: float
    p: float
    n_examples: int
    shard_sizes: list[int]
    config: dict
    p_t: float = float("nan")
    units: str = "items"
    n_blocks: int = 0
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
    t = float(_t_stat(d))
    return t, float(sps.t.sf(t, df=len(d) - 1))


def _t_stat(d: np.ndarray) -> np.ndarray:
    """t = mean / (sd / sqrt(S)) over the last axis of ``d`` (..., S); sd = 0 gives ±inf (0 for a zero mean)."""
    m, sd = d.mean(-1), d.std(-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = m / (sd / np.sqrt(d.shape[-1]))
    return np.where(sd > 0, t, np.where(m > 0, np.inf, np.where(m < 0, -np.inf, 0.0)))


#: Re-draws of the permutation p-value (resolution 1 / (B + 1)).
N_DRAWS = 9999


def permutation_p(canonical: np.ndarray, permuted: np.ndarray, *, n_draws: int = N_DRAWS,
                  seed: int = 0) -> np.ndarray:
    """Permutation p-value of the sharded t statistic: ``canonical`` (..., S), ``permuted`` (..., S, m).

    Under the null the canonical order is exchangeable with the ``m`` random ones in every shard: each draw
    picks, independently per shard, one of the ``m + 1`` scored orders as "canonical", recomputes
    d_s = x_pick − mean(the other m) and t; p = (1 + #{t* ≥ t}) / (1 + B). Vectorised over leading axes (the same
    draws serve every leading index). Returns (...,) p-values.
    """
    c = np.asarray(canonical, dtype=np.float64)
    x = np.concatenate([c[..., None], np.asarray(permuted, dtype=np.float64)], axis=-1)  # (..., S, m + 1)
    S, m1 = x.shape[-2], x.shape[-1]
    if S < 2 or m1 < 2:
        raise FmgaugeError(f"the permutation p-value needs at least 2 shards and 1 permutation, got {S} and "
                           f"{m1 - 1}.")
    total = x.sum(-1)  # (..., S)
    d_obs = x[..., 0] - (total - x[..., 0]) / (m1 - 1)
    t_obs = _t_stat(d_obs)
    pick = np.random.default_rng(seed).integers(0, m1, size=(n_draws, S))  # (B, S)
    xp = x[..., np.arange(S)[None, :], pick]  # (..., B, S)
    d = xp - (total[..., None, :] - xp) / (m1 - 1)
    t = _t_stat(d)  # (..., B)
    return (1 + (t >= t_obs[..., None] - 1e-12).sum(-1)) / (n_draws + 1)


def blocks_of(units: Sequence[str] | None, n: int) -> list[list[int]]:
    """Maximal runs of consecutive items with equal ``units`` label (each item alone when ``units`` is None)."""
    if units is None:
        return [[i] for i in range(n)]
    if len(units) != n:
        raise FmgaugeError(f"units has {len(units)} labels for {n} examples.")
    out: list[list[int]] = []
    for i in range(n):
        if out and units[i] == units[out[-1][-1]]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def scattered_units(units: Sequence[str]) -> int:
    """How many unit labels occur in more than one block (a unit whose items are not consecutive)."""
    blocks = blocks_of(units, len(units))
    seen: dict[str, int] = {}
    for b in blocks:
        seen[units[b[0]]] = seen.get(units[b[0]], 0) + 1
    return sum(v > 1 for v in seen.values())


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


def shard_bounds(n: int, shards: int, *, what: str = "examples") -> list[tuple[int, int]]:
    """Contiguous shards of ``n`` items (or blocks), sizes differing by at most one (np.array_split)."""
    if shards > n // 2:
        fix = f"use at most {n // 2} shards or more examples" if n >= 4 else "the test needs at least 4"
        raise FmgaugeError(f"{shards} shards of {n} {what} leave fewer than 2 per shard; {fix}.")
    edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), shards)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def exchangeability_test(tm: Any, texts: Sequence[str], config: ExchangeabilityConfig | None = None, *,
                         units: Sequence[str] | None = None, unit_name: str | None = None, cache: bool = True,
                         progress: bool = True) -> ExchangeabilityResult:
    """Run the sharded permutation test of ``tm`` (a TextModel) on ``texts`` (N,) in canonical order.

    ``units`` (N,) labels of items that belong together (``unit_name``: the column they come from): whole blocks of
    consecutive items sharing a label are permuted (see the module docstring); None permutes single items."""
    cfg = config or ExchangeabilityConfig()
    texts = list(texts)[: cfg.max_examples]
    if not texts:
        raise FmgaugeError("no examples for the exchangeability test (empty benchmark).")
    units = None if units is None else [str(u) for u in list(units)[: len(texts)]]
    blocks = blocks_of(units, len(texts))
    ctx = min(cfg.context, config_context(tm.model.config) or cfg.context)
    stride = min(cfg.stride, ctx - 1)
    bounds = shard_bounds(len(blocks), cfg.shards, what="blocks of related items" if units else "examples")
    enc = tm.tokenizer([t + cfg.separator for t in texts], add_special_tokens=False)["input_ids"]
    check_tokenizer_matches(tm.model, tm.tokenizer, enc)
    block_ids = [[t for i in b for t in enc[i]] for b in blocks]  # each block's tokens, its items in order
    ident = {"model": model_identity(tm), "tokenizer": getattr(tm.tokenizer, "name_or_path", "?"),
             "context": ctx, "stride": stride, "m": cfg.permutations, "seed": cfg.seed, "sep": cfg.separator, "v": 1}
    canonical = np.zeros(len(bounds))
    permuted = np.zeros((len(bounds), cfg.permutations))
    stats = {"seconds": 0.0, "sequences": 0, "tokens": 0}
    total = len(bounds) * (cfg.permutations + 1)
    if units is not None:
        log.info("exchangeability: permuting %d blocks of related items (%s) instead of %d single items",
                 len(blocks), unit_name or "units", len(texts))
    with _progress(progress, "exchangeability (sequences)", total) as advance:
        for k, (a, b) in enumerate(bounds):
            shard = [block_ids[i] for i in range(a, b)]

            def compute(shard=shard, k=k) -> dict[str, np.ndarray]:
                t0 = time.perf_counter()
                out = _score_shard(tm.model, shard, k, cfg, ctx, stride)
                stats["seconds"] += time.perf_counter() - t0
                stats["sequences"] += cfg.permutations + 1
                stats["tokens"] += (cfg.permutations + 1) * sum(map(len, shard))
                return out

            items = [i for j in range(a, b) for i in blocks[j]]
            desc = {**ident, "shard": stable_hash([texts[i] for i in items]), "k": k}
            if units is not None:
                desc["blocks"] = [len(blocks[j]) for j in range(a, b)]
            arr = cached_arrays("contamination-exchangeability", desc, compute) if cache else compute()
            canonical[k], permuted[k] = float(arr["canonical"][0]), arr["permuted"]
            advance(cfg.permutations + 1)
    t, p_t = sharded_t_test(canonical - permuted.mean(1))
    p = float(permutation_p(canonical, permuted, seed=cfg.seed))
    conf = cfg.model_dump() | {"context_used": ctx, "stride_used": stride}
    sizes = [sum(len(blocks[j]) for j in range(a, b)) for a, b in bounds]
    return ExchangeabilityResult(canonical, permuted, t, p, len(texts), sizes, conf, p_t,
                                 "items" if units is None else f"blocks of {unit_name or 'units'}", len(blocks),
                                 stats["seconds"], stats["sequences"], stats["tokens"])


def _score_shard(model: Any, shard: list[list[int]], k: int, cfg: ExchangeabilityConfig, ctx: int,
                 stride: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, k])
    orders = [np.arange(len(shard))] + [rng.permutation(len(shard)) for _ in range(cfg.permutations)]
    seqs = torch.tensor([[t for i in order for t in shard[i]] for order in orders], dtype=torch.long)  # (m+1, L)
    lp = sequence_logprobs(model, seqs, context=ctx, stride=stride, max_batch_tokens=cfg.max_batch_tokens)
    return {"canonical": lp[:1], "permuted": lp[1:]}
