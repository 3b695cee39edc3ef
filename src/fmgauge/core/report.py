"""Reports: one :class:`Report` object rendered to HTML (Jinja2) and Markdown, next to the run's JSON summary.

A subsystem builds a Report (a lead line, then sections of paragraphs, tables and figures) from its result object;
the HTML and the Markdown come from the same object, so they never disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the report)


@dataclass
class Report:
    title: str
    lead: str  # the first line a reader sees (e.g. "Labelers in this study are SIMULATED")
    sections: list[Section] = field(default_factory=list)
    footer: str = ""


def figure_backend() -> None:
    """Use a non-interactive matplotlib backend (reports are written on headless machines)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg", force=True)


def save_figure(fig, path: Path) -> Path:  # noqa: ANN001 - matplotlib Figure
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def render_html(report: Report, path: Path) -> Path:
    # the template is report.html.j2: the default select_autoescape() (html/htm/xml) would not escape it
    env = Environment(loader=PackageLoader("fmgauge.core", "templates"),
                      autoescape=select_autoescape(("html", "html.j2")))
    html = env.get_template("report.html.j2").render(
        report=report, tables=[[t.to_html(index=False, border=0, classes="tbl", na_rep="–") for _, t in s.tables]
                               for s in report.sections])
    path.write_text(html)
    return path


def render_markdown(report: Report, path: Path) -> Path:
    lines = [f"# {report.title}", "", f"**{report.lead}**", ""]
    for s in report.sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        for cap, t in s.tables:
            lines += [f"*{cap}*", "", t.to_markdown(index=False), ""]
        for cap, f in s.figures:
            lines += [f"![{cap}]({f})", ""]
    if report.footer:
        lines += ["---", report.footer, ""]
    path.write_text("\n".join(lines))
    return path

