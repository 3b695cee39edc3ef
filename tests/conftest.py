"""Shared fixtures: an isolated cache, the offline data directory, and PneumoniaMNIST loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# $FMGAUGE_DATA when set (a worktree's ../shared/data is not the shared data), else <repo>/../shared/data
SHARED_DATA = Path(os.environ.get("FMGAUGE_DATA") or REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def fmgauge_env(tmp_path, monkeypatch):
    """FMGAUGE_CACHE -> a fresh tmp dir, FMGAUGE_DATA -> the shared data (:data:`SHARED_DATA`), offline (no download)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FMGAUGE_CACHE", str(cache))
    monkeypatch.setenv("FMGAUGE_DATA", str(SHARED_DATA))
    monkeypatch.setenv("FMGAUGE_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def pneumonia():
    """PneumoniaMNIST (28 px) from the shared offline data directory."""
    from fmgauge.core.data import load_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMGAUGE_DATA", str(SHARED_DATA))
        mp.setenv("FMGAUGE_OFFLINE", "1")
        return load_dataset("pneumoniamnist")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny Llama (2 layers, hidden 64, 4 heads / 2 kv heads) with a word-level WikiText-2 tokenizer."""
    from test_quantization_pipeline import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


# The slowest test files (CPU seconds measured with `pytest --durations=0`, docs/benchmarks.md §13), started first
# so that the two xdist workers of `make test` (`-n 2 --dist loadfile --no-loadscope-reorder`) finish together
# instead of one of them starting the longest file last. Other files keep their collection order.
SLOW_FIRST = (
    "test_weaklabels_fairness.py",
    "test_masking_experiment.py",
    "test_core_runner.py",
    "test_cli.py",
    "test_weaklabels_study.py",
    "test_core_progress.py",
    "test_contamination_audit.py",
    "test_text_labelers.py",
    "test_students.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
