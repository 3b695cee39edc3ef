"""The house rules of imports, read from the source with ast (every import, module-level or inside a function):
no subsystem imports another subsystem, core imports no subsystem, and no two fmgauge modules import each other
through any chain (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
SUBSYSTEMS = ("weaklabels", "contamination", "quantization", "masking")
# Cycles another change is untying; each entry must still be a cycle (a stale entry fails, so it gets removed).
KNOWN_CYCLES: set[frozenset[str]] = set()  # none left: add one here only with the issue that unties it


def module_files(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__) for every .py under ``src``."""
    out = {}
    for p in sorted(src.rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def imported_modules(name: str, path: Path, is_pkg: bool, known: set[str]) -> set[str]:
    """The fmgauge modules ``name`` imports anywhere in its file (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module; otherwise the deepest module of the dotted path)."""

    def deepest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        out |= {m for t in targets if t.split(".")[0] == "fmgauge" and (m := deepest(t))}
    out.discard(name)
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = module_files(src)
    known = set(files)
    return {m: imported_modules(m, p, is_pkg, known) for m, (p, is_pkg) in files.items()}


def subsystem(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBSYSTEMS else None


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "fmgauge"
    for f, text in {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from fmgauge.core import b\n",
        "core/b.py": "from . import c\n",
        "core/c.py": "from .a import f\n",
        "masking/__init__.py": "",
        "masking/x.py": "import fmgauge.weaklabels.y\n",
        "weaklabels/__init__.py": "",
        "weaklabels/y.py": "from fmgauge.core.a import f\n",
    }.items():
        (pkg / f).parent.mkdir(parents=True, exist_ok=True)
        (pkg / f).write_text(text)
    g = import_graph(tmp_path)
    assert g["fmgauge.core.a"] == {"fmgauge.core.b"} and g["fmgauge.core.b"] == {"fmgauge.core.c"}
    assert g["fmgauge.masking.x"] == {"fmgauge.weaklabels.y"}
    assert cycles(g) == [frozenset({"fmgauge.core.a", "fmgauge.core.b", "fmgauge.core.c"})]


def test_no_subsystem_imports_another(graph):
    crossing = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                      if subsystem(m) and subsystem(t) and subsystem(m) != subsystem(t))
    assert not crossing, "a subsystem imports only fmgauge.core and itself; move shared pieces into core:\n" + \
        "\n".join(crossing)


def test_core_imports_no_subsystem(graph):
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                    if m.startswith("fmgauge.core") and subsystem(t))
    assert not upward, "core is shared by every subsystem and imports none:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    found = cycles(graph)
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (move the shared piece down or invert the dependency):\n" + \
        "\n".join(" <-> ".join(c) for c in new)
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not stale, f"no longer cycles; remove them from KNOWN_CYCLES: {stale}"
