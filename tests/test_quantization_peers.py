"""``quantize compare --peers llmcompressor``: the size bookkeeping every row shares, the refusals, and (where the
peers' interpreter exists, as built by `make peers`) a real llmcompressor run next to fmgauge's on a tiny Llama."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fmgauge.cli import app
from fmgauge.core.validation import FmgaugeError
from fmgauge.quantization.grid import rtn
from fmgauge.quantization.peers import check_peers, indivisible, nominal_bits, peer_method, peers_python

runner = CliRunner()


@pytest.mark.parametrize("bits, group", [(4, 32), (3, 64), (2, -1), (8, 128)])
def test_nominal_bits_count_a_grid_as_fmgauge_counts_its_own(bits, group):
    """A peer's row is sized as fmgauge sizes its own layers: the same grid gives the same bits."""
    w = torch.randn(24, 128)
    assert nominal_bits({"a": (24, 128)}, bits, group) == rtn(w, bits, group).storage_bits()


def test_nominal_bits_known_answer():
    # 8 × 64 weights at 4 bits + 2 groups per row × (fp16 scale + 4-bit zero)
    assert nominal_bits({"a": (8, 64)}, 4, 32) == 8 * 64 * 4 + 8 * 2 * 20
    assert nominal_bits({"a": (8, 64), "b": (4, 8)}, 3, -1) == 8 * 64 * 3 + 8 * 19 + 4 * 8 * 3 + 4 * 19


def test_indivisible_names_the_ragged_layers():
    widths = {"q": 576, "down": 1536, "tiny": 32}
    assert indivisible(widths, 128) == ["q"]  # 576 = 4.5 × 128; 32 < 128 is one group
    assert indivisible(widths, 64) == [] and indivisible(widths, -1) == []


def test_check_peers_refuses_before_anything_runs(tmp_path):
    assert check_peers([], ["rtn"], None) == {}
    with pytest.raises(FmgaugeError, match="unknown peer 'autoawq'"):
        check_peers(["autoawq"], ["gptq"], None)
    with pytest.raises(FmgaugeError, match="--methods must include gptq \\(got awq\\)"):
        check_peers(["gptqmodel"], ["awq"], None)
    with pytest.raises(FmgaugeError, match="must include gptq or awq"):
        check_peers(["llmcompressor"], ["rtn", "mixed"], None)
    with pytest.raises(FmgaugeError, match="make peers"):
        check_peers(["llmcompressor"], ["gptq"], str(tmp_path / "python"))


def test_peers_python_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FMGAUGE_PEERS_PYTHON", str(tmp_path / "env-python"))
    assert peers_python("llmcompressor") == tmp_path / "env-python"  # one PATH: every peer
    assert peers_python("gptqmodel", str(tmp_path / "arg")) == tmp_path / "arg"  # the option wins over the env
    spec = f"gptqmodel={tmp_path / 'g'},llmcompressor={tmp_path / 'l'}"
    assert (peers_python("gptqmodel", spec), peers_python("llmcompressor", spec)) == (tmp_path / "g", tmp_path / "l")
    monkeypatch.delenv("FMGAUGE_PEERS_PYTHON")
    assert peers_python("gptqmodel", f"llmcompressor={tmp_path / 'l'}").parts[-4:] == (
        "peers", "gptqmodel", "bin", "python")  # not named: its default venv
    assert peers_python("llmcompressor").parts[-3:] == ("llmcompressor", "bin", "python")


# The peers run in their own venvs (minutes to build, `make peers`) and each run starts a second interpreter that
# imports a whole quantization library: these run where the venvs exist, outside CI (FMGAUGE_PEER_TESTS=1 forces).
_RUN_PEERS = os.environ.get("FMGAUGE_PEER_TESTS") == "1" or os.environ.get("CI") != "true"
needs_llmc = pytest.mark.skipif(not (_RUN_PEERS and peers_python("llmcompressor").exists()),
                                reason="llmcompressor's venv not built here (`make peers`), or CI")
