"""core.progress: log lines on a non-TTY (done/total, rate, ETA, metrics), a heartbeat during long steps."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

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


# ---------------------------------------------------------------- what a log file shows (stderr to a pipe)

TIME = r"^\d\d:\d\d:\d\d "  # the CLI's non-TTY log lines: "HH:MM:SS message"


def _piped(args: list[str], tmp_path, **env: str) -> list[str]:
    """Run ``python args`` with stderr to a pipe (not a TTY, as under nohup or CI); its stderr lines."""
    here = Path(__file__).resolve().parent
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)]),
            "FMGAUGE_PROGRESS_EVERY": "0.05", **env}
    full.pop("FMGAUGE_PROGRESS", None)  # auto: the pipe makes it log lines
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,  # stderr: a pipe
                          env=full, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr.splitlines()


def test_a_long_command_piped_prints_timestamped_progress_lines(fmgauge_env, tmp_path):
    """`weak-labels calibrate` (the demo's command) with stderr to a pipe: one line per trial with done/total,
    percent, rate, elapsed and ETA, each with its time, and a last line that says done."""
    cfg = tmp_path / "piped.yaml"
    cfg.write_text("name: piped\ndataset: pneumoniamnist\nlabelers: [{kind: simulated, accuracy: 0.8}]\n"
                   "students: [{kind: logreg, epochs: 1, min_steps: 5}]\nn_gold: [10, 50]\nseeds: 2\nn_boot: 0\n"
                   "conditions: [gold, gold+weak]\ncleanlab: false\nrule_eval: false\n")
    lines = _piped(["-m", "fmgauge", "weak-labels", "calibrate", "--config", str(cfg), "--out",
                    str(tmp_path / "run"), "--workers", "1"], tmp_path)
    trials = [ln for ln in lines if re.search(TIME + r"piped: trials", ln)]
    assert re.search(TIME + r"piped: trials: started \(4 trial\)$", trials[0]), lines
    first = next(ln for ln in trials if " 1/4 " in ln)
    assert re.search(r"piped: trials 1/4 \(25%\) \| [\d.]+ (trial/s|s/trial) \| elapsed \d:\d\d:\d\d \| "
                     r"eta \d:\d\d:\d\d$", first), first
    assert re.search(r"piped: trials 4/4 \(100%\) \| .* \| done$", trials[-1]), trials[-1]


def test_pool_workers_log_their_steps_and_loss_when_the_parent_logs(tmp_path):
    """A spawn pool under a non-TTY: each worker's training-like trial logs step/total, ETA and loss lines of its
    own (what a masking trial's MLM and fine-tuning stages show), besides the parent's trial count."""
    script = ("import sys\n"
              "from fmgauge.core.console import configure_logging\n"
              "from fmgauge.core.runner import BackendConfig, Trial, run_trials\n"
              "from fmgauge.core.store import RunStore\n"
              "import _trialfns\n"
              "if __name__ == '__main__':\n"
              "    configure_logging()\n"
              "    run_trials([Trial({'seed': s, 'steps': 5}) for s in range(2)], _trialfns.stepped,\n"
              "               RunStore(sys.argv[1]), backend=BackendConfig(workers=2, threads_per_worker=0),\n"
              "               description='pool')\n")
    (tmp_path / "pool_run.py").write_text(script)
    lines = _piped(["pool_run.py", str(tmp_path / "run")], tmp_path)
    for seed in (0, 1):
        mine = [ln for ln in lines if f"trial {seed}: train" in ln]
        assert any(re.search(TIME + rf"trial {seed}: train 1/5 \(20%\) \| .* \| eta .* \| loss 1$", ln)
                   for ln in mine), lines
        assert re.search(rf"trial {seed}: train 5/5 \(100%\) \| .* \| loss 0\.2 \| done$", mine[-1]), mine
    assert re.search(TIME + r"pool 2/2 \(100%\) \| .* \| done$", [ln for ln in lines if "pool " in ln][-1])
