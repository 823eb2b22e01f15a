"""Do the paired timings agree with the rows? A reference's figures as a partner against its own row, and chains.

A speed-up timed as a pair is only as good as the pairing: if timing the reference beside its
partner changed how fast the reference ran (a runtime's threads spinning after the other model's
calls, a shared cache), the ratio is right for neither model alone. Every paired figure stores the
reference's per-block medians; here they are held against the reference's own row, measured alone
in the same invocation. Chains (int8 of a pruned model) are checked by composition: int8 against
its fp32 source times that source against the baseline, against the two rows' own medians.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import numpy as np

from compress.measuring.runtimes import keys as runtime_keys
from compress.measuring.runtimes import label as runtime_label
from compress.reporting.cells import code, named
from compress.store.rows import Paired, ResultRow

TOLERANCE = 0.10  # a reference reading more than this far from its own row flags the ratio


@dataclass(frozen=True)
class Reading:
    """One paired figure's reference, read three ways with one statistic (a median of block medians, against
    the own row's median): in its own row, alone right around the pair, and as the partner."""

    own: float
    alone: float | None  # None: a row timed before the alone blocks existed
    partner: float
    alone_spread: float  # (max - min) / min of the alone blocks before and after the pair
    ratio: float
    alone_ratio: float | None  # the speed-up against the alone reading: alone / the candidate's median in the pair

    @property
    def cause(self) -> str | None:
        """None (consistent), "drift" (the machine; the ratio stands), "pairing" (the partner changed the reference;
        the ratio is suspect), "unsteady" (the machine changed during the pair), or "unmeasured" (an old row)."""
        if self.alone is None:
            return None if _close(self.partner, self.own) else "unmeasured"
        if _close(self.partner, self.own) and _close(self.alone, self.own) and _close(self.alone, self.partner) \
                and self.alone_spread <= TOLERANCE:
            return None  # every two of the three readings within the tolerance
        if _close(self.alone, self.partner) and self.alone_spread <= TOLERANCE:
            return "drift"
        if _close(self.alone, self.own) and self.alone_spread <= TOLERANCE:
            return "pairing"
        return "unsteady"


def _close(a: float, b: float) -> bool:
    return abs(a / b - 1) <= TOLERANCE


def reading(p: Paired, own_ms: float) -> Reading:
    alone = float(np.median(p.reference_alone_ms)) if p.reference_alone_ms else None
    spread = (max(p.reference_alone_ms) / min(p.reference_alone_ms) - 1) if p.reference_alone_ms else 0.0
    cand = float(np.median(p.candidate_ms)) if p.candidate_ms else None
    return Reading(own_ms, alone, float(np.median(p.reference_ms)), spread, p.ratio,
                   alone / cand if alone is not None and cand else None)


def explain(r: Reading, apart: str) -> str:
    """What moved, as a measurement says it: no line leaves the cause open."""
    own, partner, off = r.own, r.partner, r.partner / r.own - 1
    if r.cause == "drift":
        return (f"**drift**: it read {r.alone:.2f} ms alone at pair time and {partner:.2f} ms as the partner, against "
                f"{own:.2f} ms in its own row ({off:+.0%}{apart}): the machine's speed changed in between; both models "
                f"were timed at the same speed, so the {r.ratio:.2f}x stands")
    if r.cause == "pairing":
        return (f"**pairing**: it read {r.alone:.2f} ms alone at pair time, as in its own row ({own:.2f} ms), but "
                f"{partner:.2f} ms beside its partner ({off:+.0%}): the pairing changed what it measured, so the "
                f"{r.ratio:.2f}x is suspect; against the alone reading the speed-up is {r.alone_ratio:.2f}x")
    if r.cause == "unsteady":
        return (f"**unsteady**: alone at pair time it read {r.alone:.2f} ms (its two alone blocks {r.alone_spread:.0%} "
                f"apart), as the partner {partner:.2f} ms, in its own row {own:.2f} ms{apart}: the machine's speed "
                f"changed during the pair; the {r.ratio:.2f}x has the pair's interval and no better")
    return (f"**cause not measured**: it read {partner:.2f} ms as the partner against {own:.2f} ms in its own row "
            f"({off:+.0%}{apart}); this row was timed before each pair also timed its reference alone: measure it "
            "again to know whether the machine or the pairing moved")


