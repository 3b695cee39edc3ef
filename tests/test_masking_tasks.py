"""Task loading: GLUE MRPC from the shared data (BOM, unescaped quotes, labelled MSR test), GLUE-style TSV/CSV files,
and the clear errors for a missing label column and for HF GLUE offline."""

from __future__ import annotations

import numpy as np
import pytest

from fmgauge.core.validation import FmgaugeError
from fmgauge.masking.tasks import load_task


def test_mrpc_splits_counts_and_labels(fmgauge_env):
    t = load_task("mrpc")
    assert t.pair and t.n_labels == 2
    assert {s: len(sp) for s, sp in t.splits.items()} == {"train": 3668, "dev": 408, "test": 1725}
    # label counts from the corpus' PROVENANCE.md; the test split is the labelled MSR file
    assert np.bincount(t.split("train").y).tolist() == [1194, 2474]
    assert np.bincount(t.split("dev").y).tolist() == [129, 279]
    assert np.bincount(t.split("test").y).tolist() == [578, 1147]


def test_mrpc_keeps_quotes_literally(fmgauge_env):
    t = load_task("mrpc")
    dev = t.split("dev")
    # dev row 0's second sentence starts with an unmatched quote: QUOTE_NONE keeps it and the row count
    assert dev.text_b[0].startswith('"The foodservice pie business')
    assert dev.text_a[0].startswith("He said the foodservice pie business")
    assert all("\ufeff" not in s for s in dev.text_a[:5])


def test_glue_style_tsv_folder_and_csv_file(tmp_path):
    (tmp_path / "train.tsv").write_text("\ufeffsentence1\tsentence2\tlabel\nA \"quoted b\tB\t1\nC\tD\t0\nE\tF\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence1\tsentence2\tlabel\nG\tH\t0\n")
    t = load_task(str(tmp_path))
    assert t.split("train").text_a[0] == 'A "quoted b' and t.split("train").y.tolist() == [1, 0, 1]
    assert t.split("dev").y.tolist() == [0] and t.label_names == ("0", "1")
    csv = tmp_path / "single.csv"
    csv.write_text('sentence,label\n"one, with comma",pos\ntwo,neg\n')
    s = load_task(str(csv))
    assert not s.pair and s.label_names == ("neg", "pos") and s.split("train").y.tolist() == [1, 0]
    assert s.split("train").text_a[0] == "one, with comma"
    bare = tmp_path / "bare.csv"
    bare.write_text("pos,first one,x\nneg,second one,y\n")
    b = load_task(str(bare), header=False, text_columns=("1", "2"), label_column="0")
    assert b.pair and b.split("train").text_a == ["first one", "second one"] and b.split("train").y.tolist() == [1, 0]


def test_missing_label_column_is_refused(tmp_path):
    f = tmp_path / "nolabel.tsv"
    f.write_text("sentence1\tsentence2\nA\tB\n")
    with pytest.raises(FmgaugeError, match="label column .* is missing"):
        load_task(str(f))
    with pytest.raises(FmgaugeError, match="'score' is missing"):
        load_task(str(f), label_column="score")


def test_dev_label_not_in_train_and_empty_label_are_refused(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nA\t0\nB\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nC\t2\n")
    with pytest.raises(FmgaugeError, match="not among the training labels"):
        load_task(str(tmp_path))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nC\t\n")
    with pytest.raises(FmgaugeError, match="empty"):
        load_task(str(tmp_path))


def test_unknown_task_and_offline_glue_are_clear(fmgauge_env, tmp_path):
    with pytest.raises(FmgaugeError, match="neither a registered task"):
        load_task(str(tmp_path / "nope.tsv"))
    with pytest.raises(FmgaugeError, match="offline"):
        load_task("glue:cola")
