"""Is a student a fair measuring instrument for weak labels? A paired design and three non-inferiority checks.

A crossover study reads what weak labels are worth off one student; if the student's training favours one
condition (a budget that leaves the pool under-fit, say), ΔAUC measures the student. This module checks a student
on real data for the properties a fair instrument has (issue 23 F), cheaply enough for CI:

- **near-perfect**: a 99%-accurate labeler never costs AUC against gold alone;
- **curve**: the gold-only AUC does not fall as the gold set grows (nested gold sets);
- **accuracy order**: gold+weak AUC does not fall as the labeler gets more accurate. Holding at every n_gold, this
  orders n* by accuracy (a ΔAUC curve that dominates another cannot cross zero earlier), at a few trials instead
  of a whole grid.

**Paired design.** Seed s has one nested gold order (the sweep's ``gold_order``), one init and one order of label
flips, shared by every condition; a labeler at accuracy a flips the first round((1 − a)·N) items of the seed's
order, so a better labeler's errors are a subset of a worse one's. A property's effect is the seed-mean of per-seed
differences, and it holds when the 95% t-interval lies above −``margin`` (non-inferiority at 0.005 AUC by default:
the seeds must rule out that loss, so a noisy student cannot pass by being vague).

Trials are trained exactly as the sweep trains them (:func:`fmgauge.weaklabels.training.fit_predict`, the budget
set by the slice's pool). Binary tasks only. ``Slice`` holds the data; :func:`image_slice` and :func:`text_slices`
make the ones the tests and ``benchmarks/bench_fairness.py`` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmgauge.core.data import Dataset
from fmgauge.core.stats import auc, mean_ci
from fmgauge.weaklabels.students import StudentConfig
from fmgauge.weaklabels.sweep import training_sets
from fmgauge.weaklabels.training import fit_predict

Trial = tuple[str, int]  # (condition, n_gold): condition "gold" or a labeler accuracy such as "0.99"
MARGIN = 0.005


@dataclass
class Slice:
    """A binary study: pool inputs (N, ...) or sparse (N, V), pool labels (N,), test inputs and labels."""

    x_pool: Any
    y_pool: np.ndarray
    x_test: Any
    y_test: np.ndarray


def student_id(st: StudentConfig) -> str:
    """Display name, plus the fields that differ from the kind's defaults beyond those the name already shows."""
    default = StudentConfig(kind=st.kind)
    extra = {k: v for k, v in st.model_dump().items()
             if k not in ("kind", "width", "features", "name", "model") and getattr(default, k) != v}
    return st.display_name() + "".join(f",{k}={v}" for k, v in sorted(extra.items()))


def shipped_students(config_dir: Path) -> dict[str, StudentConfig]:
    """Every distinct student (by its full config) of the study configs ``config_dir/*.yaml``, by :func:`student_id`."""
    from fmgauge.core.config import load_config
    from fmgauge.weaklabels.study import StudyConfig

    out: dict[str, StudentConfig] = {}
    for path in sorted(config_dir.glob("*.yaml")):
        for st in load_config(StudyConfig, path).students:
            out.setdefault(student_id(st), st)
    return out


def pool_slice(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(``size`` sorted rows drawn from n, the other rows sorted)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:size]), np.sort(perm[size:])


def image_slice(ds: Dataset, size: int) -> Slice:
    """A ``size``-item slice of the pool; the test split plus the rest of the pool as the test set (more test
    items shrink the evaluation noise of every paired difference)."""
    tr, te = ds.split("train"), ds.split("test")
    idx, rest = pool_slice(len(tr.y), size)
    return Slice(tr.x[idx], tr.y[idx], np.concatenate([te.x, tr.x[rest]]), np.concatenate([te.y, tr.y[rest]]))


