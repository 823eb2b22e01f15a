"""Speed-ups you can trust on a busy machine: interleaved blocks, a bootstrap interval, a load check."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from compress.cli.main import main
from compress.errors import CompressError
from compress.measuring import cpuload
from compress.measuring.paired import MIN_UNITS, UNITS, interleaved, interval

BLOCKS = 2 * UNITS
from compress.measuring.timing import LatencyConfig
from compress.models import checkpoints, vgg
from tests.helpers import NARROW, FakeClock


def test_blocks_alternate_abba_and_the_ratio_is_exact_for_exact_times() -> None:
    clock, calls = FakeClock(), []

    def runner(name: str, ms: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            calls.append(name)
            clock.now += ms / 1e3
        return call

    cfg = LatencyConfig(warmup=1, budget_s=0.3, max_s=100)
    paired, lat = interleaved(runner("R", 10.0), runner("C", 5.0), cfg, 32, "ref-row", clock=clock)
    lead = calls[2:].index("C")  # after one warm-up call each: the reference alone (k/2 untimed, k timed), block 0
    n = calls[2 + lead:].index("R") // 2  # the candidate's halves of blocks 0 (A B) and 1 (B A): 2k calls
    solo = lead - n
    pair = calls[2 + solo: 2 + solo + BLOCKS * 2 * n]
    blocks = [pair[i * 2 * n: (i + 1) * 2 * n] for i in range(BLOCKS)]
    assert calls[:2] == ["R", "C"] and len(calls) == 2 + BLOCKS * 2 * n + 2 * solo
    assert solo == n + max(1, n // 2) and set(calls[2:2 + solo]) == set(calls[-solo:]) == {"R"}
    for i, block in enumerate(blocks):
        first, second = ("R", "C") if i % 2 == 0 else ("C", "R")
        assert block == [first] * n + [second] * n  # A B, then B A, ...
    k = n
    assert paired.ratio == pytest.approx(2.0) and paired.low == pytest.approx(2.0) and paired.high == pytest.approx(2.0)
    assert paired.reference_row_id == "ref-row" and len(paired.reference_ms) == BLOCKS
    assert paired.reference_alone_ms == pytest.approx([10.0, 10.0])  # alone before and after the pair
    assert lat.median_ms == pytest.approx(5.0) and lat.calls == BLOCKS * k and lat.batch == 32


def test_a_slow_period_hits_both_and_leaves_the_ratio_alone() -> None:
    clock, state = FakeClock(), {"calls": 0}

    def runner(ms: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            state["calls"] += 1
            slow = 4.0 if 40 <= state["calls"] < 120 else 1.0  # the machine gets 4x slower for a while
            clock.now += slow * ms / 1e3
        return call

    paired, _ = interleaved(runner(12.0), runner(4.0), LatencyConfig(warmup=1, budget_s=0.2, max_s=100), 1, "r",
                            clock=clock)
    assert paired.ratio == pytest.approx(3.0, rel=0.01)  # timed apart, the two medians could read 0.75x to 12x here


def test_the_interval_narrows_with_less_noise() -> None:
    rng = np.random.default_rng(1)
    wide = 3.0 * np.exp(rng.normal(0, 0.10, 5))
    narrow = 3.0 * np.exp(rng.normal(0, 0.01, 5))
    _, lo_w, hi_w = interval(wide)
    _, lo_n, hi_n = interval(narrow)
    assert lo_w < 3.0 < hi_w and lo_n < 3.0 < hi_n
    assert (hi_n - lo_n) < 0.2 * (hi_w - lo_w)


def _simulated_pair(rng: np.random.Generator, true_ratio: float = 2.0) -> tuple[float, float]:
    """One pair at the minimum unit count and one call per block, under realistic noise: per-call jitter
    (5% log-normal, a 2% chance of a 1.5x outlier) and a machine whose speed drifts (a random walk) and
    sometimes halves for a while. Returns the stated interval."""
    clock, speed, state = FakeClock(), [1.0], {"slow": 0}

    def runner(ms: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            speed[0] *= float(np.exp(rng.normal(0, 0.03)))  # drift
            if state["slow"] == 0 and rng.random() < 0.02:
                state["slow"] = int(rng.integers(2, 8))  # a slow period of a few calls
            slow = 2.0 if state["slow"] > 0 else 1.0
            state["slow"] = max(0, state["slow"] - 1)
            outlier = 1.5 if rng.random() < 0.02 else 1.0
            clock.now += ms * speed[0] * slow * outlier * float(np.exp(rng.normal(0, 0.05))) / 1e3
        return call

    cfg = LatencyConfig(warmup=1, budget_s=0.0, max_s=1e-9)  # one call per block, stop at MIN_UNITS
    paired, _ = interleaved(runner(10.0 * true_ratio), runner(10.0), cfg, 32, "r", clock=clock)
    assert len(paired.reference_ms) == 2 * MIN_UNITS
    return paired.low, paired.high


def test_the_stated_95_percent_covers_at_least_93_percent_at_the_minimum_unit_count() -> None:
    """The coverage simulation of issue 27: a known ratio, realistic noise, the fewest units a pair ever gets."""
    rng = np.random.default_rng(7)
    pairs = [_simulated_pair(rng) for _ in range(1000)]
    coverage = float(np.mean([low <= 2.0 <= high for low, high in pairs]))
    assert coverage >= 0.93, coverage


def test_a_spinning_neighbour_is_cancelled_by_the_unit_design() -> None:
    """A runtime whose calls run 40% slow for 30 ms after the other session ran (ONNX Runtime's spinning
    threads): both models pay it alike within an A B + B A unit, so the ratio stays true."""
    clock, last = FakeClock(), {"who": None, "at": -1.0}

    def runner(name: str, ms: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            slow = 1.4 if last["who"] not in (None, name) and clock.now - last["at"] < 0.030 else 1.0
            clock.now += slow * ms / 1e3
            last.update(who=name, at=clock.now)
        return call

    paired, _ = interleaved(runner("R", 20.0), runner("C", 10.0), LatencyConfig(warmup=1, budget_s=1.0, max_s=100),
                            32, "r", clock=clock)
    assert paired.ratio == pytest.approx(2.0, rel=0.02) and paired.low <= 2.0 <= paired.high * 1.02


def _busy_source(share: float):  # type: ignore[no-untyped-def]
    """Counters of a 2-core machine where other processes use `share` of it; time moves 1 s per read."""
    state = {"t": 0.0}

    def read() -> cpuload.Counters:
        state["t"] += 1.0
        return cpuload.Counters(wall=state["t"], busy=state["t"] * 2 * share, steal=0.0, own=0.0)
    return read


def test_load_is_the_other_processes_share_of_the_machine() -> None:
    source = _busy_source(0.6)
    got = cpuload.between(source(), source(), cores=2)
    assert got is not None and got.others_share == pytest.approx(0.6) and got.busy
    assert got.free_cores == pytest.approx(0.8)
    quiet = _busy_source(0.02)
    assert not cpuload.between(quiet(), quiet(), cores=2).busy  # type: ignore[union-attr]


def test_a_window_too_short_to_judge_is_not_flagged() -> None:
    """Counters tick every 10 ms per core: one tick of someone else's in a 20 ms window is not 'the machine was
    busy' (a quick run once printed 'other processes used 100% ... over 0 s of timing')."""
    before = cpuload.Counters(wall=5.0, busy=1.00, steal=0.0, own=0.5)
    assert cpuload.between(before, cpuload.Counters(wall=5.02, busy=1.04, steal=0.0, own=0.5), cores=2) is None
    long = cpuload.between(before, cpuload.Counters(wall=6.0, busy=2.9, steal=0.0, own=0.5), cores=2)
    assert long is not None and long.busy


