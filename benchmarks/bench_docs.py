"""Merge the rendered parts in docs/bench-parts/ into docs/benchmarks.md (sections 3-6, 8, 9, 12), demoting headings.

    .venv/bin/python benchmarks/bench_docs.py

Each part is written by its benchmark's renderer from stored results; this only moves text. A section of
docs/benchmarks.md is its ``## N. …`` heading line (kept) and everything up to the next ``## `` heading (replaced
by the part without its ``# …`` title, ``#`` headings one level deeper).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PARTS = {3: "text-labelers.md", 4: "contamination.md", 5: "quantization.md", 6: "masking.md", 8: "weaklabels-rules.md",
         9: "weaklabels-fairness.md", 12: "weaklabels-decide.md"}


def body(part: Path) -> str:
    lines = part.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + ln if re.match(r"#+ ", ln) else ln for ln in lines).strip("\n")


def merge(doc: str, parts: dict[int, str]) -> str:
    for n, text in parts.items():
        m = re.search(rf"^## {n}\. .*$", doc, flags=re.M)
        if m is None:
            raise SystemExit(f"docs/benchmarks.md has no '## {n}. ' section")
        nxt = re.search(r"^## ", doc[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(doc)
        doc = doc[:m.end()] + "\n\n" + text + "\n\n" + doc[end:]
    return doc


def main() -> None:
    parts = {n: body(ROOT / "docs" / "bench-parts" / f) for n, f in PARTS.items()
             if (ROOT / "docs" / "bench-parts" / f).exists()}
    DOC.write_text(merge(DOC.read_text(), parts))
    print(DOC)


if __name__ == "__main__":
    main()
