"""llama.cpp as an engine and as a peer: its tools (``llama-quantize``, ``llama-imatrix``) and its scoring of a GGUF
file on fmgauge's windows and token ids.

The build is ``make llama`` (``scripts/llama-build.sh``): llama.cpp compiled once from the vendored source of the
llama-cpp-python sdist, cached under ``$FMGAUGE_LLAMA_ROOT`` (default ``~/.cache/fmgauge/llama-cpp/<version>/``:
``bin/``, ``lib/``, ``venv/bin/python`` with ``llama_cpp``), never in the repository or CI. Every call runs a
separate process, whose wall time, CPU time and peak resident memory are measured from the kernel's accounting of
that child (``os.wait4``).

- :func:`score` — per-window NLLs of a GGUF through llama.cpp (:mod:`.llamacpp_worker`): the ids are fmgauge's
  tokenization and the windows fmgauge's protocol, so the rows pair per window with fmgauge's.
- :func:`quantize` — ``llama-quantize [--imatrix F] in.gguf out.gguf TYPE``; the log's fallbacks (a K-quant on a
  width that is not a multiple of 256 becomes a 32-block type) are returned per tensor.
- :func:`imatrix` — ``llama-imatrix`` on a text file (fmgauge's calibration windows, decoded).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmgauge.core.validation import FmgaugeError

log = logging.getLogger(__name__)

VERSION = os.environ.get("LLAMA_CPP_PYTHON", "0.3.36")
HOW_TO_BUILD = ("build it once with `make llama` (scripts/llama-build.sh compiles llama.cpp from the "
                "llama-cpp-python sdist, ~15-25 min on 2 cores), or point $FMGAUGE_LLAMA_ROOT at such a build")
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity")
# llama-quantize types compared by `quantize compare --peers llama.cpp` (name -> nominal bits of the mix)
PEER_TYPES: dict[str, int] = {"Q4_0": 4, "Q4_K_M": 4, "Q3_K_M": 3, "Q2_K": 2}


@dataclass(frozen=True)
class LlamaCpp:
    """A llama.cpp build: ``root/bin/<tool>``, ``root/lib`` (shared libraries), ``root/venv/bin/python``."""

    root: Path

    def tool(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def env(self, threads: int) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONNOUSERSITE": "1"}
        env["LD_LIBRARY_PATH"] = f"{self.root / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
        env.pop("PYTHONPATH", None)
        return env

    def describe(self) -> str:
        info = self.root / "BUILD-INFO"
        return info.read_text().splitlines()[0] if info.exists() else str(self.root)


def default_root() -> Path:
    base = os.environ.get("FMGAUGE_LLAMA_ROOT")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fmgauge" / "llama-cpp") / VERSION


def find_llama(root: str | Path | None = None, *, option: str = "--engine llama.cpp") -> LlamaCpp:
    """The llama.cpp build at ``root`` (default :func:`default_root`), or :class:`FmgaugeError` (one line naming
    ``option`` and how to build it) when it is missing or incomplete. Cheap: checks files, runs nothing."""
    r = Path(root).expanduser() if root else default_root()
    missing = [t for t in TOOLS if not (r / "bin" / t).exists()]
    if not (r / ".complete").exists() or missing or not (r / "venv" / "bin" / "python").exists():
        what = f"missing {', '.join(missing)}" if missing else "incomplete"
        raise FmgaugeError(f"{option}: no llama.cpp build at {r} ({what}); {HOW_TO_BUILD}.")
    return LlamaCpp(r)


def run_measured(cmd: list[str], log_path: Path, env: dict[str, str], *, cwd: Path | None = None) -> dict:
    """Run ``cmd`` with stdout+stderr to ``log_path``; returns its wall / CPU seconds, peak RSS (MB, the child's own
    accounting) and the load average at the start. A non-zero exit raises with the log's last line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    res = {"seconds": time.perf_counter() - t0, "cpu_seconds": ru.ru_utime + ru.ru_stime,
           "peak_rss_mb": ru.ru_maxrss / 1024, "load_avg": load}
    if p.returncode != 0:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        raise FmgaugeError(f"{Path(cmd[0]).name} failed (exit {p.returncode}: {lines[-1][:300] if lines else '?'}); "
                           f"full log: {log_path}")
    return res


