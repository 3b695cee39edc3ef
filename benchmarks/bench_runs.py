"""Where benchmark run directories go, and the digests the docs are rendered from.

A benchmark that runs a study writes its whole run directory (trial store ``trials.sqlite``, ``results.parquet``,
``summary.json``, report.html / report.md, figures, logs) under ``runs/bench/<name>/`` — git-ignored, so a rerun
never dirties the repository — or under ``$FMGAUGE_BENCH_RUNS/<name>/`` when that is set.

The docs are rendered from small JSON files in ``benchmarks/results/`` (tracked). For a run directory that file
is its *digest*, ``benchmarks/results/digests/<name>.json``: exactly what the renderer reads from the run (tables,
summaries, timings), written by :func:`digest` whenever the run directory is present (a rerun, or a run directory
restored from git history) and read back when it is not (a fresh clone). The digest is always read back from JSON,
so both paths render the same text.

Run directories that were tracked before this layout are in git history: ``git log --diff-filter=D --name-only --
benchmarks/results`` lists them; ``git archive <commit>^ benchmarks/results/<name> | tar -x`` brings one back (move it
to ``runs/bench/<name>/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DIGESTS = RESULTS / "digests"


def runs_root() -> Path:
    """``$FMGAUGE_BENCH_RUNS`` if set, else ``<repo>/runs/bench`` (git-ignored)."""
    return Path(os.environ.get("FMGAUGE_BENCH_RUNS") or ROOT / "runs" / "bench")


def run_dir(name: str) -> Path:
    """The run directory of benchmark run ``name`` (not created)."""
    return runs_root() / name


def shown(path: Path) -> str:
    """A run directory as the docs name it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def digest(name: str, build: Callable[[Path], dict[str, Any]], *, marker: str = "trials.sqlite"
           ) -> dict[str, Any] | None:
    """What the renderer needs from run ``name``: ``build(run_dir)`` when ``run_dir/marker`` exists (saved as the
    digest), else the saved digest, else None. Always the JSON round trip, so both paths give equal values."""
    path = DIGESTS / f"{name}.json"
    run = run_dir(name)
    if (run / marker).exists():
        text = json.dumps(build(run), indent=1, default=_plain)
        DIGESTS.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        return json.loads(text)
    if path.exists():
        return json.loads(path.read_text())
    return None


def _plain(v: Any) -> Any:
    """numpy scalars / arrays and pandas timestamps -> JSON values."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
