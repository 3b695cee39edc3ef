"""The bad-input battery: every row is a command line with a bad file or config it builds, which must exit 2 with
one clear line containing a phrase — and no traceback. New commands add rows here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmgauge import cli


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``fmgauge <args>`` in this process, as the console script runs it: (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["fmgauge", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def _gold_files(tmp: Path, n: int = 20) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    ids = [f"item{i}" for i in range(n)]
    y = np.arange(n) % 2
    pd.DataFrame({"id": ids, "label": np.array(["a", "b"])[y]}).to_csv(tmp / "gold.csv", index=False)
    pd.DataFrame({"id": ids, "p_a": 1 - y * 0.8 - 0.1, "p_b": y * 0.8 + 0.1}).to_csv(tmp / "lab.csv", index=False)
    pd.DataFrame({"id": ids, **{f"f{j}": rng.normal(size=n) for j in range(4)}}).to_csv(tmp / "x.csv", index=False)
    return {"gold": tmp / "gold.csv", "lab": tmp / "lab.csv", "x": tmp / "x.csv"}


def _decide(f: dict[str, Path], **over: Path) -> list[str]:
    f = {**f, **over}
    return ["weak-labels", "decide", "--gold", str(f["gold"]), "--labeler-outputs", str(f["lab"]),
            "--features", str(f["x"])]


def _study(tmp: Path, **over) -> Path:
    cfg = {"name": "bad", "dataset": "pneumoniamnist", "labelers": [{"kind": "simulated"}],
           "students": [{"kind": "logreg"}], "n_gold": [10, 20], **over}
    path = tmp / "study.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def seeds_zero(tmp: Path) -> list[str]:
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=0)), "--out", str(tmp / "run")]


def corrupt_store(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "trials.sqlite").write_bytes(b"this is not a database" * 100)
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run"),
            "--no-progress"]


def locked_run_dir(tmp: Path) -> list[str]:
    import socket

    (tmp / "run").mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-12-02 10:00:00"}
    (tmp / "run" / ".lock").write_text(json.dumps(holder))
    return ["weak-labels", "calibrate", "--config", str(_study(tmp, seeds=1)), "--out", str(tmp / "run"),
            "--no-progress"]


def gold_unterminated_quote(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    (tmp / "bad.csv").write_text('id,label\nitem0,"a\nitem1,b\n' + "x" * 70_000)
    return _decide(f, gold=tmp / "bad.csv")


def gold_missing(tmp: Path) -> list[str]:
    return _decide(_gold_files(tmp), gold=tmp / "missing.csv")


def gold_empty(tmp: Path) -> list[str]:
    (tmp / "empty.csv").write_text("")
    return _decide(_gold_files(tmp), gold=tmp / "empty.csv")


def gold_one_class(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    pd.DataFrame({"id": [f"item{i}" for i in range(20)], "label": "a"}).to_csv(tmp / "one.csv", index=False)
    return _decide(f, gold=tmp / "one.csv")


def gold_case_clash(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["gold"])
    df.loc[0, "label"] = "A"
    df.to_csv(tmp / "case.csv", index=False)
    return _decide(f, gold=tmp / "case.csv")


def features_with_text(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["x"]).assign(note="free text")
    df.to_csv(tmp / "xt.csv", index=False)
    return _decide(f, x=tmp / "xt.csv")


def features_with_nan(tmp: Path) -> list[str]:
    f = _gold_files(tmp)
    df = pd.read_csv(f["x"])
    df.loc[3, "f1"] = np.nan
    df.to_csv(tmp / "xn.csv", index=False)
    return _decide(f, x=tmp / "xn.csv")


def empty_model_dir(tmp: Path) -> list[str]:
    (tmp / "model").mkdir()
    return ["weak-labels", "label", "--dataset", "medical-abstracts-neoplasms", "--labeler",
            f"text-embedding:{tmp / 'model'}"]


BATTERY: list[tuple[Callable[[Path], list[str]], str]] = [
    (seeds_zero, "seeds must be a number of seeds >= 1"),
    (corrupt_store, "is not a readable trial store"),
    (locked_run_dir, "is in use by pid"),
    (gold_unterminated_quote, "gold file"),
    (gold_missing, "gold file"),
    (gold_empty, "could not be read"),
    (gold_one_class, "holds a single class"),
    (gold_case_clash, "differ only in case"),
    (features_with_text, "hold text"),
    (features_with_nan, "NaN"),
    (empty_model_dir, "has no config.json; save the model with save_pretrained() or give a registered name ["),
]


@pytest.mark.parametrize("build, phrase", BATTERY, ids=[b.__name__ for b, _ in BATTERY])
def test_bad_input_exits_2_with_one_clear_line(build, phrase, tmp_path, capsys, fmgauge_env):
    code, err = run_cli(build(tmp_path), capsys)
    assert code == 2, err
    assert phrase in " ".join(err.split()), err
    assert "Traceback" not in err


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    import socket
    import subprocess

    from fmgauge.core.store import LOCK, run_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()
    assert "taking over the lock" in caplog.text
