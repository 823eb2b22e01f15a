"""Is anything else using the CPU while we time? Read from the kernel's counters, recorded in every row.

A steady load does not show in the spread of the timings (a model timed while another process
trains on the other core is slow on every call, not noisy), so the spread alone cannot say the
machine was busy. /proc/stat says how much CPU time every process together used during the
measurement; ours is subtracted; what remains is other work, and `steal` is time the
hypervisor gave to other machines.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compress.errors import CompressError

BUSY_WARN = 0.10  # other work above this share of the machine's CPU time flags the measurement
QUIET_PROBE_S = 1.0  # how long --require-quiet watches at a time


@dataclass(frozen=True)
class Counters:
    wall: float  # seconds (monotonic)
    busy: float  # CPU seconds spent by every process, all cores (user+nice+system+irq+softirq)
    steal: float  # CPU seconds the hypervisor gave elsewhere
    own: float  # CPU seconds of this process (user + system, all its threads)


@dataclass(frozen=True)
class Load:
    """What else the machine did during a measurement."""

    others_share: float  # CPU time of other processes / (wall time x cores)
    steal_share: float
    free_cores: float  # cores not used by other work, on average
    seconds: float
    cores: int

    @property
    def busy(self) -> bool:
        return self.others_share + self.steal_share > BUSY_WARN

    def note(self) -> str:
        return (f"other processes used {100 * self.others_share:.0f}% of the {self.cores} cores "
                f"(steal {100 * self.steal_share:.0f}%) over {self.seconds:.0f} s of timing")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def read_counters() -> Counters | None:
    """The kernel's CPU counters now, or None where there is no /proc/stat (not Linux)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    values = [int(v) / tick for v in first[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    steal = values[7] if len(values) > 7 else 0.0
    t = os.times()
    return Counters(time.monotonic(), user + nice + system + irq + softirq, steal, t.user + t.system)


Source = Callable[[], Counters | None]


def between(before: Counters | None, after: Counters | None, cores: int | None = None) -> Load | None:
    if before is None or after is None or after.wall <= before.wall:
        return None
    cores = cores or _cores()
    capacity = (after.wall - before.wall) * cores
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own))
    share = min(1.0, others / capacity)
    return Load(share, min(1.0, (after.steal - before.steal) / capacity), cores * (1 - share),
                after.wall - before.wall, cores)


def wait_until_quiet(timeout_s: float, source: Source | None = None,
                     sleep: Callable[[float], None] | None = None) -> Load | None:
    """--require-quiet: watch the machine until other work stays under BUSY_WARN, or give up at timeout_s."""
    source, sleep = source or read_counters, sleep or time.sleep  # looked up now: replaceable in tests
    waited = 0.0
    while True:
        before = source()
        sleep(QUIET_PROBE_S)
        load = between(before, source())
        if load is None or not load.busy:
            return load
        waited += QUIET_PROBE_S
        if waited >= timeout_s:
            raise CompressError(f"--require-quiet: the machine stayed busy for {timeout_s:.0f} s ({load.note()}): "
                                "stop the other work, raise --latency-quiet-timeout-s, or drop --require-quiet")
