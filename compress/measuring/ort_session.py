"""ONNX Runtime sessions as every figure uses them, without importing PyTorch.

The timed sessions, the parity checks and the memory probe's child process (which must not pay
for importing PyTorch, or its peak would be PyTorch's) all build their sessions here, so the
settings a figure was measured with are the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from compress.deploy import sessions
from compress.deploy.sessions import INPUT, OUTPUT
from compress.errors import CompressError

__all__ = ["INPUT", "OUTPUT", "make", "run", "runner"]


def make(path: Path, threads: int, spinning: bool) -> Any:
    """A CPU session: `threads` intra-op threads, one inter-op thread, intra-op spinning as given (the settings
    live in deploy/sessions.py, which the bundles' runner uses too)."""
    try:
        return sessions.ort_session(path, threads, spinning)
    except sessions.SessionError as exc:
        raise CompressError(str(exc)) from None


def run(sess: Any, x: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


def runner(sess: Any, input_shape: tuple[int, ...], batch: int) -> Callable[[], np.ndarray]:
    """One call on a batch allocated beforehand (timed by the harness and the benchmarks)."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
    return lambda: run(sess, x)
