"""Static post-training int8 (seed 004's method 4, done so that it is really int8).

Seed 004 calls `prepare`/`convert` with no calibration and no quant stubs, which leaves an
fp32 model. Here ONNX Runtime does it as its quantization guide recommends for CPUs: export
fp32 (parity-checked), `quant_pre_process`, calibrate activation ranges on training images,
then `quantize_static` to QDQ with signed int8 weights (per channel) and activations.
The row is measured from the int8 file itself: its size, its session's latency, its accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import onnx
import torch
from torch import nn

from compress.compressors._registry import Context, Planned, register
from compress.errors import CompressError
from compress.log import quiet
from compress.measuring import onnx_export
from compress.measuring.calibration import MIN_CALIBRATION, CalibrationReader, calibration_batches
from compress.models.artifact import Artifact
from compress.models.checkpoints import DYNAMIC_INT8, DYNAMIC_INT8_BACKEND, save_checkpoint
from compress.models.vgg import ModelSpec


@dataclass(frozen=True)
class QuantizationConfig:
    backend: Literal["onnxruntime", "openvino", "torch"] = field(default="onnxruntime", metadata={
        "help": "onnxruntime: static int8 ONNX (QDQ); openvino: NNCF post-training int8, run by OpenVINO; "
                "torch: PyTorch dynamic int8 of the Linear layers"})
    calibration: Literal["minmax", "entropy", "percentile"] = field(default="minmax", metadata={
        "help": "how activation ranges are chosen from the calibration images (onnxruntime backend; NNCF "
                "chooses its own)"})
    calibration_size: int = field(default=320, metadata={
        "help": f"training images used for calibration (at least {MIN_CALIBRATION})"})
    per_channel: bool = field(default=True, metadata={"help": "one weight scale per output channel"})
    keep_fp32: Literal["first-last", "none"] = field(default="first-last", metadata={
        "help": "layers left in fp32: the first convolution and the last linear layer (the most sensitive to "
                "int8, <1% of the MACs), or none"})

    def __post_init__(self) -> None:
        if self.calibration_size < MIN_CALIBRATION:
            raise CompressError(f"--calibration-size must be at least {MIN_CALIBRATION} images, got "
                                f"{self.calibration_size}: fewer give unreliable activation ranges")


def _onnxruntime(model: nn.Module, config: QuantizationConfig, ctx: Context) -> Artifact:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = calibration_batches(ctx.loaders.train, config.calibration_size)
    check, _ = next(iter(ctx.loaders.test))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    fp32, pre, int8 = (ctx.run_dir / n for n in ("model.fp32.onnx", "model.pre.onnx", "model.int8.onnx"))
    onnx_export.export_onnx(model, fp32, check[:32])
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    try:
        with quiet():
            quant_pre_process(str(fp32), str(pre))
            compute = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
            exclude = [compute[0], compute[-1]] if config.keep_fp32 == "first-last" and compute else []
            quantize_static(str(pre), str(int8), CalibrationReader(batches), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            per_channel=config.per_channel, calibrate_method=method, nodes_to_exclude=exclude)
    except Exception as exc:
        raise CompressError(f"ONNX Runtime quantization failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        pre.unlink(missing_ok=True)
        for tmp in ctx.run_dir.glob("augmented_model*.onnx"):  # the calibrator's scratch copies
            tmp.unlink(missing_ok=True)
    channel = "per-channel" if config.per_channel else "per-tensor"
    kept = "; first conv + last linear fp32" if exclude else ""
    return Artifact(backend=f"onnxruntime int8 QDQ S8S8 {channel} ({config.calibration}, "
                            f"{config.calibration_size} images{kept})", file=int8, onnx=int8, fp32_onnx=fp32)


def _openvino(model: nn.Module, config: QuantizationConfig, ctx: Context) -> Artifact:
    """NNCF post-training int8 from the same parity-checked fp32 export and calibration images as ONNX Runtime's."""
    from compress.measuring.runtimes import openvino_cpu

    if config.calibration != "minmax":
        raise CompressError(f"--calibration {config.calibration} is an ONNX Runtime setting; NNCF chooses its own "
                            "ranges: drop --calibration with --backend openvino")
    why = openvino_cpu.missing()
    if why:
        raise CompressError(why)
    batches = calibration_batches(ctx.loaders.train, config.calibration_size)
    check, _ = next(iter(ctx.loaders.test))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    fp32, ir = ctx.run_dir / "model.fp32.onnx", ctx.run_dir / "model.int8.xml"
    onnx_export.export_onnx(model, fp32, check[:32])
    openvino_cpu.quantize(fp32, batches, ir, keep_first_last=config.keep_fp32 == "first-last")
    kept = "; first conv + last matmul fp32" if config.keep_fp32 == "first-last" else ""
    return Artifact(backend=f"openvino int8 NNCF PTQ ({config.calibration_size} images{kept})", file=ir, ir=ir,
                    fp32_onnx=fp32)


def _torch(model: nn.Module, spec: ModelSpec, ctx: Context) -> Artifact:
    """Dynamic int8 of the Linear layers, where ~90% of VGG16's weights live (convolutions stay fp32).

    torch.ao's static flow is deprecated and the PT2E flow lives in torchao, which is not a
    dependency; dynamic quantization is the PyTorch int8 path that needs neither.
    """
    with quiet():
        qmodel = torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {nn.Linear}, dtype=torch.qint8)
    path = ctx.run_dir / "model.pt"
    save_checkpoint(qmodel, spec, path, extra={"quantization": DYNAMIC_INT8})
    return Artifact(backend=DYNAMIC_INT8_BACKEND, file=path, module=qmodel)


def _fit_to_data(config: QuantizationConfig, train_images: int) -> QuantizationConfig:
    """Small data (e.g. --max-samples): calibrate on every training image rather than fail."""
    if config.calibration_size > train_images:
        return replace(config, calibration_size=train_images)
    return config


@register("quantization", QuantizationConfig, finetune=False, adapt=_fit_to_data, order=30,
          plan=lambda options: [Planned("quantization (int8, ONNX Runtime)", QuantizationConfig(), fixed=3)])
def quantization(model: nn.Module, spec: ModelSpec, config: QuantizationConfig, ctx: Context) -> Artifact:
    """Static post-training int8 with ONNX Runtime (QDQ, S8S8, per-channel), NNCF for OpenVINO, or PyTorch dynamic."""
    if config.backend == "torch":
        return _torch(model, spec, ctx)
    if config.backend == "openvino":
        return _openvino(model, config, ctx)
    return _onnxruntime(model, config, ctx)
