"""Chunked, resumable embedding cache per (image set, embedder).

An image set of N rows is embedded ``chunk`` rows at a time. Chunk c (rows c·chunk .. (c+1)·chunk - 1) is stored
as ``chunk-<c>.npz`` holding ``emb`` (M, D) float32 unit rows and ``rows`` (M,) int64 (the rows that decoded;
M <= chunk), with the rows that did not decode in ``chunk-<c>.skipped.json``. Both are written atomically, the
npz last, so a chunk exists only when complete: an interrupted run resumes at the first missing chunk and reads
no image of a finished one. The directory is ``$FMGAUGE_CACHE/image-embeddings/<key>/`` with key =
:func:`~fmgauge.core.cache.stable_hash` of (image-set fingerprint, embedder identity, chunk size), described in
``manifest.json``. Only one chunk of images is decoded at a time, so memory is O(chunk), not O(N).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmgauge.contamination.images import ImageSet, Skipped
from fmgauge.core.cache import cache_root, stable_hash
from fmgauge.core.files import quarantine, read_back

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 4096


@dataclass
class EmbeddedSet:
    """The cached embeddings of one image set: ``n_chunks`` shards under ``root``."""

    root: Path
    n_rows: int  # rows in the image set, decoded or not
    chunk: int

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk)

    def chunk_path(self, c: int) -> Path:
        return self.root / f"chunk-{c:06d}.npz"

    def _load(self, c: int, *keys: str) -> tuple[np.ndarray, ...]:
        path = self.chunk_path(c)
        return read_back(path, lambda p: _read_npz(p, keys), what="embedding cache chunk",
                         fix="delete it and rerun: the chunk is recomputed (the others are kept).")

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows (M,) int64, emb (M, D) float32) per chunk, in row order; one chunk in memory at a time."""
        for c in range(self.n_chunks):
            yield self._load(c, "rows", "emb")

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """All of it: (rows (N_ok,) int64, emb (N_ok, D) float32). For benchmark- and control-sized sets."""
        parts = list(self.chunks())
        return np.concatenate([r for r, _ in parts]), np.concatenate([e for _, e in parts])

    def rows(self) -> np.ndarray:
        """(N_ok,) int64: the rows that decoded, in order."""
        return np.concatenate([self._load(c, "rows")[0] for c in range(self.n_chunks)])

    def skipped(self) -> list[Skipped]:
        out: list[Skipped] = []
        for c in range(self.n_chunks):
            out += [Skipped(**d) for d in json.loads(self.chunk_path(c).with_suffix(".skipped.json").read_text())]
        return out

    @property
    def dim(self) -> int:
        return read_back(self.root / "manifest.json", lambda p: int(json.loads(p.read_text())["dim"]),
                         what="embedding cache manifest", fix="delete it and rerun: it is rewritten.")


def embed_image_set(images: ImageSet, embedder, *, batch_size: int = 64, chunk: int = DEFAULT_CHUNK,
                    label: str = "images", progress: bool = True) -> EmbeddedSet:
    """Embed every row of ``images`` with ``embedder`` into the cache (resuming), returning the cached set.

    ``batch_size`` images go through ``embedder.embed`` at once; ``chunk``
    rows make one shard (the unit of resumption). A rich progress bar counts rows when ``progress``.
    """
    from fmgauge.core.progress import progress as progress_tracker

    desc = {"images": images.fingerprint(), "embedder": embedder.identity(), "chunk": chunk}
    root = cache_root() / "image-embeddings" / stable_hash(desc)
    root.mkdir(parents=True, exist_ok=True)
    out = EmbeddedSet(root, len(images), chunk)
    todo = [c for c in range(out.n_chunks) if not _chunk_ok(out.chunk_path(c))]
    if len(todo) < out.n_chunks:
        log.info("%s: %d of %d embedding chunks cached in %s", label, out.n_chunks - len(todo), out.n_chunks, root)
    dim = None
    total = sum(min((c + 1) * chunk, len(images)) - c * chunk for c in todo)
    with progress_tracker(f"embedding {label}", total, unit="image", enabled=progress and bool(todo)) as bar:
        for c in todo:
            start, stop = c * chunk, min((c + 1) * chunk, len(images))
            rows, embs, skipped = [], [], []
            for s in range(start, stop, batch_size):
                r, ims, sk = images.read(s, min(s + batch_size, stop))
                if ims:
                    e = embedder.embed(ims)
                    rows.append(r)
                    embs.append(e)
                    dim = e.shape[1]
                skipped += sk
                bar.advance(min(s + batch_size, stop) - s)
            if dim is None:  # a chunk where nothing decoded: learn D from one probe image
                dim = _probe_dim(embedder)
            emb = np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)
            _write_chunk(out.chunk_path(c), np.concatenate(rows) if rows else np.zeros(0, np.int64),
                         emb.astype(np.float32), skipped)
    if not (root / "manifest.json").exists():
        dim = dim or _probe_dim(embedder)
        (root / "manifest.json").write_text(json.dumps({**desc, "n_rows": len(images), "dim": dim,
                                                        "spec": images.spec}, indent=1, default=str))
    return out


def _read_npz(path: Path, keys: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    with np.load(path, allow_pickle=False) as z:
        return tuple(z[k] for k in keys)


def _chunk_ok(path: Path) -> bool:
    """A finished chunk: its npz opens with both arrays and its skipped list parses. A truncated or corrupt one is
    moved aside with a warning (and recomputed by the caller); a missing one is simply not done yet."""
    import zipfile

    if not path.exists():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
        if not {"rows.npy", "emb.npy"} <= names:
            raise ValueError(f"holds {sorted(names)}, not rows.npy and emb.npy")
        json.loads(path.with_suffix(".skipped.json").read_text())
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        quarantine(path, e, what="embedding cache chunk")
        return False
    return True


def _probe_dim(embedder) -> int:
    from PIL import Image

    return int(embedder.embed([Image.new("RGB", (32, 32), (128, 128, 128))]).shape[1])


def _write_chunk(path: Path, rows: np.ndarray, emb: np.ndarray, skipped: list[Skipped]) -> None:
    sk = path.with_suffix(".skipped.json")
    tmp = sk.with_name(sk.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps([s.to_dict() for s in skipped]))
    os.replace(tmp, sk)
    tmpz = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmpz, rows=rows, emb=emb)
    os.replace(tmpz, path)
