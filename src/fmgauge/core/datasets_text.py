"""Text datasets: Medical Abstracts TC (real text for real zero-shot labelers) and any CSV/TSV/JSONL of texts.

A text :class:`~fmgauge.core.data.Split` holds ``x`` (N,) of ``str`` (object dtype), ``y`` (N,) int64 and ids
``"<split>/<row>"`` where ``row`` is the item's row in its source file, so ids stay the same however the
pool/test split is drawn.

Medical Abstracts TC (Schopf et al., NLPIR 2022) ships only its test split here (2,888 abstracts, 5 classes), so
fmgauge splits it itself: a stratified, seeded draw of :data:`TEST_FRACTION` of each class into ``test`` and the
rest into ``train`` (the pool; gold sets are drawn from it). The seed is part of the dataset name's loader and of
every run's config; the study writes the ids of each split into the run directory.

Registered names: ``medical-abstracts`` (5-class, macro AUC) and one-vs-rest binary tasks
``medical-abstracts-<slug>`` for each class (e.g. ``medical-abstracts-neoplasms``: neoplasms vs the rest). All
tasks share one split (stratified on the 5 classes), so a labeler's pool outputs serve every task.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from fmgauge.core.data import DATASETS, Dataset, Split, find_data_file
from fmgauge.core.validation import FmgaugeError

TEST_FRACTION = 0.3
SPLIT_SEED = 0
MEDICAL_ABSTRACTS_HOW = (
    "Medical Abstracts TC: put medical_tc_test.csv and medical_tc_labels.csv from "
    "https://github.com/sebischair/Medical-Abstracts-TC-Corpus into <data dir>/medical_abstracts_tc/."
)
MEDICAL_SLUGS = {"neoplasms": 0, "digestive": 1, "nervous": 2, "cardiovascular": 3, "general": 4}


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask (N,): True for the items drawn into the test split, ``round(test_fraction * n_c)`` per class."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: int(round(test_fraction * len(idx)))]] = True
    return test


def texts_dataset(name: str, texts: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], *, source: str,
                  test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED, description: str = "",
                  strata: np.ndarray | None = None) -> Dataset:
    """One pool of texts -> a Dataset with a ``train``/``test`` split (ids ``<split>/<row>``), stratified on
    ``strata`` (default ``y``) and seeded."""
    test = stratified_split(y if strata is None else strata, test_fraction, seed)
    rows = np.arange(len(y))
    splits = {}
    for split, mask in (("train", ~test), ("test", test)):
        splits[split] = Split(x=texts[mask], y=y[mask].astype(np.int64),
                              ids=np.array([f"{split}/{r}" for r in rows[mask]]))
    return Dataset(name=name, class_names=class_names, splits=splits, source=source, description=description,
                   meta={"modality": "text", "test_fraction": test_fraction, "split_seed": seed})


@functools.lru_cache(maxsize=2)
def _medical_abstracts_frame() -> tuple[pd.DataFrame, tuple[str, ...], str]:
    csv = find_data_file("medical_abstracts_tc/medical_tc_test.csv", how_to_get=MEDICAL_ABSTRACTS_HOW)
    names = pd.read_csv(csv.parent / "medical_tc_labels.csv").sort_values("condition_label")
    df = pd.read_csv(csv)
    for col in ("condition_label", "medical_abstract"):
        if col not in df:
            raise FmgaugeError(f"{csv} lacks column {col!r}; it has {list(df.columns)}.")
    return df, tuple(names["condition_name"]), str(csv.resolve())


def load_medical_abstracts(positive: str | None = None) -> Dataset:
    """5-class Medical Abstracts (``positive=None``) or the binary task ``positive`` vs the rest."""
    df, names, source = _medical_abstracts_frame()
    texts = df["medical_abstract"].astype(str).to_numpy(dtype=object)
    y = df["condition_label"].to_numpy().astype(np.int64) - 1
    if positive is None:
        return texts_dataset("medical-abstracts", texts, y, names, source=source,
                             description="Medical Abstracts TC: 2,888 abstracts, 5 condition classes")
    k = MEDICAL_SLUGS[positive]
    classes = (f"not {names[k]}", names[k])
    ds = texts_dataset(f"medical-abstracts-{positive}", texts, (y == k).astype(np.int64), classes, source=source,
                       strata=y, description=f"Medical Abstracts TC: {names[k]} vs the other 4 classes")
    # zero-shot labelers score "not X" as the sum over the other classes (all five names in their original order,
    # so the one-vs-rest task reuses the 5-class labeler scores; see weaklabels.labelers.text)
    ds.meta["rest_class_names"] = list(names)
    return ds


DATASETS.add("medical-abstracts", load_medical_abstracts)
for _slug in MEDICAL_SLUGS:
    DATASETS.add(f"medical-abstracts-{_slug}", functools.partial(load_medical_abstracts, _slug))


def load_text_table(path: Path, *, text_column: str = "text", label_column: str = "label") -> Dataset:
    """Texts with labels from a CSV, TSV or JSONL file (columns ``text``, ``label``, optional ``split``).

    Without a ``split`` column the rows are split like Medical Abstracts (stratified, seeded). Labels may be names
    or integers; class order is sorted (numeric order for integers).
    """
    if not path.exists():
        raise FmgaugeError(f"text file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
    elif suffix in (".csv", ".tsv"):
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8-sig")
    else:
        raise FmgaugeError(f"text file {path} must end in .csv, .tsv or .jsonl, got {suffix!r}.")
    missing = {text_column, label_column} - set(df.columns)
    if missing:
        raise FmgaugeError(f"{path} lacks column(s) {sorted(missing)}; it has {list(df.columns)}.")
    if len(df) == 0:
        raise FmgaugeError(f"{path} holds no rows.")
    labels = df[label_column].astype(str)
    names = sorted(labels.unique(), key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    y = labels.map({c: i for i, c in enumerate(names)}).to_numpy().astype(np.int64)
    texts = df[text_column].astype(str).to_numpy(dtype=object)
    name = f"text:{path.name}"
    if "split" not in df:
        return texts_dataset(name, texts, y, tuple(names), source=str(path.resolve()))
    splits = {}
    for split, part in df.groupby("split", sort=False):
        rows = part.index.to_numpy()
        splits[str(split)] = Split(x=texts[rows], y=y[rows], ids=np.array([f"{split}/{r}" for r in rows]))
    return Dataset(name=name, class_names=tuple(names), splits=splits, source=str(path.resolve()),
                   meta={"modality": "text"})