def _figures(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> Iterator[tuple[ResultRow, str, int, Paired,
                                                                                 ResultRow, float]]:
    """(row, runtime, batch, its paired figure, the reference's row, the reference's own median) of every paired
    figure whose reference row is there with a figure at that runtime and batch."""
    for r in rows:
        for rt in runtime_keys():
            for b, p in sorted(r.paired.get(rt, {}).items()):
                ref = by_id.get(p.reference_row_id)
                own = ref.lat(rt, b) if ref is not None else None
                if ref is not None and own is not None and p.reference_ms and own.median_ms > 0:
                    yield r, rt, b, p, ref, own.median_ms


def partner_lines(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> tuple[list[str], int, Counter[str]]:
    """(a line for each paired figure whose three readings of the reference disagree by more than TOLERANCE, how
    many paired figures were checked, how many of each cause)."""
    lines, checked, causes = [], 0, Counter[str]()
    for r, rt, b, p, ref, own in _figures(rows, by_id):
        checked += 1
        got = reading(p, own)
        if got.cause is None:
            continue
        causes[got.cause] += 1
        lines.append(f"- ⚠ {named(r)}, {runtime_label(rt)} b{b}, its reference (row {code(ref.row_id)}): "
                     + explain(got, _apart(ref, r)))
    return lines, checked, causes


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
            off = abs(composed / direct - 1) > TOLERANCE
            lines.append(f"- {named(r)} from {named(src)}, {runtime_label(rt)} b{batch}: {step.ratio:.2f}x against "
                         f"its source x {first.ratio:.2f}x source against the baseline = {composed:.2f}x; the two "
                         f"rows' own medians give {direct:.2f}x ({composed / direct - 1:+.0%})"
                         + (f"; {_moved(step, src, first, base, rt, batch)} ⚠" if off else ""))
    return lines


def _moved(step: Paired, src: ResultRow, first: Paired, base: ResultRow, rt: str, batch: int) -> str:
    """Which reading moved in a chain that does not compose: each step's reference, read three ways."""
    said = []
    for name, pair, ref in (("the source", step, src), ("the baseline", first, base)):
        own = ref.lat(rt, batch)
        cause = reading(pair, own.median_ms).cause if own is not None and pair.reference_ms else "unmeasured"
        said.append(f"{name} as reference: {cause or 'consistent'}")
        if cause in ("drift", "pairing", "unsteady", "unmeasured"):
            ms = f"{own.median_ms:.2f} ms in its own row, {float(np.median(pair.reference_ms)):.2f} as the partner"
            said[-1] += f" ({ms})"
    return "; ".join(said) + ": the rows' own medians were timed apart, the pairs were not"


def drift_track(rows: list[ResultRow], by_id: dict[str, ResultRow]) -> dict[str, list[tuple[float, float]]]:
    """Per runtime and batch ("ort b32"): (minutes after the baseline's own row, its alone reading at that pair
    / its own row's median), for every pair against a baseline row: the machine's speed through a run."""
    track: dict[str, list[tuple[float, float]]] = {}
    for r, rt, b, p, ref, own in _figures(rows, by_id):
        if ref.compressor != "baseline" or not p.reference_alone_ms:
            continue
        try:
            seconds = (datetime.fromisoformat(r.created) - datetime.fromisoformat(ref.created)).total_seconds()
        except (TypeError, ValueError):
            continue
        track.setdefault(f"{runtime_label(rt)} b{b}", []).append(
            (seconds / 60, float(np.median(p.reference_alone_ms)) / own))
    return track


def drift_sentence(track: dict[str, list[tuple[float, float]]]) -> str:
    """How far the machine drifted over the run, read off the baseline's alone readings."""
    if not track:
        return ""
    parts = []
    for key, points in sorted(track.items()):
        lo, hi = min(v for _, v in points), max(v for _, v in points)
        parts.append(f"{key} {lo - 1:+.0%} to {hi - 1:+.0%} over {max(m for m, _ in points):.0f} min")
    return ("Drift through the run: the baseline timed alone at each pair read, against its own row, "
            + "; ".join(parts) + ".")


def section(rows: list[ResultRow], by_id: dict[str, ResultRow], batch: int) -> list[str]:
    flagged, checked, causes = partner_lines(rows, by_id)
    drift = drift_sentence(drift_track(rows, by_id))
    chains = chain_lines(rows, by_id, batch)
    if not checked and not chains:
        return []
    told = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
    summary = (f"{checked} paired figure(s) checked: {len(flagged) or 'none'} of them had a reference whose readings "
               f"(its own row, alone at pair time, as the partner) disagreed by more than {TOLERANCE:.0%}"
               + (f" ({told})." if told else "."))
    details = [*flagged, *([""] if flagged and chains else []), *chains]
    return ["## Consistency of the paired timings", "",
            "Each paired speed-up keeps its reference's per-block figures and two blocks of the reference timed alone "
            "right around the pair. Alone as the partner but not as its own row: the machine drifted, the ratio "
            "stands. Alone as its own row but not as the partner: the pairing changed the reference, the ratio is "
            "suspect. Neither: the machine was unsteady during the pair. Chains are checked by composition. "
            + summary, "", *([drift, ""] if drift else []), *details, *([""] if details else [])]
