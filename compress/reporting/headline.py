"""The few columns a person reads first: how much smaller, how much faster on each runtime, how
much accuracy lost and whether the loss is significant. Shared by the terminal table and the
report's opening table, so both say the same thing."""

from __future__ import annotations

import pandas as pd

from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.reporting.cells import brief, mb, ratio, significance, speedup, summary
from compress.store.rows import ResultRow


def timed_runtimes(rows: list[ResultRow], batch: int) -> list[str]:
    """The runtimes any row was timed on at `batch`: one speed-up column each."""
    return [rt for rt in runtime_keys() if any(r.lat(rt, batch) is not None for r in rows)]


DEPLOYED = ("ort", "openvino", "torch")  # the runtime whose memory the headline shows: the first found


def memory_runtime(rows: list[ResultRow]) -> str | None:
    """The runtime the headline's memory column reads (a deployment's, ONNX Runtime first), or None."""
    return next((rt for rt in DEPLOYED if any(rt in r.memory for r in rows)), None)


def memory_cell(r: ResultRow, runtime: str | None, batch: int = 1) -> str:
    found = r.memory.get(runtime or "", {}).get(batch)
    return "" if found is None else f"{found.peak_mb:,.0f}"


def delta_cell(r: ResultRow, b: ResultRow | None, with_p: bool = True) -> str:
    """Δ top-1 in points, * when McNemar's p < 0.05, and the p: `-0.28 (p 0.62)`, `-3.10* (p<0.001)`."""
    if b is None or r.accuracy is None or b.accuracy is None:
        return ""
    test = significance(r, b)
    mark = "*" if test is not None and test.significant else ""
    p = "" if test is None or not with_p else " (p<0.001)" if test.p_value < 0.001 else f" (p {test.p_value:.2f})"
    return f"{100 * (r.accuracy - b.accuracy):+.2f}{mark}{p}"


def compact(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int, method: dict[str, str] | None = None,
            setting: str = "differs", with_p: bool = True) -> pd.DataFrame:
    """One line per non-baseline row: model, setting, ÷ params/MACs/size, speed-up per runtime, top-1, Δ.

    `setting="differs"` shows what differs from the compressor's defaults, `"brief"` its main knobs;
    `method` renames the model column (the report's seed-004 method names)."""
    runtimes = timed_runtimes(rows, batch)
    mem = memory_runtime(rows)
    out = []
    for r in rows:
        if r.compressor == "baseline":
            continue
        b = baselines.get(r.baseline_row_id or "")
        line = {"model": (method or {}).get(r.row_id, r.compressor),
                "setting": summary(r) if setting == "differs" else brief(r),
                "params ÷": ratio(b.params if b else None, r.params),
                "MACs ÷": ratio(b.macs if b else None, r.macs),
                "size ÷": ratio(b.size_bytes if b else None, r.size_bytes)}
        for rt in runtimes:
            line[f"{runtime_label(rt)} b{batch} ×"] = speedup(b, r, rt, batch, interval=False) or "n/a"
        if mem is not None:
            line[f"{runtime_label(mem)} b1 peak MiB"] = memory_cell(r, mem) or "n/a"
        line["top-1 %"] = "" if r.accuracy is None else f"{100 * r.accuracy:.2f}"
        line["Δ top-1 pts"] = delta_cell(r, b, with_p)
        out.append(line)
    return pd.DataFrame(out)


def baseline_line(b: ResultRow, batch: int) -> str:
    """A row's absolute figures: for the baseline, what every ratio of the table divides."""
    times = [f"{runtime_label(rt)} b{batch} {lat.median_ms:.1f} ms" for rt in runtime_keys() if (lat := b.lat(rt, batch))]
    acc = "" if b.accuracy is None else f", top-1 {100 * b.accuracy:.2f}% on {b.test_images} test images"
    name = f"baseline {b.config.get('arch', '')}" if b.compressor == "baseline" else b.compressor
    mem = memory_runtime([b])
    peak = f"; {runtime_label(mem)} b1 peak {memory_cell(b, mem)} MiB" if mem and memory_cell(b, mem) else ""
    return (f"{name}: {b.params / 1e6:.1f} M params, {b.macs / 1e6:.1f} M MACs, "
            f"{mb(b.size_bytes)} MB" + (f"; {', '.join(times)}" if times else "") + peak + acc)
