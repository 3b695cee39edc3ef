"""``decide`` from the files a user has: a gold CSV, the labeler's outputs, and features or a dataset.

- gold: CSV with columns ``id`` and ``label`` (class name or index), and optionally ``weight`` (the design weights
  ``fmgauge weak-labels sample-gold`` writes for a stratified gold set);
- labeler outputs: CSV/Parquet with ``id`` and ``p_<class>`` columns and/or ``label`` (the file-labeler format);
  every gold id must be in it; its other ids form the **pool** when the inputs cover them;
- inputs: ``features`` (an ``.npz`` with ``ids`` (n,) and ``features`` (n, D), or a CSV of ``id`` + numeric
  columns) or ``dataset`` (+ ``split``, ``representation``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmgauge.core.validation import FmgaugeError, check_finite
from fmgauge.weaklabels.decide import Pool, decide
from fmgauge.weaklabels.verdicts import Decision


def decide_from_files(
    gold: str | Path, labeler: str | Path, *, features: str | Path | None = None, dataset: str | None = None,
    split: str | None = None, representation: str = "raw", classes: tuple[str, ...] | None = None, **kwargs: Any,
) -> Decision:
    """:func:`decide` from the files a user has.

    - ``gold``: CSV with columns ``id`` and ``label`` (class name or index);
    - ``labeler``: CSV/Parquet of the labeler's outputs with ``id`` and ``p_<class>`` columns and/or ``label``
      (the file-labeler format). Every gold id must be in it; its other ids form the **pool** (used by the pool
      rules) when the inputs cover them;
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
    gold_df = read_table(Path(gold), what="gold file")
    for col in ("id", "label"):
        if col not in gold_df:
            raise FmgaugeError(f"gold file {gold} needs columns id and label; it has {list(gold_df.columns)}.")
    ids = gold_df["id"].astype(str).to_numpy()
    _check_gold_ids(gold_df, gold)
    if features is not None:
        fid, fx = _read_features(Path(features))
        class_names = classes or _class_names_from_gold(gold_df["label"])
    else:
        from fmgauge.core.data import load_dataset
        from fmgauge.weaklabels.features import represent

        ds = load_dataset(dataset)
        sp_name = split or next(iter(ds.splits))
        fx, _ = represent(ds, representation, sp_name, sp_name)
        fid = ds.split(sp_name).ids.astype(str)
        class_names = ds.class_names
    lab_df = read_table(Path(labeler), what="labeler-outputs file")
    if features is not None and classes is None:
        _check_gold_classes(class_names, lab_df, gold, labeler)
    outputs = parse_outputs(lab_df, tuple(class_names), source=str(labeler))
    out = outputs.align(ids, source=str(labeler))
    pos = pd.Series(np.arange(len(fid)), index=fid)
    missing = [i for i in ids if i not in pos.index]
    if missing:
        raise FmgaugeError(f"{len(missing)} gold ids are not in the inputs ({features or dataset}), e.g. "
                           f"{missing[:5]}.")
    if len(class_names) < 2:
        raise FmgaugeError(f"gold file {gold} holds a single class {list(class_names)}: decide needs gold labels "
                           "of at least 2 classes (and 2 items of each).")
    y = label_indices(gold_df["label"], tuple(class_names), str(gold))
    gold_set = set(ids)
    pool_ids = [str(i) for i in outputs.ids if str(i) not in gold_set and str(i) in pos.index]
    pool = None
    if pool_ids:
        pool_out = outputs.align(np.array(pool_ids), source=str(labeler))
        pool = Pool(fx[pos[pool_ids].to_numpy()], pool_out.labels)
    weights = None
    if "weight" in gold_df:
        weights = pd.to_numeric(gold_df["weight"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise FmgaugeError(f"gold file {gold}: column weight must hold positive numbers (the design weights "
                               "sample-gold writes); remove the column for an unweighted gold set.")
    return decide(fx[pos[ids].to_numpy()], y, out.probs, out.labels, pool=pool, weights=weights,
                  class_names=tuple(class_names), **kwargs)


def _check_gold_ids(gold_df: pd.DataFrame, gold: str | Path) -> None:
    """Each gold id appears once: an id with two different labels is a contradiction, a repeated row a copy."""
    ids = gold_df["id"].astype(str)
    dup = ids[ids.duplicated(keep=False)]
    if dup.empty:
        return
    labels = gold_df.loc[dup.index, "label"].astype(str).groupby(dup).unique()
    clash = labels[labels.map(len) > 1]
    if len(clash):
        raise FmgaugeError(f"gold file {gold} gives {len(clash)} id(s) two or more different labels, e.g. id "
                           f"{clash.index[0]!r}: {sorted(clash.iloc[0])}; keep one label per id.")
    raise FmgaugeError(f"gold file {gold} repeats {dup.nunique()} id(s), e.g. {sorted(dup.unique())[:3]}; each item "
                       "must appear once.")


def _check_gold_classes(class_names: tuple[str, ...], lab_df: pd.DataFrame, gold: str | Path,
                        labeler: str | Path) -> None:
    """With classes taken from the gold file, a gold label the labeler has no probability column for is a problem
    of the gold file (a typo, a class the labeler never predicts), named as such."""
    given = [str(c)[2:] for c in lab_df.columns if str(c).startswith("p_")]
    if not given or all(c in given for c in class_names) or all(str(i) in given for i in range(len(class_names))):
        return
    extra = [c for c in class_names if c not in given]
    raise FmgaugeError(f"gold file {gold} has label(s) {extra} that the labeler-outputs file {labeler} has no "
                       f"probability column for (its classes: {given}); fix those gold labels, or add p_<class> "
                       "columns for them to the labeler outputs.")


def _class_names_from_gold(labels: pd.Series) -> tuple[str, ...]:
    """Class names of a gold file: its distinct labels, sorted (numerically when they are integers). Labels that
    differ only in case or surrounding spaces are refused (they would silently become separate classes)."""
    names = sorted(labels.astype(str).unique(), key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    folded: dict[str, list[str]] = {}
    for n in names:
        folded.setdefault(n.strip().lower(), []).append(n)
    clash = [v for v in folded.values() if len(v) > 1]
    if clash:
        raise FmgaugeError(f"gold labels {clash[0]} differ only in case or spaces; write each class one way "
                           "(they would otherwise become separate classes).")
    return tuple(names)


def _read_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise FmgaugeError(f"features file {path} does not exist.")
    if path.suffix == ".npz":
        from fmgauge.core.files import load_npz

        z = load_npz(path, what="features file")
        if "ids" not in z or "features" not in z:
            raise FmgaugeError(f"{path} must hold arrays 'ids' (n,) and 'features' (n, D); it has {list(z)}.")
        return z["ids"].astype(str), np.asarray(z["features"], dtype=np.float64)
    from fmgauge.weaklabels.labelers.file import read_table

    df = read_table(path, what="features file")
    if "id" not in df:
        raise FmgaugeError(f"features CSV {path} needs an id column; it has {list(df.columns)[:8]}.")
    feats = df.drop(columns=["id"])
    text = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if text:
        raise FmgaugeError(f"features file {path}: every column but id must be numeric; {text[:5]} hold text. "
                           "Drop them, or embed texts with --dataset text:... --representation embed:minilm-l6.")
    return df["id"].astype(str).to_numpy(), check_finite(f"features file {path}", feats.to_numpy(dtype=np.float64))
