"""The machine a row was measured on: versions, CPU model and instruction sets (deploy/machine.py), GPU, commit."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from compress.deploy import machine
from compress.measuring.timing import default_threads


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _static_env() -> dict[str, Any]:
    import torch
    import torchvision

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    cpu, flags = machine.cpu_info()
    has = machine.instruction_sets(flags)
    from compress.measuring.runtimes import openvino_cpu

    try:
        nncf = importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:  # not installed: the row says so
        nncf = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort,
        "openvino": openvino_cpu.version(),
        "nncf": nncf,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_vnni": bool(has["vnni"]),
        "cpu_avx512": bool(has["avx512"]),
        "cpu_bf16": bool(has["bf16"]),
        "cpu_avx2": bool(has["avx2"]),  # rows before these three say nothing of them: a bundle reads "unknown"
        "cpu_avx_vnni": bool(has["avx_vnni"]),
        "cpu_amx": bool(has["amx"]),
        "cores": default_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


def environment(threads: int, dtype: str = "float32") -> dict[str, Any]:
    return {**_static_env(), "threads": threads, "dtype": dtype}
