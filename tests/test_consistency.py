"""A model's latency must not depend on what it was timed beside: the checks that say when it did."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from compress.measuring import timing
from compress.measuring.paired import interleaved
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.timing import LatencyConfig, time_calls
from compress.reporting import consistency, markdown
from compress.store.rows import Paired
from tests.helpers import BASE, FakeClock
from tests.helpers import lat as _lat


def _sim(monkeypatch: pytest.MonkeyPatch, partner_slowdown: float = 1.0, machine: object = None,
         ) -> tuple[float, Paired]:
    """The reference's own row timed alone, then a pair, on a fake runtime and a fake clock. `partner_slowdown`:
    how much slower the reference runs within 60 ms after the candidate's last call (a neighbour's effect);
    `machine(t)`: the machine's slowness at time t (drift, bursts of load)."""
    clock, last_call = FakeClock(), {"R": -10.0, "C": -10.0}
    monkeypatch.setattr(timing.time, "perf_counter", clock)  # time_calls reads the same fake clock
    speed = machine or (lambda t: 1.0)

    def runner(name: str, ms: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            near = name == "R" and clock.now - last_call["C"] < 0.06
            clock.now += (partner_slowdown if near else 1.0) * speed(clock.now) * ms / 1e3  # type: ignore[operator]
            last_call[name] = clock.now
        return call

    cfg = LatencyConfig(warmup=1, min_calls=10, max_calls=10, budget_s=1.0, max_s=100)
    ref = runner("R", 20.0)
    own = time_calls(ref, cfg, 32).median_ms
    clock.now = 600.0  # the pair, ten minutes after the reference's own row
    paired, _ = interleaved(ref, runner("C", 10.0), cfg, 32, BASE.row_id, clock=clock)
    return own, paired


def _pair_rows(alone: float, paired: Paired) -> list:
    base = replace(BASE, latency={ORT_CPU: {32: _lat(alone, 32)}})
    cand = replace(BASE, row_id="c", compressor="slim-head", baseline_row_id=base.row_id,
                   latency={ORT_CPU: {32: _lat(10.0, 32)}}, paired={ORT_CPU: {32: paired}})
    return [base, cand]


def _classified(own: float, paired: Paired) -> tuple[list[str], Counter]:
    rows = _pair_rows(own, paired)
    flagged, checked, causes = consistency.partner_lines(rows, {r.row_id: r for r in rows})
    assert checked == 1
    return flagged, causes


def test_a_machine_that_slowed_between_the_row_and_the_pair_is_drift_and_the_ratio_stands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    own, paired = _sim(monkeypatch, machine=lambda t: 1.2 if t >= 600 else 1.0)
    flagged, causes = _classified(own, paired)
    assert causes == {"drift": 1} and paired.ratio == pytest.approx(2.0)
    assert "**drift**: it read 24.00 ms alone at pair time and 24.00 ms as the partner, against 20.00 ms" in flagged[0]
    assert "so the 2.00x stands" in flagged[0]


def test_a_partner_that_slows_the_reference_is_pairing_with_the_alone_based_ratio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 40% slower right after the candidate's calls: half the reference's blocks follow one (B A), so its partner
    # reading is 20% above its own row (24 ms of 20), while alone, right around the pair, it reads 20 ms
    own, paired = _sim(monkeypatch, partner_slowdown=1.4)
    flagged, causes = _classified(own, paired)
    assert causes == {"pairing": 1} and paired.ratio == pytest.approx(2.37, rel=0.01)
    assert "**pairing**: it read 20.00 ms alone at pair time, as in its own row (20.00 ms), but 24.00 ms" in flagged[0]
    assert "the 2.37x is suspect; against the alone reading the speed-up is 2.00x" in flagged[0]


def test_a_burst_of_load_during_the_pair_is_unsteady(monkeypatch: pytest.MonkeyPatch) -> None:
    start = {}

    def burst(t: float) -> float:  # the machine 40% slower from some way into the pair on
        start.setdefault("t", t)
        return 1.4 if t - start["t"] > 0.5 else 1.0

    own, paired = _sim(monkeypatch, machine=lambda t: burst(t) if t >= 600 else 1.0)
    flagged, causes = _classified(own, paired)
    assert causes == {"unsteady": 1} and "**unsteady**" in flagged[0] and "apart)" in flagged[0]


def test_a_quiet_pair_is_not_flagged_and_no_line_leaves_the_cause_open(monkeypatch: pytest.MonkeyPatch) -> None:
    own, paired = _sim(monkeypatch)
    assert _classified(own, paired) == ([], Counter())
    old = replace(paired, reference_ms=[30.0] * 10, reference_alone_ms=[])  # a row timed before the alone blocks
    flagged, causes = _classified(own, old)
    assert causes == {"unmeasured": 1} and "measure it again" in flagged[0]
    rows = _pair_rows(own, replace(paired, reference_ms=[24.0] * 10))
    text = markdown.render("synthetic", rows)
    assert " either " not in text.split("## Consistency")[1] and "**pairing**" in text


def _paired(ref: str, ratio: float) -> Paired:
    return Paired(ref, ratio, ratio * 0.95, ratio * 1.05, [1.0] * 6, [1.0 / ratio] * 6)


@pytest.mark.parametrize("int8_ms,flag", [(10.0, False), (20.0, True)])
def test_chains_are_checked_by_composition(int8_ms: float, flag: bool) -> None:
    """int8 of a pruned model: (int8 vs pruned) x (pruned vs baseline) against the two rows' own medians."""
    base = replace(BASE, latency={ORT_CPU: {32: _lat(60.0, 32)}})
    pruned = replace(BASE, row_id="p", compressor="pruning", baseline_row_id=base.row_id,
                     latency={ORT_CPU: {32: _lat(30.0, 32)}}, paired={ORT_CPU: {32: _paired(base.row_id, 2.0)}})
    int8 = replace(BASE, row_id="q", compressor="quantization", baseline_row_id=base.row_id, source_row_id="p",
                   latency={ORT_CPU: {32: _lat(int8_ms, 32)}}, paired={ORT_CPU: {32: _paired("p", 3.0)}})
    rows = [base, pruned, int8]
    (line,) = consistency.chain_lines(rows, {r.row_id: r for r in rows}, 32)
    assert "3.00x against its source x 2.00x source against the baseline = 6.00x" in line
    assert line.endswith(" ⚠") == flag
    assert ("the source as reference: unmeasured" in line) == flag  # a flagged chain names which reading moved


def test_the_report_marks_ratios_timed_apart_and_shows_the_checks() -> None:
    """Paired, unpaired (GPU) and busy rows in one report: † on what was timed apart, the caption says so."""
    base = replace(BASE, latency={ORT_CPU: {32: _lat(20.0, 32)}, TORCH_CUDA: {32: _lat(4.0, 32)}})
    paired = replace(BASE, row_id="c", compressor="slim-head", baseline_row_id=base.row_id,
                     latency={ORT_CPU: {32: _lat(10.0, 32)}, TORCH_CUDA: {32: _lat(2.0, 32)}},
                     paired={ORT_CPU: {32: _paired(base.row_id, 2.0)}})
    busy = replace(paired, row_id="d", compressor="depthwise", load={"busy": True, "others_share": 0.3})
    text = markdown.render("synthetic", [base, paired, busy])
    headline = text.split("## What each method buys")[1].split("##")[0]
    assert "2.00x" in headline and "2.00x†" in headline  # ORT paired, GPU timed apart
    assert "2.00x ⚠" in headline or "2.00x⚠" in headline.replace(" ⚠", "⚠")  # the busy row is flagged
    assert "where marked †: two medians timed apart" in headline
    assert "## Consistency of the paired timings" in text and "2 paired figure(s) checked" in text


def test_the_load_check_reads_only_our_cores_and_leaves_out_our_own_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-CPU counters: work on a core outside our affinity mask does not count, our own threads' time does not
    count as other work, and a CPU quota that throttles us does."""
    from collections import namedtuple

    import psutil

    from compress.measuring import cpuload

    Cpu = namedtuple("Cpu", "user nice system idle iowait irq softirq steal")
    state = {"t": 0.0, "own": 0.0, "throttled": 0.0, "cpu0": 0.0, "cpu1": 0.0}
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: [Cpu(state["cpu0"], 0, 0, 0, 0, 0, 0, 0),
                                                            Cpu(state["cpu1"], 0, 0, 0, 0, 0, 0, 0)])
    monkeypatch.setattr(cpuload.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(cpuload.os, "times", lambda: type("T", (), {"user": state["own"], "system": 0.0})())
    monkeypatch.setattr(cpuload.time, "monotonic", lambda: state["t"])
    monkeypatch.setattr(cpuload, "_throttled", lambda: state["throttled"])
    before = cpuload.read_counters()
    state.update(t=10.0, own=9.0, cpu0=9.5, cpu1=10.0)  # we ran 9 s on core 0; another process filled core 1
    calm = cpuload.between(before, cpuload.read_counters(), cores=1)
    assert calm is not None and calm.others_share == pytest.approx(0.05) and not calm.busy
    state.update(t=20.0, own=14.0, cpu0=19.5)  # someone else took 5 s of our core
    busy = cpuload.between(cpuload.Counters(10.0, 9.5, 0.0, 9.0), cpuload.read_counters(), cores=1)
    assert busy is not None and busy.others_share == pytest.approx(0.5) and busy.busy
    state.update(t=30.0, own=24.0, cpu0=29.5, throttled=3.0)  # the quota held us back 3 s of 10
    quota = cpuload.between(cpuload.Counters(20.0, 19.5, 0.0, 14.0), cpuload.read_counters(), cores=1)
    assert quota is not None and quota.others_share == 0.0 and quota.throttled_share == pytest.approx(0.3)
    assert quota.busy and "throttled by the CPU quota 30%" in quota.note()


def test_the_search_ranks_by_ratios_against_the_one_common_baseline() -> None:
    """A candidate whose own median was timed beside a fast partner must not win on that median: the search
    ranks by the baseline's median over the chain of paired ratios (int8: x its source's ratio)."""
    from compress.experiments.search import ranked_value

    base = replace(BASE, latency={ORT_CPU: {32: _lat(100.0, 32)}})
    src = replace(BASE, row_id="p", compressor="pruning", baseline_row_id=base.row_id,
                  latency={ORT_CPU: {32: _lat(80.0, 32)}}, paired={ORT_CPU: {32: _paired(base.row_id, 2.0)}})
    int8 = replace(BASE, row_id="q", compressor="quantization", baseline_row_id=base.row_id, source_row_id="p",
                   latency={ORT_CPU: {32: _lat(10.0, 32)}}, paired={ORT_CPU: {32: _paired("p", 1.6)}})
    assert ranked_value([src], base, "ort-b32") == pytest.approx(50.0)  # 100 / 2.0, not its own 80 ms
    assert ranked_value([src, int8], base, "ort-b32") == pytest.approx(100.0 / 3.2)
    unpaired = replace(src, paired={})
    assert ranked_value([unpaired], base, "ort-b32") == pytest.approx(80.0)  # no chain: its own median
    assert ranked_value([src, int8], base, "size") == float(int8.size_bytes)


def test_a_row_stored_before_a_setting_existed_still_counts_as_made_with_the_defaults() -> None:
    """quantization gained --max-drop: an int8 row stored before it must still be the headline's Quantization row."""
    from compress.reporting.cells import defaults
    from compress.reporting.sections import is_default

    older = {k: v for k, v in defaults("quantization").items() if k != "max_drop"}
    row = replace(BASE, row_id="q", compressor="quantization", config={"compressor": older})
    assert is_default(row)
    assert not is_default(replace(row, config={"compressor": {**older, "calibration": "entropy"}}))


def test_the_drift_track_says_how_far_the_machine_moved_through_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    own, paired = _sim(monkeypatch, machine=lambda t: 1.2 if t >= 600 else 1.0)
    base, cand = _pair_rows(own, paired)
    later = replace(cand, row_id="d", created="2026-11-23T00:30:00+00:00",
                    paired={ORT_CPU: {32: replace(paired, reference_alone_ms=[18.0, 18.0])}})
    rows = [base, cand, later]
    track = consistency.drift_track(rows, {r.row_id: r for r in rows})
    assert track == {"ort b32": [(0.0, pytest.approx(1.2)), (30.0, pytest.approx(0.9))]}
    assert "ort b32 -10% to +20% over 30 min" in consistency.drift_sentence(track)


def test_alone_and_partner_apart_are_flagged_even_when_each_is_near_its_own_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Own 20 ms, alone 18.2 (-9%), partner 21.8 (+9%): each within 10% of the row, 20% from each other."""
    own, paired = _sim(monkeypatch)
    flagged, causes = _classified(own, replace(paired, reference_ms=[21.8] * 10, reference_alone_ms=[18.2, 18.2]))
    assert causes == {"pairing": 1} and "**pairing**" in flagged[0]
