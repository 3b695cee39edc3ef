"""Outputs of any external model, read from CSV or Parquet.

Columns: ``id`` (matching the dataset's ids, e.g. ``train/17``), and either ``label`` (class index or class name)
or one probability column per class, named ``p_<class name>`` or ``p_<class index>``. With both, probabilities
win and ``label`` is checked against their argmax only for shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from fmgauge.core.data import Dataset
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels.labelers.base import LABELERS, LabelerBase, LabelerKind, LabelerOutput


class FileLabeler(LabelerBase):
    kind: Literal["file"] = "file"
    path: str = Field(..., description="CSV or Parquet with id and label or p_<class> columns")

    def describe(self) -> str:
        return f"file:{Path(self.path).name}"


def read_table(path: Path, *, what: str = "labeler file") -> pd.DataFrame:
    """A CSV/TSV/Parquet table; ``what`` names the argument in errors (e.g. "gold file")."""
    if not path.exists():
        raise FmgaugeError(f"{what} {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv", ".txt"):
        raise FmgaugeError(f"{what} {path} must be .csv, .tsv or .parquet, got {suffix!r}.")
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise FmgaugeError(f"{what} {path} could not be read as a {suffix.lstrip('.')} table: {reason}.") from None
    if df.empty:
        raise FmgaugeError(f"{what} {path} holds no rows.")
    return df


def parse_outputs(df: pd.DataFrame, class_names: tuple[str, ...], *, source: str) -> LabelerOutput:
    """Turn a table of id + label / probabilities into a :class:`LabelerOutput` over ``class_names``."""
    if "id" not in df.columns:
        raise FmgaugeError(f"{source} needs an 'id' column; it has {list(df.columns)}.")
    k = len(class_names)
    ids = df["id"].astype(str).to_numpy()
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].head(3).tolist()
        raise FmgaugeError(f"{source} repeats ids, e.g. {dup}; each item must appear once.")
    by_name = [f"p_{c}" for c in class_names]
    by_index = [f"p_{i}" for i in range(k)]
    pcols = by_name if all(c in df for c in by_name) else by_index if all(c in df for c in by_index) else None
    given = [str(c) for c in df.columns if str(c).startswith("p_")]
    if pcols is None and given:
        missing = [c for c in by_name if c not in df]
        raise FmgaugeError(
            f"{source} has probability columns {given} but none for class(es) {missing} of the dataset; "
            f"expected one column per class: {by_name} (or {by_index}). Rename the columns or fix the class names."
        )
    if pcols is not None:
        probs = df[pcols].to_numpy(dtype=float)
        bad = ~np.isfinite(probs).all(1) | (probs < 0).any(1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise FmgaugeError(f"{source}: probability columns {pcols} hold NaN, inf or negative values in "
                               f"{len(rows)} row(s) (first data rows {rows[:5].tolist()}, counted from 0).")
        probs = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
        labels = probs.argmax(1)
    elif "label" in df.columns:
        labels = label_indices(df["label"], class_names, source)
        probs = np.eye(k)[labels]
    else:
        raise FmgaugeError(
            f"{source} needs a 'label' column or probability columns {by_name} (or {by_index}); "
            f"it has {list(df.columns)}."
        )
    return LabelerOutput(ids=ids, probs=probs, labels=labels.astype(np.int64))


def label_indices(col: pd.Series, class_names: tuple[str, ...], source: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(col):
        v = col.to_numpy()
        if v.min() < 0 or v.max() >= len(class_names):
            raise FmgaugeError(f"{source}: label indices must be in 0..{len(class_names) - 1}, got {sorted(set(v))[:10]}.")
        return v
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(col.astype(str)) - set(index))
    if unknown:
        raise FmgaugeError(f"{source}: labels {unknown[:5]} are not classes of the dataset {list(class_names)}.")
    return col.astype(str).map(index).to_numpy()


def label_file(cfg: FileLabeler, ds: Dataset, split: str) -> LabelerOutput:
    path = Path(cfg.path).expanduser()
    out = parse_outputs(read_table(path), ds.class_names, source=str(path))
    return out.align(ds.split(split).ids, source=str(path))


LABELERS.add("file", LabelerKind(FileLabeler, label_file))
