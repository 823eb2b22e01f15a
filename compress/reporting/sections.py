"""The report's sections after the full table: int8 against its fp32, which runtime, KD against its
control, speed-up against MACs, and seed 004's words beside measured rows.
"""

from __future__ import annotations

import pandas as pd

from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.measuring.runtimes import name as runtime_name
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.reporting.cells import (
    code,
    defaults,
    md_table,
    named,
    p_cell,
    plain,
    ratio,
    significance,
    speedup,
    summary,
)
from compress.reporting.headline import timed_runtimes
from compress.store.rows import ResultRow

SPEEDUP_SHORTFALL = 0.7  # measured speed-up below this share of the MACs reduction gets called out


def speedup_vs_theory(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
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
        lines.append(f"- {named(r)}: MACs ÷ {theory:.2f}, torch b{batch} speed-up {measured:.2f}x "
                     f"({share:.0%} of theory){verdict}")
    return lines


def against_source(rows: list[ResultRow], by_id: dict[str, ResultRow], batch: int) -> list[str]:
    """Rows that change the number format (int8) against the fp32 model they were made from."""
    lines = []
    for r in rows:
        if r.env.get("dtype", "float32") == "float32":
            continue
        src = by_id.get(r.source_row_id or r.baseline_row_id or "")
        if src is None:
            continue
        parts = [f"- {named(r)}, {plain(r.backend)}, against its fp32 source "
                 f"({plain(src.compressor)}, row {code(src.row_id)}):"]
        if r.onnx_size_bytes:
            parts.append(f"size ÷ {r.onnx_size_bytes / r.size_bytes:.2f} vs the fp32 ONNX file;")
        else:
            parts.append(f"size ÷ {src.size_bytes / r.size_bytes:.2f} vs the fp32 checkpoint;")
        for rt in runtime_keys():
            parts += _timed_against(r, src, rt, batch)
        if r.accuracy is not None and src.accuracy is not None:
            parts.append(f"top-1 {100 * src.accuracy:.2f} -> {100 * r.accuracy:.2f}% "
                         f"({100 * (r.accuracy - src.accuracy):+.2f} pts, McNemar p {p_cell(significance(r, src))})")
        lines.append(" ".join(parts) + budget_steps(r))
    return lines


def budget_steps(r: ResultRow) -> str:
    """An int8 row's fp32 layers, and for --max-drop each step of the loop (validation drop, layers put back)."""
    budget = r.int8_budget or {}
    if r.fp32_layers is None:
        return ""
    kept = ", ".join(code(x) for x in r.fp32_layers) or "none"
    if not budget.get("steps"):
        return f" Layers in fp32: {kept}."
    steps = "; ".join(f"{len(s['fp32_layers'])} in fp32: {s['drop_points']:.2f} pts lost" for s in budget["steps"])
    return (f" Within --max-drop: layers in fp32 {kept} (order: {plain(str(budget.get('order_from', '')))}); the "
            f"validation drop at each step: {steps}.")


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


def by_runtime(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
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
    return [md_table(pd.DataFrame(out), disable_numparse=True)]


def against_control(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> list[str]:
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
        lines.append(f"- {named(r)}: with the teacher {100 * r.accuracy:.2f}%, without "
                     f"{100 * c.accuracy:.2f}% (control row {code(c.row_id)}): KD gain {gain:+.2f} pts, {verdict}; "
                     f"{r.params:,} params, {r.finetune_epochs} epochs each")
    return lines


def noisy_figures(rows: list[ResultRow]) -> list[str]:
    notes = []
    for r in rows:
        for runtime in runtime_keys():
            for batch, figure in sorted(r.latency.get(runtime, {}).items()):
                if figure.warning:
                    notes.append(f"- {named(r)}, {runtime_label(runtime)} b{batch}: {figure.warning}")
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
    given = row.config.get("compressor") or {}
    # a setting added after the row was stored is absent from it: the row was made the way its default behaves
    return bool(default) and all(given.get(k, v) == v for k, v in default.items()) and not row.config.get("source")


def seed_table(rows: list[ResultRow], baselines: dict[str, ResultRow], batch: int) -> list[str]:
    out = []
    for method, name, claim in SEED_004:
        picked = [r for r in rows if r.compressor == name and is_default(r)]
        if not picked:
            continue
        r = picked[-1]
        b = baselines.get(r.baseline_row_id or "")
        if b is None:
            continue
        speed = [f"{label} {speedup(b, r, runtime, batch)}" for label, runtime in ((TORCH_CPU, TORCH_CPU),
                                                                                      (ORT_CPU, ORT_CPU))
                 if r.lat(runtime, batch) is not None and b.lat(runtime, batch) is not None]
        acc = "" if r.accuracy is None or b.accuracy is None else f"{100 * (r.accuracy - b.accuracy):+.2f}"
        test = significance(r, b)
        out.append({"seed 004 method": method, "seed 004 says": claim, "our row": f"{name}: {summary(r)}",
                    "params ÷": ratio(b.params, r.params), "MACs ÷": ratio(b.macs, r.macs),
                    "size ÷": ratio(b.size_bytes, r.size_bytes), f"b{batch} speed-up": ", ".join(speed) or "n/a",
                    "Δ top-1 (pts)": acc, "McNemar p": p_cell(test)})
    if not out:
        return []
    return [md_table(pd.DataFrame(out))]
