"""Markdown comparison tables, rendered only from stored rows.

The terminal table after `run` and the file under reports/ come from the same function, so
what a user sees at the prompt is what the report says.

"Seed 004" is the write-up in the project's seeds that lists five ways to make VGG16 lighter
(slim head, depthwise-separable convolutions, pruning, quantization, distillation) and ends
with a table comparing them in words; `SEED_004` below is that table, and the report answers
each of its lines with measured numbers. (It is unrelated to `--seed`, the random seed.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CompressError
from compress.measuring.cpuload import BUSY_WARN
from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.measuring.runtimes import name as runtime_name
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.openvino_cpu import OPENVINO_CPU
from compress.measuring.runtimes.torch_compile import COMPILE_CPU
from compress.measuring.timing import REPORT_BATCH
from compress.reporting import consistency
from compress.reporting.cells import (
    code,
    file_stem,
    md_table,
    plain,
)
from compress.reporting.full_table import latest, to_markdown
from compress.reporting.headline import baseline_line, compact
from compress.reporting.scan_tables import guided_against_uniform, sections
from compress.reporting.scan_tables import plot as sensitivity_plot
from compress.reporting.search_report import section as search_section
from compress.reporting.sections import (
    SEED_004,
    against_control,
    against_source,
    by_runtime,
    is_default,
    noisy_figures,
    seed_table,
    speedup_vs_theory,
)
from compress.store.atomic import write_text
from compress.store.rows import ResultRow
from compress.store.searches import Outcome


def _env_block(rows: list[ResultRow]) -> str:
    env = rows[-1].env
    keys = ["cpu", "cpu_vnni", "cpu_avx512", "cpu_bf16", "cores", "threads", "gpu", "torch", "torchvision",
            "onnxruntime", "openvino", "nncf", "python", "platform", "git_commit", "dtype"]
    lines = [f"| {k} | {env.get(k)} |" for k in keys]
    return "| | |\n|---|---|\n" + "\n".join(lines)


def _section(title: str, intro: str, lines: list[str]) -> list[str]:
    return [f"## {title}", "", intro, "", *lines, ""] if lines else []


def _how_to_read(batch: int) -> list[str]:
    return [
        "How to read it:",
        "- **params, nonzero, MACs** are theory: counted from the model, not timed. MACs are "
        "multiply-accumulates for one image (thop; torchvision's \"GFLOPS\" are the same unit; "
        "FLOPs = 2 x MACs).",
        "- **size** is the bytes of the deployed file on disk: the PyTorch checkpoint, or the int8 ONNX file "
        "for ONNX Runtime int8 rows.",
        "- **latency** is measured: median [p90] of individually timed forward passes in milliseconds, after "
        "an untimed warm-up, in eval and inference mode, at a fixed thread count. bN = batch N: b1 is latency, "
        "larger batches are throughput. ⚠ marks a noisy figure (IQR/median > 0.10). **CPU** is PyTorch eager; "
        "**ORT** is ONNX Runtime's CPU session of the model's ONNX export (checked against PyTorch within 1e-4), "
        "same threads, same statistics; an int8 ONNX row has ORT figures only. **OV** is OpenVINO's CPU plugin on "
        "the same ONNX file (fp32 pinned with INFERENCE_PRECISION_HINT=f32, else it runs bf16 on CPUs that have "
        "it; checked against PyTorch within 1e-3), or the NNCF int8 IR of a `--backend openvino` row. "
        "**compile** is torch.compile (Inductor) per batch size, checked against eager; compile time is in the "
        "row's notes, never in the latency. A runtime a model cannot run on reads n/a, with the reason below.",
        f"- Ratios (÷, speed-up, at batch {batch}) and Δ top-1 compare each row with the baseline measured in the "
        "same invocation. A speed-up written `2.01x [1.90–2.12]` was timed interleaved with its reference (A B + "
        "B A units of blocks in one process, same runtime, threads and batch), the geometric mean of the unit "
        "ratios with its Student-t 95% interval; † marks a ratio of two medians timed apart; ⚠ on a speed-up "
        "means other processes used more than 10% of its cores while that runtime was timed. Top-1 is on the same stored test split for every row.",
        "- *peak MiB* is the peak resident memory of inference, measured: each model and runtime in a short "
        "process of its own (one process's high-water mark never falls, so sharing one would give every model "
        "the largest mark so far), the runtime imported, the model loaded, one call per batch in increasing "
        "order; the row's JSON also has `model_mb`, the part above the idle process. On a GPU: "
        "torch.cuda.max_memory_allocated per batch. `--no-memory` skips it.",
        "- **McNemar p** is McNemar's exact test of each model against the baseline on the same test images "
        "(paired predictions): below 0.05 (marked *) the accuracy difference is unlikely to be luck of this "
        "test set; above it, this test set cannot tell the two models apart, whatever Δ top-1 says.",
        "- *top-1 before FT* is the accuracy right after compression, before any fine-tuning; *fine-tune "
        "epochs* is the training budget each row got afterwards, so methods are compared at equal budgets.",
        "- Unstructured pruning zeroes single weights but keeps every tensor dense, so its nonzero count "
        "falls while MACs, file size and latency stay those of the dense model; structured pruning "
        "removes whole channels, which shrinks all of them.",
        "",
    ]


def _caveats(rows: list[ResultRow]) -> list[str]:
    """What a reader must know before trusting a figure, once per distinct caveat."""
    seen = dict.fromkeys(f"**Note** ({plain(r.compressor)}): {plain(c)}" for r in rows for c in r.caveats)
    return [*seen, ""] if seen else []


def _plots_block(plots: list[tuple[str, Path]]) -> list[str]:
    if not plots:
        return []
    return ["## Trade-offs", "",
            "Every stored configuration (newest row of each), the baseline as a star; the grey band is "
            "the Pareto front (no other model is both cheaper and more accurate).", "",
            *[f"![{title}]({path.name})" for title, path in plots], ""]


def _noise_line(rows: list[ResultRow]) -> list[str]:
    """Noisy figures are marked where they stand; here they are counted once, not listed."""
    warns = noisy_figures(rows)
    busy = [r for r in rows if r.load and any(r.busy_on(k) for k in runtime_keys())]
    out = []
    if warns:
        out.append(f"{len(warns)} latency figure(s) are noisy (IQR/median > 0.10) and marked ⚠ in the full table; "
                   "the speed-ups come from interleaved timing, which cancels most of that noise.")
    if busy:
        out.append(f"{len(busy)} row(s) had a runtime timed while other processes used more than {BUSY_WARN:.0%} "
                   "of its cores (⚠ on that runtime's speed-ups).")
    return [" ".join(out), ""] if out else []


def _opening(rows: list[ResultRow], batch: int, run_all: dict[str, Any] | None) -> list[str]:
    """One sentence: what was measured, on what data and which machine."""
    first, env = rows[0], rows[-1].env
    runtimes = [runtime_name(rt) for rt in runtime_keys() if any(r.lat(rt, batch) for r in rows)]
    vnni = {True: ", VNNI", False: ", no VNNI"}.get(env.get("cpu_vnni"), "")
    took = ""
    if run_all:
        took = f" The last complete `run all` took {run_all['seconds'] / 60:.0f} minutes."
    return [f"{first.config.get('arch', 'VGG16').upper()} on {plain(first.dataset)} ({first.num_classes} classes, "
            f"{first.test_images} test images at {first.image_size}x{first.image_size}), {len(rows)} models "
            f"measured on {env.get('cpu', 'this machine')} ({env.get('threads', '?')} threads{vnni}) with "
            f"{', '.join(runtimes) or 'no timing'}; speed-ups at batch {batch}.{took}", ""]


def _headline(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
    """Each of seed 004's five methods at its default, in at most ten columns."""
    picked, names = [], {}
    for method, name, _ in SEED_004:
        hits = [r for r in rows if r.compressor == name and is_default(r)]
        if hits:
            picked.append(hits[-1])
            names[hits[-1].row_id] = method
    if not picked:  # no default run yet (e.g. only a sweep): every model, by what differs
        picked = [r for r in rows if r.compressor != "baseline"]
    if not picked:
        return []
    frame = compact(picked, baselines, batch, method=names, setting="brief")
    base = baselines.get(picked[0].baseline_row_id or "")
    return ["## What each method buys", "",
            md_table(frame, disable_numparse=True), "",
            f"÷ is baseline ÷ model (theory for params and MACs, bytes on disk for size); × is the measured "
            f"speed-up at batch {batch}, timed interleaved with the baseline (intervals in the full table), except "
            f"where marked †: two medians timed apart (a model made from another stored row, GPU rows stored before "
            f"GPU pairing); Δ "
            f"top-1 in points with McNemar's p on the same test images, * when p < 0.05. *peak MiB* is measured: "
            f"the peak resident memory of a process that loads the model alone and runs it at batch 1 (Python and "
            f"the runtime included)."
            + (f" The {plain(baseline_line(base, batch))}." if base else ""), ""]


