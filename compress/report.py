"""Markdown comparison tables, rendered only from stored rows.

The terminal table after `run` and the file under reports/ come from the same function, so
what a user sees at the prompt is what the report says.

"Seed 004" is the write-up in the project's seeds that lists five ways to make VGG16 lighter
(slim head, depthwise-separable convolutions, pruning, quantization, distillation) and ends
with a table comparing them in words; `SEED_004` below is that table, and the report answers
each of its lines with measured numbers. (It is unrelated to `--seed`, the random seed.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from compress.cells import code, defaults, file_stem, lat, mb, p_cell, plain, ratio, significance, speedup, summary
from compress.errors import CompressError
from compress.headline import baseline_line, compact, timed_runtimes
from compress.measuring.cpuload import BUSY_WARN
from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.measuring.runtimes import name as runtime_name
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.runtimes.openvino_cpu import OPENVINO_CPU
from compress.measuring.runtimes.torch_compile import COMPILE_CPU
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.reporting.search_report import section as search_section
from compress.sensitivity_report import guided_against_uniform, sections
from compress.sensitivity_report import plot as sensitivity_plot
from compress.store.atomic import write_text
from compress.store.rows import ResultRow

REPORT_BATCH = 32


def timed_batches(rows: list[ResultRow]) -> list[int]:
    """Every batch size any row was timed at (the latency columns)."""
    found = sorted({b for r in rows for per_batch in r.latency.values() for b in per_batch})
    return found or [1, REPORT_BATCH]


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
    return table(rows, baselines, batch).to_markdown(index=False)


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
    keys = ["cpu", "cpu_vnni", "cpu_avx512", "cpu_bf16", "cores", "threads", "gpu", "torch", "torchvision",
            "onnxruntime", "openvino", "nncf", "python", "platform", "git_commit", "dtype"]
    lines = [f"| {k} | {env.get(k)} |" for k in keys]
    return "| | |\n|---|---|\n" + "\n".join(lines)


SPEEDUP_SHORTFALL = 0.7  # measured speed-up below this share of the MACs reduction gets called out


def _speedup_vs_theory(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
    """Where the clock disagrees with the MAC count, say so next to the figures."""
    lines = []
    for r in rows:
        b = baselines.get(r.baseline_row_id or "")
        new, base = r.lat(TORCH_CPU, batch), (b.lat(TORCH_CPU, batch) if b else None)
        if b is None or not (new and base) or not r.macs or r.env.get("dtype", "float32") != "float32":
            continue  # lower precision changes the cost per MAC: see the section against its fp32 source
        theory = b.macs / r.macs
        paired = r.pair(TORCH_CPU, batch)
        measured = paired.ratio if paired and paired.reference_row_id == b.row_id else base.median_ms / new.median_ms
        share = measured / theory
        verdict = "" if share >= SPEEDUP_SHORTFALL else \
            f" — **below {SPEEDUP_SHORTFALL:.0%} of the theoretical speed-up**"
        if theory < 1.05:
            verdict = " — no MACs removed, so no speed-up is expected" if measured < 1.1 else ""
        lines.append(f"- {r.compressor} ({summary(r)}): MACs ÷ {theory:.2f}, CPU b{batch} speed-up {measured:.2f}x "
                     f"({share:.0%} of theory){verdict}")
    return lines


def _against_source(rows: list[ResultRow], by_id: dict[str, ResultRow], batch: int) -> list[str]:
    """Rows that change the number format (int8) against the fp32 model they were made from."""
    lines = []
    for r in rows:
        if r.env.get("dtype", "float32") == "float32":
            continue
        src = by_id.get(r.source_row_id or r.baseline_row_id or "")
        if src is None:
            continue
        parts = [f"- {r.compressor} ({summary(r)}), {r.backend}, against its fp32 source "
                 f"({src.compressor}, row `{src.row_id}`):"]
        if r.onnx_size_bytes:
            parts.append(f"size ÷ {r.onnx_size_bytes / r.size_bytes:.2f} vs the fp32 ONNX file;")
        else:
            parts.append(f"size ÷ {src.size_bytes / r.size_bytes:.2f} vs the fp32 checkpoint;")
        for rt in runtime_keys():
            parts += _timed_against(r, src, rt, batch)
        if r.accuracy is not None and src.accuracy is not None:
            parts.append(f"top-1 {100 * src.accuracy:.2f} -> {100 * r.accuracy:.2f}% "
                         f"({100 * (r.accuracy - src.accuracy):+.2f} pts, McNemar p {p_cell(significance(r, src))})")
        lines.append(" ".join(parts))
    return lines


def _timed_against(r: ResultRow, src: ResultRow, runtime: str, batch: int) -> list[str]:
    """A lower-precision row's speed-up over its fp32 source on one runtime: paired when it was, at `batch` and b1."""
    out = []
    for n in dict.fromkeys([batch, 1]):
        new, old, paired = r.lat(runtime, n), src.lat(runtime, n), r.pair(runtime, n)
        if paired is not None and paired.reference_row_id == src.row_id:
            per_block = (f" ({sum(paired.reference_ms) / len(paired.reference_ms):.1f} -> "
                         f"{sum(paired.candidate_ms) / len(paired.candidate_ms):.1f} ms per block on average)"
                         if n == batch else "")
            out.append(f"{runtime_name(runtime)} b{n} {paired.cell()}{per_block},")
        elif new and old:
            out.append(f"{runtime_name(runtime)} b{n} {old.median_ms:.1f} -> {new.median_ms:.1f} ms "
                       f"({old.median_ms / new.median_ms:.2f}x, timed apart),")
    return out


