"""The CLI parses, calls the library and turns FmgaugeError into a one-line message with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from fmgauge.cli import app, parse_labeler_spec
from fmgauge.core.validation import FmgaugeError

runner = CliRunner()


def test_help_lists_the_subsystem_and_commands():
    out = runner.invoke(app, ["weak-labels", "--help"])
    assert out.exit_code == 0
    for cmd in ("label", "calibrate", "report"):
        assert cmd in out.output


def test_label_writes_outputs_and_metrics(fmgauge_env, tmp_path, pneumonia):
    out = tmp_path / "weak.csv"
    res = runner.invoke(app, ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler",
                              "simulated:random", "--accuracy", "0.8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 4708 and {"id", "label", "p_normal", "p_pneumonia"} <= set(df.columns)
    assert (df.id.to_numpy() == pneumonia.split("train").ids).all()
    assert abs((df.label.to_numpy() == pneumonia.split("train").y).mean() - 0.8) < 0.03
    assert "0.80" in res.output  # the accuracy table
    assert "0.742" in res.output  # beside what always answering the majority class scores
    assert "WARNING" not in res.output


def test_label_warns_when_accuracy_is_below_the_majority_rate(fmgauge_env, tmp_path, pneumonia):
    """74% of the pool is pneumonia: a labeler at 70% accuracy is worse than answering 'pneumonia' to everything."""
    res = runner.invoke(app, ["weak-labels", "label", "--dataset", "pneumoniamnist", "--labeler",
                              "simulated:random", "--accuracy", "0.7"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "WARNING" in text and "worse than always answering 'pneumonia'" in text


@pytest.mark.parametrize("spec, expected", [
    ("simulated:instance", {"kind": "simulated", "noise": "instance", "accuracy": 0.7}),
    ("file:x.csv", {"kind": "file", "path": "x.csv"}),
    ("open_clip:siglip-b16", {"kind": "open_clip", "model": "siglip-b16"}),
    ("text-embedding:minilm-l6", {"kind": "text-embedding", "model": "minilm-l6"}),
    ("causal-lm:gemma3-270m", {"kind": "causal-lm", "model": "gemma3-270m"}),
])
def test_labeler_specs(spec, expected):
    assert parse_labeler_spec(spec, 0.7 if spec.startswith("sim") else None) == expected


def test_unknown_labeler_spec_refused():
    with pytest.raises(FmgaugeError, match="--labeler must look like"):
        parse_labeler_spec("clip", None)


def test_bad_input_exits_2_with_a_clear_message(fmgauge_env, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("dataset: pneumoniamnist\nlabelers: [{kind: simulated}]\nstudents: [{kind: logreg}]\n"
                   "n_gold: [10, 99999]\n")
    proc = subprocess.run([sys.executable, "-m", "fmgauge", "weak-labels", "calibrate", "--config", str(cfg),
                           "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "exceed the pool size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_several_configs_run_in_order_into_one_combined_report(fmgauge_env, tmp_path):
    """`calibrate --config A --config B --out D` (what `make demo` does): D/<name>/ per study, D/report.* joined."""
    for name, acc in (("first", 0.9), ("second", 0.7)):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\ndataset: pneumoniamnist\nlabelers: [{{kind: simulated, accuracy: {acc}}}]\n"
            "students: [{kind: logreg, epochs: 1, min_steps: 5}]\nn_gold: [10, 50]\nseeds: 1\nn_boot: 0\n"
            "conditions: [gold, gold+weak]\ncleanlab: false\nrule_eval: false\n")  # the rules: test_weaklabels_*
    out = tmp_path / "demo"
    res = runner.invoke(app, ["weak-labels", "calibrate", "--config", str(tmp_path / "first.yaml"), "--config",
                              str(tmp_path / "second.yaml"), "--out", str(out), "--no-progress", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "first" / "summary.json").exists() and (out / "second" / "summary.json").exists()
    md = (out / "report.md").read_text()
    assert md.index("Study first") < md.index("Study second")
    assert "first/figures/" in md  # figures referenced relative to the combined report
