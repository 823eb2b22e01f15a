"""How one value of a row is written in a table cell: latencies, ratios, configs, significance.

Shared by the markdown report and the terminal table, so both say the same thing the same way.
"""

from __future__ import annotations

import re

from compress import stats
from compress.measure import Latency
from compress.results import ResultRow


def code(text: str) -> str:
    """`text` as a markdown code span that survives backticks inside it (a longer fence)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence, pad = "`" * (longest + 1), " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """User text (a folder name, a class) in markdown prose: its markup characters are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+!|<>])", r"\\\1", text)


def file_stem(name: str) -> str:
    """A dataset name as a file name: no folders, no hidden files, nothing outside the reports folder."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "dataset"


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def lat(figure: Latency | None, note: str = "n/a") -> str:
    """median [p90] in ms, ⚠ when the figure is noisy."""
    if figure is None:
        return note
    flag = " ⚠" if figure.warning else ""
    return f"{figure.median_ms:.2f} [{figure.p90_ms:.2f}]{flag}"


def ratio(base: float | None, new: float | None) -> str:
    if not base or not new:
        return ""
    return f"{base / new:.2f}x"


def summary(row: ResultRow) -> str:
    """A short human label for the configuration of a row."""
    if row.compressor == "baseline":
        return row.config.get("arch", "")
    comp = row.config.get("compressor") or {}
    source = row.config.get("source")
    parts = [f"from {source['compressor']} {source['config_hash'][:6]};"] if source else []
    for k, v in comp.items():
        if isinstance(v, (list, tuple)):
            if not v:
                continue
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return " ".join(parts)


def significance(row: ResultRow, other: ResultRow | None) -> stats.McNemar | None:
    """McNemar's exact test of `row` against `other` on the same test images, when both kept them."""
    if other is None or not row.correct or not other.correct or len(row.correct) != len(other.correct):
        return None
    return stats.mcnemar(stats.decode(other.correct), stats.decode(row.correct))


def p_cell(test: stats.McNemar | None) -> str:
    if test is None:
        return ""
    return f"{test.p_value:.3f}" + (" *" if test.significant else "")


def speedup(b: ResultRow | None, r: ResultRow, runtime: str, batch: int) -> str:
    """`r` against baseline `b`: the interleaved ratio with its 95% interval when `r` was paired with `b`,
    else the ratio of two separately timed medians; ⚠ when either was timed on a busy machine."""
    busy = " ⚠" if r.busy or (b is not None and b.busy) else ""
    paired = r.pair(runtime, batch)
    if paired is not None and b is not None and paired.reference_row_id == b.row_id:
        return paired.cell() + busy
    base, new = (b.lat(runtime, batch) if b else None), r.lat(runtime, batch)
    plain = ratio(base.median_ms if base else None, new.median_ms if new else None)
    return plain + busy if plain else ""
