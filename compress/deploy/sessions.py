"""Inference sessions with the settings every figure was measured with, for the harness and the bundles alike.

ONNX Runtime: `threads` intra-op threads, one inter-op thread, intra-op spinning off (spinning slows whatever
runs next by ~40% here); OpenVINO: fp32 pinned (its CPU plugin runs "fp32" models in bf16 on CPUs that have
it), `threads` threads, one stream, latency hint. Ships inside every bundle: imports nothing of compress.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

INPUT, OUTPUT = "input", "logits"
ORT, OPENVINO = "ort", "openvino"  # the runtimes' one names (measuring/runtimes)


class SessionError(RuntimeError):
    """A model file a runtime cannot load or compile (named in one line)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ort_session(path: Path, threads: int, spinning: bool = False) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SessionError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None


def openvino_settings(threads: int, precision: str = "f32") -> dict[str, Any]:
    """The properties every OpenVINO compile uses; recorded in rows as they are set."""
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}


def openvino_compiled(path: Path, threads: int, batch: int | None = None, precision: str = "f32") -> Any:
    """An OpenVINO compiled model of an ONNX or IR file; `batch` fixes the batch dimension (static shape)."""
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")  # no network here, and none wanted
    try:
        import openvino as ov
    except ImportError as exc:
        raise SessionError(f"OpenVINO is not installed ({exc.name or 'openvino'}): pip install openvino") from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
        if batch is not None:
            shape = model.input(0).get_partial_shape()
            shape[0] = batch
            model.reshape({model.input(0): shape})
        return core.compile_model(model, "CPU", openvino_settings(threads, precision))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long C++ traces
        raise SessionError(f"OpenVINO cannot compile {path}: {_first_line(exc)}") from None


def predictor(path: Path, runtime: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 N,C,H,W batch to the model's N,K outputs, on `runtime` ("ort" or "openvino")."""
    if runtime == ORT:
        sess = ort_session(path, threads)
        return lambda x: sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]
    if runtime == OPENVINO:
        compiled = openvino_compiled(path, threads)  # dynamic batch: one compile serves every batch size
        return lambda x: np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[0])
    raise SessionError(f"unknown runtime {runtime!r}: choose {ORT} or {OPENVINO}")
