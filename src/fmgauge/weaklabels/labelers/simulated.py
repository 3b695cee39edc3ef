"""Simulated labelers at a target accuracy, for controlled studies (always named ``simulated`` in reports).

Noise models (on N items with true labels y, K classes, target error rate ε = 1 − accuracy). Every model flips an
exact number of items, so the accuracy is the target up to rounding, not up to sampling noise:

- ``random``: exactly round(ε·N) items, drawn uniformly without replacement, each flipped to a uniformly chosen
  other class (symmetric noise; ρ0 = ρ1 ≈ ε for K = 2).
- ``class-conditional``: of the n_y items of class y, exactly round(n_y·T[y, ŷ]) get label ŷ (largest-remainder
  rounding so each class's counts sum to n_y), the items drawn at random; T[y, ŷ] is given, or by default the
  K = 2 matrix with all errors on the minority class, scaled to reach ε overall.
- ``instance``: instance-dependent noise. A reference model (5-fold out-of-fold logistic regression on the
  images' PCA features, or on TF-IDF for texts; folds drawn with the draw's seed) scores each item; the round(ε·N)
  items it finds hardest (lowest p̂(y|x)) are flipped to its most likely wrong class. Errors concentrate where the
  classes overlap, like a real VLM's.

**Draws.** ``draw`` selects one realisation of the noise: the study gives each sweep seed its own draw, so the
seed-to-seed spread of ΔAUC (and every CI over seeds) includes the labeler's sampling variance. The random
generator is seeded with (``seed``, ``draw``).

Probabilities: the emitted label gets probability ``accuracy`` and the rest is spread evenly (a labeler calibrated
in aggregate); for ``instance`` the reference model's out-of-fold probabilities are used, sharpened so the emitted
label is the argmax.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from fmgauge.core.cache import cached_arrays
from fmgauge.core.data import Dataset
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerKind, LabelerOutput


class SimulatedLabeler(LabelerBase):
    kind: Literal["simulated"] = "simulated"
    noise: Literal["random", "class-conditional", "instance"] = Field(
        "random", description="noise model: random (symmetric), class-conditional (T), instance-dependent")
    accuracy: float = Field(0.8, gt=0.0, le=1.0, description="target accuracy on the labelled split")
    transition: list[list[float]] | None = Field(
        None, description="class-conditional only: T[y][ŷ], rows sum to 1 (overrides accuracy)")
    seed: int = Field(0, description="seed of the simulated noise")
    draw: int = Field(0, ge=0, description="which realisation of the noise (the study sets it to the sweep seed)")

    @model_validator(mode="after")
    def _check(self) -> SimulatedLabeler:
        if self.transition is not None:
            t = np.asarray(self.transition, dtype=float)
            if t.ndim != 2 or t.shape[0] != t.shape[1] or not np.allclose(t.sum(1), 1, atol=1e-6) or (t < 0).any():
                raise FmgaugeError(f"transition must be a square matrix with non-negative rows summing to 1, got {t.tolist()}.")
        return self

    @property
    def simulated(self) -> bool:
        return True

    def describe(self) -> str:
        return f"simulated-{self.noise}-acc{self.accuracy:g}"


def flip_random(y: np.ndarray, n_classes: int, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Flip exactly round(eps·N) labels, chosen uniformly without replacement, each to a uniform other class."""
    out = np.array(y, copy=True)
    flip = rng.permutation(len(y))[: int(round(eps * len(y)))]
    out[flip] = (out[flip] + rng.integers(1, n_classes, size=len(flip))) % n_classes
    return out


