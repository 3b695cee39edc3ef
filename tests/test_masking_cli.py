"""`fmgauge masking`: the sub-app is mounted, lists strategies, and turns bad input into an error before any work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fmgauge.cli import app
from fmgauge.core.validation import FmgaugeError

runner = CliRunner()


def test_masking_help_and_strategies():
    out = runner.invoke(app, ["masking", "--help"])
    assert out.exit_code == 0 and "compare" in out.output and "report" in out.output
    out = runner.invoke(app, ["masking", "strategies"])
    assert out.exit_code == 0
    for name in ("random", "whole-word", "typhoon"):
        assert name in out.output


@pytest.mark.parametrize("args, message", [
    (["--strategies", "random,tyhpoon"], "Did you mean 'typhoon'"),
    (["--spread", "1.5"], "spread"),
    (["--replacement", "90-5-5"], "replacement"),
    (["--task", "no/such/file.tsv"], "neither a registered task"),
])
def test_compare_refuses_bad_input(fmgauge_env, tmp_path, args, message):
    res = runner.invoke(app, ["masking", "compare", "--seeds", "2", "--out", str(tmp_path / "r"), *args])
    assert res.exit_code != 0
    assert isinstance(res.exception, FmgaugeError) and message in str(res.exception)
    assert not (tmp_path / "r" / "trials.sqlite").exists()  # refused before any trial ran
