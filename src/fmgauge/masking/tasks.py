"""Sentence(-pair) classification tasks: GLUE MRPC offline, any GLUE-style TSV/CSV, HF GLUE online.

A :class:`TextTask` holds named splits of ``text_a`` (N,) str, optional ``text_b`` (N,) str and ``y`` (N,) int64.

- ``mrpc``: GLUE MRPC from ``<data dir>/glue_mrpc``: train.tsv, dev.tsv and the *labelled* MSR test file
  msr_paraphrase_test.txt as ``test`` (GLUE's test.tsv has no labels). The files carry a UTF-8 BOM and unescaped
  quotes, so they are read with ``quoting=QUOTE_NONE`` and ``encoding="utf-8-sig"``.
- a path to a ``.tsv``/``.csv`` file (one split, ``train``) or a folder of ``train``/``dev``/``test`` files, with a
  label column and one or two sentence columns (GLUE names are recognised: ``sentence1``/``sentence2``/``label``,
  ``#1 String``/``#2 String``/``Quality``, ``sentence``/``label``, ``question``/``sentence``).
- ``glue:<name>`` (e.g. ``glue:mrpc``, ``glue:cola``): HF ``datasets`` when online; its validation split is ``dev``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmgauge.core.data import find_data_file, offline
from fmgauge.core.validation import FmgaugeError

TEXT_COLUMNS = [("sentence1", "sentence2"), ("#1 String", "#2 String"), ("question1", "question2"),
                ("question", "sentence"), ("premise", "hypothesis"), ("sentence", None), ("text", None)]
LABEL_COLUMNS = ("label", "Quality", "labels", "y")
SPLIT_FILES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}


@dataclass(frozen=True)
class TextSplit:
    text_a: list[str]
    text_b: list[str] | None
    y: np.ndarray  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TextTask:
    name: str
    label_names: tuple[str, ...]
    splits: dict[str, TextSplit]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    @property
    def pair(self) -> bool:
        return next(iter(self.splits.values())).text_b is not None

    def split(self, name: str) -> TextSplit:
        if name not in self.splits:
            raise FmgaugeError(f"task {self.name!r} has no split {name!r}; it has {sorted(self.splits)}.")
        return self.splits[name]


def read_table(path: Path, *, header: bool = True):  # -> pd.DataFrame
    """A GLUE-style TSV/CSV as strings: BOM stripped, quotes taken literally in TSVs (GLUE's files are unescaped).
    ``header=False``: no header row; the columns are named by position, ``"0"``, ``"1"``, ..."""
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        df = pd.read_csv(path, sep=sep, quoting=quoting, encoding="utf-8-sig", dtype=str, keep_default_na=False,
                         header="infer" if header else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise FmgaugeError(f"could not parse {path} as a {'TSV' if sep == chr(9) else 'CSV'}: {e}") from None
    if not header:
        df.columns = [str(c) for c in range(df.shape[1])]
    return df


def split_from_table(df, path: Path, *, text_columns: tuple[str, str | None] | None = None,
                     label_column: str | None = None, label_names: list[str] | None = None
                     ) -> tuple[TextSplit, list[str]]:
    """Pick the sentence and label columns of ``df`` and build a split; returns it and the label names seen."""
    cols = list(df.columns)
    if text_columns is None and cols == [str(i) for i in range(len(cols))]:
        raise FmgaugeError(f"{path} has no header row (columns {cols}): name the sentence column(s) by position with "
                           "--text-columns 0[,1] and the label with --label-column N (config: text_columns, "
                           "label_column).")
    if text_columns is None:
        text_columns = next(((a, b) for a, b in TEXT_COLUMNS if a in cols and (b is None or b in cols)), None)
        if text_columns is None:
            raise FmgaugeError(f"{path}: no sentence column found; expected one of "
                               f"{[c for c in TEXT_COLUMNS]}; it has {cols}. Name them with --text-columns A[,B] (config: "
                               "text_columns: [A, B]); a file without a header row needs --no-header too.")
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in cols), None)
    if label_column is None or label_column not in cols:
        raise FmgaugeError(f"{path}: label column {label_column or '/'.join(LABEL_COLUMNS)!r} is missing; it has "
                           f"columns {cols}. A task file needs one label per row (name it with --label-column, config: "
                           "label_column).")
    a, b = text_columns
    for c in (a, b):
        if c is not None and c not in cols:
            raise FmgaugeError(f"{path}: sentence column {c!r} is missing; it has columns {cols}.")
    for c in (a, b):
        empty = (df[c].astype(str).str.strip() == "").to_numpy() if c is not None else np.zeros(0, bool)
        if empty.any():
            rows = np.flatnonzero(empty)[:5].tolist()
            raise FmgaugeError(f"{path}: {int(empty.sum())} row(s) have an empty sentence column {c!r} (first rows "
                               f"{rows}, counted from 0 after the header); drop them or fill in the text.")
    raw = df[label_column].astype(str).str.strip()
    if (raw == "").any():
        rows = np.flatnonzero((raw == "").to_numpy())[:5].tolist()
        raise FmgaugeError(f"{path}: {int((raw == '').sum())} row(s) have an empty {label_column!r} (first rows "
                           f"{rows}); every row needs a label.")
    names = label_names or sorted(raw.unique(), key=lambda s: (not s.lstrip("-").isdigit(), int(s)
                                                               if s.lstrip("-").isdigit() else 0, s))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise FmgaugeError(f"{path}: labels {unknown[:5]} are not among the training labels {names}.")
    y = raw.map(index).to_numpy(dtype=np.int64)
    return TextSplit(df[a].astype(str).tolist(), df[b].astype(str).tolist() if b else None, y), names


def load_mrpc() -> TextTask:
    """GLUE MRPC: train (3,668) / dev (408) from GLUE, test (1,725) from the labelled MSR release."""
    how = "put GLUE MRPC (train.tsv, dev.tsv, msr_paraphrase_test.txt) in <data dir>/glue_mrpc/."
    paths = {"train": find_data_file("glue_mrpc/train.tsv", how_to_get=how),
             "dev": find_data_file("glue_mrpc/dev.tsv", how_to_get=how),
             "test": find_data_file("glue_mrpc/msr_paraphrase_test.txt", how_to_get=how)}
    splits = {s: split_from_table(read_table(p), p, label_names=["0", "1"])[0] for s, p in paths.items()}
    return TextTask("mrpc", ("not paraphrase", "paraphrase"), splits, str(paths["train"].parent),
                    ["test = msr_paraphrase_test.txt (labelled MSR test; GLUE's test.tsv is unlabelled)"])


def load_table_task(path: Path, *, label_column: str | None = None,
                    text_columns: tuple[str, str | None] | None = None, header: bool = True) -> TextTask:
    """A TSV/CSV file (split ``train``) or a folder with train/dev(/test) .tsv/.csv files (``header=False``: files
    without a header row, columns named ``"0"``, ``"1"``, ... by position)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = {}
        for split, stems in SPLIT_FILES.items():
            for stem in stems:
                hit = [p for ext in (".tsv", ".csv") if (p := path / f"{stem}{ext}").exists()]
                if hit:
                    files[split] = hit[0]
                    break
        if "train" not in files:
            raise FmgaugeError(f"task folder {path} needs train.tsv or train.csv (and dev/test files); it has "
                               f"{sorted(p.name for p in path.iterdir())[:10]}.")
    elif path.is_file():
        files = {"train": path}
    else:
        raise FmgaugeError(f"task {str(path)!r} is neither a registered task (mrpc, glue:<name>) nor an existing "
                           "TSV/CSV file or folder.")
    train, names = split_from_table(read_table(files["train"], header=header), files["train"], text_columns=text_columns,
                                    label_column=label_column)
    splits = {"train": train}
    for s, p in files.items():
        if s != "train":
            splits[s] = split_from_table(read_table(p, header=header), p, text_columns=text_columns,
                                         label_column=label_column,
                                         label_names=names)[0]
    return TextTask(path.stem if path.is_file() else path.name, tuple(names), splits, str(path.resolve()))


def load_hf_glue(name: str) -> TextTask:
    """GLUE task ``name`` from HF datasets (online only); validation -> ``dev``; the unlabelled test is dropped."""
    if offline():
        raise FmgaugeError(f"glue:{name} downloads from the Hugging Face hub, which is off (offline mode). Use "
                           "--task mrpc (local files) or a TSV/CSV path, or unset HF_HUB_OFFLINE/FMGAUGE_OFFLINE.")
    try:
        import datasets
    except ImportError as e:
        raise FmgaugeError("glue:<name> needs the `datasets` package: pip install datasets.") from e
    try:
        dd = datasets.load_dataset("nyu-mll/glue", name)
    except Exception as e:  # network / unknown config errors vary by datasets version
        raise FmgaugeError(f"loading GLUE {name!r} with datasets failed: {e}") from e
    feats = dd["train"].features
    cols = list(feats)
    a, b = next(((a, b) for a, b in TEXT_COLUMNS if a in cols and (b is None or b in cols)), (None, None))
    if a is None:
        raise FmgaugeError(f"GLUE {name!r} has columns {cols}; no sentence column fmgauge knows.")
    label_names = tuple(feats["label"].names) if hasattr(feats["label"], "names") else ("0", "1")
    splits = {}
    for hf_split, ours in (("train", "train"), ("validation", "dev"), ("test", "test")):
        if hf_split not in dd:
            continue
        d = dd[hf_split]
        y = np.asarray(d["label"], dtype=np.int64)
        if (y < 0).all():
            continue  # GLUE test labels are hidden (-1)
        splits[ours] = TextSplit(list(d[a]), list(d[b]) if b else None, y)
    return TextTask(f"glue:{name}", label_names, splits, "huggingface datasets nyu-mll/glue")


def load_task(name: str, *, label_column: str | None = None,
              text_columns: tuple[str, str | None] | None = None, header: bool = True) -> TextTask:
    """``mrpc`` | ``glue:<name>`` | a TSV/CSV file or folder -> :class:`TextTask` (``label_column`` and
    ``text_columns`` (sentence[, second sentence]) name the columns of a TSV/CSV task; ``header=False`` for files
    without a header row)."""
    if name == "mrpc":
        return load_mrpc()
    if name.startswith("glue:"):
        return load_hf_glue(name.split(":", 1)[1])
    return load_table_task(Path(name), label_column=label_column, text_columns=text_columns, header=header)
