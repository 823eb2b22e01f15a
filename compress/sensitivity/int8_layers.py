"""Which layers break int8: each layer's output in the int8 model against fp32, and each layer int8 alone.

The first figure comes from ONNX Runtime's QDQ debugging API (`qdq_loss_debug`): both models are
augmented to output every Conv/Gemm/MatMul tensor, run on the same validation images, and each
layer's output is compared (SQNR in dB: 20 log10(|fp32| / |fp32 - int8|); higher is closer; it
includes the error of the layers before it). The second quantizes one layer at a time
(`nodes_to_quantize`) with the calibration of `run quantization` and scores that model on the
validation split: a layer whose int8 alone costs more than the tolerance is worth keeping in fp32.
Activation ranges are collected once and reused for every layer (ONNX Runtime's calibration cache).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from torch import nn

from compress.errors import CompressError
from compress.int8 import ort_qdq
from compress.int8.calibration import CalibrationReader, calibration_batches
from compress.log import log, quiet
from compress.sensitivity.scans import LayerError, QuantizationScan, ScanSettings
from compress.store.atomic import scratch_dir

SQNR_IMAGES = 64  # validation images (at 32 px) whose activations are compared; every tensor is held in memory


def _compared_tensor(node: Any, graph: Any) -> str:
    """The tensor a layer's output is compared on: its ReLU's output when a ReLU follows (ONNX Runtime's QDQ
    quantizer fuses Conv+ReLU, so the int8 model has no tensor between them), else its own output."""
    consumers = [n for n in graph.node if node.output[0] in n.input]
    if len(consumers) == 1 and consumers[0].op_type == "Relu":
        return consumers[0].output[0]
    return node.output[0]


def _sqnr(fp32: Path, int8: Path, images: np.ndarray, outputs: dict[str, str], tmp: Path) -> dict[str, float]:
    """SQNR of each compute node's output, int8 model against fp32, on the same images."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        modify_model_output_intermediate_tensors,
    )

    acts = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        aug = tmp / f"{name}.aug.onnx"
        with quiet():
            modify_model_output_intermediate_tensors(str(path), str(aug))  # every float tensor
            acts[name] = collect_activations(str(aug), CalibrationReader([images[i:i + 16] for i in range(0, len(images), 16)]))
        aug.unlink(missing_ok=True)
    out = {}
    for node, tensor in outputs.items():
        # in the int8 model a fused Conv+ReLU keeps the pre-ReLU values under the ReLU's name and applies the
        # ReLU by the clip of the QuantizeLinear after it: compare what leaves that QDQ pair
        a = acts["fp32"].get(tensor)
        b = acts["int8"].get(f"{tensor}_DequantizeLinear_Output", acts["int8"].get(tensor))
        if a is not None and b is not None:
            out[node] = float(compute_signal_to_quantization_noice_ratio(a, b))
    return out


def scan(model: nn.Module, loaders: Any, settings: ScanSettings, baseline: str, command: str,
         progress: Callable[[str], None] = log) -> QuantizationScan:
    """Per-layer int8 error and accuracy-when-alone, on the validation split; names the layers to keep fp32."""
    start = time.perf_counter()
    batches = calibration_batches(loaders.train, settings.calibration_size)
    val_x = np.concatenate([x.numpy() for x, _ in loaders.val])
    size = val_x.shape[-1] if len(val_x) else 32
    val_x = val_x[:max(4, int(SQNR_IMAGES * (32 / size) ** 2))]  # every activation is held in memory: fewer at 224 px
    if len(val_x) == 0:
        raise CompressError("the validation split is empty: sensitivity is measured on it, never on the test split")
    with scratch_dir(settings.temp_root, "int8-scan") as d:
        tmp = Path(d)
        prepared = ort_qdq.prepare(model, next(iter(loaders.val))[0][:32], tmp / "fp32.onnx", tmp / "pre.onnx")
        quantize = ort_qdq.Quantizer(prepared.pre, batches, tmp / "ranges.json")
        graph = onnx.load(str(prepared.pre)).graph
        nodes = [n for n in graph.node if n.op_type in ort_qdq.COMPUTE]
        outputs = {n.name: _compared_tensor(n, graph) for n in nodes}
        progress(f"int8 sensitivity: {len(nodes)} layers; every layer int8, then each layer alone")
        int8, one = tmp / "int8.onnx", tmp / "one.onnx"
        quantize(int8)
        base = ort_qdq.accuracy(prepared.fp32, loaders.val, settings.threads)
        all_int8 = ort_qdq.accuracy(int8, loaders.val, settings.threads)
        sqnr = _sqnr(prepared.pre, int8, val_x, outputs, tmp)
        layers = []
        for n in nodes:
            quantize(one, only=[n.name])
            acc = ort_qdq.accuracy(one, loaders.val, settings.threads)
            layers.append(LayerError(n.name, n.op_type, sqnr.get(n.name, float("nan")), acc))
            progress(f"int8 sensitivity {n.name} ({n.op_type}): SQNR {sqnr.get(n.name, float('nan')):.1f} dB, "
                     f"validation top-1 with only it int8 {100 * acc:.2f}% (fp32 {100 * base:.2f}%)")
    keep = tuple(x.layer for x in layers
                 if x.alone_accuracy is not None and 100 * (base - x.alone_accuracy) > settings.tolerance)
    return QuantizationScan(baseline=baseline, val_images=len(np.concatenate([y.numpy() for _, y in loaders.val])),
                            val_accuracy=base, int8_accuracy=all_int8, layers=tuple(layers),
                            seconds=time.perf_counter() - start, command=command, tolerance=settings.tolerance,
                            keep_fp32=keep)
