"""Issue 18: what a person reads in one minute. The terminal table fits the terminal, the report
opens with a headline of at most ten columns and the plots, config cells say only what differs,
the markdown parses as the tables it claims to be, and the HTML file stands alone."""

from __future__ import annotations

import re
from pathlib import Path

from compress.reporting import markdown, terminal
from compress.reporting.cells import summary
from compress.reporting.webpage import markdown_parser
from tests.helpers import BASE
from tests.helpers import five as _five
from tests.helpers import report_rows as _rows
from tests.helpers import tables as _tables


def _cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2  # unescaped pipes delimit cells


def test_config_cells_say_only_what_differs_from_the_defaults() -> None:
    rows = _five()
    assert summary(rows[3]) == "default"
    assert summary(rows[-1]) == "amount=0.7 importance=random"
    assert "scope=uniform" in summary(rows[-1], full=True)


def test_terminal_table_fits_120_and_80_columns() -> None:
    rows = _five()
    baselines = {BASE.row_id: BASE}
    for width in (120, 80):
        text = terminal.render(rows, baselines, 32, width=width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        for name in ("slim-head", "depthwise", "pruning", "quantization", "distillation"):
            assert name in text
    wide = terminal.render(rows, baselines, 32, width=120)
    assert "2.00x" in wide and "baseline vgg16: 134.3 M params" in wide  # CPU b32 ×, and the absolute figures


def test_the_report_opens_with_the_headline_and_the_plots(tmp_path: Path) -> None:
    rows = _five()
    plots = [("accuracy vs MACs", tmp_path / "synthetic_acc_vs_macs.png")]
    text = markdown.render("synthetic", rows, plots)
    first = "\n".join(text.splitlines()[:40])
    assert text.splitlines()[2].startswith("VGG16 on synthetic (10 classes, 40 test images at 32x32)")
    head = _tables(first)[0]
    assert _cells(head[0]) <= 10 and len(head) == 2 + 5  # one line per method at its default
    for method in ("Reduce the fully connected layers", "Depthwise-separable", "Pruning", "Quantization",
                   "Knowledge distillation"):
        assert method in first
    assert "amount=0.3" in first and "-2.50 (p 1.00)" in first  # main knob; Δ with McNemar's p
    assert "![accuracy vs MACs](synthetic_acc_vs_macs.png)" in first  # the plots right under it
    assert text.index("## All models") > text.index("![accuracy vs MACs]")
    assert "<details>" in text and text.index("## Provenance") > text.index("## Environment")
    assert "python -m compress run pruning" not in first  # commands and row ids go last


def test_every_markdown_table_parses_with_as_many_cells_as_its_header() -> None:
    text = markdown.render("synthetic", _five() + _rows()[1:])
    tables = _tables(text)
    assert len(tables) >= 3
    for table in tables:
        assert all(_cells(line) == _cells(table[0]) for line in table), table[0]
    tokens = markdown_parser().parse(text)
    assert sum(t.type == "table_open" for t in tokens) == len(tables)  # a parser sees the same tables
    assert "\n<details>\n" in text  # collapsed on GitHub; the HTML page builds it in code (raw HTML is off there)
    assert not any(t.type in ("html_block", "html_inline") for t in tokens)


def test_html_report_is_one_file_with_the_plots_inside(tmp_path: Path) -> None:
    from compress.store.sqlite import Store

    store = Store(tmp_path / "results.sqlite")
    for r in _five():
        store.add(r)
    path = markdown.write_report("synthetic", store.rows("synthetic"), tmp_path / "reports", html=True)
    page = path.with_suffix(".html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and "<details>" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to keep beside it
    assert "http" not in "".join(re.findall(r'(?:href|src)="([^"]*)"', page))
