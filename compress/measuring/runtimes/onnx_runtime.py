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
from torch import nn

from compress.errors import CompressError, first_line
from compress.log import log, quiet
from compress.measuring.runtimes._registry import register
from compress.measuring.timing import default_threads
from compress.store.atomic import atomic_open

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

ORT_CPU = "ort-cpu"
PARITY_ATOL = 1e-4  # max |ORT fp32 - PyTorch| on the logits of a batch of test images
INPUT, OUTPUT = "input", "logits"


def export_onnx(model: nn.Module, path: Path, check_inputs: torch.Tensor) -> float:
    """Export `model` (fp32, eval) to `path`; fail unless ORT reproduces PyTorch within PARITY_ATOL.

    Returns the measured max absolute difference. The file is written atomically.
    """
    model = model.cpu().eval()
    check_inputs = check_inputs.cpu().float()
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with quiet("torch.onnx", stderr=True):
            program = torch.onnx.export(model, (check_inputs[:2],), dynamo=True, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes=({0: batch},), verbose=False)
            raw = program.model_proto.SerializeToString()
    except Exception as exc:  # the exporter raises many types; the user needs the cause in one line
        raise CompressError(f"ONNX export of the model failed ({type(exc).__name__}: {first_line(exc)})") from None
    if len(raw) >= 2**31:
        raise CompressError(f"the model is {len(raw) / 1e9:.1f} GB, above ONNX's 2 GB single-file limit")
    with atomic_open(Path(path), "wb") as fh:
        fh.write(raw)
    diff = parity(model, path, check_inputs)
    if not diff <= PARITY_ATOL:
        Path(path).unlink(missing_ok=True)
        raise CompressError(f"ONNX export does not reproduce PyTorch: max |ORT - PyTorch| = {diff:.3g} on "
                            f"{len(check_inputs)} test images, above {PARITY_ATOL:g}; the model was not exported")
    return diff


def parity(model: nn.Module, path: Path, inputs: torch.Tensor) -> float:
    """Max absolute difference between PyTorch's and ONNX Runtime's fp32 logits."""
    with torch.inference_mode():
        want = model.cpu().eval()(inputs).numpy()
    got = run(session(path), inputs.numpy())
    return float(np.abs(got - want).max())


def session(path: Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session with a fixed intra-op thread count (as the PyTorch timings)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompressError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None


def run(sess: Any, x: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


def ort_runner(sess: Any, input_shape: tuple[int, int, int], batch: int) -> Callable[[], np.ndarray]:
    """One ONNX Runtime call on a batch allocated beforehand (timed by the harness and the benchmarks)."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
    return lambda: run(sess, x)


def predict(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels from the ONNX file itself (so int8 accuracy is int8's)."""
    sess = session(path, threads)
    return labels(lambda x: run(sess, x), batches)


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


@register(ORT_CPU, "ort", "ORT", "ONNX Runtime (CPU)", order=30, default=True, help="ONNX Runtime, CPU", reads_onnx=True,
          score=_score, scores=lambda artifact: artifact.onnx is not None)
def time_ort(m: Measurement) -> None:
    """ONNX Runtime's CPU session of the ONNX file, interleaved with the reference's ONNX file when there is one."""
    path = m.onnx()
    if path is None:
        return
    ref_onnx, shape = m.reference_onnx(), m.subject.shape
    log(f"timing {m.subject.label} with ONNX Runtime on CPU" + m.against(ref_onnx))
    sess = session(path, m.cfg.threads)
    ref_sess = session(ref_onnx, m.cfg.threads) if ref_onnx else None
    m.time(ORT_CPU, lambda b: ort_runner(sess, shape, b),
           (lambda b: ort_runner(ref_sess, shape, b)) if ref_sess is not None else None)
