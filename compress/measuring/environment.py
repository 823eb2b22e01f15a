"""The machine a row was measured on: versions, CPU model and flags (VNNI, AVX-512, BF16), GPU, commit."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from compress.measuring.timing import default_threads


def _cpu_info() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.processor() or platform.machine(), []
    for line in text.splitlines():
        if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    return model, flags


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
    cpu, flags = _cpu_info()
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
        "cpu_vnni": any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8")),
        "cpu_avx512": "avx512f" in flags,
        "cpu_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
        "cores": default_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


def environment(threads: int, dtype: str = "float32") -> dict[str, Any]:
    return {**_static_env(), "threads": threads, "dtype": dtype}
