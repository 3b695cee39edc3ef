"""core.cache: content-addressed arrays; same description = no recompute, dict order irrelevant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmgauge.core.cache import cache_root, cached_arrays, file_fingerprint, stable_hash


@pytest.fixture
def counted():
    calls = []

    def compute():
        calls.append(1)
        return {"scores": np.arange(6, dtype=np.float32).reshape(3, 2) * len(calls), "ids": np.array(["a", "b", "c"])}

    return compute, calls


def test_second_call_hits_the_cache(fmgauge_env, counted):
    compute, calls = counted
    desc = {"model": "clip", "data": {"name": "pneumoniamnist", "split": "test"}, "temperature": 1.0}
    first = cached_arrays("labels", desc, compute)
    second = cached_arrays("labels", desc, compute)
    assert len(calls) == 1
    assert set(second) == {"scores", "ids"}
    np.testing.assert_array_equal(second["scores"], first["scores"])
    np.testing.assert_array_equal(second["ids"], first["ids"])
    assert second["scores"].dtype == np.float32
    stored = list((fmgauge_env / "labels").glob("*.npz"))
    assert len(stored) == 1 and stored[0].parent.parent == cache_root()
    assert json.loads(stored[0].with_suffix(".json").read_text()) == desc
    assert not list((fmgauge_env / "labels").glob("*.tmp*"))


def test_different_description_recomputes(fmgauge_env, counted):
    compute, calls = counted
    cached_arrays("labels", {"model": "clip", "temperature": 1.0}, compute)
    out = cached_arrays("labels", {"model": "clip", "temperature": 2.0}, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(out["scores"], np.arange(6).reshape(3, 2) * 2)
    cached_arrays("embeddings", {"model": "clip", "temperature": 1.0}, compute)  # another kind: own namespace
    assert len(calls) == 3


def test_dict_key_order_does_not_change_the_key(fmgauge_env, counted):
    compute, calls = counted
    cached_arrays("labels", {"a": 1, "b": {"x": 1, "y": [1, 2]}}, compute)
    cached_arrays("labels", {"b": {"y": [1, 2], "x": 1}, "a": 1}, compute)
    assert len(calls) == 1
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": [1, 2]}) != stable_hash({"a": [2, 1]})  # list order does matter


def test_file_fingerprint_changes_with_content(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    before = file_fingerprint(f)
    assert before["path"] == str(f.resolve()) and before["size"] == 3
    f.write_bytes(b"abcd")
    assert stable_hash(file_fingerprint(f)) != stable_hash(before)
