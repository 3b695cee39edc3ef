"""Per-test CPU time of the test suite, robust to a shared machine (docs/benchmarks.md §13).

As a pytest plugin it appends one JSON line per test to ``$CPUTIME_OUT``: the test id, its wall seconds and its
CPU seconds (user + system of the pytest process and of the child processes it reaped during the test: spawn
pools, CLI subprocesses; setup and teardown included, so a module fixture is charged to the first test using it):

    CPUTIME_OUT=/tmp/after.jsonl PYTHONPATH=src:tests:benchmarks OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \\
        .venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -p pytest_cputime

As a script it compares two such files per test file:

    .venv/bin/python benchmarks/pytest_cputime.py /tmp/before.jsonl /tmp/after.jsonl
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001 - pytest hook
    w0, c0 = time.perf_counter(), _cpu()
    yield
    row = {"id": item.nodeid, "wall": time.perf_counter() - w0, "cpu": _cpu() - c0, "pid": os.getpid()}
    with open(os.environ.get("CPUTIME_OUT", "cputime.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def by_file(path: str) -> dict[str, list[float]]:
    """test file -> [CPU s, wall s, tests]."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        f = out[r["id"].split("::")[0].rsplit("/", 1)[-1]]
        f[0] += r["cpu"]
        f[1] += r["wall"]
        f[2] += 1
    return out


def compare(before: str, after: str, top: int = 15) -> str:
    b, a = by_file(before), by_file(after)
    total = [sum(v[0] for v in d.values()) for d in (b, a)]
    lines = ["| test file | tests | CPU s before | CPU s after |", "|---|---:|---:|---:|"]
    for name in sorted(set(b) | set(a), key=lambda n: -max(b.get(n, [0])[0], a.get(n, [0])[0]))[:top]:
        x, y = b.get(name, [0.0, 0.0, 0]), a.get(name, [0.0, 0.0, 0])
        lines.append(f"| {name} | {int(y[2] or x[2])} | {x[0]:.1f} | {y[0]:.1f} |")
    lines.append(f"| **all {len(set(b) | set(a))} files** | {int(sum(v[2] for v in a.values()))} | "
                 f"**{total[0]:.1f}** | **{total[1]:.1f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(sys.argv[1], sys.argv[2]))
