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
MIN_WINDOW_S = 0.5  # the counters tick every 10 ms per core: a shorter window's share is mostly rounding


@dataclass(frozen=True)
class Counters:
    wall: float  # seconds (monotonic)
    busy: float  # CPU seconds spent by every process, all cores (user+nice+system+irq+softirq)
    steal: float  # CPU seconds the hypervisor gave elsewhere
    own: float  # CPU seconds of this process (user + system, all its threads)
    throttled: float = 0.0  # seconds the cgroup's CPU quota held this container back (cpu.stat throttled_usec)


@dataclass(frozen=True)
class Load:
    """What else the machine did during a measurement."""

    others_share: float  # CPU time of other processes / (wall time x cores)
    steal_share: float
    free_cores: float  # cores not used by other work, on average
    seconds: float
    cores: int
    throttled_share: float = 0.0  # share of the window the cgroup's CPU quota held us back

    @property
    def busy(self) -> bool:
        return self.others_share + self.steal_share + self.throttled_share > BUSY_WARN

    def note(self) -> str:
        quota = f", throttled by the CPU quota {100 * self.throttled_share:.0f}% of the time" \
            if self.throttled_share else ""
        return (f"other processes used {100 * self.others_share:.0f}% of the {self.cores} cores "
                f"(steal {100 * self.steal_share:.0f}%){quota} over {self.seconds:.0f} s of timing")


def affinity_cores() -> int:
    """The cores this process may run on (its affinity mask), the default thread count of every runtime."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def read_counters() -> Counters | None:
    """The CPU counters of the cores this process may run on (psutil's per-CPU times: the other cores' work does
    not slow ours), this process's own time, and the cgroup's throttled time; None where they cannot be read."""
    try:
        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
    except (ImportError, OSError, RuntimeError):
        return None
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(len(per_cpu))
    cpus = [per_cpu[i] for i in mine if i < len(per_cpu)]
    busy = sum(c.user + c.system + getattr(c, "nice", 0.0) + getattr(c, "irq", 0.0) + getattr(c, "softirq", 0.0)
               for c in cpus)
    steal = sum(getattr(c, "steal", 0.0) for c in cpus)
    t = os.times()
    return Counters(time.monotonic(), busy, steal, t.user + t.system, _throttled())


def _throttled() -> float:
    """Seconds the cgroup (v2 cpu.stat, v1 cpu.stat) has throttled this container; 0 where there is no quota."""
    for path, key, scale in (("/sys/fs/cgroup/cpu.stat", "throttled_usec", 1e-6),
                             ("/sys/fs/cgroup/cpu/cpu.stat", "throttled_time", 1e-9)):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) * scale
        except (OSError, ValueError):
            continue
    return 0.0


Source = Callable[[], Counters | None]


def between(before: Counters | None, after: Counters | None, cores: int | None = None) -> Load | None:
    """Other work's share of the window, or None where it cannot be judged (no counters, under MIN_WINDOW_S)."""
    if before is None or after is None or after.wall - before.wall < MIN_WINDOW_S:
        return None
    cores = cores or affinity_cores()
    capacity = (after.wall - before.wall) * cores
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own))
    share = min(1.0, others / capacity)
    throttled = min(1.0, max(0.0, after.throttled - before.throttled) / (after.wall - before.wall))
    return Load(share, min(1.0, (after.steal - before.steal) / capacity), cores * (1 - share),
                after.wall - before.wall, cores, throttled)


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
