"""Nearest reference neighbours by inner product on unit vectors (= cosine similarity), exact or approximate.

Notation: Q queries (Q, D), N reference vectors (N, D), both float32 with unit rows; results are ``sims`` (Q, k)
float32 descending and ``idx`` (Q, k) int64 positions into the reference (-1 where fewer than k exist).

- ``exact``: brute force over the reference one chunk at a time (:func:`exact_search`); memory O(Q · chunk), so
  it scales to any N at a cost of Q · N · D multiply-adds.
- ``ivf``: FAISS ``IndexIVFFlat`` (inner product), ``nlist`` ≈ 4 √N k-means cells trained on a uniform sample,
  ``nprobe`` cells searched per query (default max(16, nlist / 8)).
- ``hnsw``: FAISS ``IndexHNSWFlat`` (inner product), ``M`` links per node, ``efSearch`` candidates per query.
- ``auto``: exact below ``exact_below`` reference vectors, IVF at or above it.

Approximate indexes hold all N vectors (N · D · 4 bytes, plus ~M · 8 bytes per vector for HNSW). Their cost in
missed neighbours is measured by :func:`recall_against_exact` on a sample of queries and reported with the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, Field

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)
Chunks = Callable[[], Iterator[np.ndarray]]  # a re-iterable source of (M, D) float32 reference chunks


class IndexConfig(BaseModel):
    """How to search the reference. Unset (None) parameters take the defaults in the module docstring."""

    kind: str = Field("auto", description="exact | ivf | hnsw | auto (exact below exact_below, else ivf)")
    exact_below: int = Field(200_000, ge=1, description="auto uses exact search below this many reference vectors")
    nlist: int | None = Field(None, ge=1, description="IVF cells (default ~4 sqrt(N))")
    nprobe: int | None = Field(None, ge=1, description="IVF cells searched per query (default max(16, nlist/8))")
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    ef_search: int = Field(128, ge=1, description="HNSW candidates per query")
    ef_construction: int = Field(80, ge=1, description="HNSW candidates while building")
    train_size: int = Field(100_000, ge=1, description="IVF k-means training sample (vectors)")
    seed: int = Field(0, description="seed of the IVF training sample")


def resolve_kind(cfg: IndexConfig, n: int) -> str:
    if cfg.kind not in ("exact", "ivf", "hnsw", "auto"):
        raise FmgaugeError(f"--index must be exact, ivf, hnsw or auto, got {cfg.kind!r}.")
    return ("exact" if n < cfg.exact_below else "ivf") if cfg.kind == "auto" else cfg.kind


def ivf_params(cfg: IndexConfig, n: int) -> tuple[int, int]:
    """(nlist, nprobe) for N vectors: nlist ≈ 4 √N, at most N / 39 (FAISS's points-per-centroid floor)."""
    nlist = cfg.nlist or max(1, min(int(round(4 * math.sqrt(n))), n // 39))
    nprobe = min(nlist, cfg.nprobe or max(16, nlist // 8))
    return nlist, nprobe


def _merge_topk(sims: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest of each row of ``sims`` (Q, m) with their ``idx``; descending."""
    if sims.shape[1] > k:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sims, idx = np.take_along_axis(sims, part, 1), np.take_along_axis(idx, part, 1)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)


def exact_search(queries: np.ndarray, chunks: Iterable[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, streaming the reference chunk by chunk: (sims (Q, k), idx (Q, k))."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    offset = 0
    for e in chunks:
        if len(e):
            s = q @ np.asarray(e, np.float32).T  # (Q, M)
            i = np.broadcast_to(np.arange(offset, offset + len(e), dtype=np.int64), s.shape)
            best_s, best_i = _merge_topk(np.hstack([best_s, s]), np.hstack([best_i, i]), k)
        offset += len(e)
    return best_s, best_i


@dataclass
class Index:
    """A searchable reference of ``n`` vectors: ``kind`` exact (streams ``chunks``) or a FAISS index."""

    kind: str
    n: int
    dim: int
    chunks: Chunks
    faiss_index: object | None = None
    params: dict | None = None
    build_seconds: float = 0.0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims (Q, k) descending, idx (Q, k) int64) of the top-k reference vectors per query."""
        k = min(k, self.n)
        if self.faiss_index is None:
            return exact_search(queries, self.chunks(), k)
        s, i = self.faiss_index.search(np.ascontiguousarray(queries, np.float32), k)
        s = np.where(i < 0, -np.inf, s).astype(np.float32)
        return s, i.astype(np.int64)

    def memory_bytes(self) -> int:
        """Bytes the index holds: 0 beyond one chunk for exact; FAISS's serialised size otherwise."""
        if self.faiss_index is None:
            return 0
        import faiss

        return int(faiss.serialize_index(self.faiss_index).nbytes)


def build_index(chunks: Chunks, n: int, dim: int, cfg: IndexConfig) -> Index:
    """Build the index ``cfg`` asks for over the N reference vectors that ``chunks()`` yields."""
    if n == 0:
        raise FmgaugeError("the reference set has no embedded images; nothing to search (empty reference).")
    kind = resolve_kind(cfg, n)
    t0 = time.perf_counter()
    if kind == "exact":
        return Index("exact", n, dim, chunks, params={})
    import faiss

    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
        params = {"M": cfg.hnsw_m, "efSearch": cfg.ef_search, "efConstruction": cfg.ef_construction}
    else:
        nlist, nprobe = ivf_params(cfg, n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(chunks, n, min(n, max(cfg.train_size, 39 * nlist)), cfg.seed))
        index.nprobe = nprobe
        params = {"nlist": nlist, "nprobe": nprobe}
    for e in chunks():
        if len(e):
            index.add(np.ascontiguousarray(e, np.float32))
    out = Index(kind, n, dim, chunks, index, params, time.perf_counter() - t0)
    log.info("built %s index over %d vectors (%s) in %.1f s", kind, n, params, out.build_seconds)
    return out


def _training_sample(chunks: Chunks, n: int, size: int, seed: int) -> np.ndarray:
    """A uniform sample of ``size`` of the N reference vectors, one pass over the chunks."""
    keep = np.zeros(n, bool)
    keep[np.random.default_rng(seed).choice(n, size=size, replace=False)] = True
    parts, offset = [], 0
    for e in chunks():
        parts.append(np.asarray(e[keep[offset:offset + len(e)]], np.float32))
        offset += len(e)
    return np.ascontiguousarray(np.concatenate(parts))


@dataclass(frozen=True)
class RecallReport:
    """Approximate vs exact top-k on ``queries`` sampled queries: recall@1 and recall@k (set overlap / k)."""

    kind: str
    queries: int
    k: int
    recall_at_1: float
    recall_at_k: float
    top1_similarity_gap_max: float  # max over queries of exact top-1 sim - approximate top-1 sim (>= 0)
    approx_seconds: float
    exact_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def recall_against_exact(index: Index, queries: np.ndarray, k: int, *, sample: int = 1000,
                         seed: int = 0) -> RecallReport:
    """Recall of ``index`` against exact search on up to ``sample`` of ``queries`` (Q, D), both timed."""
    rng = np.random.default_rng(seed)
    q = queries if len(queries) <= sample else queries[np.sort(rng.choice(len(queries), sample, replace=False))]
    k = min(k, index.n)
    t0 = time.perf_counter()
    a_s, a_i = index.search(q, k)
    t1 = time.perf_counter()
    e_s, e_i = exact_search(q, index.chunks(), k)
    t2 = time.perf_counter()
    # top-1 found: the same vector, or one exactly as similar (a duplicate in the reference)
    r1 = float(np.mean((a_i[:, 0] == e_i[:, 0]) | (a_s[:, 0] >= e_s[:, 0] - 1e-6))) if len(q) else float("nan")
    rk = float(np.mean([len(set(a) & set(e)) / k for a, e in zip(a_i, e_i, strict=True)])) if len(q) else float("nan")
    gap = float(np.max(e_s[:, 0] - np.where(np.isfinite(a_s[:, 0]), a_s[:, 0], -1.0))) if len(q) else 0.0
    return RecallReport(index.kind, len(q), k, r1, rk, max(gap, 0.0), t1 - t0, t2 - t1)
