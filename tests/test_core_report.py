"""core.report: HTML and Markdown rendered from the same Report carry the same lead, tables and figures."""

from __future__ import annotations

import pandas as pd
import pytest

from fmgauge.core.report import Report, Section, figure_backend, render_html, render_markdown, save_figure


@pytest.fixture
def report() -> Report:
    table = pd.DataFrame({"labeler": ["clip-zero-shot", "simulated-0.2"], "auc": [0.8125, 0.6875]})
    sec = Section(
        title="Crossover",
        paragraphs=["Gold labels beat weak labels above 120 items & <script>x</script>."],
        tables=[("AUC by labeler", table)],
        figures=[("AUC vs gold items", "figures/crossover.png")],
    )
    return Report(title="Weak-label study", lead="Labelers in this study are SIMULATED", sections=[sec],
                  footer="fmgauge 0.1.0")


@pytest.mark.parametrize("render", [render_html, render_markdown])
def test_render_contains_lead_table_and_figure(tmp_path, report, render):
    path = render(report, tmp_path / "report.out")
    assert path == tmp_path / "report.out"
    text = path.read_text()
    for piece in ("Weak-label study", "Labelers in this study are SIMULATED", "Crossover", "AUC by labeler",
                  "clip-zero-shot", "simulated-0.2", "0.8125", "0.6875", "figures/crossover.png",
                  "AUC vs gold items", "fmgauge 0.1.0"):
        assert piece in text, piece


def test_html_escapes_text_and_keeps_table_markup(tmp_path, report):
    html = render_html(report, tmp_path / "r.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<table class="dataframe tbl"' in html
    assert '<img src="figures/crossover.png" alt="AUC vs gold items">' in html
    assert html.index("SIMULATED") < html.index("<h1>")  # the lead comes first


def test_markdown_layout(tmp_path, report):
    md = render_markdown(report, tmp_path / "r.md").read_text().splitlines()
    assert md[0] == "# Weak-label study" and md[2] == "**Labelers in this study are SIMULATED**"
    assert "## Crossover" in md and "![AUC vs gold items](figures/crossover.png)" in md
    assert any(line.startswith("|") and "clip-zero-shot" in line and "0.8125" in line for line in md)


def test_save_figure_writes_png(tmp_path):
    figure_backend()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "figures" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
