"""NNCF post-training int8 for OpenVINO, with or without its accuracy control, from the same fp32 export and
calibration images as ONNX Runtime's recipe. Saved with fp32 weights where NNCF left fp32 (never fp16).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from compress.errors import CompressError, first_line
from compress.log import quiet
from compress.measuring.openvino_compile import core, missing
from compress.measuring.runtimes.openvino_cpu import logits


@dataclass(frozen=True)
class AccuracyControl:
    """NNCF's quantize_with_accuracy_control: the validation images and labels, and the drop allowed (points)."""

    val: list[tuple[np.ndarray, np.ndarray]]
    max_drop: float


def _top1(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """The validation function NNCF calls: top-1 of a compiled model over (images, labels) batches."""
    right = total = 0
    for x, y in items:
        right += int((logits(compiled, x).argmax(1) == y).sum())
        total += len(y)
    return right / max(total, 1)


def fp32_layers(path: Path) -> list[str]:
    """The Convolution and MatMul operations of a saved NNCF IR that NNCF left (or put back) in fp32: in the saved
    file an int8 weight reaches its layer through a dequantizing Multiply, an fp32 weight is a plain Constant."""
    model = core().read_model(str(path))
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "MatMul")
            and op.input(1).get_source_output().get_node().get_type_name() == "Constant"]


def quantize(fp32_onnx: Path, batches: list[np.ndarray], out_xml: Path, keep_first_last: bool,
             control: AccuracyControl | None = None) -> list[str]:
    """NNCF post-training int8 of the fp32 ONNX file on these calibration batches; with `control`, NNCF's
    accuracy-controlled variant on the validation images. Returns the fp32 layers.

    `keep_first_last` leaves the first convolution and the last matrix product in fp32, as the
    ONNX Runtime recipe does, so the two int8 rows quantize the same layers.
    """
    why = missing()
    if why:
        raise CompressError(why)
    try:
        import nncf
    except ImportError as exc:
        raise CompressError(f"NNCF is not installed ({exc.name or 'nncf'}): pip install nncf") from None
    import openvino as ov

    model = core().read_model(str(fp32_onnx))
    compute = [op.get_friendly_name() for op in model.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "MatMul")]
    ignored = nncf.IgnoredScope(names=[compute[0], compute[-1]]) if keep_first_last and compute else None
    scope = {"ignored_scope": ignored} if ignored else {}
    try:
        with quiet("nncf", stderr=True):
            if control is None:
                int8 = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), **scope)
            else:
                int8 = nncf.quantize_with_accuracy_control(
                    model, nncf.Dataset(batches), nncf.Dataset(control.val, lambda item: item[0]), _top1,
                    max_drop=control.max_drop / 100, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(batches),
                    **scope)
            out_xml.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(int8, str(out_xml), compress_to_fp16=False)
    except CompressError:
        raise
    except Exception as exc:
        raise CompressError(f"NNCF quantization failed ({type(exc).__name__}: {first_line(exc)})") from None
    return fp32_layers(out_xml)