def test_require_quiet_waits_then_fails_with_one_clear_line() -> None:
    slept: list[float] = []
    with pytest.raises(CompressError, match=r"--require-quiet: the machine stayed busy for 3 s \(other processes used "
                                            r"60% of the 2 cores"):
        cpuload.wait_until_quiet(3.0, source=_busy_source(0.6), sleep=slept.append)
    assert len(slept) == 3  # it watched three times before giving up
    assert cpuload.wait_until_quiet(3.0, source=_busy_source(0.0), sleep=slept.append) is not None


def _measure(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    weights = tmp_path / "narrow.pt"
    checkpoints.save_checkpoint(vgg.build(NARROW), NARROW, weights, extra={"image_size": 32})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["measure", "--weights", str(weights), "--json", "--workdir", str(tmp_path / "runs"),
                     "--latency-min-calls", "2", "--latency-max-calls", "2", "--latency-budget-s", "0",
                     "--latency-batches", "1", "--runtimes", "torch", *extra])
    return code, out.getvalue(), err.getvalue()


def test_a_busy_machine_flags_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpuload, "read_counters", _busy_source(0.5))
    code, out, err = _measure(tmp_path)
    assert code == 0 and "timed while the machine was busy" in err
    row = json.loads(out)[0]
    assert row["load"]["busy"] and row["load"]["others_share"] == pytest.approx(0.5)


def test_require_quiet_on_the_command_line_refuses_to_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpuload, "read_counters", _busy_source(0.9))
    monkeypatch.setattr(cpuload.time, "sleep", lambda s: None)
    code, out, err = _measure(tmp_path, "--require-quiet", "--latency-quiet-timeout-s", "2")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "compress: error: --require-quiet: the machine stayed busy for 2 s" in err
