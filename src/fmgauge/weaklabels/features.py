"""What a student sees: the dataset's raw inputs, TF-IDF vectors of texts, or sentence embeddings of texts.

A student's ``features`` field names its representation:

- ``raw``: the split's ``x`` as stored — images (N, C, H, W) uint8 or features (N, D) float32;
- ``text``: the texts themselves (N,) str, for students that read text (``finetune``);
- ``tfidf``: TF-IDF of texts (scikit-learn, sublinear tf, unigrams + bigrams, terms in >= 2 documents), the
  vocabulary and idf fit on the *pool* texts only (unlabelled, so no label leaks; the test split never shapes it);
  a sparse CSR matrix (N, V) float64;
- ``embed:<model>`` (e.g. ``embed:minilm-l6``): mean-pooled, L2-normalised sentence embeddings (N, D) float32
  from :func:`fmgauge.weaklabels.text_embed.embed_texts`, cached on disk and shared with the embedding labeler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fmgauge.core.data import Dataset
from fmgauge.core.validation import FmgaugeError

TEXT_FEATURES_HELP = "raw | text | tfidf | embed:<model> (e.g. embed:minilm-l6)"
EMBED_MAX_LENGTH = 128  # tokens per text for student embeddings: title + aims of an abstract, 2x faster than 256


def check_features(features: str) -> str:
    """Validate a ``features`` name; returns it."""
    if features in ("raw", "text", "tfidf") or (features.startswith("embed:") and len(features) > len("embed:")):
        return features
    raise FmgaugeError(f"features must be {TEXT_FEATURES_HELP}, got {features!r}.")


def is_text(ds: Dataset) -> bool:
    x = next(iter(ds.splits.values())).x
    return x.ndim == 1 and x.dtype == object


def represent(ds: Dataset, features: str, pool_split: str, test_split: str) -> tuple[Any, Any]:
    """(pool inputs, test inputs) of ``ds`` in representation ``features`` (see the module docstring)."""
    check_features(features)
    pool, test = ds.split(pool_split), ds.split(test_split)
    text = is_text(ds)
    if features == "raw":
        if text:
            raise FmgaugeError(f"dataset {ds.name!r} holds texts; students need features: tfidf, "
                               "embed:<model> (e.g. embed:minilm-l6) or text (finetune), not raw.")
        return pool.x, test.x
    if not text:
        raise FmgaugeError(f"features {features!r} apply to text datasets; {ds.name!r} holds arrays of shape "
                           f"{pool.x.shape[1:]}: use features: raw.")
    if features == "text":
        return pool.x, test.x
    if features == "tfidf":
        return _tfidf(ds.name, ds.source, pool_split, test_split, pool.x, test.x)
    from fmgauge.weaklabels.text_embed import embed_texts

    model = features.split(":", 1)[1]
    return (embed_texts(model, pool.x, max_length=EMBED_MAX_LENGTH),
            embed_texts(model, test.x, max_length=EMBED_MAX_LENGTH))


_TFIDF: dict[tuple, tuple[Any, Any]] = {}  # per process: (dataset, source, pool split, test split) -> matrices
TFIDF_PARAMS = {"sublinear_tf": True, "ngram_range": (1, 2), "min_df": 2, "max_features": 50_000,
                "strip_accents": "unicode"}


def _tfidf(name: str, source: str, pool_split: str, test_split: str, pool_x: np.ndarray,
           test_x: np.ndarray) -> tuple[Any, Any]:
    """TF-IDF of the pool and test texts: per process, fit once per dataset (trials reuse it); on disk, cached by
    the texts' content (a later command or a worker process reads it back: fitting takes about a second on 2,000
    abstracts); one split read as both pool and test (``decide``) is transformed once."""
    key = (name, source, pool_split, test_split)
    if key not in _TFIDF:
        import scipy.sparse as sp
        import sklearn

        from fmgauge.core.cache import cached_arrays
        from fmgauge.weaklabels.text_embed import texts_hash

        same = pool_split == test_split

        def compute() -> dict[str, np.ndarray]:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(**TFIDF_PARAMS)
            mats = {"pool": vec.fit_transform([str(t) for t in pool_x])}
            if not same:
                mats["test"] = vec.transform([str(t) for t in test_x])
            return {f"{k}_{part}": np.asarray(getattr(m, part)) for k, m in mats.items()
                    for part in ("data", "indices", "indptr", "shape")}

        desc = {"what": "tfidf", "pool": texts_hash(pool_x), "test": "pool" if same else texts_hash(test_x),
                "params": TFIDF_PARAMS, "sklearn": sklearn.__version__}
        arrays = cached_arrays("tfidf", desc, compute)
        mats = {k: sp.csr_matrix((arrays[f"{k}_data"], arrays[f"{k}_indices"], arrays[f"{k}_indptr"]),
                                 shape=tuple(arrays[f"{k}_shape"])) for k in ("pool", "test") if f"{k}_data" in arrays}
        _TFIDF.clear()  # one dataset at a time is all a sweep needs
        _TFIDF[key] = (mats["pool"], mats["pool"] if same else mats["test"])
    return _TFIDF[key]


def input_shape(x: Any) -> tuple[int, ...]:
    """Per-item shape of a representation (dense array or sparse matrix)."""
    return tuple(x.shape[1:])
