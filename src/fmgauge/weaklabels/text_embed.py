"""Cached sentence embeddings of texts (mean pooling + L2 normalisation), shared by labelers and students.

Notation: N texts, L tokens per text after truncation, D embedding width. For all-MiniLM-L6-v2 (``minilm-l6``)
this is exactly what sentence-transformers computes for that model (its modules: Transformer(max_seq_length=256),
Pooling(mean), Normalize):

    h = encoder(tokens)                                   (N, L, D) last hidden states
    e_i = sum_t m_it h_it / sum_t m_it                    (N, D)    mean over non-padding tokens (mask m)
    e_i <- e_i / ||e_i||                                  (N, D)    unit length, so e_i · e_j = cosine similarity

Texts are sorted by length before batching (little padding), and the result is returned in input order. Results
are cached under ``$FMGAUGE_CACHE/embeddings`` keyed by (model identity, a hash of the texts, max_length, dtype), so
the zero-shot embedding labeler and the embedding students compute each text's embedding once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from fmgauge.core.cache import cached_arrays
from fmgauge.core.validation import FmgaugeError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def texts_hash(texts: np.ndarray | list[str]) -> str:
    """sha256 (hex, 16 chars) of the texts in order; a cache-key component that changes with any text or order."""
    h = hashlib.sha256()
    for t in texts:
        b = str(t).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def labelling_threads() -> int:
    """Threads for labelling: ``$FMGAUGE_THREADS`` if set, else all available cores."""
    env = os.environ.get("FMGAUGE_THREADS", "")
    if not env:
        return available_cores()
    if not env.isdigit() or int(env) < 1:
        raise FmgaugeError(f"FMGAUGE_THREADS must be a positive integer, got {env!r}.")
    return int(env)


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads, then restore the old count.

    ``n`` None: ``$FMGAUGE_THREADS`` if set, else all available cores. The study's trial workers run with
    OMP_NUM_THREADS=1; a model labelling thousands of texts once should use the whole machine, unless the machine
    is shared: with other jobs saturating the cores, 1 thread was 2x faster than 2 here (docs/bench-parts).
    """
    import torch

    old = torch.get_num_threads()
    new = labelling_threads() if n is None else n
    torch.set_num_threads(new)
    try:
        yield new
    finally:
        torch.set_num_threads(old)


def check_texts(name: str, texts: np.ndarray | list[str]) -> np.ndarray:
    """``texts`` as a 1-D object array of str; refuses other shapes and non-strings."""
    arr = np.asarray(texts, dtype=object)
    if arr.ndim != 1:
        raise FmgaugeError(f"{name} must be a 1-D array of strings, got shape {arr.shape}.")
    bad = [i for i, t in enumerate(arr) if not isinstance(t, str)]
    if bad:
        raise FmgaugeError(f"{name} must hold strings; item {bad[0]} is {type(arr[bad[0]]).__name__} "
                           f"({len(bad)} non-string items).")
    return arr


def model_identity(model: str) -> dict[str, str]:
    """What a cache key needs to know about ``model`` without loading it (same as ``TextModel.identity``)."""
    from fmgauge.core.text_models import resolve_text_model

    source, _ = resolve_text_model(model)
    return {"model": model, "source": source}


def mean_pooled(encoder, tokenizer, texts: list[str], *, max_length: int, batch_size: int,
                device: torch.device, progress: str | None = None) -> np.ndarray:
    """(N, D) float32 unit-length mean-pooled embeddings of ``texts``, batched in order of token length."""
    import torch

    from fmgauge.core.progress import track

    with torch.inference_mode():
        enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
        order = np.argsort([len(ids) for ids in enc], kind="stable")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for s in track(starts, progress or "embedding", unit="batch", enabled=progress is not None):
            idx = order[s:s + batch_size]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(enc[i])] = torch.tensor(enc[i])
                mask[r, :len(enc[i])] = 1
            h = encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.float()  # (B, L, D)
            m = mask.to(device).unsqueeze(-1).float()  # (B, L, 1)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
            out[idx] = torch.nn.functional.normalize(e, dim=-1).cpu().numpy()
    return out


def embed_texts(model: str, texts: np.ndarray | list[str], *, max_length: int = 256, batch_size: int = 64,
                device: str = "auto", dtype: str = "float32") -> np.ndarray:
    """(N, D) float32 L2-normalised mean-pooled embeddings of ``texts`` (N,) str with the encoder ``model``.

    ``model``: a registered text model (``minilm-l6``), a local directory or a hub id, loaded by
    :func:`fmgauge.core.text_models.load_text_model` (task ``encoder``). Texts longer than ``max_length`` tokens
    (special tokens included) are truncated, as sentence-transformers does (256 for all-MiniLM-L6-v2). Cached by
    (model identity, texts hash, max_length, dtype); ``batch_size`` and ``device`` do not change the result.
    """
    arr = check_texts("texts", texts)
    if len(arr) == 0:
        raise FmgaugeError("texts is empty; nothing to embed.")
    if max_length < 2:
        raise FmgaugeError(f"max_length must be >= 2 tokens, got {max_length}.")
    if batch_size < 1:
        raise FmgaugeError(f"batch_size must be >= 1, got {batch_size}.")
    key = {**model_identity(model), "texts": texts_hash(arr), "n": len(arr), "max_length": max_length,
           "dtype": dtype, "pooling": "mean", "normalize": True}

    def compute() -> dict[str, np.ndarray]:
        from fmgauge.core.text_models import load_text_model

        tm = load_text_model(model, task="encoder", device=device, dtype=dtype)
        log.info("embedding %d texts with %s on %s (max_length %d)", len(arr), model, tm.device, max_length)
        with torch_threads():
            emb = mean_pooled(tm.model, tm.tokenizer, list(arr), max_length=max_length, batch_size=batch_size,
                              device=tm.device, progress=f"{model} embeddings" if len(arr) > batch_size else None)
        return {"embeddings": emb}

    return cached_arrays("embeddings", key, compute)["embeddings"]
