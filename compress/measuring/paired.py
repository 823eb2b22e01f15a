"""Speed-ups measured as pairs: candidate and reference timed in alternating blocks, ratio with a 95% interval.

Two medians taken minutes apart divide two different machines when the load changes between
them (measured here under a load that came and went: the same int8 speed-up read 4.11x, 1.63x and
1.70x in three invocations). Timing both in interleaved blocks in the same process, runtime,
threads and batch lets a slow period hit both.

The unit is an A B + B A pair of blocks: a drift in machine speed weighs on both models alike
within it, and each model is timed once right after the other and once right after itself, so
what one model leaves behind (caches, a runtime's spinning threads) weighs on both alike too.
Each unit gives one ratio (the geometric mean of its two block ratios); the figure is the
geometric mean of the unit ratios with a Student-t interval on their logarithms.
tests/test_paired.py simulates pairs with a known ratio and realistic noise (per-call jitter,
drift, slow periods) and checks that the stated 95% covers at least 93% at MIN_UNITS units.

Around the pair the reference is also timed alone, one block of k calls right before and one right
after, each after k/2 untimed calls: with its own row and its partner reading, that third
reading tells whether the machine drifted or the pairing changed the reference (reporting/consistency.py).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from scipy import stats

from compress.measuring.timing import LatencyConfig, summarize
from compress.store.rows import Latency, Paired

UNITS = 5  # A B + B A units at most (10 blocks)
MIN_UNITS = 3  # units at least, whatever --latency-max-s says: below this the interval covers too little
PAIR_BUDGET = 1.5  # a pair gets this many times one model's --latency-budget-s (the cost ceiling)
LEVEL = 0.95


def interval(unit_ratios: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(ratio, low, high): the geometric mean of the unit ratios and its Student-t interval (on the logs)."""
    logs = np.log(np.asarray(unit_ratios, dtype=float))
    mean = float(logs.mean())
    if len(logs) < 2:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    half = float(stats.t.ppf(0.5 + level / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def interleaved(reference: Callable[[], object], candidate: Callable[[], object], cfg: LatencyConfig, batch: int,
                reference_row_id: str, clock: Callable[[], float] = time.perf_counter) -> tuple[Paired, Latency]:
    """Time both in A B + B A units; returns the paired speed-up and the candidate's latency in the pair.

    k calls per block are chosen from a first call of each, so the pair costs about PAIR_BUDGET x
    --latency-budget-s; slow calls (224 px) end at MIN_UNITS units once --latency-max-s has passed.
    """
    def once(fn: Callable[[], object]) -> float:
        t0 = clock()
        fn()
        return (clock() - t0) * 1e3

    for _ in range(max(1, min(cfg.warmup, 2))):  # warm both; first calls allocate
        t_ref, t_cand = once(reference), once(candidate)
    per_block_s = max((t_ref + t_cand) / 1e3, 1e-6)
    k = int(np.clip(PAIR_BUDGET * cfg.budget_s / (2 * UNITS * per_block_s), 1, 20))
    ref_blocks: list[float] = []
    cand_blocks: list[float] = []
    cand_calls: list[float] = []
    units: list[float] = []
    def solo() -> float:
        """The reference alone, in the same process, runtime, threads and batch: a few untimed calls first, so
        what its partner's last calls left behind (a runtime's spinning threads) has passed."""
        for _ in range(max(1, k // 2)):
            reference()
        return float(np.median([once(reference) for _ in range(k)]))

    alone = [solo()]
    start = clock()
    for u in range(UNITS):
        if u >= MIN_UNITS and clock() - start > cfg.max_s:
            break
        block_ratios = []
        for order in (((0, reference), (1, candidate)), ((1, candidate), (0, reference))):  # A B, then B A
            times: dict[int, list[float]] = {which: [once(fn) for _ in range(k)] for which, fn in order}
            ref_blocks.append(float(np.median(times[0])))
            cand_blocks.append(float(np.median(times[1])))
            cand_calls += times[1]
            block_ratios.append(ref_blocks[-1] / cand_blocks[-1])
        units.append(math.sqrt(block_ratios[0] * block_ratios[1]))
    alone.append(solo())
    ratio, low, high = interval(np.asarray(units))
    paired = Paired(reference_row_id, ratio, low, high, ref_blocks, cand_blocks, alone)
    return paired, summarize(cand_calls, batch)
