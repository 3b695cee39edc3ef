"""Text datasets: Medical Abstracts TC (real text for real zero-shot labelers) and any CSV/TSV/JSONL of texts.

A text :class:`~fmgauge.core.datasets_base.Split` holds ``x`` (N,) of ``str`` (object dtype), ``y`` (N,) int64 and ids
``"<split>/<row>"`` where ``row`` is the item's row in its source file, so ids stay the same however the
pool/test split is drawn.

Medical Abstracts TC (Schopf et al., NLPIR 2022) ships only its test split here (2,888 abstracts, 5 classes), so
fmgauge splits it itself: a stratified, seeded draw of :data:`TEST_FRACTION` of each class into ``test`` and the
rest into ``train`` (the pool; gold sets are drawn from it). The seed is part of the dataset name's loader and of
every run's config; the study writes the ids of each split into the run directory.

Registered names: ``medical-abstracts`` (5-class, macro AUC) and one-vs-rest binary tasks
``medical-abstracts-<slug>`` for each class (e.g. ``medical-abstracts-neoplasms``: neoplasms vs the rest). All
tasks share one split (stratified on the 5 classes), so a labeler's pool outputs serve every task. Their meta
carries the medical description templates and prompts of :data:`MEDICAL_LABEL_META`, which the zero-shot text
labelers use unless their config says otherwise.

Any other corpus is a text table, named ``text:<path>[?option=value&...]`` (parsed by :func:`parse_text_name`,
loaded by :func:`load_text_table`), with the options of :data:`TEXT_OPTIONS`::

    text:items.csv?positive=flu&descriptions=labels.yaml
    text:items.tsv?header=none&text_column=2&label_column=0

``positive`` makes the one-vs-rest task like ``medical-abstracts-<slug>``; ``descriptions`` attaches a
label-description file (:func:`load_label_descriptions`: class descriptions, description templates and prompts
for the zero-shot labelers) to the dataset's meta, so labeler caches are keyed by it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from fmgauge.core.datasets_base import DATASETS, Dataset, Split, find_data_file
from fmgauge.core.validation import FmgaugeError, check_template, did_you_mean, name_unknown, parse_options

TEST_FRACTION = 0.3
SPLIT_SEED = 0
MEDICAL_ABSTRACTS_HOW = (
    "Medical Abstracts TC: put medical_tc_test.csv and medical_tc_labels.csv from "
    "https://github.com/sebischair/Medical-Abstracts-TC-Corpus into <data dir>/medical_abstracts_tc/."
)
MEDICAL_SLUGS = {"neoplasms": 0, "digestive": 1, "nervous": 2, "cardiovascular": 3, "general": 4}
MEDICAL_LABEL_META = {  # what Medical Abstracts' zero-shot labelers say about it (in every one of its metas)
    "label_templates": ["a medical abstract about {c}.", "a clinical study of patients with {c}.", "{c}"],
    "negative_descriptions": ["a medical abstract.", "a clinical study of patients.", "medicine"],
    "prompt": ("Here is the abstract of a medical research article.\n\n{text}\n\n"
               "Question: which one of these topics is the abstract about: {options}?\nAnswer:"),
    "chat_prompt": ("Here is the abstract of a medical research article.\n\n{text}\n\n"
                    "Which one of these topics is the abstract about: {options}? Answer with the topic only."),
}
NEGATION = "not "  # the prefix of a one-vs-rest task's negative class name, "not X"


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
        ds = texts_dataset("medical-abstracts", texts, y, names, source=source,
                           description="Medical Abstracts TC: 2,888 abstracts, 5 condition classes")
        ds.meta.update(json.loads(json.dumps(MEDICAL_LABEL_META)))  # a copy: callers may edit meta
        return ds
    k = MEDICAL_SLUGS[positive]
    classes = (f"{NEGATION}{names[k]}", names[k])
    ds = texts_dataset(f"medical-abstracts-{positive}", texts, (y == k).astype(np.int64), classes, source=source,
                       strata=y, description=f"Medical Abstracts TC: {names[k]} vs the other 4 classes")
    # zero-shot labelers score "not X" as the sum over the other classes (all five names in their original order,
    # so the one-vs-rest task reuses the 5-class labeler scores; see weaklabels.labelers.text)
    ds.meta["rest_class_names"] = list(names)
    ds.meta.update(json.loads(json.dumps(MEDICAL_LABEL_META)))
    return ds


DATASETS.add("medical-abstracts", load_medical_abstracts)
for _slug in MEDICAL_SLUGS:
    DATASETS.add(f"medical-abstracts-{_slug}", functools.partial(load_medical_abstracts, _slug))


# ------------------------------------------------------------------------------------------- text tables

LABEL_DESCRIPTION_KEYS = {  # key of a label-description file -> what it holds
    "classes": "class name -> one description or a list of them (the text-embedding labeler's class descriptions)",
    "templates": "description templates containing '{c}', filled with each class name (text-embedding labeler)",
    "negative": "descriptions of a 'not X' class when the labeler has no rest classes (text-embedding labeler)",
    "prompt": "a causal-LM prompt with '{text}' once and optionally '{options}'",
    "chat_prompt": "the causal-LM prompt with chat_template: true (default: prompt)",
}
TEXT_OPTIONS = {  # option of a ``text:<path>?<option>=<value>&...`` name -> what it takes
    "positive": "a class of the label column; the dataset becomes the binary task ('not X', 'X')",
    "text_column": "the column holding the texts (default 'text'; position 0 with header=none)",
    "label_column": "the column holding the labels (default 'label'; position 1 with header=none)",
    "descriptions": "a label-description file (.yaml, .yml or .json) with optional keys "
                    + ", ".join(LABEL_DESCRIPTION_KEYS),
    "header": "'none' for a CSV/TSV without a header row (columns are then positions 0, 1, ...), or 'first' "
              "(the default: the first row names the columns)",
}


@dataclass(frozen=True)
class TextTableOptions:
    """The options of a ``text:`` dataset name (see :data:`TEXT_OPTIONS`); None = the default."""

    positive: str | None = None
    text_column: str | int | None = None
    label_column: str | int | None = None
    descriptions: Path | None = None
    header: bool = True


def parse_text_name(spec: str) -> tuple[Path, TextTableOptions, str]:
    """``<path>[?option=value&...]`` (the part after ``text:``) -> (path, options, display name).

    Values are percent-decoded (``%26`` for a literal ``&``, ``%3D`` for ``=``); ``+`` stays a plus. Unknown
    options, repeated options and empty or malformed values are refused, naming the option and what it takes.
    """
    raw_path, _, query = spec.partition("?")
    if not raw_path:
        raise FmgaugeError(f"text dataset name 'text:{spec}' has no path; write text:<file.csv|tsv|jsonl>[?...].")
    given = parse_options(query, TEXT_OPTIONS, what="text dataset option")
    header = given.get("header", "first").strip().lower()
    if header not in ("none", "first"):
        raise FmgaugeError(f"text dataset option header must be 'none' or 'first', got {given['header']!r}.")
    path = Path(raw_path)
    columns: dict[str, str | int | None] = {}
    for key in ("text_column", "label_column"):
        value = given.get(key)
        if value is not None and header == "none":
            if not value.strip().isdigit():
                raise FmgaugeError(f"with header=none, {key} must be a column position (0, 1, ...), got {value!r}.")
            columns[key] = int(value)
        else:
            columns[key] = value
    opts = TextTableOptions(positive=given.get("positive"), descriptions=Path(given["descriptions"]) if
                            "descriptions" in given else None, header=header == "first", **columns)
    name = f"text:{path.name}" + (("?" + "&".join(f"{k}={given[k]}" for k in TEXT_OPTIONS if k in given))
                                  if given else "")
    return path, opts, name


def with_text_options(name: str, *, text_column: str | None = None, label_column: str | None = None,
                      header: bool = True) -> str:
    """``name`` with the CLI's ``--text-column`` / ``--label-column`` / ``--no-header`` appended as options of a
    ``text:`` dataset (``text:f.csv`` -> ``text:f.csv?text_column=body&header=none``); refused for other datasets.
    An option also given in the name is refused as given twice (by :func:`parse_text_name`)."""
    extra = {"text_column": text_column, "label_column": label_column, "header": None if header else "none"}
    extra = {k: v for k, v in extra.items() if v is not None}
    if not extra:
        return name
    if not name.startswith("text:"):
        flags = ", ".join("--no-header" if k == "header" else "--" + k.replace("_", "-") for k in extra)
        raise FmgaugeError(f"{flags}: only for a text:<file> dataset; {name!r} is a registered dataset with fixed "
                           "columns.")
    return name + ("&" if "?" in name else "?") + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in extra.items())


def load_text_name(spec: str) -> Dataset:
    """The dataset named ``text:<spec>`` (see :func:`parse_text_name` and :func:`load_text_table`)."""
    path, opts, name = parse_text_name(spec)
    return load_text_table(path, positive=opts.positive, text_column=opts.text_column,
                           label_column=opts.label_column, descriptions=opts.descriptions, header=opts.header,
                           name=name)


def _read_table(path: Path, *, header: bool) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        if not header:
            raise FmgaugeError(f"header=none is for CSV/TSV files; {path.name} is JSONL (its keys name the columns).")
        return pd.read_json(path, lines=True)
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8-sig",
                           header="infer" if header else None)
    raise FmgaugeError(f"text file {path} must end in .csv, .tsv or .jsonl, got {suffix!r}.")


def load_text_table(path: Path, *, text_column: str | int | None = None, label_column: str | int | None = None,
                    positive: str | None = None, descriptions: Path | None = None, header: bool = True,
                    name: str | None = None) -> Dataset:
    """Texts with labels from a CSV, TSV or JSONL file (columns ``text``, ``label``, optional ``split``).

    Without a ``split`` column the rows are split like Medical Abstracts (stratified, seeded). Labels may be names
    or integers; class order is sorted (numeric order for integers). ``header=False``: a CSV/TSV without a header
    row, its columns named by position (``text_column`` 0 and ``label_column`` 1 by default; no split column).

    ``positive``: the binary one-vs-rest task ``("not <positive>", "<positive>")`` (y = 1 for ``positive``),
    split stratified on the original classes (so every task of one file shares one split), with
    ``meta["rest_class_names"]`` = the original class names in class order (zero-shot labelers score each of them
    and sum the rest into "not X"; see :mod:`fmgauge.weaklabels.labelers.text`).

    ``descriptions``: a label-description file (:func:`load_label_descriptions`) whose entries go into ``meta``
    (``class_descriptions``, ``label_templates``, ``negative_descriptions``, ``prompt``, ``chat_prompt``).
    """
    if not path.exists():
        raise FmgaugeError(f"text file {path} does not exist.")
    text_column = text_column if text_column is not None else ("text" if header else 0)
    label_column = label_column if label_column is not None else ("label" if header else 1)
    df = _read_table(path, header=header)
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        what = "column(s)" if header else "column position(s)"
        raise FmgaugeError(f"{path} lacks {what} {missing}; it has {list(df.columns)}.")
    if len(df) == 0:
        raise FmgaugeError(f"{path} holds no rows.")
    empty = np.flatnonzero(df[label_column].isna().to_numpy())
    if len(empty):
        raise FmgaugeError(f"{path}: {len(empty)} row(s) have no label in column {label_column!r} (first data rows "
                           f"{empty[:5].tolist()}, counted from 0); label or drop them.")
    labels = df[label_column].astype(str)
    names = sorted(labels.unique(), key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    y = labels.map({c: i for i, c in enumerate(names)}).to_numpy().astype(np.int64)
    texts = df[text_column].astype(str).to_numpy(dtype=object)
    meta: dict = {}
    class_names = tuple(names)
    strata = None
    if positive is not None:
        k = _positive_index(positive, names, path, label_column)
        strata, y = y, (y == k).astype(np.int64)
        class_names = (f"{NEGATION}{positive}", positive)
        meta["rest_class_names"] = list(names)
    if descriptions is not None:
        meta.update(load_label_descriptions(descriptions, names))
    name = name or f"text:{path.name}"
    source = str(path.resolve())
    if "split" not in df.columns:
        ds = texts_dataset(name, texts, y, class_names, source=source, strata=strata)
        ds.meta.update(meta)
        return ds
    splits = {}
    for split, part in df.groupby("split", sort=False):
        rows = part.index.to_numpy()
        splits[str(split)] = Split(x=texts[rows], y=y[rows], ids=np.array([f"{split}/{r}" for r in rows]))
    return Dataset(name=name, class_names=class_names, splits=splits, source=source,
                   meta={"modality": "text", **meta})


def _positive_index(positive: str, names: list[str], path: Path, label_column: str | int) -> int:
    if positive not in names:
        raise FmgaugeError(f"positive={positive!r} is not a class of {path.name} (label column {label_column!r})."
                           f"{did_you_mean(positive, names)} Its classes: {names}.")
    if len(names) < 2:
        raise FmgaugeError(f"positive={positive!r}: {path.name} holds no other class, so there is no rest.")
    if positive.lower().startswith(NEGATION):
        raise FmgaugeError(f"positive={positive!r}: class names starting with {NEGATION!r} name the negative class of "
                           "a one-vs-rest task; rename the class in the label column.")
    return names.index(positive)


# ------------------------------------------------------------------------------ label-description files

def _strings(where: str, value: object) -> list[str]:
    """One string or a non-empty list of non-empty strings -> the list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or any(not isinstance(s, str) or not s.strip() for s in items):
        raise FmgaugeError(f"{where} must be a non-empty string or a non-empty list of them, got {value!r}.")
    return list(items)


