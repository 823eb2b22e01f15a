"""Static post-training int8 (seed 004's method 4, done so that it is really int8).

Seed 004 calls `prepare`/`convert` with no calibration and no quant stubs, which leaves an
fp32 model. Here ONNX Runtime does it as its quantization guide recommends for CPUs: export
fp32 (parity-checked), `quant_pre_process`, calibrate activation ranges on training images,
then `quantize_static` to QDQ with signed int8 weights (per channel) and activations.
The row is measured from the int8 file itself: its size, its session's latency, its accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import nn

from compress.compressors._registry import Context, Planned, Stored, register
from compress.errors import CompressError
from compress.int8 import budget, ort_qdq
from compress.int8.calibration import CALIBRATION_SIZE, MIN_CALIBRATION, calibration_batches, check_size
from compress.log import quiet
from compress.measuring import onnx_export
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
    calibration_size: int = field(default=CALIBRATION_SIZE, metadata={
        "help": f"training images used for calibration (at least {MIN_CALIBRATION})"})
    per_channel: bool = field(default=True, metadata={"help": "one weight scale per output channel"})
    keep_fp32: Literal["first-last", "none"] = field(default="first-last", metadata={
        "help": "layers left in fp32: the first convolution and the last linear layer (the most sensitive to "
                "int8, <1% of the MACs), or none"})
    max_drop: float | None = field(default=None, metadata={
        "help": "points of validation top-1 the int8 model may lose against its fp32 source: layers go back to "
                "fp32, most sensitive first (a stored `sensitivity quantization` scan of the same weights, or one "
                "run here), until it is within; with --backend openvino, NNCF's quantize_with_accuracy_control"})
    layer_order: tuple[str, ...] = field(default=(), metadata={"cli": False})  # filled from a stored scan
    order_from: str = field(default="", metadata={"cli": False})  # which scan gave `layer_order`

    def __post_init__(self) -> None:
        check_size(self.calibration_size)
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and 0 <= self.max_drop <= 100):
            raise CompressError(f"--max-drop must be a number of points from 0 to 100, got {self.max_drop}")
        if self.max_drop is not None and self.backend == "torch":
            raise CompressError("--max-drop puts layers back to fp32 in a static int8 model; --backend torch is "
                                "dynamic int8 of the Linear layers, with no such loop: use --backend onnxruntime "
                                "or openvino")


def _sources(config: QuantizationConfig, ctx: Context) -> tuple[list[np.ndarray], torch.Tensor]:
    """What both int8 backends start from: the calibration batches (training split) and the images the fp32
    export is checked on (test split, as every row's export)."""
    batches = calibration_batches(ctx.loaders.train, config.calibration_size)
    check, _ = next(iter(ctx.loaders.test))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    return batches, check[:32]


def _onnxruntime(model: nn.Module, config: QuantizationConfig, ctx: Context) -> Artifact:
    batches, check = _sources(config, ctx)
    fp32, pre, int8 = (ctx.run_dir / n for n in ("model.fp32.onnx", "model.pre.onnx", "model.int8.onnx"))
    ranges = ctx.run_dir / "ranges.json"
    try:
        prepared = ort_qdq.prepare(model, check, fp32, pre)
        quantize = ort_qdq.Quantizer(pre, batches, ranges, config.calibration, config.per_channel)
        exclude = prepared.first_last() if config.keep_fp32 == "first-last" else []
        if config.max_drop is None:
            quantize(int8, exclude)
            facts: dict = {"fp32_layers": exclude}
        else:
            facts = _within_budget(model, config, ctx, prepared, budget.Tools(quantize, _scorer(ctx), int8))
    finally:
        pre.unlink(missing_ok=True)
        ranges.unlink(missing_ok=True)
    channel = "per-channel" if config.per_channel else "per-tensor"
    if config.max_drop is not None:
        kept = f"; {len(facts['fp32_layers'])} layer(s) fp32 within --max-drop {config.max_drop:g}"
    else:
        kept = "; first conv + last linear fp32" if exclude else ""
    return Artifact(backend=f"onnxruntime int8 QDQ S8S8 {channel} ({config.calibration}, "
                            f"{config.calibration_size} images{kept})", file=int8, onnx=int8, fp32_onnx=fp32,
                    facts=facts)


def _scorer(ctx: Context) -> budget.Score:
    return lambda path: ort_qdq.accuracy(path, ctx.loaders.val, ctx.threads)


def _within_budget(model: nn.Module, config: QuantizationConfig, ctx: Context, prepared: ort_qdq.Prepared,
                   tools: budget.Tools) -> dict:
    """--max-drop: the budget loop (int8/budget.py) on the validation split, in the scan's order, starting from
    the layers --keep-fp32 keeps."""
    source = config.order_from or "a scan of this model run here (validation split)"

    def ranked() -> list[str]:  # only asked for when full int8 misses the budget
        names = list(config.layer_order) or _scan_order(model, config, ctx)
        unknown = [n for n in names if n not in prepared.compute]
        if unknown:
            raise CompressError(f"the sensitivity scan ({source}) names layers this model does not have "
                                f"({unknown[:3]}): it was made on another model; run `python -m compress "
                                "sensitivity quantization` again")
        return names

    start = prepared.first_last() if config.keep_fp32 == "first-last" else []
    result = budget.within(config.max_drop or 0.0, start, ranked, tools, tools.score(prepared.fp32))
    return budget.record(result, source if len(result.steps) > 1 else "not needed: full int8 was within")


def _scan_order(model: nn.Module, config: QuantizationConfig, ctx: Context) -> list[str]:
    from compress.sensitivity import int8_layers
    from compress.sensitivity.scans import ScanSettings

    settings = ScanSettings(calibration_size=config.calibration_size, threads=ctx.threads, temp_root=ctx.run_dir)
    return int8_layers.scan(model, ctx.loaders, settings, baseline="", command="").ranked()


def _openvino(model: nn.Module, config: QuantizationConfig, ctx: Context) -> Artifact:
    """NNCF post-training int8 from the same parity-checked fp32 export and calibration images as ONNX Runtime's."""
    from compress.int8 import nncf_ptq
    from compress.measuring.openvino_compile import missing

    if config.calibration != "minmax":
        raise CompressError(f"--calibration {config.calibration} is an ONNX Runtime setting; NNCF chooses its own "
                            "ranges: drop --calibration with --backend openvino")
    why = missing()
    if why:
        raise CompressError(why)
    batches, check = _sources(config, ctx)
    fp32, ir = ctx.run_dir / "model.fp32.onnx", ctx.run_dir / "model.int8.xml"
    onnx_export.export_onnx(model, fp32, check)
    control = None
    if config.max_drop is not None:  # NNCF's own answer to the same question, on the same validation images
        control = nncf_ptq.AccuracyControl([(x.numpy(), y.numpy()) for x, y in ctx.loaders.val], config.max_drop)
    kept = nncf_ptq.quantize(fp32, batches, ir, config.keep_fp32 == "first-last", control)
    how = f"quantize_with_accuracy_control, max drop {config.max_drop:g} points" if control else "PTQ"
    return Artifact(backend=f"openvino int8 NNCF {how} ({config.calibration_size} images; {len(kept)} layer(s) "
                            "fp32)", file=ir, ir=ir, fp32_onnx=fp32,
                    facts={"fp32_layers": kept, **({"order_from": "NNCF's own ranking"} if control else {})})


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


def _resolve(config: QuantizationConfig, stored: Stored) -> QuantizationConfig:
    """--max-drop on the baseline: the layer order of its stored int8 scan, when there is one (the row records
    which); a --from model, or no scan: the compressor scans the model itself."""
    if config.max_drop is None or config.backend != "onnxruntime" or stored.from_row is not None:
        return config
    from compress.sensitivity import scans

    path = scans.scan_path(stored.sensitivity_dir, stored.baseline_key, "quantization")
    scan = scans.load_quantization(path, stored.baseline_digest)
    if scan is None:
        return config
    return replace(config, layer_order=tuple(scan.ranked()), order_from=f"the stored scan {path.name} "
                   "(ranked by validation top-1 with each layer alone in int8, ties by SQNR)")


@register("quantization", QuantizationConfig, finetune=False, adapt=_fit_to_data, order=30, resolve=_resolve,
          plan=lambda options: [Planned("quantization (int8, ONNX Runtime)", QuantizationConfig(), fixed=3)])
def quantization(model: nn.Module, spec: ModelSpec, config: QuantizationConfig, ctx: Context) -> Artifact:
    """Static post-training int8 with ONNX Runtime (QDQ, S8S8, per-channel), NNCF for OpenVINO, or PyTorch dynamic."""
    if config.backend == "torch":
        return _torch(model, spec, ctx)
    if config.backend == "openvino":
        return _openvino(model, config, ctx)
    return _onnxruntime(model, config, ctx)