def _by_runtime(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
    """Runtime x model: each model's speed-up on each runtime over the baseline on that same runtime, and the
    runtime where it runs fastest. A method's speed-up depends on the runtime; a user deploys on one."""
    runtimes = timed_runtimes(rows, batch)
    if len([rt for rt in runtimes if rt != TORCH_CUDA]) < 2:
        return []
    out = []
    for r in rows:
        b = baselines.get(r.baseline_row_id or "")
        line = {"model": r.compressor, "setting": summary(r)}
        for rt in runtimes:
            figure = r.lat(rt, batch)
            cell = "n/a" if figure is None else f"{figure.median_ms:.1f} ms"
            if figure is not None and r.compressor != "baseline" and (x := speedup(b, r, rt, batch, interval=False)):
                cell += f" ({x})"
            line[runtime_label(rt)] = cell
        timed = {rt: f.median_ms for rt in runtimes if (f := r.lat(rt, batch)) is not None}
        fastest = min(timed, key=timed.__getitem__) if timed else None
        gains = {rt: b.lat(rt, batch).median_ms / ms for rt, ms in timed.items()  # type: ignore[union-attr]
                 if b is not None and r is not b and b.lat(rt, batch) is not None}
        line["fastest on"] = runtime_label(fastest) if fastest else "n/a"
        line["largest speed-up on"] = runtime_label(max(gains, key=gains.__getitem__)) if gains else ""
        out.append(line)
    return [pd.DataFrame(out).to_markdown(index=False, disable_numparse=True)]


def _against_control(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> list[str]:
    """Each distilled row against the same model trained without the teacher."""
    lines = []
    for r in rows:
        c = by_id.get(r.control_row_id or "")
        if c is None or r.accuracy is None or c.accuracy is None:
            continue
        gain = 100 * (r.accuracy - c.accuracy)
        test = significance(r, c)
        verdict = "KD beat the control" if gain > 0 else "KD did not beat the control"
        if test is not None:
            verdict += f" (McNemar p = {test.p_value:.3f}: " + \
                ("significant)" if test.significant else "within what this test set can tell apart)")
        lines.append(f"- {r.compressor} ({summary(r)}): with the teacher {100 * r.accuracy:.2f}%, without "
                     f"{100 * c.accuracy:.2f}% (control row `{c.row_id}`): KD gain {gain:+.2f} pts, {verdict}; "
                     f"{r.params:,} params, {r.finetune_epochs} epochs each")
    return lines


def _warnings(rows: list[ResultRow]) -> list[str]:
    notes = []
    for r in rows:
        for runtime in runtime_keys():
            for batch, figure in sorted(r.latency.get(runtime, {}).items()):
                if figure.warning:
                    notes.append(f"- {r.compressor} ({summary(r)}), {runtime_label(runtime)} b{batch}: {figure.warning}")
    return notes


# Seed 004's closing table (translated), and which of our rows answers each line.
SEED_004 = (
    ("Reduce the fully connected layers", "slim-head", "params: large cut; easy; small accuracy impact; may "
     "slightly lower expressiveness"),
    ("Depthwise-separable convolution", "depthwise", "params: moderate cut; much less compute; small accuracy "
     "impact; every conv layer must be replaced"),
    ("Pruning", "pruning", "params: cut as needed; structure unchanged; small performance impact; the pruning "
     "rate needs tuning"),
    ("Quantization", "quantization", "storage: large cut; efficient; large effect on inference speed; training "
     "may be more complex"),
    ("Knowledge distillation", "distillation", "flexible; the small model is efficient, suits embedded devices; "
     "needs a trained teacher"),
)


def is_default(row: ResultRow) -> bool:
    """The row made with the compressor's default settings, from the baseline (what seed 004 describes)."""
    default = defaults(row.compressor)
    given = {k: v for k, v in (row.config.get("compressor") or {}).items() if k in default}
    return bool(default) and given == default and not row.config.get("source")


def _seed_table(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
    out = []
    for method, name, claim in SEED_004:
        picked = [r for r in rows if r.compressor == name and is_default(r)]
        if not picked:
            continue
        r = picked[-1]
        b = baselines.get(r.baseline_row_id or "")
        if b is None:
            continue
        speed = [f"{label} {speedup(b, r, runtime, batch)}" for label, runtime in (("PyTorch", TORCH_CPU),
                                                                                      ("ORT", ORT_CPU))
                 if r.lat(runtime, batch) is not None and b.lat(runtime, batch) is not None]
        acc = "" if r.accuracy is None or b.accuracy is None else f"{100 * (r.accuracy - b.accuracy):+.2f}"
        test = significance(r, b)
        out.append({"seed 004 method": method, "seed 004 says": claim, "our row": f"{name}: {summary(r)}",
                    "params ÷": ratio(b.params, r.params), "MACs ÷": ratio(b.macs, r.macs),
                    "size ÷": ratio(b.size_bytes, r.size_bytes), f"CPU b{batch} speed-up": ", ".join(speed) or "n/a",
                    "Δ top-1 (pts)": acc, "McNemar p": p_cell(test)})
    if not out:
        return []
    return [pd.DataFrame(out).to_markdown(index=False)]


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
        "same invocation. A speed-up written `2.01x [1.90–2.12]` was timed interleaved with its reference (blocks "
        "of calls alternating A B B A in one process, same runtime, threads and batch), the median of the "
        "per-block ratios with its 95% bootstrap interval; ⚠ on a speed-up means other processes used more than "
        "10% of the CPU while it was timed. Top-1 is on the same stored test split for every row.",
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
    seen = dict.fromkeys(f"**Note** ({r.compressor}): {c}" for r in rows for c in r.caveats)
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
    warns = _warnings(rows)
    busy = [r for r in rows if r.busy and r.load]
    out = []
    if warns:
        out.append(f"{len(warns)} latency figure(s) are noisy (IQR/median > 0.10) and marked ⚠ in the full table; "
                   "the speed-ups come from interleaved timing, which cancels most of that noise.")
    if busy:
        out.append(f"{len(busy)} row(s) were timed while other processes used more than {BUSY_WARN:.0%} of the "
                   "machine (⚠ on their speed-ups).")
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
            frame.to_markdown(index=False, disable_numparse=True), "",
            f"÷ is baseline ÷ model (theory for params and MACs, bytes on disk for size); × is the measured "
            f"speed-up at batch {batch}, timed interleaved with the baseline (intervals in the full table); Δ top-1 "
            f"in points with McNemar's p on the same test images, * when p < 0.05."
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


def render(dataset: str, all_rows: list[ResultRow], plots: list[tuple[str, Path]] | None = None,
           run_all: dict[str, Any] | None = None, batch: int = REPORT_BATCH, scans: list[Any] | None = None,
           scan_plots: dict[str, Path] | None = None, searched: Any = None) -> str:
    """The report: one sentence, the headline table, the plots; then the details, each under a short title."""
    if not all_rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    rows = latest(all_rows)
    baselines = {r.row_id: r for r in all_rows if r.compressor == "baseline"}
    by_id = {r.row_id: r for r in all_rows}
    parts = [f"# compress report: {plain(dataset)}", "", *_opening(rows, batch, run_all),
             *_headline(rows, baselines, batch), *_plots_block(plots or []), *_caveats(rows)]
    parts += ["## All models", "", "Every stored configuration, its newest row; settings are shown where they differ "
              "from the compressor's defaults.", "", to_markdown(rows, baselines, batch), "", *_noise_line(rows),
              *_how_to_read(batch)]
    parts += _section("int8 against its own fp32",
                      "Same thread count, same CPU, same invocation; accuracy from the int8 model itself over the "
                      "whole test split.", _against_source(rows, by_id, batch))
    parts += _section("Which runtime",
                      f"Median ms at batch {batch} on each runtime, with the speed-up over the baseline on that same "
                      "runtime (interleaved where it was timed so); *fastest on* is the lowest latency, *largest "
                      "speed-up on* the runtime that turns the method's cut into the most time saved. Runtimes: "
                      + ", ".join(f"{runtime_label(rt)} = {runtime_name(rt)}" for rt in runtime_keys()) + ".",
                      _by_runtime(rows, baselines, batch))
    parts += _section("Sensitivity-guided against uniform pruning",
                      "The same --amount, importance and fine-tuning budget; per-layer amounts chosen from the stored "
                      "sensitivity scan to reach uniform pruning's MACs; McNemar between the two on the same test images.",
                      guided_against_uniform(rows, by_id))
    parts += sections(scans or [], scan_plots or {})
    parts += search_section(searched, by_id)
    parts += _section("Distillation against its control",
                      "A KD result without its control is not a result: the control is the same student, same "
                      "data, same epochs, trained on the labels alone.", _against_control(rows, by_id))
    parts += _section("Speed-up against MACs",
                      f"MACs are theory; the clock is what the model costs. On CPU at batch {batch}:",
                      _speedup_vs_theory(rows[1:], baselines, batch))
    parts += _section("Seed 004's words",
                      "Seed 004 ends with a table of five ways to make VGG16 lighter, judged in words; beside each, "
                      f"its measured row (speed-ups at batch {batch}).", _seed_table(rows, baselines, batch))
    return "\n".join(parts + _closing(rows, run_all))


def write_report(dataset: str, rows: list[ResultRow], out_dir: Path, run_all: dict[str, Any] | None = None,
                 batch: int = REPORT_BATCH, html: bool = False, scans: list[Any] | None = None,
                 searched: Any = None) -> Path:
    """reports/<dataset>.md plus its PNG plots (and with `html`, <dataset>.html), each written atomically."""
    from compress.plots import tradeoff_plots

    if not rows:
        raise CompressError(f"no stored results for dataset {dataset!r}: run `python -m compress run slim-head` first")
    stem = file_stem(dataset)
    path = Path(out_dir) / f"{stem}.md"
    if Path(out_dir).resolve() not in path.resolve().parents:
        raise CompressError(f"the report for {dataset!r} would be written outside {out_dir}: refused")
    plots = tradeoff_plots(latest(rows), Path(out_dir), stem, batch)
    scan_plots = {s.kind: sensitivity_plot(s, Path(out_dir), stem) for s in scans or [] if s.kind == "pruning"}
    text = render(dataset, rows, plots, run_all, batch, scans, scan_plots, searched)
    write_text(path, text)
    if html:
        from compress.webpage import to_html

        write_text(path.with_suffix(".html"), to_html(text, Path(out_dir), f"compress report: {dataset}"))
    return path
