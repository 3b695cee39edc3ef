"""The crossover study end to end on real PneumoniaMNIST: planted effects, resume, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fmgauge.core.runner import BackendConfig
from fmgauge.core.validation import FmgaugeError
from fmgauge.weaklabels import study as study_mod
from fmgauge.weaklabels.study import StudyConfig, calibrate, load_result

FAST = {"kind": "logreg", "epochs": 1, "min_steps": 15, "batch_size": 256}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One labeler/reference cache for the module (the instance-noise reference model is computed once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def env(fmgauge_env, shared_cache, monkeypatch):
    monkeypatch.setenv("FMGAUGE_CACHE", str(shared_cache))
    return shared_cache


def small_study(**over) -> StudyConfig:
    base = dict(name="t", dataset="pneumoniamnist", labelers=[{"kind": "simulated", "accuracy": 0.8}],
                students=[FAST], n_gold=[10, 100, 1000], seeds=2, n_boot=20, rule_eval=False)
    return StudyConfig(**{**base, **over})


def _results(run_dir) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet").drop(columns=["seconds"])


def test_killed_study_resumes_without_recomputing(env, tmp_path, monkeypatch):
    cfg = small_study()
    full = calibrate(cfg, tmp_path / "full", backend=BackendConfig(workers=1), progress=False, report=False)
    total = full.stats.total
    real = study_mod.run_trial
    calls = {"n": 0}

    def dies_after_three(config):
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-sweep
        calls["n"] += 1
        return real(config)

    monkeypatch.setattr(study_mod, "run_trial", dies_after_three)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted; 3 of \d+ trials are saved .*rerun the same"):
        calibrate(cfg, tmp_path / "killed", backend=BackendConfig(workers=1), progress=False, report=False)
    monkeypatch.setattr(study_mod, "run_trial", real)
    resumed = calibrate(cfg, tmp_path / "killed", backend=BackendConfig(workers=1), progress=False, report=False)
    assert (resumed.stats.skipped, resumed.stats.ran) == (3, total - 3)
    pd.testing.assert_frame_equal(_results(tmp_path / "killed"), _results(tmp_path / "full"))
    again = calibrate(cfg, tmp_path / "killed", backend=BackendConfig(workers=1), progress=False, report=False)
    assert again.stats.ran == 0


def test_same_config_and_seeds_give_identical_results(env, tmp_path):
    cfg = small_study(labelers=[{"kind": "simulated", "noise": "instance", "accuracy": 0.8}])
    calibrate(cfg, tmp_path / "a", backend=BackendConfig(workers=1), progress=False, report=False)
    calibrate(cfg, tmp_path / "b", backend=BackendConfig(workers=2), progress=False, report=False)
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    assert set(a.condition) == {"gold", "gold+weak", "weak"} and a.seed.nunique() == 2


def test_report_is_written_and_rebuilt_from_the_store(env, tmp_path):
    from fmgauge.weaklabels import rebuild_report

    res = calibrate(small_study(rule_eval=True, rule_pool_max=500, rule_max_gold=100), tmp_path / "r",
                    backend=BackendConfig(workers=1), progress=False)
    assert res.stats.total == 2 * 3 + 1 + 1 * 2 * 2  # one seed chunk + rule trials: labeler x n_gold (10, 100) x seeds
    html = (tmp_path / "r" / "report.html").read_text()
    assert "SIMULATED" in html.split("<h1>")[0]  # the first thing a reader sees
    assert "figures/delta_" in html and "Crossover per student" in html
    assert "Decision rules, evaluated" in html and "figures/rules_regret.png" in html
    assert "always use the weak labels (trivial)" in html
    assert "committed verdicts right" in html and "always the majority class" in html
    assert "realised gold-only test AUC" in html
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["meta"]["seeds"] == [0, 1] and summary["crossovers"][0]["student"] == "logreg"
    (tmp_path / "r" / "report.html").unlink()
    assert rebuild_report(tmp_path / "r").exists()
    assert load_result(tmp_path / "r").results.shape == res.results.shape


def test_seed_batches_give_the_same_trials_as_one_batch_per_seed(env, tmp_path):
    a = calibrate(small_study(seed_batch=1), tmp_path / "a", backend=BackendConfig(workers=1), progress=False,
                  report=False)
    assert a.stats.total == 2 * (3 + 3 + 1)  # 2 seed chunks x (gold x3, gold+weak x3, weak)
    assert sorted(a.results.seed.unique()) == [0, 1]


@pytest.mark.parametrize("over, message", [
    ({"n_gold": [1, 10]}, "below the number of classes"),
    ({"n_gold": [10, 10_000]}, "exceed the pool size"),
    ({"dataset": "pneumoniamnst"}, "Did you mean 'pneumoniamnist'"),
])
def test_bad_study_input_is_refused(env, tmp_path, over, message):
    with pytest.raises(FmgaugeError, match=message):
        calibrate(small_study(**over), tmp_path / "x", progress=False, report=False)


def test_missing_dataset_file_lists_every_place_looked(env, tmp_path, monkeypatch):
    monkeypatch.setenv("FMGAUGE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FmgaugeError) as e:
        calibrate(small_study(), tmp_path / "x", progress=False, report=False)
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "medmnist" / "pneumoniamnist.npz") in msg
    assert str((tmp_path / "data" / "pneumoniamnist.npz").resolve()) in msg
    assert "shared/data" in msg


def test_labels_file_with_foreign_ids_names_them(env, tmp_path):
    pd.DataFrame({"id": [f"img_{i}" for i in range(4708)], "label": 0}).to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(FmgaugeError, match=r"first missing: \['train/0', 'train/1'"):
        calibrate(small_study(labelers=[{"kind": "file", "path": str(tmp_path / "w.csv")}]), tmp_path / "x",
                  progress=False, report=False)


def test_invalid_config_values_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="increasing order"):
        small_study(n_gold=[100, 10])
    with pytest.raises(ValidationError, match="must include 'gold'"):
        small_study(conditions=["weak"])
    with pytest.raises(ValidationError, match="accuracy"):
        small_study(labelers=[{"kind": "simulated", "accuracy": 1.5}])
    with pytest.raises(ValidationError, match="seeds must be a number of seeds >= 1"):
        small_study(seeds=0)
    with pytest.raises(ValidationError, match="distinct non-negative"):
        small_study(seeds=[1, 1])
    with pytest.raises(ValidationError, match="rule_proxy must be a student of kind"):
        small_study(rule_proxy={"kind": "cnn"})


def test_convex_student_trains_on_image_datasets(env, tmp_path):
    """sk-logreg on raw images used to pass validation and then fail in every trial."""
    cfg = small_study(students=[{"kind": "sk-logreg", "c": 0.01}], n_gold=[20, 200], rule_eval=False)
    res = calibrate(cfg, tmp_path / "cvx", backend=BackendConfig(workers=1), progress=False, report=False)
    gold = res.results[(res.results.condition == "gold") & (res.results.n_gold == 200)]
    assert len(gold) == 2 and (gold.auc > 0.85).all()


@pytest.mark.ray
def test_ray_backend_gives_the_same_results_as_local(env, tmp_path):
    pytest.importorskip("ray")
    cfg = small_study(n_gold=[10, 100], seeds=2)
    calibrate(cfg, tmp_path / "local", backend=BackendConfig(workers=1), progress=False, report=False)
    calibrate(cfg, tmp_path / "ray", backend=BackendConfig(backend="ray", workers=2), progress=False, report=False)
    pd.testing.assert_frame_equal(_results(tmp_path / "ray"), _results(tmp_path / "local"))


def test_feature_files_with_nan_are_refused(env, tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x[7, 3] = np.nan
    np.savez(tmp_path / "f.npz", train_features=x, train_labels=np.arange(50) % 2,
             test_features=np.abs(x[10:20]), test_labels=np.arange(10) % 2)
    with pytest.raises(FmgaugeError, match=r"train_features contains 1 NaN/inf values \(first bad rows: \[7\]\)"):
        calibrate(small_study(dataset=f"features:{tmp_path / 'f.npz'}", n_gold=[4, 10]), tmp_path / "x",
                  progress=False, report=False)


def test_feature_datasets_train_linear_students_and_refuse_conv(env, tmp_path):
    """Precomputed features (e.g. a frozen foundation model's embeddings): a planted separable signal is learnt."""
    rng = np.random.default_rng(0)
    y = np.arange(600) % 2
    x = rng.normal(size=(600, 16)).astype(np.float32)
    x[:, 0] += 3.0 * y  # class 1 shifted along feature 0
    np.savez(tmp_path / "f.npz", train_features=x[:400], train_labels=y[:400], test_features=x[400:],
             test_labels=y[400:], class_names=np.array(["neg", "pos"]))
    cfg = small_study(dataset=f"features:{tmp_path / 'f.npz'}", n_gold=[10, 100],
                      students=[{"kind": "logreg", "lr": 0.05}, {"kind": "mlp", "width": 8, "lr": 0.05}])
    res = calibrate(cfg, tmp_path / "run", backend=BackendConfig(workers=1), progress=False, report=False)
    gold = res.results[(res.results.condition == "gold") & (res.results.n_gold == 100)]
    assert (gold.auc > 0.85).all()  # chance is 0.5; the oracle (feature 0 alone) reaches 0.98
    with pytest.raises(FmgaugeError, match="needs images"):
        calibrate(small_study(dataset=f"features:{tmp_path / 'f.npz'}", students=[{"kind": "cnn"}],
                              n_gold=[10, 100]), tmp_path / "run2", progress=False, report=False)
