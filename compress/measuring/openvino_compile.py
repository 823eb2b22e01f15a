"""OpenVINO compiled models as every figure uses them (fp32 pinned, threads, one stream), without PyTorch.

The timed models (runtimes/openvino_cpu.py) and the memory probe's child process (which must not
pay for importing PyTorch, or its peak would be PyTorch's) compile here, with the same settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compress.deploy import sessions
from compress.errors import CompressError
from compress.measuring.cpuload import affinity_cores


def missing() -> str | None:
    """Why OpenVINO cannot run here, or None when it can."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"OpenVINO is not installed ({exc.name or 'openvino'}): pip install openvino"
    return None


def version() -> str | None:
    """The installed OpenVINO's version, read from its metadata: importing OpenVINO costs every process a second."""
    import importlib.metadata

    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return None


def settings(threads: int | None, precision: str = "f32") -> dict[str, Any]:
    """The properties every OpenVINO compile uses; recorded in rows as they are set."""
    return sessions.openvino_settings(threads or affinity_cores(), precision)


def core() -> Any:
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # no network here, and none wanted
    import openvino as ov

    return ov.Core()


def compile_file(path: Path, threads: int | None, batch: int | None = None, precision: str = "f32") -> Any:
    """An OpenVINO compiled model of an ONNX or IR file; `batch` fixes the batch dimension (static shape). The
    compile lives in deploy/sessions.py, which the bundles' runner uses too."""
    try:
        return sessions.openvino_compiled(path, threads or affinity_cores(), batch, precision)
    except sessions.SessionError as exc:
        raise CompressError(str(exc)) from None


def runner(compiled: Any, input_shape: tuple[int, int, int], batch: int) -> Callable[[], object]:
    """One synchronous inference on a batch allocated beforehand (the same random batch ORT is timed on)."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})
