"""The copy stage of ``image-overlap``: trained embedder shortlist, then verification of every candidate.

For each query set (benchmark, same-modality control, out-of-domain control):

1. the copy embedder (:mod:`~fmgauge.contamination.copy_embedder`, trained on the reference) embeds the reference
   (cached chunks) and each query image under ``1 + grid²`` views: the whole image and ``grid × grid`` crops of
   side ``query_crop`` (a query-side multi-crop: a copy that is a crop of the query matches one of the crops
   better than the whole image);
2. each view's ``top_k`` reference neighbours are merged per query (score: the best cosine over its views) and
   the ``top_k`` best kept, plus the modality embedder's own top-k neighbours (so a pair the first question
   flags is always verified);
3. every (query, candidate) pair is verified (:mod:`~fmgauge.contamination.verify`); a query's copy score is its
   best verification score, its copy candidate that reference image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from fmgauge.contamination.copy_embedder import CopyEmbedderConfig
from fmgauge.contamination.verify import VerifyConfig

log = logging.getLogger(__name__)


class CopyConfig(BaseModel):
    """The copy detector: trained embedder + verification (module docstring)."""

    detector: str = Field("auto", description="auto (on when a same-modality control is given) | on | off")
    embedder: CopyEmbedderConfig = Field(default_factory=CopyEmbedderConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    top_k: int = Field(10, ge=1, le=200, description="copy-embedder candidates verified per image")
    query_crop: float = Field(0.85, gt=0.3, le=1.0, description="side of the query-side crops (fraction)")
    query_grid: int = Field(3, ge=0, le=5, description="query crops per axis (0: the whole image only)")
    alpha: int = Field(0, ge=0, description="same-modality control images allowed above τ_copy")


@dataclass
class MultiView:
    """An embedder wrapper: each image -> (1 + grid²) views (whole + crops) embedded, flattened to (B, V·D)."""

    base: object
    crop: float
    grid: int
    name: str = "copy-multiview"

    @property
    def views(self) -> int:
        return 1 + self.grid * self.grid

    def identity(self) -> dict:
        return {"kind": "multiview", "base": self.base.identity(), "crop": self.crop, "grid": self.grid}

    def check(self) -> None:
        self.base.check()

    def prepare(self) -> None:
        self.base.prepare()

    def embed(self, images: list) -> np.ndarray:
        from PIL import Image

        vs = []
        for im in images:
            w, h = im.size
            vs.append(im)
            cw, ch = max(1, round(self.crop * w)), max(1, round(self.crop * h))
            xs = np.linspace(0, w - cw, self.grid).round().astype(int) if self.grid > 1 else [(w - cw) // 2]
            ys = np.linspace(0, h - ch, self.grid).round().astype(int) if self.grid > 1 else [(h - ch) // 2]
            for y in ys[:self.grid]:
                for x in xs[:self.grid]:
                    vs.append(im.crop((int(x), int(y), int(x) + cw, int(y) + ch)).resize((w, h), Image.BILINEAR))
        e = self.base.embed(vs)  # (B·V, D)
        return e.reshape(len(images), -1)


@dataclass
class CopyScores:
    """The copy stage's answer for one query set: per decoded query row, the verified candidates and the best."""

    rows: np.ndarray  # (Q,) query rows
    cands: np.ndarray  # (Q, C) reference rows verified (-1 none)
    emb_sim: np.ndarray  # (Q, C) copy-embedder cosine (best view) of each candidate (nan if not a copy candidate)
    score: np.ndarray  # (Q, C) verification score
    params: np.ndarray  # (Q, C, 5)

    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(score (Q,), reference row (Q,), params (Q, 5), copy-embedder cosine (Q,)) of each query's best pair."""
        q = np.arange(len(self.rows))
        j = np.argmax(self.score, axis=1)
        return self.score[q, j], self.cands[q, j], self.params[q, j], self.emb_sim[q, j]


