"""The calibration sweep: which trials a study runs, and the trial function itself.

One trial = (student, condition, n_gold, labeler) with all its seeds trained together (``training.fit_predict``)
under the study's budget rule (the same optimizer steps for every condition).
Conditions (spec): ``gold`` — the n_gold gold items only; ``gold+weak`` — the whole pool, gold labels on the n_gold
gold items and the labeler's labels elsewhere; ``weak`` — the whole pool with weak labels (n_gold = 0); optional
``gold+weak-elr`` — like ``gold+weak`` but trained with early-learning regularisation (minibatch torch students: mlp, cnn, resnet).

Gold sets are nested per seed: ``gold_order(y_pool, seed)[:n]`` — gold(10) ⊂ gold(20) ⊂ … — so ΔAUC curves
compare like with like, and every gold set holds at least one item of each class.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from fmgauge.core.cache import cache_file
from fmgauge.core.data import Dataset, load_dataset
from fmgauge.core.files import read_back
from fmgauge.core.stats import auc, auc_ci
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.features import represent
from fmgauge.weaklabels.students import StudentConfig
from fmgauge.weaklabels.training import fit_predict

CONDITIONS = ("gold", "gold+weak", "weak", "gold+weak-elr")
ELR_DEFAULT = (0.7, 3.0)  # (β, λ): the ELR paper's CIFAR-10 setting


def gold_order(y_pool: np.ndarray, seed: int, n_classes: int) -> np.ndarray:
    """A seeded permutation of pool indices (N,) whose first K entries cover every class and whose first 2K hold
    two items of every class (one for classes with a single item), so any gold set of >= 2K items can be handed
    to ``decide`` (which needs 2 per class), and the rest follows in random order."""
    rng = np.random.default_rng([seed, 7919])
    perm = rng.permutation(len(y_pool))
    hits = [np.flatnonzero(y_pool[perm] == k)[:2] for k in range(n_classes)]
    firsts = [int(h[0]) for h in hits if len(h)] + [int(h[1]) for h in hits if len(h) > 1]
    head = perm[firsts]
    rest = np.delete(perm, firsts)
    return np.concatenate([head, rest])


def check_n_gold(n_gold: list[int], pool_size: int, n_classes: int) -> None:
    bad_small = [n for n in n_gold if n < n_classes]
    bad_big = [n for n in n_gold if n > pool_size]
    if bad_small:
        raise FmgaugeError(
            f"n_gold values {bad_small} are below the number of classes ({n_classes}): a gold set needs every "
            "class at least once (AUC is undefined otherwise)."
        )
    if bad_big:
        raise FmgaugeError(f"n_gold values {bad_big} exceed the pool size ({pool_size}); lower them.")


@functools.lru_cache(maxsize=4)
def _dataset(name: str) -> Dataset:
    return load_dataset(name)


@functools.lru_cache(maxsize=32)
def labeler_arrays(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K), labels (N,)) of the labeler outputs cached under ``key`` (a pool's weak labels)."""
    path = cache_file("labels", key)
    if not path.exists():
        raise FmgaugeError(f"weak labels {path} are missing; run `fmgauge weak-labels label` first.")
    def read(p: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(p, allow_pickle=False) as z:
            return z["probs"], z["labels"]

    return read_back(path, read, what="weak labels", fix="delete it and rerun: the labeler outputs are recomputed.")


def training_sets(
    condition: str, y_pool: np.ndarray, weak: np.ndarray | None, n_gold: int, seeds: list[int], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index and label arrays, each (S, N_train), of every seed's training set for ``condition``.

    ``weak``: the pool's weak labels, (N,) shared by every seed or (S, N) one draw per seed (simulated labelers).
    """
    if condition == "gold":
        idx = np.stack([gold_order(y_pool, s, n_classes)[:n_gold] for s in seeds])
        return idx, y_pool[idx]
    if weak is None:
        raise FmgaugeError(f"condition {condition!r} needs weak labels.")
    idx = np.broadcast_to(np.arange(len(y_pool)), (len(seeds), len(y_pool))).copy()
    labels = np.broadcast_to(np.asarray(weak), idx.shape).copy()
    if condition in ("gold+weak", "gold+weak-elr"):
        for r, s in enumerate(seeds):
            g = gold_order(y_pool, s, n_classes)[:n_gold]
            labels[r, g] = y_pool[g]
    elif condition != "weak":
        raise FmgaugeError(f"condition must be one of {CONDITIONS}, got {condition!r}.")
    return idx, labels


def run_trial(config: dict) -> list[dict]:
    """Trial function (a pure function of ``config``): train the student for every seed, score the test split.

    ``config`` keys: dataset, pool_split, test_split, student (StudentConfig dict), condition, n_gold, seeds,
    labeler (display name or None), weak_keys (per seed: cache key of the labeler's pool outputs; None for
    ``gold``), n_boot.
    Returns one row per seed: test AUC with its bootstrap CI, accuracy, training-set size and noise rate, seconds.
    """
    t0 = time.perf_counter()
    ds = _dataset(config["dataset"])
    pool, test = ds.split(config["pool_split"]), ds.split(config["test_split"])
    weak = np.stack([labeler_arrays(k)[1] for k in config["weak_keys"]]) if config.get("weak_keys") else None
    seeds = list(config["seeds"])
    student = StudentConfig(**config["student"])
    idx, labels = training_sets(config["condition"], pool.y, weak, config["n_gold"], seeds, ds.n_classes)
    x_pool, x_test = represent(ds, student.features, config["pool_split"], config["test_split"])
    elr = ELR_DEFAULT if config["condition"] == "gold+weak-elr" else None
    probs = fit_predict(student, x_pool, idx, labels, x_test, seeds, ds.n_classes, n_pool=len(pool), elr=elr)
    secs = (time.perf_counter() - t0) / len(seeds)
    rows = []
    for r, seed in enumerate(seeds):
        p = probs[r]
        scores = p[:, 1] if ds.n_classes == 2 else p
        n_boot = config.get("n_boot", 200)
        ci = auc_ci(test.y, scores, n_boot=n_boot, seed=seed) if n_boot else None
        rows.append({
            "student": student.display_name(), "condition": config["condition"], "n_gold": config["n_gold"],
            "labeler": config.get("labeler"), "seed": seed, "auc": ci.value if ci else auc(test.y, scores),
            "auc_lo": ci.lo if ci else float("nan"), "auc_hi": ci.hi if ci else float("nan"),
            "acc": float((p.argmax(1) == test.y).mean()), "n_train": int(idx.shape[1]),
            "train_noise": float((labels[r] != pool.y[idx[r]]).mean()), "seconds": secs,
        })
    return rows
