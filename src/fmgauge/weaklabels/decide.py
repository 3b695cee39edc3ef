"""The decision rule: from 10+ gold labels, will the labeler's weak labels help a classifier or hurt it?

Notation: n gold items, K classes; ``x`` (n, D) features of the gold items (or images, flattened); ``y`` (n,)
their true labels; ``probs`` (n, K) the labeler's class probabilities on them and ``labels`` (n,) its hard labels.

Two rules (spec, "Decision rule"):

- ``accuracy`` — the paper's rule (Xu, James, Ryu 2026): compare the gold-only AUC (what a classifier trained on the
  gold labels reaches) with the labeler's *accuracy* on the gold set. Gold-only AUC above the labeler → weak
  labels will hurt (``gold-only``); below → they help (``use-weak-labels``).
- ``auc`` — the like-for-like variant: the labeler's AUC from its scores instead of its accuracy (AUC and
  accuracy live on different scales: a labeler with accuracy 0.75 can rank at AUC 0.85).

Each side carries an interval: the gold-only AUC is estimated by repeated stratified K-fold cross-validation of an
L2 logistic regression on the gold set (out-of-fold scores averaged over repeats, then a bootstrap CI over items);
the labeler's accuracy has a Wilson interval and its AUC a bootstrap one. When the intervals overlap the verdict is
``uncertain`` and the rule says roughly how many more gold labels would separate them, assuming both intervals
shrink like 1/√n around the current estimates: n' = n · ((h_gold + h_labeler) / |gap|)².

The estimated crossover n* extrapolates the gold-only learning curve (CV AUC at nested subsets of the gold set,
fit as a + b·ln n) to the labeler's level. It is rough by construction (10–20 points); the calibration sweep
measures the real one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fmgauge.core.stats import Estimate, auc, auc_ci, wilson_ci
from fmgauge.core.validation import FmgaugeError, check_finite, check_same_length

Verdict = Literal["use-weak-labels", "gold-only", "uncertain"]
RULES = ("accuracy", "auc")
MAX_MORE = 100_000  # "more labels" beyond this is reported as "more than" (the two estimates are ~equal)


@dataclass(frozen=True)
class RuleVerdict:
    """One rule's comparison: gold-only AUC vs the labeler's accuracy (``accuracy``) or AUC (``auc``)."""

    rule: str
    verdict: Verdict
    labeler: Estimate  # the labeler's accuracy or AUC on the gold set
    gap: float  # gold-only AUC − labeler value (> 0: weak labels expected to hurt)
    more_gold: int | None  # uncertain only: about how many more gold labels would decide
    crossover: float | None  # estimated n* where the gold-only curve reaches the labeler (None: unreachable)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labeler"] = self.labeler.to_dict()
        return d


@dataclass(frozen=True)
class Decision:
    """What ``fmgauge weak-labels decide`` prints: the verdict of each rule and the numbers behind it."""

    n_gold: int
    class_counts: list[int]
    gold_auc: Estimate  # gold-only AUC by repeated stratified CV
    rules: dict[str, RuleVerdict]
    primary: str = "accuracy"
    learning_curve: list[tuple[int, float]] = field(default_factory=list)  # (n, CV AUC) used for n*

    @property
    def verdict(self) -> Verdict:
        return self.rules[self.primary].verdict

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "primary_rule": self.primary, "n_gold": self.n_gold,
                "class_counts": self.class_counts, "gold_auc": self.gold_auc.to_dict(),
                "rules": {k: v.to_dict() for k, v in self.rules.items()},
                "learning_curve": [list(p) for p in self.learning_curve]}

    def explain(self) -> str:
        """Plain-words summary, one line per rule."""
        lines = []
        for r in self.rules.values():
            what = "accuracy" if r.rule == "accuracy" else "AUC"
            head = f"[{r.rule} rule] gold-only AUC {self.gold_auc} vs labeler {what} {r.labeler}: {r.verdict}"
            if r.verdict == "uncertain":
                more = (f"more than {MAX_MORE}" if r.more_gold is None else f"about {r.more_gold}")
                head += f" — label {more} more gold items to decide"
            if r.crossover is not None and r.crossover <= self.n_gold:
                head += f"; the gold-only curve is already at the labeler's level (n* ≤ {self.n_gold})"
            elif r.crossover is not None:
                head += f"; estimated crossover n* ≈ {r.crossover:.0f} gold labels (rough extrapolation)"
            else:
                head += "; the gold-only curve does not reach the labeler in extrapolation (n* unknown, large)"
            lines.append(head)
        return "\n".join(lines)


def check_gold(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Refuse a gold set with fewer than 2 items of some class (CV and AUC need both)."""
    counts = np.bincount(y, minlength=n_classes)
    if len(y) < 10:
        raise FmgaugeError(f"decide needs at least 10 gold labels, got {len(y)}.")
    thin = [k for k in range(n_classes) if counts[k] < 2]
    if thin:
        raise FmgaugeError(
            f"the gold set needs at least 2 items of every class; class(es) {thin} have counts "
            f"{[int(counts[k]) for k in thin]} (all counts: {counts.tolist()}). Label more items of those classes."
        )
    return counts


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat / 255.0 if x.dtype == np.uint8 else flat


