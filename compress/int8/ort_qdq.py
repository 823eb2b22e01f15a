"""ONNX Runtime's static int8 for CPUs, as its quantization guide recommends: export fp32 (parity-checked),
`quant_pre_process`, calibrate activation ranges, `quantize_static` to QDQ with signed int8 weights and activations.

Activation ranges are calibrated on the first quantization and read back from ONNX Runtime's calibration cache
by every later one, so the budget loop and the per-layer scan compare models built from the same ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import onnx
import torch

from compress.errors import CompressError, first_line
from compress.int8.calibration import CalibrationReader
from compress.log import quiet
from compress.measuring import onnx_export

COMPUTE = ("Conv", "Gemm", "MatMul")  # the layers int8 applies to; everything else follows them
Method = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True)
class Prepared:
    """The files int8 starts from: the parity-checked fp32 export, its pre-processed copy, its compute layers."""

    fp32: Path
    pre: Path
    compute: list[str]  # Conv/Gemm/MatMul node names in graph order

    def first_last(self) -> list[str]:
        """The first convolution and the last linear layer: the most sensitive to int8, <1% of VGG16's MACs."""
        return [self.compute[0], self.compute[-1]] if self.compute else []


def prepare(model: torch.nn.Module, example: torch.Tensor, fp32: Path, pre: Path) -> Prepared:
    """Export `model` (checked against PyTorch on `example`) and run ONNX Runtime's quantization pre-processing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_export.export_onnx(model, fp32, example)
    with quiet():
        quant_pre_process(str(fp32), str(pre))
    compute = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in COMPUTE]
    return Prepared(fp32, pre, compute)


@dataclass(frozen=True)
class Quantizer:
    """quantize_static to QDQ S8S8 from one pre-processed file and one set of calibration batches; `ranges` is
    the calibration cache every call after the first reads back."""

    pre: Path
    batches: list[np.ndarray]
    ranges: Path
    method: Method = "minmax"
    per_channel: bool = True

    def __call__(self, out: Path, fp32_layers: Sequence[str] = (), only: Sequence[str] | None = None) -> None:
        """Write the int8 model to `out` with `fp32_layers` left in fp32; `only`: quantize just these layers."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.method]
        try:
            with quiet():
                quantize_static(str(self.pre), str(out), CalibrationReader(self.batches),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, per_channel=self.per_channel, calibrate_method=method,
                                nodes_to_exclude=list(fp32_layers), nodes_to_quantize=None if only is None else list(only),
                                calibration_cache_path=str(self.ranges))
        except Exception as exc:
            raise CompressError(f"ONNX Runtime quantization failed ({type(exc).__name__}: {first_line(exc)})") from None
        finally:
            for tmp in out.parent.glob("augmented_model*.onnx"):  # the calibrator's scratch copies
                tmp.unlink(missing_ok=True)


def accuracy(path: Path, loader: Any, threads: int | None) -> float:
    """Top-1 (0-1) of an ONNX file on a loader's images, run by ONNX Runtime itself (an int8 row's is int8's)."""
    from compress.measuring.runtimes import onnx_runtime

    preds, true = onnx_runtime.predict(path, loader, threads)
    return float((preds == true).mean())
