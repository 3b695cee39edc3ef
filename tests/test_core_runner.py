"""core.runner: the same results in-process, in a spawn pool and on Ray; failures saved apart; resume skips done."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import _trialfns
from fmgauge.core.runner import BackendConfig, RunStats, Trial, run_trials
from fmgauge.core.store import RunStore
from fmgauge.core.validation import FmgaugeError

TRIALS = [Trial({"seed": s, "scale": 2.0}) for s in range(4)]


def _run(tmp_path: Path, name: str, backend: BackendConfig, fn=_trialfns.draw) -> tuple[RunStats, pd.DataFrame]:
    store = RunStore(tmp_path / name)
    try:
        stats = run_trials(TRIALS, fn, store, backend=backend, progress=False)
        df = store.results().sort_values(["trial_id", "row"]).reset_index(drop=True)
    finally:
        store.close()
    return stats, df


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> pd.DataFrame:
    stats, df = _run(tmp_path_factory.mktemp("runs"), "local1", BackendConfig(workers=1))
    assert (stats.total, stats.skipped, stats.ran, stats.failed) == (4, 0, 4, 0)
    return df


def test_in_process_results_are_the_trial_function(in_process):
    assert len(in_process) == 8
    for t in TRIALS:
        got = in_process[in_process.trial_id == t.id].drop(columns="trial_id").to_dict("records")
        assert got == _trialfns.draw(t.config)


def test_trial_id_is_the_config_hash():
    assert Trial({"a": 1, "b": 2}).id == Trial({"b": 2, "a": 1}).id != Trial({"a": 1, "b": 3}).id
    assert Trial({"a": 1}, id="custom").id == "custom"


def test_spawn_pool_matches_in_process(tmp_path, in_process):
    stats, df = _run(tmp_path, "local2", BackendConfig(workers=2))
    assert (stats.ran, stats.failed) == (4, 0)
    pd.testing.assert_frame_equal(df, in_process)


@pytest.mark.ray
def test_ray_matches_in_process(tmp_path, in_process, monkeypatch):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    # Ray workers are separate interpreters started by the raylet: they find tests/_trialfns.py and src/ through
    # the environment they inherit, not through this process's sys.path.
    here = Path(__file__).resolve().parent
    paths = [str(here), str(here.parent / "src"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    stats, df = _run(tmp_path, "ray", BackendConfig(backend="ray", workers=2))
    assert (stats.ran, stats.failed) == (4, 0)
    pd.testing.assert_frame_equal(df, in_process)
    assert not ray.is_initialized()  # a local instance started by run_trials is shut down again


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_is_saved_apart_and_resume_runs_only_the_missing_trial(tmp_path, monkeypatch, in_process, workers):
    """workers=2: the failure happens in a spawn worker (threads_per_worker=0 skips the torch import there)."""
    backend = BackendConfig(workers=workers, threads_per_worker=0)
    bad = TRIALS[2]
    monkeypatch.setenv(_trialfns.FAIL_ENV, str(bad.config["seed"]))
    store = RunStore(tmp_path / "run")
    with pytest.raises(FmgaugeError) as err:
        run_trials(TRIALS, _trialfns.flaky, store, backend=backend, progress=False)
    msg = str(err.value)
    assert "1 of 4 trials failed" in msg
    assert f"trial {bad.id}" in msg and "planted failure for seed 2" in msg
    assert store.done_ids() == {t.id for t in TRIALS} - {bad.id}
    table = store.trial_table().set_index("id")
    assert table.loc[bad.id, "status"] == "failed" and "RuntimeError" in table.loc[bad.id, "error"]
    store.close()

    monkeypatch.delenv(_trialfns.FAIL_ENV)
    store = RunStore(tmp_path / "run")  # a restarted study
    stats = run_trials(TRIALS, _trialfns.flaky, store, backend=backend, progress=False)
    assert (stats.total, stats.skipped, stats.ran, stats.failed) == (4, 3, 1, 0)
    df = store.results().sort_values(["trial_id", "row"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(df, in_process)
    again = run_trials(TRIALS, _trialfns.flaky, store, backend=backend, progress=False)
    assert (again.skipped, again.ran) == (4, 0)
    store.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_that_disappears_mid_run_stops_it_with_one_line(tmp_path, monkeypatch, workers, caplog):
    """An input error hits every trial alike: the first one stops the run with the error's message (no
    traceback), not one traceback per trial; trials finished before stay saved and a rerun resumes."""
    data = tmp_path / "data.txt"
    data.write_text("x")
    monkeypatch.setenv(_trialfns.GONE_ENV, str(data))
    backend = BackendConfig(workers=workers, threads_per_worker=0)
    store = RunStore(tmp_path / "run")
    run_trials(TRIALS[:1], _trialfns.reads_input, store, backend=backend, progress=False)
    data.unlink()  # the dataset disappears while the study runs
    with pytest.raises(FmgaugeError) as err:
        run_trials(TRIALS, _trialfns.reads_input, store, backend=backend, progress=False)
    msg = str(err.value)
    assert "stopped the run: FileNotFoundError" in msg and str(data) in msg and "rerun" in msg
    assert "Traceback" not in msg and "Traceback" not in caplog.text
    assert TRIALS[0].id in store.done_ids()
    table = store.trial_table().set_index("id")
    assert "Traceback" in table.loc[table.status == "failed", "error"].iloc[0]  # kept for whoever digs
    store.close()
    data.write_text("x")
    store = RunStore(tmp_path / "run")
    stats = run_trials(TRIALS, _trialfns.reads_input, store, backend=backend, progress=False)
    assert stats.skipped == 1 and stats.failed == 0
    store.close()


def test_duplicate_trial_configs_refused(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(FmgaugeError, match="same config"):
        run_trials([Trial({"seed": 1}), Trial({"seed": 1})], _trialfns.draw, store, progress=False)
    assert store.done_ids() == set()  # nothing ran
    store.close()


@pytest.mark.parametrize(("kwargs", "match"), [({"backend": "dask"}, r"backend must be one of \['local', 'ray'\]"),
                                               ({"workers": 0}, "workers must be >= 1")])
def test_bad_backend_config_refused(kwargs, match):
    with pytest.raises(FmgaugeError, match=match):
        BackendConfig(**kwargs)


def test_run_stats_rate():
    assert RunStats(4, 1, 3, 0, 6.0).trials_per_minute == pytest.approx(30.0)
    assert RunStats(4, 1, 3, 0, 6.0).to_dict()["trials_per_minute"] == pytest.approx(30.0)
