"""core.store.RunStore: trials and their rows committed together, failures kept apart, state survives reopening."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmgauge.core.stats import Estimate
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "run")
    yield s
    s.close()


def _rows(seed: int) -> list[dict]:
    return [{"seed": seed, "n": n, "auc": 0.5 + seed / 10 + n / 100} for n in (10, 20)]


def test_record_done_ids_results_round_trip(store):
    store.record("t1", {"seed": 1}, _rows(1), 0.5)
    store.record("t2", {"seed": 2}, _rows(2), 0.7)
    assert store.done_ids() == {"t1", "t2"}
    df = store.results().sort_values(["trial_id", "n"]).reset_index(drop=True)
    expected = pd.DataFrame([{"trial_id": f"t{s}", **r} for s in (1, 2) for r in _rows(s)])
    pd.testing.assert_frame_equal(df, expected)
    assert set(store.results({"t2"})["trial_id"]) == {"t2"}
    assert (store.root / "figures").is_dir()


def test_record_again_replaces_rows(store):
    store.record("t1", {"seed": 1}, _rows(1), 0.5)
    store.record("t1", {"seed": 1}, _rows(1)[:1], 0.4)
    assert len(store.results()) == 1


def test_failure_is_not_done_and_keeps_its_error(store):
    store.record("ok", {"seed": 0}, _rows(0), 0.1)
    store.record_failure("bad", {"seed": 9}, "Traceback ...\nRuntimeError: boom")
    assert store.done_ids() == {"ok"}
    assert set(store.results()["trial_id"]) == {"ok"}
    table = store.trial_table().set_index("id")
    assert table.loc["bad", "status"] == "failed" and "RuntimeError: boom" in table.loc["bad", "error"]
    assert table.loc["ok", "status"] == "done" and table.loc["ok", "seconds"] == pytest.approx(0.1)
    store.record("bad", {"seed": 9}, _rows(9), 0.2)  # a retry that succeeds
    assert store.done_ids() == {"ok", "bad"}


def test_a_done_trial_that_later_fails_drops_its_rows_from_results(store):
    store.record("t", {"seed": 0}, _rows(0), 0.1)
    store.record_failure("t", {"seed": 0}, "boom")
    assert store.done_ids() == set() and store.results().empty


def test_reopening_sees_earlier_trials(tmp_path):
    first = RunStore(tmp_path / "run")
    first.record("t1", {"seed": 1}, _rows(1), 0.5)
    first.record_failure("t2", {"seed": 2}, "boom")
    first.close()
    again = RunStore(tmp_path / "run")
    try:
        assert again.done_ids() == {"t1"}
        assert len(again.results()) == 2
        assert set(again.trial_table()["id"]) == {"t1", "t2"}
    finally:
        again.close()


def test_config_and_json_round_trip(store):
    with pytest.raises(FmgaugeError, match="no config.yaml"):
        store.load_config()
    cfg = {"study": "crossover", "seeds": [0, 1], "labeler": {"name": "clip", "temperature": 1.0}}
    store.save_config(cfg)
    assert store.load_config() == cfg
    store.write_json("summary.json", {"auc": Estimate(0.8, 0.7, 0.9), "n": np.int64(3), "x": np.arange(2),
                                      "path": store.root / "figures"})
    assert store.read_json("summary.json") == {
        "auc": {"value": 0.8, "lo": 0.7, "hi": 0.9, "level": 0.95}, "n": 3, "x": [0, 1],
        "path": str(store.root / "figures"),
    }
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        store.write_json("bad.json", {"o": object()})


def test_write_results_parquet(store):
    store.record("t1", {"seed": 1}, _rows(1), 0.5)
    path = store.write_results(store.results())
    pd.testing.assert_frame_equal(pd.read_parquet(path), store.results())
