"""ONNX export with a parity check, and the ONNX Runtime session that checks it.

Every model is exported the same way (torch.export-based exporter, dynamic batch axis) and the
export is trusted only after ONNX Runtime's fp32 output matches PyTorch's on real test images.
ONNX Runtime and OpenVINO both time this one file; the int8 compressor and scan quantize it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError, first_line
from compress.log import quiet
from compress.measuring import ort_session, timing
from compress.measuring.ort_session import INPUT, OUTPUT, run
from compress.measuring.timing import default_threads
from compress.store.atomic import atomic_open

PARITY_ATOL = 1e-4  # max |ORT fp32 - PyTorch| on the logits of a batch of test images


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
    """A CPU ONNX Runtime session with a fixed intra-op thread count (as the PyTorch timings), spinning off."""
    return ort_session.make(path, threads or default_threads(), timing.ORT_ALLOW_SPINNING)
