"""core.progress: log lines on a non-TTY (done/total, rate, ETA, metrics), a heartbeat during long steps."""

from __future__ import annotations

import logging
import time

import pytest

from fmgauge.core.progress import format_seconds, progress, progress_mode, track


@pytest.fixture
def log_mode(monkeypatch):
    monkeypatch.setenv("FMGAUGE_PROGRESS", "log")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fmgauge.progress"]


def test_log_mode_prints_first_step_metrics_eta_and_done(log_mode, caplog):
    caplog.set_level(logging.INFO, logger="fmgauge.progress")
    with progress("train", 10, unit="step", every=3600) as p:
        for i in range(10):
            p.advance(1, loss=2.0 - 0.1 * i)
    lines = _lines(caplog)
    assert lines[0] == "train: started (10 step)"
    assert lines[1].startswith("train 1/10 (10%)") and "eta" in lines[1] and "loss 2" in lines[1]
    assert lines[-1].startswith("train 10/10 (100%)") and lines[-1].endswith("done") and "loss 1.1" in lines[-1]
    assert len(lines) == 3  # every=3600: nothing between the first step and the end


def test_log_mode_rate_limits_and_heartbeat_shows_a_long_step(log_mode, caplog):
    caplog.set_level(logging.INFO, logger="fmgauge.progress")
    with progress("gptq", 3, every=0.1) as p:
        p.advance(1)
        time.sleep(0.45)  # one long step: the heartbeat repeats the status
        p.advance(1)
        p.advance(1)
    lines = _lines(caplog)
    heart = [x for x in lines if x.startswith("gptq 1/3")]
    assert len(heart) >= 2, lines  # the forced first-step line + at least one heartbeat during the sleep


def test_interrupted_loop_says_stopped(log_mode, caplog):
    caplog.set_level(logging.INFO, logger="fmgauge.progress")
    with pytest.raises(KeyboardInterrupt), progress("calib", 5, every=3600) as p:
        p.advance(2)
        raise KeyboardInterrupt
    assert _lines(caplog)[-1].startswith("calib 2/5") and _lines(caplog)[-1].endswith("stopped")


def test_off_and_disabled_are_silent_but_count(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="fmgauge.progress")
    monkeypatch.setenv("FMGAUGE_PROGRESS", "log")
    assert progress_mode(enabled=False) == "off"
    with progress("x", 4, enabled=False) as p:
        p.advance(4)
    assert p.done == 4 and _lines(caplog) == []
    assert list(track(range(3), "y", enabled=False)) == [0, 1, 2]


def test_bar_mode_runs(monkeypatch):
    monkeypatch.setenv("FMGAUGE_PROGRESS", "bar")
    with progress("bar", 3) as p:
        p.advance(3, loss=0.5)
    assert p.done == 3


def test_format_seconds():
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(float("nan")) == "?"
