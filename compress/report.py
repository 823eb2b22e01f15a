"""Markdown comparison tables, rendered only from stored rows.

The terminal table after `run` and the file under reports/ come from the same function, so
what a user sees at the prompt is what the report says.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compress.atomic import write_text
from compress.errors import CompressError
from compress.measure import Latency
from compress.results import ResultRow


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def _lat(lat: Latency | None, note: str = "n/a") -> str:
    if lat is None:
        return note
    flag = " ⚠" if lat.warning else ""
    return f"{lat.median_ms:.2f} [{lat.p90_ms:.2f}]{flag}"


def _ratio(base: float | None, new: float | None) -> str:
    if not base or not new:
        return ""
    return f"{base / new:.2f}x"


def _summary(row: ResultRow) -> str:
    """A short human label for the configuration of a row."""
    if row.compressor == "baseline":
        return row.config.get("arch", "")
    comp = row.config.get("compressor") or {}
    parts = []
    for k, v in comp.items():
        if isinstance(v, (list, tuple)):
            if not v:
                continue
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return " ".join(parts)


def table(rows: list[ResultRow], baselines: dict[str, ResultRow]) -> pd.DataFrame:
    """One line per row; ratios against the baseline measured in the same invocation."""
    out = []
    for r in rows:
        b = baselines.get(r.baseline_row_id or "")
        acc = "" if r.accuracy is None else f"{100 * r.accuracy:.2f}"
        delta = ""
        if b is not None and r.accuracy is not None and b.accuracy is not None:
            delta = f"{100 * (r.accuracy - b.accuracy):+.2f}"
        out.append({
            "model": r.compressor,
            "config": _summary(r),
            "params": f"{r.params:,}",
            "nonzero": f"{r.nonzero_params:,}",
            "MACs (M)": f"{r.macs / 1e6:,.1f}",
            "size (MB)": _mb(r.size_bytes),
            "CPU b1 ms": _lat(r.cpu_b1),
            "CPU b32 ms": _lat(r.cpu_b32),
            "GPU b1 ms": _lat(r.gpu_b1),
            "GPU b32 ms": _lat(r.gpu_b32),
            "top-1 %": acc,
            "Δ top-1 (pts)": delta,
            "top-1 before FT %": "" if r.accuracy_before_finetune is None
            else f"{100 * r.accuracy_before_finetune:.2f}",
            "params ÷": _ratio(b.params if b else None, r.params),
            "MACs ÷": _ratio(b.macs if b else None, r.macs),
            "size ÷": _ratio(b.size_bytes if b else None, r.size_bytes),
            "CPU b1 speed-up": _ratio(b.cpu_b1.median_ms if b and b.cpu_b1 else None,
                                      r.cpu_b1.median_ms if r.cpu_b1 else None),
            "CPU b32 speed-up": _ratio(b.cpu_b32.median_ms if b and b.cpu_b32 else None,
                                       r.cpu_b32.median_ms if r.cpu_b32 else None),
            "fine-tune epochs": r.finetune_epochs,
        })
    return pd.DataFrame(out)


def to_markdown(rows: list[ResultRow], baselines: dict[str, ResultRow]) -> str:
    return table(rows, baselines).to_markdown(index=False)


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


def _env_block(rows: list[ResultRow]) -> str:
    env = rows[-1].env
    keys = ["cpu", "cpu_vnni", "cpu_avx512", "cores", "threads", "gpu", "torch", "torchvision", "onnxruntime",
            "python", "platform", "git_commit", "dtype"]
    lines = [f"| {k} | {env.get(k)} |" for k in keys]
    return "| | |\n|---|---|\n" + "\n".join(lines)


SPEEDUP_SHORTFALL = 0.7  # measured speed-up below this share of the MACs reduction gets called out


def _speedup_vs_theory(rows: list[ResultRow], baselines: dict[str, ResultRow]) -> list[str]:
    """Where the clock disagrees with the MAC count, say so next to the figures."""
    lines = []
    for r in rows:
        b = baselines.get(r.baseline_row_id or "")
        if b is None or not (r.cpu_b32 and b.cpu_b32) or not r.macs:
            continue
        theory = b.macs / r.macs
        measured = b.cpu_b32.median_ms / r.cpu_b32.median_ms
        share = measured / theory
        verdict = "" if share >= SPEEDUP_SHORTFALL else \
            f" — **below {SPEEDUP_SHORTFALL:.0%} of the theoretical speed-up**"
        if theory < 1.05:
            verdict = " — no MACs removed, so no speed-up is expected" if measured < 1.1 else ""
        lines.append(f"- {r.compressor} ({_summary(r)}): MACs ÷ {theory:.2f}, CPU b32 speed-up {measured:.2f}x "
                     f"({share:.0%} of theory){verdict}")
    return lines


def _warnings(rows: list[ResultRow]) -> list[str]:
    notes = []
    for r in rows:
        for name in ("cpu_b1", "cpu_b32", "gpu_b1", "gpu_b32"):
            lat = getattr(r, name)
            if lat is not None and lat.warning:
                notes.append(f"- {r.compressor} ({_summary(r)}), {name}: {lat.warning}")
    return notes


def render(dataset: str, all_rows: list[ResultRow], plots: list[tuple[str, Path]] | None = None) -> str:
    if not all_rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    rows = latest(all_rows)
    baselines = {r.row_id: r for r in all_rows if r.compressor == "baseline"}
    first = rows[0]
    plots = plots or []
    parts = [
        f"# compress report: {dataset}",
        "",
        f"{len(rows)} model(s), {first.test_images} test images at {first.image_size}x{first.image_size}, "
        f"{first.num_classes} classes. Generated from the results store by `python -m compress report`.",
        "",
        "## Comparison",
        "",
        to_markdown(rows, baselines),
        "",
        "How to read it:",
        "- **params, nonzero, MACs** are theory: counted from the model, not timed. MACs are "
        "multiply-accumulates for one image (thop; torchvision's \"GFLOPS\" are the same unit; "
        "FLOPs = 2 x MACs).",
        "- **size** is the bytes of the saved checkpoint on disk.",
        "- **latency** is measured: median [p90] of individually timed forward passes in milliseconds, after "
        "an untimed warm-up, in eval and inference mode, at a fixed thread count. b1 = batch 1 (latency), "
        "b32 = batch 32 (throughput). ⚠ marks a noisy figure (IQR/median > 0.10).",
        "- Ratios (÷, speed-up) and Δ top-1 compare each row with the baseline measured in the same invocation, "
        "so both were timed on the same machine state. Top-1 is on the same stored test split for every row.",
        "- Accuracy differences of a few tenths of a point on a few hundred test images are within noise.",
        "- *top-1 before FT* is the accuracy right after compression, before any fine-tuning; *fine-tune "
        "epochs* is the training budget each row got afterwards, so methods are compared at equal budgets.",
        "- Unstructured pruning zeroes single weights but keeps every tensor dense, so its nonzero count "
        "falls while MACs, file size and latency stay those of the dense model; structured pruning "
        "removes whole channels, which shrinks all of them.",
        "",
    ]
    gaps = _speedup_vs_theory(rows[1:], baselines)
    if gaps:
        parts += ["## Measured speed-up against the MACs reduction", "",
                  "MACs are theory; the clock is what the model costs. On CPU at batch 32:", "", *gaps, ""]
    if plots:
        parts += ["## Trade-offs", "",
                  "Every stored configuration (newest row of each), the baseline as a star; the grey band is "
                  "the Pareto front (no other model is both cheaper and more accurate).", ""]
        parts += [f"![{title}]({path.name})" for title, path in plots]
        parts.append("")
    no_gpu = sorted({r.gpu_note.removeprefix("n/a (").removesuffix(")")
                     for r in rows if r.gpu_b1 is None and r.gpu_b32 is None})
    if no_gpu:
        parts += [f"GPU columns read n/a: {'; '.join(no_gpu)}. No GPU figure is ever estimated.", ""]
    warns = _warnings(rows)
    if warns:
        parts += ["Noisy measurements:", "", *warns, ""]
    parts += ["## Environment", "", "Measured on (from the newest row):", "", _env_block(rows), "",
              "## Commands that produced these rows", ""]
    for r in rows:
        parts.append(f"- {r.compressor}: `{r.command}` (row `{r.row_id}`, {r.created})")
    parts.append("")
    return "\n".join(parts)


def write_report(dataset: str, rows: list[ResultRow], out_dir: Path) -> Path:
    """reports/<dataset>.md plus its PNG plots, each written atomically."""
    from compress.plots import tradeoff_plots

    if not rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    plots = tradeoff_plots(latest(rows), Path(out_dir), dataset)
    path = Path(out_dir) / f"{dataset}.md"
    write_text(path, render(dataset, rows, plots))
    return path