def merge_views(sims: np.ndarray, idx: np.ndarray, views: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k reference rows with the best cosine over its views.

    ``sims`` / ``idx`` (Q·V, k0) from searching every view; returns (sims (Q, k), idx (Q, k)), -1/-inf padded.
    """
    q = len(sims) // views
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    s3, i3 = sims.reshape(q, -1), idx.reshape(q, -1)
    for n in range(q):
        best: dict[int, float] = {}
        for s, i in zip(s3[n], i3[n], strict=True):
            if i >= 0 and s > best.get(int(i), -np.inf):
                best[int(i)] = float(s)
        top = sorted(best.items(), key=lambda t: -t[1])[:k]
        for j, (i, s) in enumerate(top):
            out_i[n, j], out_s[n, j] = i, s
    return out_s, out_i


def union_candidates(copy_idx: np.ndarray, copy_sim: np.ndarray, extra_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of copy candidates (Q, k) and extra candidates (Q, k2), copy first: (cands, copy cosine)."""
    q = len(copy_idx)
    width = copy_idx.shape[1] + extra_idx.shape[1]
    cands = np.full((q, width), -1, np.int64)
    sims = np.full((q, width), np.nan, np.float32)
    for n in range(q):
        seen: list[int] = []
        ss: list[float] = []
        for i, s in zip(copy_idx[n], copy_sim[n], strict=True):
            if i >= 0 and i not in seen:
                seen.append(int(i))
                ss.append(float(s))
        for i in extra_idx[n]:
            if i >= 0 and i not in seen:
                seen.append(int(i))
                ss.append(np.nan)
        cands[n, :len(seen)] = seen
        sims[n, :len(ss)] = ss
    return cands, sims


def run_copy_stage(reference, queries: dict, base_candidates: dict, cfg: CopyConfig, *, index_cfg, batch_size: int,
                   chunk: int, progress: bool = True) -> tuple[dict[str, CopyScores], dict]:
    """Train/load the copy embedder, shortlist and verify every query set.

    ``queries``: {name: (ImageSet, decoded rows (Q,))}; ``base_candidates``: {name: (Q, k) reference rows of the
    modality embedder's top-k, -1 padded}. Returns ({name: CopyScores}, info with timings and training manifest).
    """
    import time

    from fmgauge.contamination.copy_embedder import train_copy_embedder, training_manifest
    from fmgauge.contamination.embed_cache import embed_image_set
    from fmgauge.contamination.neighbours import build_index
    from fmgauge.contamination.verify import verify_candidates

    info: dict = {"timings": {}}
    t = time.perf_counter()
    c0 = time.process_time()
    emb = train_copy_embedder(reference, cfg.embedder, progress=progress)
    info["timings"]["train_s"] = time.perf_counter() - t
    info["timings"]["train_cpu_s"] = time.process_time() - c0
    info["embedder"] = {**emb.identity(), "training": {k: v for k, v in training_manifest(emb).items()
                                                      if k in ("trained_on", "history", "wall_s", "cpu_s")}}
    t = time.perf_counter()
    ref_e = embed_image_set(reference, emb, batch_size=max(batch_size, 256), chunk=chunk, label="reference (copy)",
                            progress=progress)
    ref_rows = ref_e.rows()
    info["timings"]["embed_reference_s"] = time.perf_counter() - t
    index = build_index(lambda: (e for _, e in ref_e.chunks()), len(ref_rows), cfg.embedder.dim, index_cfg)
    mv = MultiView(emb, cfg.query_crop, cfg.query_grid)
    out: dict[str, CopyScores] = {}
    for name, (s, rows) in queries.items():
        t = time.perf_counter()
        qe = embed_image_set(s, mv, batch_size=batch_size, chunk=chunk, label=f"{name} (copy views)", progress=progress)
        q_rows, q_emb = qe.matrix()  # (Q, V·D)
        pos = {int(r): i for i, r in enumerate(q_rows)}
        sel = np.array([pos[int(r)] for r in rows], np.int64)
        views = q_emb[sel].reshape(len(sel) * mv.views, -1)
        vs, vi = index.search(views, cfg.top_k)
        ms, mi = merge_views(vs, vi, mv.views, cfg.top_k)
        mi = np.where(mi >= 0, ref_rows[np.clip(mi, 0, None)], -1)
        cands, esim = union_candidates(mi, ms, base_candidates[name])
        ver = verify_candidates(s, rows, reference, cands, cfg.verify, chunk=chunk, label=name, progress=progress)
        out[name] = CopyScores(np.asarray(rows), cands, esim, ver.score, ver.params)
        info["timings"][f"copy_{name}_s"] = time.perf_counter() - t
        info.setdefault("pairs_verified", {})[name] = int((cands >= 0).sum())
    info["views_per_query"] = mv.views
    return out, info