_FALLBACK = re.compile(r"(\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\).*falling back "
                       r"to\s+(\S+)")


def quantize(llama: LlamaCpp, src: Path, dst: Path, qtype: str, *, imatrix: Path | None = None, threads: int = 1,
             log_path: Path | None = None) -> dict:
    """``llama-quantize`` ``src`` -> ``dst`` as ``qtype`` (e.g. Q4_K_M), with ``imatrix`` when given. Returns the
    run's time/memory and ``fallbacks``: ``{tensor: "Q4_K -> Q5_0 (ncols 576)"}`` parsed from its log."""
    cmd = [str(llama.tool("llama-quantize"))]
    if imatrix is not None:
        cmd += ["--imatrix", str(imatrix)]
    cmd += [str(src), str(dst), qtype, str(threads)]
    log_path = log_path or dst.with_suffix(".quantize.log")
    res = run_measured(cmd, log_path, llama.env(threads))
    text = log_path.read_text(errors="replace")
    res["fallbacks"] = {m[0]: f"{m[3].upper()} -> {m[4].upper()} (ncols {m[1]})" for m in _FALLBACK.findall(text)}
    if imatrix is not None and "importance matrix entries" not in text and "imatrix" not in text.lower():
        log.warning("llama-quantize did not report loading %s; see %s", imatrix, log_path)
    return res


def imatrix(llama: LlamaCpp, model: Path, text_file: Path, out: Path, *, n_ctx: int, chunks: int,
            threads: int = 1) -> dict:
    """``llama-imatrix`` of ``model`` on ``text_file`` in ``chunks`` chunks of ``n_ctx`` tokens -> ``out`` (GGUF
    imatrix). Returns the run's time/memory."""
    cmd = [str(llama.tool("llama-imatrix")), "-m", str(model), "-f", str(text_file), "-o", str(out), "-c", str(n_ctx),
           "--chunks", str(chunks), "-t", str(threads), "-b", str(n_ctx), "--no-ppl"]
    return run_measured(cmd, out.with_suffix(".log"), llama.env(threads))


def score(llama: LlamaCpp, model: Path, stream, windows: list[tuple[int, int, int]], work: Path, *,  # noqa: ANN001
          n_ctx: int, threads: int = 1) -> dict:
    """Per-window mean NLL (nats/token) of GGUF ``model`` through llama.cpp on token ids ``stream`` (1-D) and
    ``windows`` ((begin, end, n_target), fmgauge's protocol); ``work`` holds the job files. Returns the worker's
    result (``window_nll``, ``n_tokens``, time, memory) plus the process accounting."""
    work.mkdir(parents=True, exist_ok=True)
    ids = work / "ids.npy"
    arr = np.asarray(stream.cpu().numpy() if hasattr(stream, "cpu") else stream, dtype=np.int32)
    if not ids.exists() or not np.array_equal(np.load(ids), arr):
        np.save(ids, arr)
    tag = model.stem
    job = {"model": str(model.resolve()), "ids": str(ids.resolve()), "windows": [list(map(int, w)) for w in windows],
           "n_ctx": int(n_ctx), "threads": int(threads), "out": str((work / f"{tag}.score.json").resolve())}
    job_path = work / f"{tag}.job.json"
    job_path.write_text(json.dumps(job))
    worker = Path(__file__).with_name("llamacpp_worker.py")
    proc = run_measured([str(llama.python), str(worker), str(job_path)], work / f"{tag}.score.log", llama.env(threads))
    res = json.loads(Path(job["out"]).read_text())
    res["process"] = proc
    return res


def calibration_text(tokenizer, seqs) -> str:  # noqa: ANN001
    """fmgauge's calibration windows (N, T) decoded to text, one window per paragraph, for ``llama-imatrix``."""
    return "\n\n".join(tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in seqs)


__all__ = ["HOW_TO_BUILD", "PEER_TYPES", "LlamaCpp", "calibration_text", "default_root", "find_llama", "imatrix",
           "quantize", "run_measured", "score"]