def cv_scores(x: np.ndarray, y: np.ndarray, n_classes: int, *, n_repeats: int = 10, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities (n, K), averaged over ``n_repeats`` stratified K-fold splits.

    Student: standardised features → L2 logistic regression (C = 1, which copes with D >> n); folds =
    min(5, smallest class count).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = _flat(x)
    folds = int(min(5, np.bincount(y, minlength=n_classes).min()))
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=n_repeats, random_state=seed)
    out = np.zeros((len(y), n_classes))
    for train, test in cv.split(flat, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        model.fit(flat[train], y[train])
        p = np.zeros((len(test), n_classes))
        p[:, model.classes_] = model.predict_proba(flat[test])
        out[test] += p
    return out / n_repeats


def _scores(p: np.ndarray) -> np.ndarray:
    return p[:, 1] if p.shape[1] == 2 else p


def learning_curve(x: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int = 0) -> list[tuple[int, float]]:
    """CV AUC at nested stratified subsets of the gold set (about n/2, 3n/4, n), for the n* extrapolation."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    points = []
    for frac in (0.5, 0.75, 1.0):
        m = max(int(round(frac * len(y))), 2 * n_classes)
        sub = np.sort(order[:m])
        if np.bincount(y[sub], minlength=n_classes).min() < 2 or any(p[0] == m for p in points):
            continue
        points.append((m, auc(y[sub], _scores(cv_scores(x[sub], y[sub], n_classes, n_repeats=5, seed=seed)))))
    return points


def extrapolate_crossover(curve: list[tuple[int, float]], target: float) -> float | None:
    """n where the fit AUC(n) = a + b·ln n reaches ``target``; the current n if already there; None if never."""
    if not curve:
        return None
    n_now, auc_now = curve[-1]
    if auc_now >= target:
        return float(n_now)
    if len(curve) < 2:
        return None
    ln = np.log([p[0] for p in curve])
    b, a = np.polyfit(ln, [p[1] for p in curve], 1)
    if b <= 1e-6:
        return None
    n = math.exp((target - a) / b)
    return float(n) if n < MAX_MORE * 10 else None


def _verdict(gold: Estimate, lab: Estimate, n: int) -> tuple[Verdict, int | None]:
    if gold.lo > lab.hi:
        return "gold-only", None
    if gold.hi < lab.lo:
        return "use-weak-labels", None
    gap = abs(gold.value - lab.value)
    half = (gold.hi - gold.lo) / 2 + (lab.hi - lab.lo) / 2
    if gap < 1e-9:
        return "uncertain", None
    more = math.ceil(n * (half / gap) ** 2 - n)
    return "uncertain", (max(1, more) if more <= MAX_MORE else None)


def decide(
    x: np.ndarray, y: np.ndarray, probs: np.ndarray, labels: np.ndarray | None = None, *,
    n_repeats: int = 10, n_boot: int = 1000, level: float = 0.95, seed: int = 0, primary: str = "accuracy",
) -> Decision:
    """Decide from a gold set whether the labeler's weak labels will help.

    Parameters
    ----------
    x : (n, D) features or (n, C, H, W) images of the gold items.
    y : (n,) int true labels in 0..K-1 (K = probs.shape[1]); at least 10 items and 2 per class.
    probs : (n, K) the labeler's class probabilities on the gold items.
    labels : (n,) the labeler's hard labels (default: argmax of ``probs``).
    primary : which rule gives :attr:`Decision.verdict`: ``accuracy`` (the paper's) or ``auc``.
    """
    if primary not in RULES:
        raise FmgaugeError(f"primary must be one of {list(RULES)}, got {primary!r}.")
    y = np.asarray(y).astype(np.int64)
    probs = check_finite("labeler probs", np.asarray(probs, dtype=float))
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise FmgaugeError(f"labeler probs must be (n, K) with K >= 2 classes, got shape {probs.shape}.")
    k = probs.shape[1]
    labels = probs.argmax(1) if labels is None else np.asarray(labels).astype(np.int64)
    check_same_length(x=np.asarray(x), y=y, probs=probs, labels=labels)
    if y.min() < 0 or y.max() >= k:
        raise FmgaugeError(f"gold labels must be class indices in 0..{k - 1}, got {np.unique(y).tolist()}.")
    check_finite("features", _flat(x))
    counts = check_gold(y, k)
    oof = cv_scores(x, y, k, n_repeats=n_repeats, seed=seed)
    gold = auc_ci(y, _scores(oof), n_boot=n_boot, level=level, seed=seed)
    curve = learning_curve(x, y, k, seed=seed)
    labeler = {"accuracy": wilson_ci(int((labels == y).sum()), len(y), level=level),
               "auc": auc_ci(y, _scores(probs), n_boot=n_boot, level=level, seed=seed)}
    rules = {}
    for rule, est in labeler.items():
        verdict, more = _verdict(gold, est, len(y))
        rules[rule] = RuleVerdict(rule, verdict, est, gold.value - est.value, more,
                                  extrapolate_crossover(curve, est.value))
    return Decision(len(y), counts.tolist(), gold, rules, primary, curve)


def decide_from_files(
    gold: str | Path, labeler: str | Path, *, features: str | Path | None = None, dataset: str | None = None,
    split: str | None = None, representation: str = "raw", classes: tuple[str, ...] | None = None, **kwargs: Any,
) -> Decision:
    """:func:`decide` from the files a user has.

    - ``gold``: CSV with columns ``id`` and ``label`` (class name or index);
    - ``labeler``: CSV/Parquet of the labeler's outputs with ``id`` and ``p_<class>`` columns and/or ``label``
      (the file-labeler format; every gold id must be in it);
    - inputs, one of: ``features`` — an ``.npz`` with ``ids`` (n,) and ``features`` (n, D), or a CSV with ``id``
      and numeric columns; or ``dataset`` (+ ``split``) — a registered dataset (or folder:/text: path) whose ids
      hold the gold ids, in ``representation`` raw | tfidf | embed:<model>.

    Classes are the dataset's, or with ``features`` the given ``classes`` (default: the gold file's distinct
    labels, sorted); the labeler file needs a ``p_<class>`` column for each (or a ``label`` column).
    """

    from fmgauge.weaklabels.labelers.file import label_indices, parse_outputs, read_table

    if (features is None) == (dataset is None):
        raise FmgaugeError("give exactly one of features (an .npz/.csv of per-item features) or dataset "
                           "(a dataset whose ids hold the gold ids).")
    gold_df = read_table(Path(gold))
    for col in ("id", "label"):
        if col not in gold_df:
            raise FmgaugeError(f"gold file {gold} needs columns id and label; it has {list(gold_df.columns)}.")
    ids = gold_df["id"].astype(str).to_numpy()
    if features is not None:
        fid, fx = _read_features(Path(features))
        class_names = classes or _class_names_from_gold(gold_df["label"])
    else:
        from fmgauge.core.data import load_dataset
        from fmgauge.weaklabels.features import represent

        ds = load_dataset(dataset)
        sp_name = split or next(iter(ds.splits))
        rep, _ = represent(ds, representation, sp_name, sp_name)
        fid = ds.split(sp_name).ids.astype(str)
        fx = rep.toarray() if hasattr(rep, "toarray") else rep
        class_names = ds.class_names
    out = parse_outputs(read_table(Path(labeler)), tuple(class_names), source=str(labeler)).align(
        ids, source=str(labeler))
    pos = pd.Series(np.arange(len(fid)), index=fid)
    missing = [i for i in ids if i not in pos.index]
    if missing:
        raise FmgaugeError(f"{len(missing)} gold ids are not in the inputs ({features or dataset}), e.g. "
                           f"{missing[:5]}.")
    y = label_indices(gold_df["label"], tuple(class_names), str(gold))
    return decide(fx[pos[ids].to_numpy()], y, out.probs, out.labels, **kwargs)


def _class_names_from_gold(labels: pd.Series) -> tuple[str, ...]:
    """Class names of a gold file: its distinct labels, sorted (numerically when they are integers)."""
    names = sorted(labels.astype(str).unique(), key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    return tuple(names)


def _read_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise FmgaugeError(f"features file {path} does not exist.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "ids" not in z or "features" not in z:
                raise FmgaugeError(f"{path} must hold arrays 'ids' (n,) and 'features' (n, D); it has {z.files}.")
            return z["ids"].astype(str), np.asarray(z["features"], dtype=np.float64)
    df = pd.read_csv(path)
    if "id" not in df:
        raise FmgaugeError(f"features CSV {path} needs an id column; it has {list(df.columns)[:8]}.")
    return df["id"].astype(str).to_numpy(), df.drop(columns=["id"]).to_numpy(dtype=np.float64)
