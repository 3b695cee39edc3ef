"""core.validation: every check raises FmgaugeError naming the argument, what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

from fmgauge.core.validation import (
    FmgaugeError,
    check_choice,
    check_finite,
    check_ids_match,
    check_in_range,
    check_labels,
    check_same_length,
    check_two_classes,
)


def test_fmgauge_error_is_a_value_error():
    assert issubclass(FmgaugeError, ValueError)


def test_check_finite_names_the_bad_rows():
    x = np.zeros((8, 3))
    x[2, 1] = np.nan
    x[5, 0] = np.inf
    x[5, 2] = -np.inf
    with pytest.raises(FmgaugeError) as err:
        check_finite("features", x)
    msg = str(err.value)
    assert msg.startswith("features contains 3 NaN/inf values")
    assert "first bad rows: [2, 5]" in msg


def test_check_finite_caps_rows_and_handles_1d():
    v = np.full(9, np.nan)
    with pytest.raises(FmgaugeError, match=r"9 NaN/inf values \(first bad rows: \[0, 1, 2, 3, 4\]\)"):
        check_finite("scores", v)


def test_check_finite_passes_clean_and_integer_arrays():
    x = np.arange(6.0).reshape(2, 3)
    assert check_finite("x", x) is x
    check_finite("y", np.array([1, 2, 3]))


def test_check_ids_match_names_the_first_missing_ids():
    expected = [f"test/{i}" for i in range(10)]
    have = expected[:3]
    with pytest.raises(FmgaugeError) as err:
        check_ids_match("labeler output", have, expected, what="the test split")
    msg = str(err.value)
    assert "labeler output lacks 7 id(s) of the test split" in msg
    assert "first missing: ['test/3', 'test/4', 'test/5', 'test/6', 'test/7']" in msg
    assert "test/8" not in msg
    check_ids_match("ok", [3, 2, 1, 0], ["0", "1"], what="x")  # ids compared as strings; extra ids are fine


def test_check_two_classes_refuses_a_single_class():
    with pytest.raises(FmgaugeError) as err:
        check_two_classes("gold labels", np.array([1, 1, 1]), 2)
    assert "class(es) [0]" in str(err.value) and "class counts [0, 3]" in str(err.value)
    with pytest.raises(FmgaugeError, match=r"fewer than 2 item\(s\) of class\(es\) \[1\]"):
        check_two_classes("y", np.array([0, 0, 1]), 2, min_per_class=2)
    check_two_classes("y", np.array([0, 1, 2]), 3)


def test_check_same_length():
    assert check_same_length(a=[1, 2], b=np.zeros(2)) == 2
    with pytest.raises(FmgaugeError, match="a is length 2 and b is length 3"):
        check_same_length(a=[1, 2], b=[1, 2, 3])


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.zeros((2, 2), int), r"1-D array of class indices, got shape \(2, 2\)"),
        (np.array([0, 1, 2]), r"in 0..1, got dtype int64 with values \[0, 1, 2\]"),
        (np.array([0.0, 1.0]), "integer class indices"),
        (np.array([-1, 0]), "integer class indices"),
    ],
)
def test_check_labels_refuses(y, match):
    with pytest.raises(FmgaugeError, match=match):
        check_labels("y", y, 2)


def test_check_in_range_and_choice():
    assert check_in_range("p", 1.0, 0, 1) == 1.0
    with pytest.raises(FmgaugeError, match=r"p must be in \(0, 1\), got 1.0"):
        check_in_range("p", 1.0, 0, 1, inclusive=False)
    assert check_choice("backend", "ray", ["local", "ray"]) == "ray"
    with pytest.raises(FmgaugeError, match=r"backend must be one of \['local', 'ray'\], got 'dask'"):
        check_choice("backend", "dask", ["local", "ray"])