def _provenance(rows: list[ResultRow], run_all: dict[str, Any] | None) -> list[str]:
    lines = [f"- {plain(r.compressor)}: {code(r.command)} (row {code(r.row_id)}, {r.created})" for r in rows]
    if run_all:
        lines.insert(0, f"- the last complete `run all` ({run_all['seconds'] / 60:.1f} min of wall-clock time, baseline "
                        f"training included when it was not cached, finished {run_all.get('finished')}): "
                        f"{code(run_all['command'])}")
    return ["## Provenance", "", "<details>", f"<summary>The command and row id behind each of the {len(rows)} "
            "models</summary>", "", *lines, "", "</details>", ""]


def _closing(rows: list[ResultRow], run_all: dict[str, Any] | None) -> list[str]:
    """GPU notes, the environment and where every row came from."""
    parts: list[str] = []
    for rt in (TORCH_CUDA, COMPILE_CPU, OPENVINO_CPU):
        why = sorted({r.note(rt).removeprefix("n/a (").removesuffix(")") for r in rows
                      if not r.latency.get(rt) and r.note(rt).startswith("n/a")})
        if why:
            parts += [f"{runtime_name(rt)} reads n/a for some rows: {plain('; '.join(why))}. No figure is ever estimated.", ""]
    parts += ["## Environment", "", "Measured on (from the newest row):", "", _env_block(rows), ""]
    return parts + _provenance(rows, run_all)


