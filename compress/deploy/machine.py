"""The CPU a figure was measured on: its model and the instruction sets int8 and bf16 kernels depend on.

Rows record it (measuring/environment.py) and bundles compare it with the machine they run on: int8 results and
speed can change on a CPU without VNNI (onnxruntime#5849). Ships inside every bundle: imports nothing of compress.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# instruction set -> the /proc/cpuinfo flags that provide it (any one)
INSTRUCTION_SETS = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni", "amx_int8"),  # int8 dot products (ORT and OpenVINO int8 kernels)
    "avx_vnni": ("avx_vnni",),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "amx": ("amx_tile",),
}


def cpu_info() -> tuple[str, list[str]]:
    """(CPU model, its flags); on a system without /proc/cpuinfo the flags are unknown (empty)."""
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, []
    flags: list[str] = []
    for line in text.splitlines():
        if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    return model, flags


def instruction_sets(flags: list[str] | None = None) -> dict[str, bool | None]:
    """Which of INSTRUCTION_SETS this CPU has (None for each when its flags cannot be read)."""
    flags = cpu_info()[1] if flags is None else flags
    return {name: (any(f in flags for f in provided) if flags else None) for name, provided in INSTRUCTION_SETS.items()}


def describe() -> dict[str, Any]:
    """This machine, as a bundle records and compares it."""
    model, flags = cpu_info()
    return {"cpu": model, "instruction_sets": instruction_sets(flags), "cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def missing(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """The instruction sets the recorded machine had and this one lacks (unknown on either side: not listed)."""
    return [name for name, had in recorded.items() if had is True and here.get(name) is False]
