"""Timing a callable so that the figure can be trusted: warm-up, individually timed calls, median, p90 and IQR.

Latency is measured, never derived: it says what the arithmetic did cost on this machine, at a
fixed thread count recorded in every row. Which runtimes time a model is the runtimes' registry's
business (`measuring/runtimes/`); this module times one callable.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from compress.errors import CompressError
from compress.measuring import cpuload, runtimes
from compress.store.rows import Latency

IQR_WARN = 0.10  # as torch.utils.benchmark: IQR/median above this means the figure is noisy
MIN_TIMED = 5  # timed calls a figure has at least, whatever --latency-max-s says (unless --latency-min-calls is lower)
# ONNX Runtime's intra-op threads spin after each run by default: a session timed right after another one's
# calls runs ~40% slower while the other's threads spin (ANCHORS: 74.6 ms alone, 105.6 ms alternating). Every
# session here has spinning off, alone and paired alike, so a model's latency does not depend on its partner;
# every row states it (env["ort_allow_spinning"]).
ORT_ALLOW_SPINNING = False
REPORT_BATCH = 32  # the batch the tables' speed-ups and the plots use unless told otherwise (--report-batch)


@dataclass(frozen=True)
class LatencyConfig:
    """How long to time each (device, batch) pair; enough calls that the median is stable."""

    warmup: int = 5
    min_calls: int = 20
    max_calls: int = 200
    budget_s: float = 3.0  # stop adding calls past this, once min_calls are in
    max_s: float = 30.0  # hard stop past this, once MIN_TIMED calls are in (a 224 px batch of 32 takes seconds)
    batches: tuple[int, ...] = (1, 32)
    threads: int | None = field(default=None, metadata={"flag": "--threads"})  # None: all cores; always recorded
    # the registered runtimes marked default: the cost of a run stays what it was before OpenVINO and
    # torch.compile were added (compiling VGG16 with Inductor takes tens of seconds per batch size)
    runtimes: tuple[str, ...] = field(default_factory=runtimes.defaults, metadata={
        "flag": "--runtimes", "help": runtimes.help_text})
    require_quiet: bool = field(default=False, metadata={"flag": "--require-quiet"})  # wait for a quiet machine
    quiet_timeout_s: float = 60.0  # how long --require-quiet waits before it gives up
    # peak memory of inference per runtime, each model in a process of its own (measuring/memory.py)
    memory: bool = field(default=True, metadata={"flag": "--memory", "help": "measure each model's peak memory "
                                                 "of inference per runtime in a short child process (--no-memory: "
                                                 "skip it, a few seconds per model and runtime)"})

    def __post_init__(self) -> None:
        known = runtimes.keys()
        unknown = [r for r in self.runtimes if r not in known]
        if unknown or not self.runtimes:
            raise CompressError(f"--runtimes {','.join(self.runtimes)}: unknown runtime(s) {', '.join(unknown) or '(none given)'}"
                                f"; choose from {', '.join(known)}")
        if self.warmup < 0 or self.min_calls < 1 or self.max_calls < self.min_calls:
            raise CompressError("latency settings need warmup >= 0 and 1 <= min_calls <= max_calls")
        if self.threads is not None and self.threads < 1:
            raise CompressError(f"--threads must be >= 1, got {self.threads}")
        if self.threads is not None and self.threads > 1024:
            raise CompressError(f"--threads must be at most 1024, got {self.threads}")
        if not self.batches or min(self.batches) < 1:
            raise CompressError(f"--latency-batches must be positive batch sizes, got {self.batches}")
        if max(self.batches) > 65_536:
            raise CompressError(f"--latency-batches must be at most 65536, got {self.batches}")
        if self.max_calls > 100_000 or self.warmup > 10_000:
            raise CompressError("latency settings need --latency-max-calls <= 100000 and --latency-warmup <= 10000")
        if not (math.isfinite(self.budget_s) and self.budget_s >= 0):
            raise CompressError(f"--latency-budget-s must be >= 0, got {self.budget_s}")
        if not (math.isfinite(self.quiet_timeout_s) and self.quiet_timeout_s > 0):
            raise CompressError(f"--latency-quiet-timeout-s must be positive, got {self.quiet_timeout_s}")
        if not (math.isfinite(self.max_s) and self.max_s > 0):
            raise CompressError(f"--latency-max-s must be positive, got {self.max_s}")

    def on(self, runtime: str) -> bool:
        """Whether this run times `runtime` (its one name, such as "ort")."""
        return runtime in self.runtimes

    @property
    def onnx(self) -> bool:
        """Whether fp32 models need their parity-checked ONNX export (ONNX Runtime and OpenVINO read it)."""
        return any(self.on(r.key) for r in runtimes.in_order() if r.reads_onnx)


def default_threads() -> int:
    return cpuload.affinity_cores()


def time_calls(fn: Callable[[], object], cfg: LatencyConfig, batch: int,
               sync: Callable[[], None] | None = None) -> Latency:
    """Untimed warm-up, then individually timed calls until min_calls and the budget are met.

    Slow calls (VGG16 at 224 px, batch 32: seconds each on a small CPU) cut both phases short:
    warm-up ends once it has used the budget (one call at least), and timing ends at `max_s`
    once MIN_TIMED calls are in, so one figure never takes minutes; `calls` records how many.
    """
    start = time.perf_counter()
    for i in range(cfg.warmup):
        fn()
        if sync:
            sync()
        if time.perf_counter() - start > cfg.budget_s:
            break
    times: list[float] = []
    start = time.perf_counter()
    deadline, hard_stop = start + cfg.budget_s, start + cfg.max_s
    while len(times) < cfg.max_calls and (len(times) < cfg.min_calls or time.perf_counter() < deadline):
        if len(times) >= min(MIN_TIMED, cfg.min_calls) and time.perf_counter() > hard_stop:
            break
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times, batch)


def summarize(times: list[float], batch: int) -> Latency:
    """Median, p90 and IQR of individually timed calls (ms); noisy when IQR/median > IQR_WARN."""
    q1, med, q3, p90 = np.percentile(np.asarray(times), [25, 50, 75, 90])
    warning = f"noisy: IQR/median = {(q3 - q1) / med:.2f} > {IQR_WARN}" if med > 0 and (q3 - q1) / med > IQR_WARN \
        else None
    return Latency(batch, float(med), float(p90), float(q3 - q1), len(times), warning)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """PyTorch's intra-op thread count fixed for a measurement (None: all cores), then restored."""
    chosen = threads or default_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)


def pinning(threads: int | None) -> dict[str, object]:
    """How every CPU runtime is pinned, the same way for each: stated in every row."""
    chosen = threads or default_threads()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"torch_intra_op_threads": chosen, "torch_inter_op_threads": torch.get_num_interop_threads(),
            "ort_intra_op_threads": chosen, "ort_inter_op_threads": 1, "ort_execution": "sequential",
            "ort_allow_spinning": ORT_ALLOW_SPINNING, "cpu_affinity": affinity}
