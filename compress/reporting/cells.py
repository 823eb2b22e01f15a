"""How one value of a row is written in a table cell: latencies, ratios, configs, significance.

Shared by the markdown report and the terminal table, so both say the same thing the same way.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pandas as pd

from compress.errors import printable
from compress.measuring.significance import McNemar, mcnemar
from compress.store.rows import Latency, ResultRow, decode


def code(text: str) -> str:
    """`text` as a markdown code span that survives backticks inside it (a longer fence) and stays on one line
    (a newline in a user's argument would end the span and let what follows be read as markup)."""
    text = printable(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence, pad = "`" * (longest + 1), " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """User text (a folder name, a class) in markdown prose: its markup characters are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+!|<>&])", r"\\\1", printable(text))


def named(row: ResultRow) -> str:
    """A row in report prose: its compressor and settings, both escaped (stored strings, possibly edited)."""
    return f"{plain(row.compressor)} ({plain(summary(row))})"


def cell(value: object) -> object:
    """One markdown table cell: `|` would end the cell, `<` open raw HTML, a newline end the row."""
    if not isinstance(value, str):
        return value
    return re.sub(r"([\\|<>&])", r"\\\1", printable(value))


def md_table(frame: pd.DataFrame, **kw: Any) -> str:
    """A table as markdown with every cell (and header) escaped: the one way tables reach a report."""
    safe = frame.rename(columns=lambda c: cell(str(c))).map(cell)
    return safe.to_markdown(index=False, **kw)


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


@functools.lru_cache(maxsize=None)
def defaults(compressor: str) -> dict[str, object]:
    """A compressor's default settings as stored in rows (JSON types); {} when it is not registered.
    Cached: every table cell asks; callers only read it."""
    import json
    from dataclasses import asdict

    from compress import compressors
    from compress.configs import settings_of
    from compress.errors import CompressError

    try:
        cls = compressors.get(compressor).config
    except CompressError:
        return {}
    # init=False fields state facts, and cli=False fields are filled in from others (per-layer amounts from
    # --per-layer): neither is a setting the user chose
    options = {f.name for f in settings_of(cls)}
    return json.loads(json.dumps({k: v for k, v in asdict(cls()).items() if k in options}, default=str))


def summary(row: ResultRow, full: bool = False) -> str:
    """A short label for a row's configuration: only what differs from the compressor's defaults
    (`amount=0.5 importance=random`); "default" when nothing does. `full` lists every setting."""
    if row.compressor == "baseline":
        return row.config.get("arch", "")
    comp = row.config.get("compressor") or {}
    base = {} if full else defaults(row.compressor)
    source = row.config.get("source")
    parts = [f"from {source['compressor']} {source['config_hash'][:6]};"] if source else []
    for k, v in comp.items():
        if k in base and base[k] == v or (base and k not in base):  # a default, or a derived fact
            continue
        if isinstance(v, (list, tuple)):
            if not v:
                continue
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return " ".join(parts) or "default"


def significance(row: ResultRow, other: ResultRow | None) -> McNemar | None:
    """McNemar's exact test of `row` against `other` on the same test images, when both kept them."""
    if other is None or not row.correct or not other.correct or len(row.correct) != len(other.correct):
        return None
    return mcnemar(decode(other.correct), decode(row.correct))


def p_cell(test: McNemar | None) -> str:
    if test is None:
        return ""
    return f"{test.p_value:.3f}" + (" *" if test.significant else "")


def speedup(b: ResultRow | None, r: ResultRow, runtime: str, batch: int, interval: bool = True) -> str:
    """`r` against baseline `b`: the interleaved ratio (with its 95% interval unless `interval` is off) when
    `r` was paired with `b`, else the ratio of two separately timed medians, marked † (APART); ⚠ when either
    was timed busy."""
    busy = " ⚠" if r.busy_on(runtime) or (b is not None and b.busy_on(runtime)) else ""
    paired = r.pair(runtime, batch)
    if paired is not None and b is not None and paired.reference_row_id == b.row_id:
        return (paired.cell() if interval else f"{paired.ratio:.2f}x") + busy
    base, new = (b.lat(runtime, batch) if b else None), r.lat(runtime, batch)
    plain = ratio(base.median_ms if base else None, new.median_ms if new else None)
    return plain + APART + busy if plain else ""


APART = "†"  # a ratio of two medians timed apart, not interleaved (a model made from another row, old GPU rows)


def brief(row: ResultRow, n: int = 2) -> str:
    """A compressor's main knobs (its first `n` settings, KD reduced to "KD"): `amount=0.3 scope=uniform`."""
    import dataclasses

    from compress import compressors
    from compress.errors import CompressError
    from compress.training.kd import KDOptions

    comp = row.config.get("compressor") or {}
    try:
        cls = compressors.get(row.compressor).config
    except CompressError:
        return summary(row)
    shared = {f.name for f in dataclasses.fields(KDOptions)} if issubclass(cls, KDOptions) else set()
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in shared and f.name in comp
             and comp[f.name] not in ([], (), None, "")][:n]
    names = [k for k in names if comp[k] is not False]  # a switch that is off says nothing
    parts = [k if v is True else f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
             for k, v in ((k, comp[k]) for k in names)]
    if comp.get("kd"):
        parts.append("KD")
    if comp.get("per_layer"):  # not among the first settings, and what tells guided pruning from uniform
        parts.append(f"per_layer={comp['per_layer']}")
    source = row.config.get("source")
    return (f"from {source['compressor']}; " if source else "") + " ".join(parts)