needs_gptqmodel = pytest.mark.skipif(not (_RUN_PEERS and peers_python("gptqmodel").exists()),
                                     reason="GPTQModel's venv not built here (`make peers`), or CI")


@needs_llmc
def test_llmcompressor_runs_beside_fmgauge_on_the_same_tokens(tiny_dir, tmp_path, fmgauge_env):
    """Real llmcompressor GPTQ on the tiny Llama, fed fmgauge's calibration tokens, read back by fmgauge's loader
    and scored on the same windows. Per channel, both GPTQs are the same algorithm on the same Hessians: their
    per-window NLLs must agree (measured: identical here). Group 64 does not divide down_proj's width 96: the peer's
    configuration is recorded as failed with that reason, while fmgauge's own (ragged) row still runs. A rerun
    recomputes nothing."""
    out = tmp_path / "c"
    args = ["quantize", "compare", "--model", str(tiny_dir), "--methods", "gptq", "--bits", "4", "--group-size",
            "-1,32,64", "--n-samples", "4", "--seqlen", "32", "--context", "64", "--max-windows", "6",
            "--kl-windows", "2", "--peers", "llmcompressor", "--out", str(out)]
    r = runner.invoke(app, args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out / "results.parquet").set_index(["method", "group_size"])
    name = peer_method("llmcompressor", "gptq")
    assert name == "llmc-gptq" and {(name, -1), (name, 32), ("gptq", -1), ("gptq", 32)} <= set(df.index)
    peer = df.loc[(name, -1)]
    assert peer.tool.startswith("llmcompressor 0.") and peer.on_disk_mb > 0 and peer.quant_seconds > 0
    assert "compressed-tensors" in peer.loader
    assert peer.avg_bits == pytest.approx(df.loc[("gptq", -1)].avg_bits)  # one grid, one size convention
    wa, wb = (json.loads((out / "windows" / f"{m}-w4-g-1.json").read_text()) for m in ("gptq", name))
    assert max(abs(a - b) for a, b in zip(wa, wb, strict=True)) < 1e-3
    assert ("gptq", 64) in df.index and (name, 64) not in df.index
    failed = {f["id"]: f["error"] for f in json.loads((out / "summary.json").read_text())["failed"]}
    assert "[96] are not multiples of 64" in failed[f"{name}-w4-g64"]
    assert not (out / "peers" / "fp-model").exists()  # the FP copy for the peer is removed once it has run
    summary = json.loads((out / "summary.json").read_text())
    assert any({p["a"], p["b"]} == {"gptq", name} for p in summary["paired"])
    before = sorted((out / "peers").glob("*.log"))
    mtimes = [p.stat().st_mtime for p in before]
    assert runner.invoke(app, args).exit_code == 0  # resume
    assert [p.stat().st_mtime for p in sorted((out / "peers").glob("*.log"))] == mtimes


@needs_gptqmodel
def test_gptqmodel_runs_beside_fmgauge_on_the_same_tokens(tiny_dir, tmp_path, fmgauge_env):
    """Real GPTQModel GPTQ (CPU) on fmgauge's calibration tokens, its GPTQ checkpoint read back by fmgauge's
    loader: the row lands in the same table, sized by the same convention, and agrees with fmgauge's GPTQ."""
    out = tmp_path / "c"
    args = ["quantize", "compare", "--model", str(tiny_dir), "--methods", "gptq", "--bits", "4", "--group-size",
            "32", "--n-samples", "4", "--seqlen", "32", "--context", "64", "--max-windows", "6", "--kl-windows", "2",
            "--peers", "gptqmodel", "--out", str(out)]
    r = runner.invoke(app, args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out / "results.parquet").set_index(["method", "group_size"])
    peer, own = df.loc[("gptqmodel-gptq", 32)], df.loc[("gptq", 32)]
    assert peer.tool.startswith("gptqmodel 7.") and peer.file_format == "gptq" and peer.on_disk_mb > 0
    assert peer.avg_bits == pytest.approx(own.avg_bits)
    assert abs(peer.ppl - own.ppl) / own.ppl < 0.02
