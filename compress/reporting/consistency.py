"""Do the paired timings agree with the rows? A reference's figures as a partner against its own row, and chains.

A speed-up timed as a pair is only as good as the pairing: if timing the reference beside its
partner changed how fast the reference ran (a runtime's threads spinning after the other model's
calls, a shared cache), the ratio is right for neither model alone. Every paired figure stores the
reference's per-block medians; here they are held against the reference's own row, measured alone
in the same invocation. Chains (int8 of a pruned model) are checked by composition: int8 against
its fp32 source times that source against the baseline, against the two rows' own medians.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.reporting.cells import code, named
from compress.store.rows import ResultRow

TOLERANCE = 0.10  # a reference reading more than this far from its own row flags the ratio


def partner_lines(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> tuple[list[str], int]:
    """(a line for each paired figure whose reference read more than TOLERANCE away from its own row, how many
    paired figures were checked)."""
    lines, checked = [], 0
    for r in rows:
        for rt in runtime_keys():
            for b, p in sorted(r.paired.get(rt, {}).items()):
                ref = by_id.get(p.reference_row_id)
                own = ref.lat(rt, b) if ref is not None else None
                if own is None or not p.reference_ms or own.median_ms <= 0:
                    continue
                checked += 1
                partner = float(np.median(p.reference_ms))
                off = partner / own.median_ms - 1
                if abs(off) > TOLERANCE:
                    lines.append(f"- ⚠ {named(r)}, {runtime_label(rt)} b{b}: its reference (row {code(ref.row_id)}) "
                                 f"ran at {partner:.2f} ms per block as the partner against {own.median_ms:.2f} ms in "
                                 f"its own row ({off:+.0%}){_apart(ref, r)}: either the pairing changed what it "
                                 f"measured, and the {p.ratio:.2f}x is suspect, or the machine's speed changed in "
                                 "between, which a ratio timed in one pair does not see")
    return lines, checked


def _apart(ref: ResultRow, row: ResultRow) -> str:
    """How long after the reference's own row the pair was timed (a VM's speed drifts over minutes)."""
    try:
        minutes = (datetime.fromisoformat(row.created) - datetime.fromisoformat(ref.created)).total_seconds() / 60
    except (TypeError, ValueError):
        return ""
    return f", {minutes:.0f} min after it" if minutes >= 1 else ""


def chain_lines(rows: list[ResultRow], by_id: dict[str, ResultRow], batch: int) -> list[str]:
    """Each model made from another stored model: (it vs its source) x (source vs baseline) against the medians."""
    lines = []
    for r in rows:
        src, base = by_id.get(r.source_row_id or ""), by_id.get(r.baseline_row_id or "")
        if src is None or base is None or src.row_id == base.row_id:
            continue
        for rt in runtime_keys():
            step, first = r.pair(rt, batch), src.pair(rt, batch)
            mine, theirs = r.lat(rt, batch), base.lat(rt, batch)
            if not (step and first and mine and theirs) or step.reference_row_id != src.row_id \
                    or first.reference_row_id != base.row_id:
                continue
            composed, direct = step.ratio * first.ratio, theirs.median_ms / mine.median_ms
            mark = " ⚠" if abs(composed / direct - 1) > TOLERANCE else ""
            lines.append(f"- {named(r)} from {named(src)}, {runtime_label(rt)} b{batch}: {step.ratio:.2f}x against "
                         f"its source x {first.ratio:.2f}x source against the baseline = {composed:.2f}x; the two "
                         f"rows' own medians give {direct:.2f}x ({composed / direct - 1:+.0%}){mark}")
    return lines


def section(rows: list[ResultRow], by_id: dict[str, ResultRow], batch: int) -> list[str]:
    flagged, checked = partner_lines(rows, by_id)
    chains = chain_lines(rows, by_id, batch)
    if not checked and not chains:
        return []
    summary = (f"{checked} paired figure(s) checked: {len(flagged) or 'none'} of them had a reference that ran more than "
               f"{TOLERANCE:.0%} away from its own row.")
    details = [*flagged, *([""] if flagged and chains else []), *chains]
    return ["## Consistency of the paired timings", "",
            "Each paired speed-up keeps its reference's per-block figures; a reference that ran differently beside "
            "its partner than alone would make the ratio true of neither. Chains are checked by composition. "
            + summary, "", *details, *([""] if details else [])]