def load_label_descriptions(path: Path, class_names: list[str] | tuple[str, ...]) -> dict:
    """A label-description file (YAML or JSON) -> the ``meta`` entries it sets, validated.

    Keys (all optional, at least one): ``classes`` (class name -> one description or a list of them),
    ``templates`` (description templates with ``{c}``), ``negative`` (descriptions of a "not X" class when the
    labeler has no rest classes), ``prompt`` and ``chat_prompt`` (causal-LM prompts with ``{text}`` once and
    optionally ``{options}``; the chat one is used with ``chat_template: true`` and defaults to ``prompt``).
    The class names in ``classes`` must be classes of the dataset (``class_names``: the label column's classes,
    before any one-vs-rest ``positive``). Returned keys: ``class_descriptions``, ``label_templates``,
    ``negative_descriptions``, ``prompt``, ``chat_prompt`` (those given), all JSON-serialisable.
    """
    if not path.exists():
        raise FmgaugeError(f"label-description file {path} does not exist (resolved to {path.resolve()}).")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise FmgaugeError(f"label-description file {path} must end in .yaml, .yml or .json, got {suffix!r}.")
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise FmgaugeError(f"label-description file {path} is not valid {suffix[1:].upper()}: {e}") from e
    if not isinstance(doc, dict) or not doc:
        raise FmgaugeError(f"label-description file {path} must be a mapping with at least one of the keys "
                           f"{list(LABEL_DESCRIPTION_KEYS)}, got {doc!r}.")
    unknown = [str(k) for k in doc if k not in LABEL_DESCRIPTION_KEYS]
    if unknown:
        raise FmgaugeError(f"label-description file {path} has unknown key(s) "
                           f"{name_unknown(unknown, LABEL_DESCRIPTION_KEYS)}. Known keys: "
                           + "; ".join(f"{k}: {v}" for k, v in LABEL_DESCRIPTION_KEYS.items()) + ".")
    meta: dict = {}
    if "classes" in doc:
        classes = doc["classes"]
        if not isinstance(classes, dict) or not classes:
            raise FmgaugeError(f"{path}: classes must map class names to descriptions, got {classes!r}.")
        strange = [str(c) for c in classes if str(c) not in class_names]
        if strange:
            raise FmgaugeError(f"{path}: classes names {name_unknown(strange, class_names)}, which are not "
                               f"classes of the dataset. Its classes: {list(class_names)}.")
        meta["class_descriptions"] = {str(c): _strings(f"{path}: classes[{str(c)!r}]", d)
                                      for c, d in classes.items()}
    if "templates" in doc:
        meta["label_templates"] = [check_template(f"{path}: each of templates", t, required=["c"])
                                   for t in _strings(f"{path}: templates", doc["templates"])]
    if "negative" in doc:
        meta["negative_descriptions"] = _strings(f"{path}: negative", doc["negative"])
    for key in ("prompt", "chat_prompt"):
        if key in doc:
            meta[key] = check_template(f"{path}: {key}", doc[key], required=["text"], optional=["options"],
                                       once=True)
    return meta
