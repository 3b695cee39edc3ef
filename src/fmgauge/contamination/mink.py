"""The Min-K%++ family of per-item membership scores, from one forward pass per item.

Notation (see :mod:`fmgauge.contamination.scoring`): an item has ``T`` scored tokens with ``logp`` (T,), ``mu`` (T,)
and ``sigma`` (T,). ``lowest_k(v, k)`` is the mean of the ``max(1, int(k·T))`` smallest values of ``v``
(``int`` truncation as in zjysteven/mink-plus-plus run.py; at least one token).

- ``loss``      mean NLL = −mean(logp)                                        (Yeom et al. 2018; lower = member)
- ``zlib``      loss / len(zlib.compress(utf-8 text))                         (Carlini et al. 2021; lower = member)
- ``mink_k``    lowest_k(logp, k)                                             (Shi et al. 2024; higher = member)
- ``minkpp_k``  lowest_k((logp − mu) / sigma, k)                              (Zhang et al. 2024, eq. 3-4;
                                                                               higher = member)
- ``ref``       loss(target) − loss(reference model)                          (Carlini et al. 2021; lower = member)

:data:`DETECTORS` says which column each detector reads and its orientation; :func:`member_scores` returns
scores where higher always means "more member-like".
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fmgauge.contamination.scoring import TokenStats
from fmgauge.core.validation import FmgaugeError

K_SWEEP: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_K = 0.2


def check_k(k: float) -> float:
    """k is a fraction in (0, 1]."""
    if not 0.0 < float(k) <= 1.0:
        raise FmgaugeError(f"k must be a fraction in (0, 1] (0.2 = lowest 20% of tokens), got {k!r}.")
    return float(k)


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ``max(1, int(k·T))`` smallest of ``values`` (T,)."""
    check_k(k)
    n = max(1, int(k * len(values)))
    return float(np.mean(np.partition(values, n - 1)[:n]))


def normalised_token_scores(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Min-K%++ token scores (logp − mu) / sigma, (T,); sigma = 0 (a one-hot distribution) gives 0."""
    return (logp - mu) / np.maximum(sigma, 1e-12)


def min_k(logp: np.ndarray, k: float = DEFAULT_K) -> float:
    """Min-K%: mean of the lowest k fraction of token log-probs."""
    return lowest_k_mean(logp, k)


def min_k_pp(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float = DEFAULT_K) -> float:
    """Min-K%++: mean of the lowest k fraction of normalised token scores."""
    return lowest_k_mean(normalised_token_scores(logp, mu, sigma), k)


def zlib_bytes(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def k_column(prefix: str, k: float) -> str:
    return f"{prefix}_{round(k * 100):d}"


def item_scores(stats: TokenStats, texts: Sequence[str], ids: Sequence[str], *, ks: Sequence[float] = K_SWEEP,
                ref_stats: TokenStats | None = None) -> pd.DataFrame:
    """One row per item: id, n_tokens, loss, zlib, mink_<100k>, minkpp_<100k> for each k, and ``ref`` when a
    reference model's stats are given."""
    if len(stats) != len(texts) or len(ids) != len(texts):
        raise FmgaugeError(f"token stats cover {len(stats)} items but there are {len(texts)} texts and "
                           f"{len(ids)} ids.")
    for k in ks:
        check_k(k)
    rows = []
    for i, text in enumerate(texts):
        logp, mu, sd = stats.item(i)
        z = normalised_token_scores(logp, mu, sd)
        loss = float(-logp.mean())
        row = {"id": ids[i], "n_tokens": len(logp), "loss": loss, "zlib": loss / zlib_bytes(text)}
        for k in ks:
            row[k_column("mink", k)] = lowest_k_mean(logp, k)
            row[k_column("minkpp", k)] = lowest_k_mean(z, k)
        if ref_stats is not None:
            row["ref"] = loss - float(-ref_stats.item(i)[0].mean())
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Detector:
    """A per-item detector: the score column it reads and whether higher means member."""

    name: str
    column: str
    higher_is_member: bool
    cite: str


def detectors(k: float = DEFAULT_K, *, with_ref: bool = False) -> dict[str, Detector]:
    """The per-item detectors at ``k`` (keys: loss, zlib, mink, minkpp[, ref])."""
    d = {
        "loss": Detector("loss", "loss", False, "Yeom et al. 2018"),
        "zlib": Detector("zlib", "zlib", False, "Carlini et al. 2021"),
        "mink": Detector(f"Min-K% (k={k})", k_column("mink", k), True, "Shi et al. 2024"),
        "minkpp": Detector(f"Min-K%++ (k={k})", k_column("minkpp", k), True, "Zhang et al. 2024"),
    }
    if with_ref:
        d["ref"] = Detector("reference ratio", "ref", False, "Carlini et al. 2021")
    return d


def member_scores(df: pd.DataFrame, det: Detector) -> np.ndarray:
    """(N,) scores where higher = more member-like."""
    if det.column not in df:
        raise FmgaugeError(f"scores lack column {det.column!r} for detector {det.name}; they have {list(df.columns)}.")
    v = df[det.column].to_numpy(dtype=float)
    return v if det.higher_is_member else -v
