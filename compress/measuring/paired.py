"""Speed-ups measured as pairs: candidate and reference timed in alternating blocks, ratio with a 95% CI.

Two medians taken minutes apart divide two different machines when the load changes between
them (measured here under a load that came and went: the same int8 speed-up read 4.11x, 1.63x and
1.70x in three invocations). Timing
both in interleaved blocks (A B, then B A, ...) in the same process, runtime, threads and batch
lets a slow period hit both; each block pair gives one ratio, and the spread of those ratios
says how far the figure can be trusted (a bootstrap interval of their median, as pyperf and
hyperfine report spread instead of a single number).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from compress.measuring.timing import LatencyConfig, summarize
from compress.store.rows import Latency, Paired

BLOCKS = 10  # block pairs at most (ABBA order); fewer when calls are slow


MIN_BLOCKS = 4  # block pairs at least, whatever the time cap says


BOOTSTRAP = 2000  # resamples of the block ratios for the 95% interval


PAIR_BUDGET = 1.5  # a pair gets this many times one model's --latency-budget-s (the cost ceiling)


def bootstrap_ci(ratios: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `ratios` (seeded: the same blocks give the same interval)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ratios), size=(BOOTSTRAP, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def interleaved(reference: Callable[[], object], candidate: Callable[[], object], cfg: LatencyConfig, batch: int,
                reference_row_id: str, clock: Callable[[], float] = time.perf_counter) -> tuple[Paired, Latency]:
    """Time both in alternating blocks; returns the paired speed-up and the candidate's own latency.

    Block i runs k calls of one then k of the other (each after one untimed call), the order flipping
    every block (A B B A ...), so a drift in machine speed weighs on both alike. k is chosen from a first call of each so the
    pair costs about PAIR_BUDGET x --latency-budget-s; slow calls (224 px) end at MIN_BLOCKS once
    --latency-max-s has passed.
    """
    def once(fn: Callable[[], object]) -> float:
        t0 = clock()
        fn()
        return (clock() - t0) * 1e3

    for _ in range(max(1, min(cfg.warmup, 2))):  # warm both; first calls allocate
        t_ref, t_cand = once(reference), once(candidate)
    per_block_s = max((t_ref + t_cand) / 1e3, 1e-6)
    k = int(np.clip(PAIR_BUDGET * cfg.budget_s / (BLOCKS * per_block_s) - 1, 1, 20))
    ref_blocks: list[float] = []
    cand_blocks: list[float] = []
    cand_calls: list[float] = []
    start = clock()
    for i in range(BLOCKS):
        if i >= MIN_BLOCKS and clock() - start > cfg.max_s:
            break
        order = ((0, reference), (1, candidate)) if i % 2 == 0 else ((1, candidate), (0, reference))
        # one untimed call first: a model timed right after the other starts with the other's weights in cache
        times: dict[int, list[float]] = {which: [once(fn) for _ in range(k + 1)][1:] for which, fn in order}
        ref_blocks.append(float(np.median(times[0])))
        cand_blocks.append(float(np.median(times[1])))
        cand_calls += times[1]
    ratios = np.asarray(ref_blocks) / np.asarray(cand_blocks)
    low, high = bootstrap_ci(ratios)
    paired = Paired(reference_row_id, float(np.median(ratios)), low, high, ref_blocks, cand_blocks)
    return paired, summarize(cand_calls, batch)
