"""The table printed after `run`, `sweep` and `baseline`: what a person reads at the prompt.

rich lays it out in the terminal's width (80 columns when stdout is not a terminal), wrapping
the one long column (the setting) instead of the whole line. `--wide` prints the full markdown
table instead, `--json` the rows themselves.
"""

from __future__ import annotations

import io
import sys
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from compress.errors import printable
from compress.reporting.headline import baseline_line, compact
from compress.store.rows import ResultRow

SHORT = {"params ÷": "params÷", "MACs ÷": "MACs÷", "size ÷": "size÷", "top-1 %": "top-1", "Δ top-1 pts": "Δ pts"}
MAX_WIDTH = 120  # past this a table stops being read at a glance, however wide the terminal


def render(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int, width: int | None = None) -> str:
    """The compact table and the baseline's absolute figures, laid out in `width` columns."""
    compared = [r for r in rows if r.compressor != "baseline" and r.baseline_row_id in baselines]
    alone = [r for r in rows if r.compressor == "baseline" or r.baseline_row_id not in baselines]
    frame = compact(compared, baselines, batch, with_p=False)  # the mark only: p is in the report
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", collapse_padding=True)
    for i, name in enumerate(frame.columns):
        if name == "setting":  # the one column that wraps, so the figures never do
            table.add_column(name, overflow="fold", min_width=12, ratio=1)
        else:
            table.add_column(SHORT.get(name, name).replace(f" b{batch}", ""), justify="left" if i == 0 else "right",
                             no_wrap=True)
    for line in frame.itertuples(index=False):
        table.add_row(*(printable(str(v)) for v in line))
    buf = io.StringIO()
    console = Console(file=buf, width=width or min(Console().width, MAX_WIDTH), no_color=True, highlight=False,
                      emoji=False, soft_wrap=False, markup=False)  # a setting like [/x] is text, not markup
    if len(frame):
        console.print(table)
    for r in alone:  # the baseline (and a model measured on its own): absolute figures
        console.print(baseline_line(r, batch))
    if len(frame):
        console.print(f"÷: baseline / this model; ×: measured speed-up at batch {batch}, interleaved († timed "
                      "apart; MACs are theory). * McNemar p < 0.05. ⚠ noisy or busy. --wide: every column; --json: the rows.")
    return buf.getvalue()


def show(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(render(rows, baselines, batch))  # sys.stdout at call time (it may be redirected)
