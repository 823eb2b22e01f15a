"""The full table: every stored configuration, its newest row, every column (the report's and `--wide`'s)."""

from __future__ import annotations

import pandas as pd

from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.measuring.timing import REPORT_BATCH
from compress.reporting.cells import (
    lat,
    mb,
    md_table,
    p_cell,
    ratio,
    significance,
    speedup,
    summary,
)
from compress.store.rows import ResultRow


def timed_batches(rows: list[ResultRow]) -> list[int]:
    """Every batch size any row was timed at (the latency columns)."""
    found = sorted({b for r in rows for per_batch in r.latency.values() for b in per_batch})
    return found or [1, REPORT_BATCH]


def memory_runtimes(rows: list[ResultRow]) -> list[str]:
    """The runtimes any row has a peak-memory figure for (rows measured before memory was: none)."""
    return [rt for rt in runtime_keys() if any(rt in r.memory for r in rows)]


def peak(r: ResultRow, runtime: str, batch: int) -> str:
    """A process's peak resident memory running the model alone (MiB), or empty."""
    found = r.memory.get(runtime, {}).get(batch)
    return "" if found is None else f"{found.peak_mb:,.0f}"


def table(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int = REPORT_BATCH) -> pd.DataFrame:
    """One line per row; ratios against the baseline measured in the same invocation, at `batch`."""
    batches = timed_batches(rows)
    runtimes = [rt for rt in runtime_keys() if any(rt in r.latency for r in rows)]
    out = []
    for r in rows:
        b = baselines.get(r.baseline_row_id or "")
        acc = "" if r.accuracy is None else f"{100 * r.accuracy:.2f}"
        delta = ""
        if b is not None and r.accuracy is not None and b.accuracy is not None:
            delta = f"{100 * (r.accuracy - b.accuracy):+.2f}"
        line = {"model": r.compressor, "config": summary(r), "params": f"{r.params:,}",
                "nonzero": f"{r.nonzero_params:,}", "MACs (M)": f"{r.macs / 1e6:,.1f}",
                "conv MACs (M)": "" if r.conv_macs is None else f"{r.conv_macs / 1e6:,.1f}",
                "size (MB)": mb(r.size_bytes)}
        line.update({f"{runtime_label(rt)} b{n} ms": lat(r.lat(rt, n)) for rt in runtimes for n in batches})
        line.update({f"{runtime_label(rt)} b{n} peak MiB": peak(r, rt, n) for rt in memory_runtimes(rows)
                     for n in batches})
        line.update({
            "top-1 %": acc,
            "Δ top-1 (pts)": delta,
            "McNemar p": "" if r.compressor == "baseline" else p_cell(significance(r, b)),
            "top-1 before FT %": "" if r.accuracy_before_finetune is None
            else f"{100 * r.accuracy_before_finetune:.2f}",
            "params ÷": ratio(b.params if b else None, r.params),
            "MACs ÷": ratio(b.macs if b else None, r.macs),
            "size ÷": ratio(b.size_bytes if b else None, r.size_bytes),
        })
        for rt, n in dict.fromkeys([(TORCH_CPU, 1), *((rt, batch) for rt in runtimes if rt != TORCH_CUDA)]):
            line[f"{runtime_label(rt)} b{n} speed-up"] = speedup(b, r, rt, n)
        line["fine-tune epochs"] = r.finetune_epochs
        out.append(line)
    return pd.DataFrame(out)


def to_markdown(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int = REPORT_BATCH) -> str:
    return md_table(table(rows, baselines, batch))


def latest(rows: list[ResultRow]) -> list[ResultRow]:
    """Newest row per (compressor, configuration); the baseline first."""
    by_key: dict[tuple[str, str], ResultRow] = {}
    for r in rows:  # rows come oldest first
        by_key[(r.compressor, r.config_hash)] = r
    picked = list(by_key.values())
    base = [r for r in picked if r.compressor == "baseline"]
    base = [max(base, key=lambda r: r.created)] if base else []
    rest = sorted((r for r in picked if r.compressor != "baseline"), key=lambda r: (r.compressor, r.created))
    return base + rest
