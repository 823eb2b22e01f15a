"""ONNX export with a parity check, and ONNX Runtime sessions timed like PyTorch eager.

Every model is exported the same way (torch.export-based exporter, dynamic batch axis) and
the export is trusted only after ONNX Runtime's fp32 output matches PyTorch's on real test
images. ONNX Runtime latency is timed by `time_ort` below, the same statistics and the
same thread count as the PyTorch columns, so the two backends are comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch

from compress.errors import CompressError
from compress.log import log
from compress.measuring import onnx_export, ort_session
from compress.measuring.runtimes._registry import register

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement


ORT_CPU = "ort"


def ort_runner(sess: Any, input_shape: tuple[int, int, int], batch: int) -> Callable[[], np.ndarray]:
    """One ONNX Runtime call on a batch allocated beforehand (timed by the harness and the benchmarks)."""
    return ort_session.runner(sess, input_shape, batch)


def predict(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels from the ONNX file itself (so int8 accuracy is int8's)."""
    sess = onnx_export.session(path, threads)
    return labels(lambda x: onnx_export.run(sess, x), batches)


def labels(logits_of: Callable[[np.ndarray], np.ndarray],
           batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over a loader, from any runtime's logits (ONNX Runtime, OpenVINO)."""
    preds, true = [], []
    for x, y in batches:
        preds.append(logits_of(x.numpy()).argmax(1))
        true.append(y.numpy())
    if not preds:
        raise CompressError("the test split is empty: nothing to evaluate")
    return np.concatenate(preds), np.concatenate(true)


def _score(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    path = m.onnx()
    assert path is not None
    return predict(path, m.test_loader, m.cfg.threads)


def _memory(m: Measurement) -> Any:
    from compress.measuring import memory, timing

    path = m.onnx()
    return None if path is None else memory.Job(memory.ort_file, (path, m.cfg.threads or timing.default_threads(),
                                                                  m.subject.shape, timing.ORT_ALLOW_SPINNING),
                                                m.cfg.batches, ("onnxruntime",))


@register(ORT_CPU, "ONNX Runtime (CPU)", order=30, default=True, help="ONNX Runtime, CPU", reads_onnx=True,
          score=_score, scores=lambda artifact: artifact.onnx is not None, memory=_memory)
def time_ort(m: Measurement) -> None:
    """ONNX Runtime's CPU session of the ONNX file, interleaved with the reference's ONNX file when there is one."""
    path = m.onnx()
    if path is None:
        if m.no_onnx:
            m.timings.notes[ORT_CPU] = f"n/a ({m.no_onnx})"
        return
    ref_onnx, shape = m.reference_onnx(), m.subject.shape
    log(f"timing {m.subject.label} with ONNX Runtime on CPU" + m.against(ref_onnx))
    sess = onnx_export.session(path, m.cfg.threads)
    ref_sess = onnx_export.session(ref_onnx, m.cfg.threads) if ref_onnx else None
    m.time(ORT_CPU, lambda b: ort_runner(sess, shape, b),
           (lambda b: ort_runner(ref_sess, shape, b)) if ref_sess is not None else None)
