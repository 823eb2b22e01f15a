"""The search in words and tables: the winner judged on the test split, everything tried, the Pareto front."""

from __future__ import annotations

from compress.measuring import significance
from compress.reporting.cells import code, md_table
from compress.store.rows import ResultRow, decode
from compress.store.searches import UNIT, Outcome, pareto


def winner_line(outcome: Outcome, rows: dict[str, ResultRow]) -> str:
    """What the search found, judged on the test split against the baseline (McNemar)."""
    b = outcome.best
    cfg = outcome.config
    if b is None:
        return (f"no candidate stayed within {cfg['max_drop']:g} points on the validation split in "
                f"{outcome.seconds / 60:.1f} min ({len(outcome.tried)} tried)")
    name = f"{b.method} " + " ".join(f"{k}={v}" for k, v in b.settings.items()) + (" then int8" if b.int8 else "")
    if outcome.best_untuned:
        within = 100 * (outcome.baseline_val - (b.untuned_val or 0)) <= cfg["max_drop"]
        return (f"no candidate could be fine-tuned and measured within the budget: best UNTUNED candidate {name}, "
                f"{b.macs / 1e6:.1f} M MACs, validation top-1 {100 * (b.untuned_val or 0):.2f}% "
                + ("(within the drop before any fine-tuning; " if within else "(outside the drop; ")
                + "not stored: untuned)")
    row, base = rows.get(b.row_id or ""), rows.get(outcome.baseline_row_id)
    test = ""
    if row is not None and base is not None and row.accuracy is not None and base.accuracy is not None:
        m = significance.mcnemar(decode(base.correct), decode(row.correct)) if row.correct and base.correct \
            else None
        test = (f"; test top-1 {100 * row.accuracy:.2f}% vs baseline {100 * base.accuracy:.2f}% "
                f"({100 * (row.accuracy - base.accuracy):+.2f} pts" + (f", McNemar p {m.p_value:.3f})" if m else ")"))
    speed = ""
    if b.value is not None and outcome.baseline_value:
        how = ("the baseline's median over its paired speed-up" if cfg["objective"] in ("ort-b32", "torch-b32", "cpu-b32")
               else "theory" if cfg["objective"] == "macs" else "bytes on disk")
        speed = (f"; {cfg['objective']} {b.value:.4g} {UNIT[cfg['objective']]} ({how}) against the baseline's "
                 f"{outcome.baseline_value:.4g}: {outcome.baseline_value / b.value:.2f}x")
    return (f"best within {cfg['max_drop']:g} points (validation): {name} (row {b.row_id}), validation top-1 "
            f"{100 * (b.val_accuracy or 0):.2f}% vs {100 * outcome.baseline_val:.2f}%{speed}{test}")


def table(outcome: Outcome) -> str:
    """Everything tried, best first among the measured; the Pareto front marked."""
    import pandas as pd

    front = {t.number for t in pareto(outcome.tried)}
    lines = []
    for t in sorted(outcome.tried, key=lambda t: (t.value is None, t.value or 0)):
        lines.append({"#": t.number + 1, "candidate": f"{t.method} " + " ".join(f"{k}={v}" for k, v in t.settings.items())
                      + (" + int8" if t.int8 else ""), "stage": t.stage, "MACs (M)": f"{t.macs / 1e6:.1f}",
                      "val top-1 %": "" if t.val_accuracy is None else f"{100 * t.val_accuracy:.2f}",
                      "untuned val %": "" if t.untuned_val is None else f"{100 * t.untuned_val:.2f}",
                      f"{outcome.config['objective']} ({UNIT[outcome.config['objective']]})":
                          "" if t.value is None else f"{t.value:.4g}",
                      "Pareto": "yes" if t.number in front else "", "row": t.row_id or "", "note": t.note})
    return md_table(pd.DataFrame(lines), disable_numparse=True) if lines else "(nothing tried)"


def section(outcome: Outcome | None, rows: dict[str, ResultRow]) -> list[str]:
    if outcome is None:
        return []
    cfg = outcome.config
    return [f"## Search: the best {cfg['objective']} within {cfg['max_drop']:g} points", "",
            f"From {code(outcome.command)} ({outcome.seconds / 60:.1f} min, {len(outcome.tried)} distinct candidates, "
            f"{sum(t.stage == 'trained' for t in outcome.tried)} of them fine-tuned for {cfg['epochs']} epochs each; "
            "Optuna TPE). Feasibility on the validation split; the winner judged on the test split. A latency "
            "objective ranks candidates by their speed-up over the one common baseline, each step a paired ratio "
            "(int8 against its fp32 source, times that source against the baseline), written as the baseline's "
            "median divided by that speed-up; a candidate without such a chain reads its own median.", "", winner_line(outcome, rows) + ".", "", table(outcome), ""]