def exact_counts(n: int, probs: np.ndarray) -> np.ndarray:
    """Integer counts (K,) summing to ``n`` closest to n·probs: floors plus the largest remainders."""
    raw = n * np.asarray(probs, dtype=float)
    counts = np.floor(raw).astype(int)
    short = n - counts.sum()
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def flip_transition(y: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every class y: exactly ``exact_counts(n_y, T[y])`` of its items get each label, items drawn at random."""
    out = np.array(y, copy=True)
    for c in range(t.shape[0]):
        items = rng.permutation(np.flatnonzero(y == c))
        out[items] = np.repeat(np.arange(t.shape[1]), exact_counts(len(items), t[c]))
    return out


def minority_transition(y: np.ndarray, n_classes: int, eps: float) -> np.ndarray:
    """T with every error on the rarest class (flipped to the most common), reaching overall error ``eps``."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    rare, common = int(counts.argmin()), int(counts.argmax())
    rate = eps * len(y) / max(counts[rare], 1)
    if rate > 1:
        raise FmgaugeError(
            f"class-conditional noise with every error on the rarest class cannot reach accuracy {1 - eps:g}: "
            f"that class holds only {counts[rare] / len(y):.1%} of the items. Raise accuracy or give a transition."
        )
    t = np.eye(n_classes)
    t[rare, rare] = 1 - rate
    t[rare, common] += rate
    return t


def reference_probs(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Out-of-fold p̂(k|x) (N, K) of a simple model trained on labels ``y`` (true or noisy), 5-fold.

    Images/features: logistic regression on 50 PCA components of the flattened inputs. Texts (object array of
    str): logistic regression on TF-IDF (vocabulary fit inside each fold).
    """
    from sklearn.decomposition import PCA
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if x.ndim == 1 and x.dtype == object:
        inputs = [str(t) for t in x]
        model = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LogisticRegression(max_iter=1000, C=10.0))
    else:
        inputs = x.reshape(len(x), -1).astype(np.float32)
        if x.dtype == np.uint8:
            inputs = inputs / 255.0
        model = make_pipeline(
            PCA(n_components=min(50, inputs.shape[1], len(inputs) - 1), random_state=seed),
            StandardScaler(),
            LogisticRegression(max_iter=500, C=1.0),
        )
    folds = min(5, int(np.bincount(y).min()))
    if folds < 2:
        raise FmgaugeError("a reference model needs at least 2 items of every class in the labelled split.")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(model, inputs, y, cv=cv, method="predict_proba")
    out = np.zeros((len(y), n_classes))
    out[:, np.unique(y)] = p
    return out


def flip_instance(y: np.ndarray, ref: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Flip the round(eps·N) items with the lowest reference p̂(y|x) to the reference's top wrong class."""
    n_flip = int(round(eps * len(y)))
    p_true = ref[np.arange(len(y)), y] + 1e-9 * rng.random(len(y))  # random tie-break
    hardest = np.argsort(p_true)[:n_flip]
    wrong = ref.copy()
    wrong[np.arange(len(y)), y] = -np.inf
    out = y.copy()
    out[hardest] = wrong[hardest].argmax(1)
    return out


def soft_probs(labels: np.ndarray, n_classes: int, confidence: float) -> np.ndarray:
    """Emitted label gets ``confidence``; the rest is spread evenly over the other classes."""
    conf = min(max(confidence, 1.0 / n_classes + 1e-6), 1.0 - 1e-6)
    p = np.full((len(labels), n_classes), (1 - conf) / (n_classes - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def label_simulated(cfg: SimulatedLabeler, ds: Dataset, split: str) -> LabelerOutput:
    sp = ds.split(split)
    k = ds.n_classes
    rng = np.random.default_rng([cfg.seed, cfg.draw])
    eps = 1.0 - cfg.accuracy
    if cfg.noise == "random":
        labels = flip_random(sp.y, k, eps, rng)
        probs = soft_probs(labels, k, cfg.accuracy)
    elif cfg.noise == "class-conditional":
        t = np.asarray(cfg.transition) if cfg.transition is not None else minority_transition(sp.y, k, eps)
        if t.shape != (k, k):
            raise FmgaugeError(f"transition must be {k}x{k} for dataset {ds.name!r}, got {t.shape}.")
        labels = flip_transition(sp.y, t, rng)
        probs = soft_probs(labels, k, cfg.accuracy)
    else:
        # the reference model does not depend on the target accuracy: cache it per (dataset, split, seed, draw)
        fold_seed = cfg.seed if cfg.draw == 0 else 1_000_003 * cfg.draw + cfg.seed
        key = {"reference": "pca50-logreg-5fold" if sp.x.dtype != object else "tfidf-logreg-5fold",
               "dataset": ds.name, "source": ds.source, "split": split, "n": len(sp), "seed": fold_seed}
        ref = cached_arrays("reference", key, lambda: {"p": reference_probs(sp.x, sp.y, k, fold_seed)})["p"]
        labels = flip_instance(sp.y, ref, eps, rng)
        sharp = ref + 1e-3
        sharp[np.arange(len(labels)), labels] = sharp.max(1) + 1e-3
        probs = sharp / sharp.sum(1, keepdims=True)
    return LabelerOutput(ids=sp.ids, probs=probs, labels=labels.astype(np.int64))


LABELERS.add("simulated", LabelerKind(SimulatedLabeler, label_simulated))