@dataclass(frozen=True)
class Beside:
    """What a report shows besides the rows: the last complete `run all`, the stored scans, the newest search."""

    run_all: dict[str, Any] | None = None
    scans: tuple[Any, ...] = ()
    searched: Outcome | None = None


def render(dataset: str, all_rows: list[ResultRow], plots: list[tuple[str, Path]] | None = None,
           batch: int = REPORT_BATCH, beside: Beside = Beside(), scan_plots: dict[str, Path] | None = None) -> str:
    """The report: one sentence, the headline table, the plots; then the details, each under a short title."""
    if not all_rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    rows = latest(all_rows)
    baselines = {r.row_id: r for r in all_rows if r.compressor == "baseline"}
    by_id = {r.row_id: r for r in all_rows}
    parts = [f"# compress report: {plain(dataset)}", "", *_opening(rows, batch, beside.run_all),
             *_headline(rows, baselines, batch), *_plots_block(plots or []), *_caveats(rows)]
    parts += ["## All models", "", "Every stored configuration, its newest row; settings are shown where they differ "
              "from the compressor's defaults.", "", to_markdown(rows, baselines, batch), "", *_noise_line(rows),
              *_how_to_read(batch)]
    parts += _section("int8 against its own fp32",
                      "Same thread count, same CPU, same invocation; accuracy from the int8 model itself over the "
                      "whole test split.", against_source(rows, by_id, batch))
    parts += _section("Which runtime",
                      f"Median ms at batch {batch} on each runtime, with the speed-up over the baseline on that same "
                      "runtime (interleaved where it was timed so); *fastest on* is the lowest latency, *largest "
                      "speed-up on* the runtime that turns the method's cut into the most time saved. Runtimes: "
                      + ", ".join(f"{runtime_label(rt)} = {runtime_name(rt)}" for rt in runtime_keys()) + ".",
                      by_runtime(rows, baselines, batch))
    parts += _section("Sensitivity-guided against uniform pruning",
                      "The same --amount, importance and fine-tuning budget; per-layer amounts chosen from the stored "
                      "sensitivity scan to reach uniform pruning's MACs; McNemar between the two on the same test images.",
                      guided_against_uniform(rows, by_id))
    parts += sections(list(beside.scans), scan_plots or {})
    parts += search_section(beside.searched, by_id)
    parts += _section("Distillation against its control",
                      "A KD result without its control is not a result: the control is the same student, same "
                      "data, same epochs, trained on the labels alone.", against_control(rows, by_id))
    parts += consistency.section(rows, by_id, batch)
    parts += _section("Speed-up against MACs",
                      f"MACs are theory; the clock is what the model costs. On CPU at batch {batch}:",
                      speedup_vs_theory(rows[1:], baselines, batch))
    parts += _section("Seed 004's words",
                      "Seed 004 ends with a table of five ways to make VGG16 lighter, judged in words; beside each, "
                      f"its measured row (speed-ups at batch {batch}).", seed_table(rows, baselines, batch))
    return "\n".join(parts + _closing(rows, beside.run_all))


def write_report(dataset: str, rows: list[ResultRow], out_dir: Path, batch: int = REPORT_BATCH,
                 beside: Beside = Beside(), html: bool = False) -> Path:
    """reports/<dataset>.md plus its PNG plots (and with `html`, <dataset>.html), each written atomically."""
    from compress.reporting.plots import tradeoff_plots

    if not rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    stem = file_stem(dataset)
    path = Path(out_dir) / f"{stem}.md"
    if Path(out_dir).resolve() not in path.resolve().parents:
        raise CompressError(f"the report for {dataset!r} would be written outside {out_dir}: refused")
    plots = tradeoff_plots(latest(rows), Path(out_dir), stem, batch)
    scan_plots = {s.kind: sensitivity_plot(s, Path(out_dir), stem) for s in beside.scans if s.kind == "pruning"}
    text = render(dataset, rows, plots, batch, beside, scan_plots)
    write_text(path, text)
    if html:
        from compress.reporting.webpage import to_html

        write_text(path.with_suffix(".html"), to_html(text, Path(out_dir), f"compress report: {dataset}"))
    return path
