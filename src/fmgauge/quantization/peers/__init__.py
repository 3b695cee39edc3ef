"""The tools a practitioner would pick instead of fmgauge, run side by side with it (``quantize compare --peers``).

**llmcompressor** (vLLM's quantization library) runs its ``GPTQModifier`` and ``AWQModifier`` on the same
full-precision weights and the very calibration token ids fmgauge calibrates on, with fmgauge's grid (bits, group
size, symmetric or not) and GPTQ settings (damping, block size, act-order). It pins older transformers / torch /
compressed-tensors than fmgauge, so it runs in its own interpreter (``--peers-python``; build it with
``make peers``), through :mod:`.llmcompressor_job`. **GPTQModel** runs its GPTQ the same way (its own venv, it
needs newer transformers than llmcompressor), through :mod:`.gptqmodel_job`, and writes a GPTQ checkpoint.

Each peer's checkpoint is read back by fmgauge's :func:`~fmgauge.quantization.formats.load.load_artifact` and
evaluated under fmgauge's protocol, so every tool's rows come from the same windows, the same reference model and
the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmgauge.core.validation import FmgaugeError


@dataclass(frozen=True)
class Peer:
    """A peer tool: the fmgauge methods it has a counterpart for, its row prefix, its job script, its format."""

    methods: tuple[str, ...]
    short: str
    job: str
    file_format: str


PEERS = {
    "llmcompressor": Peer(("gptq", "awq"), "llmc", "llmcompressor_job.py", "compressed-tensors"),
    "gptqmodel": Peer(("gptq",), "gptqmodel", "gptqmodel_job.py", "gptq"),
}
PEERS_ROOT = Path.home() / ".cache" / "fmgauge" / "peers"
HOW_TO_BUILD = ("build it with `make peers` (each peer gets its own venv under ~/.cache/fmgauge/peers/: "
                "llmcompressor 0.14 needs transformers<=5.17 and torch<=2.14, GPTQModel 7.7 transformers>=5.20) or "
                "pass --peers-python PEER=PATH")


def peers_python(peer: str, spec: str | None = None) -> Path:
    """The interpreter that runs ``peer``: from ``spec`` (``PATH`` or ``peer=PATH,peer=PATH``), else
    $FMGAUGE_PEERS_PYTHON (same syntax), else ``~/.cache/fmgauge/peers/<peer>/bin/python``."""
    spec = spec or os.environ.get("FMGAUGE_PEERS_PYTHON")
    if spec:
        parts = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
        if parts:
            if peer in parts:
                return Path(parts[peer])
        else:
            return Path(spec)
    return PEERS_ROOT / peer / "bin" / "python"


def check_peers(peers: list[str], methods: list[str], python: str | None) -> dict[str, str]:
    """Refuse unknown peers, peers with nothing to run, and a missing interpreter — before any model loads.
    Returns ``{peer: version}``."""
    if not peers:
        return {}
    versions = {}
    for p in peers:
        if p not in PEERS:
            raise FmgaugeError(f"--peers: unknown peer {p!r}; expected one of {', '.join(PEERS)}.")
        if not set(PEERS[p].methods) & set(methods):
            raise FmgaugeError(f"--peers {p}: it runs its {' and '.join(PEERS[p].methods)} next to fmgauge's, so "
                               f"--methods must include {' or '.join(PEERS[p].methods)} (got {','.join(methods)}).")
        py = peers_python(p, python)
        if not py.exists():
            raise FmgaugeError(f"--peers-python: {py} (for {p}) does not exist; {HOW_TO_BUILD}.")
        r = subprocess.run([str(py), "-c", f"import {p}; print({p}.__version__)"], capture_output=True, text=True,
                           timeout=300, env=_env(1))
        if r.returncode != 0:
            raise FmgaugeError(f"--peers-python: {py} cannot import {p} ({_last_line(r.stderr)}); {HOW_TO_BUILD}.")
        versions[p] = r.stdout.strip().splitlines()[-1]
    return versions


def peer_method(peer: str, method: str) -> str:
    """The method name of a peer's row in the comparison table (``llmcompressor`` + ``gptq`` -> ``llmc-gptq``)."""
    return PEERS[peer].short + "-" + method


def indivisible(widths: dict[str, int], group_size: int) -> list[str]:
    """Linears whose input width ``group_size`` does not divide, where llmcompressor refuses them (a width below the
    group size is one group there; a ragged last group is an error)."""
    return [] if group_size == -1 else [n for n, w in widths.items() if w >= group_size and w % group_size]


def nominal_bits(widths: dict[str, tuple[int, int]], bits: int, group_size: int) -> int:
    """Bits to store Linears of shapes ``{name: (d_out, d_in)}`` on a grid, counted as fmgauge counts its own:
    ``bits`` per weight + an fp16 scale and a ``bits``-bit zero per (row, group)."""
    total = 0
    for d_out, d_in in widths.values():
        groups = 1 if group_size == -1 else -(-d_in // group_size)
        total += d_out * d_in * bits + d_out * groups * (16 + bits)
    return total


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # fmgauge's path must not shadow the peers' own packages
    return env


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def write_calibration(path: Path, seqs: torch.Tensor) -> Path:
    """Calibration token ids (n_samples, seqlen) as int64 ``.npy`` for the peer job."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, seqs.cpu().numpy().astype(np.int64))
    return path


def run_job(peer: str, python: str | None, job: dict, log_path: Path) -> dict:
    """Run one peer job (see :mod:`.llmcompressor_job`, :mod:`.gptqmodel_job`); its output goes to ``log_path``.
    Returns its ``peer_run.json`` (seconds, CPU seconds, peak RSS, versions). A failure raises with the log's last
    line."""
    out = Path(job["out_dir"])
    out.parent.mkdir(parents=True, exist_ok=True)
    job_path = out.parent / f"{out.name}.job.json"
    job_path.write_text(json.dumps(job, indent=1))
    with open(log_path, "w") as log:
        r = subprocess.run([str(peers_python(peer, python)), str(Path(__file__).with_name(PEERS[peer].job)),
                            str(job_path)], stdout=log, cwd=out.parent,  # GPTQModel writes ./logs
                           stderr=subprocess.STDOUT, env=_env(job["threads"]), check=False)
    if r.returncode != 0 or not (out / "peer_run.json").exists():
        raise FmgaugeError(f"{peer} {job['method']} failed ({_last_line(log_path.read_text())}); "
                           f"full log: {log_path}")
    return json.loads((out / "peer_run.json").read_text())


def job_for(method: str, qc, model_dir: Path, calib: Path, out_dir: Path) -> dict:  # noqa: ANN001  (QuantConfig)
    """The peer job reproducing fmgauge's configuration ``qc`` of ``method`` (gptq | awq)."""
    return {"model_dir": str(model_dir.resolve()), "calib": str(calib.resolve()), "out_dir": str(out_dir.resolve()),
            "method": method,
            "bits": qc.bits, "group_size": qc.group_size, "sym": qc.sym, "percdamp": qc.percdamp,
            "blocksize": qc.blocksize, "actorder": qc.actorder, "n_grid": qc.n_grid,
            "duo_scaling": qc.duo_scaling, "threads": torch.get_num_threads(), "python": sys.version.split()[0]}