def text_slices(ds: Dataset, size: int, dims: int = 384) -> dict[str, Slice]:
    """Like :func:`image_slice` for a text dataset, in two representations: ``tfidf`` (fit on the slice's pool)
    and ``embed``, a stand-in for sentence embeddings of the same shape and norm (the TF-IDF vectors' top ``dims``
    singular directions, rows at unit norm: computing real embeddings costs minutes on a CPU)."""
    from sklearn.decomposition import TruncatedSVD

    from fmgauge.weaklabels.features import _tfidf

    tr, te = ds.split("train"), ds.split("test")
    idx, rest = pool_slice(len(tr.y), size)
    y_test = np.concatenate([te.y, tr.y[rest]])
    tf_pool, tf_test = _tfidf(f"fairness-slice-{size}", ds.source, "train", "test", tr.x[idx],
                              np.concatenate([te.x, tr.x[rest]]))
    lsa = TruncatedSVD(dims, algorithm="arpack", random_state=0).fit(tf_pool)

    def dense(m: Any) -> np.ndarray:
        z = lsa.transform(m).astype(np.float32)
        return z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)

    return {"tfidf": Slice(tf_pool, tr.y[idx], tf_test, y_test),
            "embed": Slice(dense(tf_pool), tr.y[idx], dense(tf_test), y_test)}


def weak_labels(y: np.ndarray, accuracy: float, seeds: list[int]) -> np.ndarray:
    """(S, N) binary labels: seed s flips the first round((1 − accuracy)·N) items of its own order (nested)."""
    out = np.stack([y.copy() for _ in seeds])
    for r, s in enumerate(seeds):
        flip = np.random.default_rng([s, 4242]).permutation(len(y))[:round((1 - accuracy) * len(y))]
        out[r, flip] = 1 - y[flip]
    return out


def measure(st: StudentConfig, data: Slice, trials: list[Trial], seeds: list[int]) -> dict[Trial, np.ndarray]:
    """Test AUC per seed (S,) of each trial, trained as the sweep trains ``st``."""
    out = {}
    for cond, n in trials:
        weak = None if cond == "gold" else weak_labels(data.y_pool, float(cond), seeds)
        idx, labels = training_sets("gold" if cond == "gold" else "gold+weak", data.y_pool, weak, n, seeds, 2)
        probs = fit_predict(st, data.x_pool, idx, labels, data.x_test, seeds, 2, n_pool=len(data.y_pool))
        out[(cond, n)] = np.array([auc(data.y_test, p[:, 1]) for p in probs])
    return out


def plan(n_small: int, n_large: int, *, full: bool = True) -> list[Trial]:
    """The trials of every property (``full``) or of the near-perfect check at ``n_large`` only."""
    if not full:
        return [("gold", n_large), ("0.99", n_large)]
    return [("gold", n_small), ("gold", n_large), ("0.99", n_small), ("0.99", n_large), ("0.95", n_small),
            ("0.85", n_small)]


def check(aucs: dict[Trial, np.ndarray], *, margin: float = MARGIN) -> list[str]:
    """The properties the measured trials violate (empty: fair), each with its paired interval."""
    bad = []
    sizes = sorted({n for _, n in aucs})

    def not_below(a: Trial, b: Trial, what: str) -> None:
        if a in aucs and b in aucs:
            ci = mean_ci(aucs[b] - aucs[a])
            if ci.lo < -margin:
                bad.append(f"{what}: {ci.value:+.4f} [{ci.lo:+.4f}, {ci.hi:+.4f}]")

    for n in sizes:
        not_below(("gold", n), ("0.99", n), f"near-perfect labeler costs AUC at n={n}")
    for n0, n1 in zip(sizes[:-1], sizes[1:], strict=True):
        not_below(("gold", n0), ("gold", n1), f"gold-only curve falls {n0}->{n1}")
    for n in sizes:
        not_below(("0.85", n), ("0.95", n), f"0.95 labeler worse than 0.85 at n={n}")
        not_below(("0.95", n), ("0.99", n), f"0.99 labeler worse than 0.95 at n={n}")
    return bad
