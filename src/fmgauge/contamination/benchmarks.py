"""Benchmarks as ordered lists of text items, in their canonical (file) order.

A :class:`TextBenchmark` holds ``N`` items: ``ids`` (N,) and ``texts`` (N,), in the order of the source file (the
order the exchangeability test checks), and ``columns``: every scalar field of the source records, (N,) strings
each (None where a record lacks the field), e.g. SLAKE's ``img_id`` or MRPC's ``#1 ID``, so that items that belong
together can be kept together (``fmgauge contamination plant --group-by``). A VQA item becomes text through one
documented template::

    Question: {question}
    Answer: {answer}

Multiple-choice items (OmniMedVQA) list their options between the two lines (``Options: A. … B. …``); a sentence
pair (GLUE MRPC) is ``{sentence1}\\n{sentence2}``; generic JSONL/CSV files give a ``text`` column, or
``question``/``answer`` columns rendered with the VQA template.

Names resolve through :data:`BENCHMARKS` (data from the data directories, see :func:`fmgauge.core.data.data_dirs`):
``slake-en``, ``vqa-rad``, ``vqamed2019``, ``pathvqa``, ``omnimedvqa``, ``glue-mrpc``. A layout can also be read from
an explicit path: ``slake:<file.json>``, ``mevf:<file.json>``, ``pathvqa:<dir>``, ``omnimedvqa:<dir>``,
``jsonl:<file>``, ``csv:<file>`` (``tsv:`` too), the table layouts taking options
(:data:`TABLE_OPTIONS`) like ``csv:items.csv?text_column=body&header=none``. Empty benchmarks and items with a missing or empty required
field are refused with the file, the item and the field named.

VQA layouts also keep, in :attr:`TextBenchmark.vqa` (:class:`VQAFields`), each item's question, answer and image
file name (SLAKE ``img_name``, VQA-RAD/MEVF ``image_name``, OmniMedVQA ``image_path``, a table's ``image`` column
or ``image_column=``): what a vision-language model scores (the answer given image + question, see
:mod:`fmgauge.contamination.vlm_scoring`). The json files name images but hold none; the images are read from
``--image-root`` (a table's relative names default to the table's own folder).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from fmgauge.core.cache import stable_hash
from fmgauge.core.data import find_data_file
from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError, did_you_mean, parse_options

VQA_TEMPLATE = "Question: {question}\nAnswer: {answer}"
MCQ_TEMPLATE = "Question: {question}\nOptions: {options}\nAnswer: {answer}"
PAIR_TEMPLATE = "{sentence1}\n{sentence2}"


@dataclass(frozen=True)
class VQAFields:
    """The parts of ``N`` VQA items a vision-language model scores: ``questions`` (N,) (with the options of a
    multiple-choice item), ``answers`` (N,) and ``images`` (N,) file names as the source gives them (absolute, or
    relative to ``--image-root``; None = the item names no image). ``image_dir``: the folder relative names are
    read from when no ``--image-root`` is given (a table's own folder; None when the images live apart from the
    file, as SLAKE's and VQA-RAD's json do)."""

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    images: tuple[str | None, ...]
    image_dir: str | None = None

    def subset(self, idx: Sequence[int]) -> VQAFields:
        return VQAFields(tuple(self.questions[i] for i in idx), tuple(self.answers[i] for i in idx),
                         tuple(self.images[i] for i in idx), self.image_dir)


@dataclass(frozen=True)
class TextBenchmark:
    """``N`` text items in canonical order: ``ids`` (N,) str, ``texts`` (N,) str, ``columns`` name -> (N,) str or
    None (the source records' scalar fields); ``vqa``: their question, answer and image name for VQA layouts (None
    otherwise)."""

    name: str
    split: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    source: str  # file or directory read
    template: str  # how an item became text
    columns: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    vqa: VQAFields | None = None
    #: The column whose equal values mark items that belong together in the source (SLAKE: the questions about one
    #: image, ``img_id``; a paraphrase pair; a plant group file's ``group``): the unit the cohort test and the
    #: exchangeability test permute. None: every item is its own unit.
    unit_column: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def identity(self) -> dict:
        """What a cache key needs: name, split, count and a hash of the texts in order."""
        return {"benchmark": self.name, "split": self.split, "n": len(self), "texts": stable_hash(list(self.texts))}

    def subset(self, index: Sequence[int] | np.ndarray, *, name: str | None = None) -> TextBenchmark:
        """Items at ``index`` (in that order)."""
        idx = [int(i) for i in index]
        return TextBenchmark(name or self.name, self.split, tuple(self.ids[i] for i in idx),
                             tuple(self.texts[i] for i in idx), self.source, self.template,
                             {c: tuple(v[i] for i in idx) for c, v in self.columns.items()},
                             None if self.vqa is None else self.vqa.subset(idx), self.unit_column)

    def column(self, name: str, *, option: str = "column") -> tuple[str, ...]:
        """Values (N,) of source column ``name``; refuses a column the benchmark lacks (naming those it has) or an
        item without a value (naming the item). ``option`` is the argument named in the message."""
        if name not in self.columns:
            raise FmgaugeError(f"{option} {name!r}: benchmark {self.name!r} ({self.source}) has no such column; "
                               f"available columns: {sorted(self.columns) or 'none (a fixed layout)'}.")
        values = self.columns[name]
        missing = [i for i, v in enumerate(values) if v is None or not str(v).strip()]
        if missing:
            raise FmgaugeError(f"{option} {name!r}: {len(missing)} item(s) of benchmark {self.name!r} have no value "
                               f"in that column (first: item {missing[0]}, id {self.ids[missing[0]]!r}).")
        return tuple(str(v) for v in values)

    def head(self, n: int | None) -> TextBenchmark:
        """The first ``n`` items in canonical order (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(range(n))


def units_of(bench: TextBenchmark, group_by: str | None, *, option: str = "--group-by",
             required: bool = True) -> tuple[str | None, tuple[str, ...] | None]:
    """(column, (N,) unit labels) of the items that belong together: ``group_by`` names a column (refused when
    absent and ``required``; skipped when absent otherwise), ``"none"`` means independent items, None falls back
    to the benchmark's known structure (:attr:`TextBenchmark.unit_column`). (None, None) = every item its own
    unit."""
    if group_by is not None and group_by.strip().lower() == "none":
        return None, None
    if group_by is not None and (required or group_by in bench.columns):
        return group_by, bench.column(group_by, option=option)
    if bench.unit_column is not None:
        return bench.unit_column, bench.column(bench.unit_column, option=option)
    return None, None


BenchmarkLoader = Callable[[str], TextBenchmark]
BENCHMARKS: Registry[BenchmarkLoader] = Registry("benchmark")
LAYOUTS: Registry[Callable[[Path, str], TextBenchmark]] = Registry("benchmark layout")


def load_benchmark(name: str, split: str = "test", *, max_items: int | None = None) -> TextBenchmark:
    """Load benchmark ``name`` (registered name or ``<layout>:<path>``, a table layout optionally followed by
    ``?option=value&...`` from :data:`TABLE_OPTIONS`), split ``split``, first ``max_items``."""
    if not isinstance(name, str) or not name:
        raise FmgaugeError(f"benchmark must be a name {BENCHMARKS.names()} or <layout>:<path>; got {name!r}.")
    if max_items is not None and max_items < 1:
        raise FmgaugeError(f"max_items must be >= 1 or unset, got {max_items}.")
    layout, sep, path = name.partition(":")
    if sep and layout in LAYOUTS:
        path, _, query = path.partition("?")
        if layout in TABLE_LAYOUTS:
            opts = parse_options(query, TABLE_OPTIONS, what=f"{layout}: benchmark option")
            bench = read_text_table(Path(path).expanduser(), split, kind=layout, **_table_kwargs(opts))
        elif query:
            raise FmgaugeError(f"benchmark {name!r}: options after '?' ({sorted(TABLE_OPTIONS)}) are for the "
                               f"table layouts {list(TABLE_LAYOUTS)}; the {layout}: layout has fixed fields.")
        else:
            bench = LAYOUTS.get(layout)(Path(path).expanduser(), split)
    elif name in BENCHMARKS:
        bench = BENCHMARKS.get(name)(split)
    else:
        try:
            BENCHMARKS.get(name)
        except FmgaugeError as e:
            raise FmgaugeError(f"{e} Or a file: " + ", ".join(f"{k}:<path>" for k in LAYOUTS.names())
                               + (f" (layout {layout!r} is unknown.{did_you_mean(layout, LAYOUTS.names())})" if sep else "")
                               + ".") from None
    return bench.head(max_items)


def with_table_options(name: str, *, text_column: str | None = None, header: bool = True) -> str:
    """``name`` with the CLI's ``--text-column`` / ``--no-header`` appended as table options (``csv:f.csv`` ->
    ``csv:f.csv?text_column=body&header=none``); refuses them for anything but a table layout."""
    if text_column is None and header:
        return name
    layout, sep, _ = name.partition(":")
    if not sep or layout not in TABLE_LAYOUTS:
        flag = "--text-column" if text_column is not None else "--no-header"
        raise FmgaugeError(f"{flag} applies to a benchmark file named {'|'.join(TABLE_LAYOUTS)}:<path>; "
                           f"{name!r} has a fixed layout.")
    extra = ([f"text_column={quote(text_column, safe='')}"] if text_column is not None else []) + \
        ([] if header else ["header=none"])
    return name + ("&" if "?" in name else "?") + "&".join(extra)


def _nonempty(field: str, value: object, where: str) -> str:
    if value is None:
        raise FmgaugeError(f"{where}: required field {field!r} is missing.")
    text = str(value).strip()
    if not text:
        raise FmgaugeError(f"{where}: required field {field!r} is empty.")
    return text


def _need_fields(rec: object, fields: Sequence[str], where: str) -> dict:
    if not isinstance(rec, dict):
        raise FmgaugeError(f"{where}: expected an object with fields {list(fields)}, got {type(rec).__name__}.")
    missing = [f for f in fields if f not in rec]
    if missing:
        raise FmgaugeError(f"{where}: missing required field(s) {missing}; it has {sorted(rec)}.")
    return rec


def _is_scalar(v: object) -> bool:
    return isinstance(v, (str, int, float, bool, np.generic)) and not (isinstance(v, (float, np.floating))
                                                                        and not np.isfinite(v))


def _columns(rows: Sequence[object]) -> dict[str, tuple[str | None, ...]]:
    """Every scalar field of the records ``rows`` (dicts), as (N,) strings, None where a record lacks it."""
    recs = [r if isinstance(r, dict) else {} for r in rows]
    keys = dict.fromkeys(str(k) for r in recs for k, v in r.items() if _is_scalar(v))
    return {k: tuple(str(r[k]) if k in r and _is_scalar(r[k]) else None for r in recs) for k in keys}


def _finish(name: str, split: str, ids: list[str], texts: list[str], source: Path | str,
            template: str, rows: Sequence[object] = (), vqa: VQAFields | None = None,
            unit_column: str | None = None) -> TextBenchmark:
    """The benchmark, ``rows`` (the N source records, optional) becoming its ``columns``; ``unit_column`` is kept
    only when every item has a value in it."""
    if not texts:
        raise FmgaugeError(f"benchmark {name!r} split {split!r} from {source} holds no items (empty benchmark).")
    dup = len(ids) - len(set(ids))
    if dup:
        ids = [f"{i}#{k}" for k, i in enumerate(ids)]  # keep every item; ids must be unique
    columns = _columns(rows) if rows else {}
    unit = unit_column if unit_column in columns and all(v is not None and str(v).strip()
                                                         for v in columns[unit_column]) else None
    return TextBenchmark(name, split, tuple(ids), tuple(texts), str(source), template, columns, vqa, unit)


def _read_json_list(path: Path) -> list:
    if not path.is_file():
        raise FmgaugeError(f"benchmark file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise FmgaugeError(f"{path} is not valid JSON: {e}") from None
    if isinstance(data, dict):  # some mirrors wrap the list: {"data": [...]} / {"questions": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise FmgaugeError(f"{path}: expected a JSON list of items (or an object holding one list).")
        data = lists[0]
    if not isinstance(data, list):
        raise FmgaugeError(f"{path}: expected a JSON list of items, got {type(data).__name__}.")
    return data


def _read_jsonl(path: Path) -> list:
    if not path.is_file():
        raise FmgaugeError(f"benchmark file {path} does not exist.")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FmgaugeError(f"{path} line {n} is not valid JSON: {e}") from None
    return rows


def _image_name(rec: dict, field: str | None) -> str | None:
    v = rec.get(field) if field else None
    return str(v).strip() if isinstance(v, str | int) and str(v).strip() else None


def _vqa_items(name: str, split: str, rows: list, path: Path, *, id_field: str | None,
               answer_field: str = "answer", image_field: str | None = None,
               image_dir: Path | None = None, unit_column: str | None = None) -> TextBenchmark:
    ids, texts, qs, ans, imgs = [], [], [], [], []
    for i, rec in enumerate(rows):
        where = f"{path} item {i}"
        _need_fields(rec, ["question", answer_field], where)
        q = _nonempty("question", rec["question"], where)
        a = _nonempty(answer_field, rec[answer_field], where)
        texts.append(VQA_TEMPLATE.format(question=q, answer=a))
        ids.append(str(rec.get(id_field, i)) if id_field else str(i))
        qs.append(q)
        ans.append(a)
        imgs.append(_image_name(rec, image_field))
    vqa = VQAFields(tuple(qs), tuple(ans), tuple(imgs), None if image_dir is None else str(image_dir))
    return _finish(name, split, ids, texts, path, VQA_TEMPLATE, rows, vqa, unit_column)


# ------------------------------------------------------------------------------------------------ SLAKE

SLAKE_FILES = {"train": "train.json", "validate": "validate.json", "val": "validate.json", "test": "test.json"}


def read_slake(path: Path, split: str = "test", *, lang: str = "en") -> TextBenchmark:
    """SLAKE 1.0 json (list of QA with ``question``, ``answer``, ``q_lang``, ``qid``), items with ``q_lang == lang``.

    ``path`` is a json file, or a folder holding ``train.json``/``validate.json``/``test.json``. SLAKE's train split
    has one known item with an empty answer (qid 1622, English); that one item is skipped. Any other missing or
    empty field is an error.
    """
    if path.is_dir():
        if split not in SLAKE_FILES:
            raise FmgaugeError(f"SLAKE split must be one of {sorted(SLAKE_FILES)}, got {split!r}.")
        path = path / SLAKE_FILES[split]
    rows = _read_json_list(path)
    keep = []
    for i, rec in enumerate(rows):
        _need_fields(rec, ["question", "answer", "q_lang"], f"{path} item {i}")
        if rec["q_lang"] == lang and not (rec.get("qid") == 1622 and not str(rec["answer"]).strip()):
            keep.append(rec)
    return _vqa_items(f"slake-{lang}", split, keep, path, id_field="qid", image_field="img_name",
                      unit_column="img_id")


def _slake_dir() -> Path:
    return find_data_file("slake_json", "slake", "Slake1.0",
                          how_to_get="put SLAKE 1.0's train/validate/test.json in <data dir>/slake_json/.")


BENCHMARKS.add("slake-en", lambda split: read_slake(_slake_dir(), split))
LAYOUTS.add("slake", lambda p, split: read_slake(p, split))


# --------------------------------------------------------------------------------------- VQA-RAD / MEVF

MEVF_FILES = {"train": "trainset.json", "test": "testset.json"}


def read_mevf(path: Path, split: str = "test", *, name: str = "vqa-rad") -> TextBenchmark:
    """VQA-RAD in the MEVF json layout (``trainset.json``/``testset.json``: ``qid``, ``question``, ``answer``, …)."""
    if path.is_dir():
        if split not in MEVF_FILES:
            raise FmgaugeError(f"VQA-RAD/MEVF split must be one of {sorted(MEVF_FILES)}, got {split!r}.")
        path = path / MEVF_FILES[split]
    return _vqa_items(name, split, _read_json_list(path), path, id_field="qid", image_field="image_name",
                      unit_column="image_name")


BENCHMARKS.add("vqa-rad", lambda split: read_mevf(find_data_file(
    "vqa_rad", "data_RAD", how_to_get="put VQA-RAD's MEVF json (trainset.json, testset.json) in <data dir>/vqa_rad/."
), split))
BENCHMARKS.add("vqamed2019", lambda split: read_mevf(find_data_file(
    "vqamed2019_mevf_json", how_to_get="put the VQA-Med 2019 MEVF json in <data dir>/vqamed2019_mevf_json/."
), split, name="vqamed2019"))
LAYOUTS.add("mevf", lambda p, split: read_mevf(p, split))


# ---------------------------------------------------------------------------------------------- PathVQA

def read_pathvqa(root: Path, split: str = "test") -> TextBenchmark:
    """PathVQA: the HF mirror layout ``<root>/data/<split>-*.parquet`` (columns ``question``, ``answer``, image) or
    ``<root>/<split>.jsonl`` / ``<root>/<split>.json`` (records with ``question``, ``answer``)."""
    if root.is_file():
        rows, path = (_read_jsonl(root) if root.suffix == ".jsonl" else _read_json_list(root)), root
    else:
        parquet = sorted((root / "data").glob(f"{split}-*.parquet")) + sorted(root.glob(f"{split}-*.parquet"))
        if parquet:
            import pandas as pd

            df = pd.concat([pd.read_parquet(p, columns=None) for p in parquet], ignore_index=True)
            if "image" in df:
                df = df.drop(columns=["image"])
            rows, path = df.to_dict("records"), parquet[0]
        elif (root / f"{split}.jsonl").is_file():
            path = root / f"{split}.jsonl"
            rows = _read_jsonl(path)
        elif (root / f"{split}.json").is_file():
            path = root / f"{split}.json"
            rows = _read_json_list(path)
        else:
            raise FmgaugeError(f"no PathVQA split {split!r} under {root}: expected data/{split}-*.parquet, "
                               f"{split}.jsonl or {split}.json.")
    return _vqa_items("pathvqa", split, rows, path, id_field=None, image_field="image",
                      image_dir=path.parent)


BENCHMARKS.add("pathvqa", lambda split: read_pathvqa(find_data_file(
    "pathvqa", "path-vqa", how_to_get="put PathVQA (HF mirror: data/<split>-*.parquet) in <data dir>/pathvqa/."
), split))
LAYOUTS.add("pathvqa", read_pathvqa)


# ------------------------------------------------------------------------------------------- OmniMedVQA

OMNI_FIELDS = ("question_id", "question", "gt_answer")


def read_omnimedvqa(root: Path, split: str = "all") -> TextBenchmark:
    """OmniMedVQA: ``<root>/QA_information/{Open-access,Restricted-access}/<dataset>.json``, each a list of
    multiple-choice items (``question_id``, ``question``, ``gt_answer``, ``option_A``…``option_D``, ``dataset``).

    OmniMedVQA has no official splits: ``split`` is ``all`` or a sub-dataset name (e.g. ``"ACRIMA"``); canonical
    order = files sorted by name, items in file order.
    """
    qa = root / "QA_information" if (root / "QA_information").is_dir() else root
    files = sorted(qa.glob("*/*.json")) + sorted(qa.glob("*.json"))
    if split != "all":
        files = [f for f in files if f.stem == split]
    if not files:
        raise FmgaugeError(f"no OmniMedVQA json under {qa} (expected QA_information/Open-access/<dataset>.json)"
                           + ("" if split == "all" else f" for sub-dataset {split!r}") + ".")
    ids, texts, recs, qs, ans, imgs = [], [], [], [], [], []
    for path in files:
        for i, rec in enumerate(_read_json_list(path)):
            where = f"{path} item {i}"
            _need_fields(rec, OMNI_FIELDS, where)
            opts = [f"{L}. {str(rec[f'option_{L}']).strip()}" for L in "ABCDEF"
                    if str(rec.get(f"option_{L}") or "").strip()]
            q = _nonempty("question", rec["question"], where)
            a = _nonempty("gt_answer", rec["gt_answer"], where)
            texts.append(MCQ_TEMPLATE.format(question=q, options=" ".join(opts), answer=a) if opts
                         else VQA_TEMPLATE.format(question=q, answer=a))
            ids.append(str(rec["question_id"]))
            recs.append(rec)
            qs.append(f"{q}\nOptions: {' '.join(opts)}" if opts else q)
            ans.append(a)
            imgs.append(_image_name(rec, "image_path"))
    root_dir = qa.parent if qa.name == "QA_information" else qa  # image_path is relative to the dataset root
    return _finish("omnimedvqa", split, ids, texts, qa, MCQ_TEMPLATE, recs,
                   VQAFields(tuple(qs), tuple(ans), tuple(imgs), str(root_dir)), unit_column="image_path")


BENCHMARKS.add("omnimedvqa", lambda split: read_omnimedvqa(find_data_file(
    "omnimedvqa", "OmniMedVQA", how_to_get="put OmniMedVQA (QA_information/…) in <data dir>/omnimedvqa/."
), split))
LAYOUTS.add("omnimedvqa", read_omnimedvqa)


# ------------------------------------------------------------------------------------------------- MRPC

MRPC_FILES = {"train": "train.tsv", "dev": "dev.tsv", "validation": "dev.tsv", "test": "test.tsv"}


def read_mrpc(path: Path, split: str = "test") -> TextBenchmark:
    """GLUE MRPC tsv (``#1 ID``, ``#2 ID``, ``#1 String``, ``#2 String``); text = the two sentences, one per line."""
    if path.is_dir():
        if split not in MRPC_FILES:
            raise FmgaugeError(f"MRPC split must be one of {sorted(MRPC_FILES)}, got {split!r}.")
        path = path / MRPC_FILES[split]
    if not path.is_file():
        raise FmgaugeError(f"benchmark file {path} does not exist.")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    fields = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
    ids, texts = [], []
    for i, rec in enumerate(rows):
        where = f"{path} row {i + 2}"
        _need_fields(rec, fields, where)
        s1 = _nonempty("#1 String", rec["#1 String"], where)
        s2 = _nonempty("#2 String", rec["#2 String"], where)
        texts.append(PAIR_TEMPLATE.format(sentence1=s1, sentence2=s2))
        ids.append(f"{rec['#1 ID']}-{rec['#2 ID']}")
    return _finish("glue-mrpc", split, ids, texts, path, PAIR_TEMPLATE, rows)


def read_mrpc_sentences(path: Path, split: str = "test") -> TextBenchmark:
    """GLUE MRPC as a paraphrase corpus of single sentences: each pair's ``#1 String`` then ``#2 String`` is an
    item (id = the MSR sentence id), with a ``pair`` column (``<#1 ID>-<#2 ID>``, the known structure: the two
    sentences of a pair are one unit) and ``quality`` (1 = paraphrase)."""
    pairs = read_mrpc(path, split)
    ids, texts, rows = [], [], []
    q = pairs.columns.get("Quality", (None,) * len(pairs))
    for k, (pid, text) in enumerate(zip(pairs.ids, pairs.texts, strict=True)):
        s1, s2 = text.split("\n", 1)
        a, b = pid.split("-", 1)
        for sid, sent in ((a, s1), (b, s2)):
            ids.append(sid)
            texts.append(sent)
            rows.append({"pair": pid, "quality": q[k], "pair_index": str(k)})
    return _finish("glue-mrpc-sentences", split, ids, texts, pairs.source, "{sentence}", rows,
                   unit_column="pair")


def _mrpc_dir() -> Path:
    return find_data_file("glue_mrpc", how_to_get="put GLUE MRPC's train/dev/test.tsv in <data dir>/glue_mrpc/.")


BENCHMARKS.add("glue-mrpc", lambda split: read_mrpc(_mrpc_dir(), split))
BENCHMARKS.add("glue-mrpc-sentences", lambda split: read_mrpc_sentences(_mrpc_dir(), split))
LAYOUTS.add("mrpc", read_mrpc)
LAYOUTS.add("mrpc-sentences", read_mrpc_sentences)


# ---------------------------------------------------------------------------------------- generic files

TABLE_LAYOUTS = ("jsonl", "csv", "tsv")
#: A table column of this name marks items that belong together (``plant`` writes it into its group files).
UNIT_COLUMN = "group"
TABLE_OPTIONS = {  # option of a ``csv:<path>?<option>=<value>&...`` benchmark -> what it takes
    "text_column": "the column holding each item's text (default 'text', else question + answer; position 0 with "
                   "header=none)",
    "id_column": "the column holding item ids (default 'id', else the row number)",
    "image_column": "the column holding each item's image file (default 'image'; relative names are read from "
                    "--image-root, else the table's folder)",
    "header": "'none' for a CSV/TSV without a header row (columns are then positions 0, 1, ...), or 'first' (the "
              "default)",
}


def _table_kwargs(opts: dict[str, str]) -> dict:
    header = opts.get("header", "first").strip().lower()
    if header not in ("none", "first"):
        raise FmgaugeError(f"benchmark option header must be 'none' or 'first', got {opts['header']!r}.")
    out: dict = {"header": header == "first"}
    for key in ("text_column", "id_column", "image_column"):
        if key in opts:
            value = opts[key].strip()
            if header == "none" and not value.isdigit():
                raise FmgaugeError(f"with header=none, {key} must be a column position (0, 1, ...), got {value!r}.")
            out[key] = value
    return out


def read_text_table(path: Path, split: str = "all", *, kind: str = "jsonl", text_column: str | None = None,
                    id_column: str | None = None, header: bool = True,
                    image_column: str | None = None) -> TextBenchmark:
    """Generic JSONL / CSV / TSV: a ``text`` column (or ``text_column``), else ``question`` + ``answer`` (VQA
    template). Optional ``id`` (or ``id_column``) and ``split`` columns (``split`` filters unless ``split ==
    "all"``). ``header=False``: a CSV/TSV without a header row, its columns named by position ("0", "1", ...;
    the text in column 0 unless ``text_column`` says otherwise)."""
    if kind == "jsonl":
        if not header:
            raise FmgaugeError(f"header=none is for CSV/TSV benchmarks; {path.name} is JSONL (its keys name the "
                               "fields).")
        rows = _read_jsonl(path)
    else:
        if not path.is_file():
            raise FmgaugeError(f"benchmark file {path} does not exist.")
        delimiter = "\t" if kind == "tsv" else ","
        try:
            with path.open(encoding="utf-8-sig", newline="") as f:
                if header:
                    rows = list(csv.DictReader(f, delimiter=delimiter))
                else:
                    rows = [{str(j): v for j, v in enumerate(r)} for r in csv.reader(f, delimiter=delimiter) if r]
        except (csv.Error, UnicodeDecodeError) as e:
            raise FmgaugeError(f"could not read {path} as a {kind.upper()}: {e}") from None
    if not header and text_column is None:
        text_column = "0"
    if rows and isinstance(rows[0], dict) and "split" in rows[0] and split != "all":
        rows = [r for r in rows if str(r.get("split")) == split]
    if rows and isinstance(rows[0], dict) and text_column is None and "text" not in rows[0]:
        headless = (" or, if the file has no header row (its first row was read as the column names "
                    f"{list(rows[0])}), --no-header (?header=none)") if kind in ("csv", "tsv") else ""
        _need_fields(rows[0], ["question", "answer"], f"{path} item 0 (no 'text' field; name the text column "
                                                      f"with --text-column or ?text_column={headless})")
        if image_column is not None and image_column not in rows[0]:
            _need_fields(rows[0], [image_column], f"{path} item 0 (image_column)")
        return _vqa_items(path.stem, split, rows, path, id_field=id_column or "id",
                          image_field=image_column or "image", image_dir=path.parent, unit_column=UNIT_COLUMN)
    text_column = text_column or "text"
    ids, texts = [], []
    for i, rec in enumerate(rows):
        where = f"{path} item {i}"
        _need_fields(rec, [text_column] + ([id_column] if id_column else []), where)
        texts.append(_nonempty(text_column, rec[text_column], where))
        ids.append(str(rec[id_column]) if id_column else str(rec.get("id") or i))
    return _finish(path.stem, split, ids, texts, path, "{" + text_column + "}", rows, unit_column=UNIT_COLUMN)


LAYOUTS.add("jsonl", lambda p, split: read_text_table(p, split, kind="jsonl"))
LAYOUTS.add("csv", lambda p, split: read_text_table(p, split, kind="csv"))
LAYOUTS.add("tsv", lambda p, split: read_text_table(p, split, kind="tsv"))
