"""The one harness: a model in, one measured row out, the same steps for every model.

Counting (params, MACs) is theory, read off the fp32 structure. Timing and scoring are
measurement, and come from what is deployed alone (the `Artifact`): an int8 row is timed and
scored by its int8 session, never by the fp32 model it was made from.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from compress import compiled, export, load, measure, openvino_cpu, stats
from compress.errors import CompressError
from compress.log import log
from compress.measure import COMPILE_CPU, OPENVINO_CPU, ORT_CPU, TORCH_CPU, TORCH_CUDA, LatencyConfig, time_calls
from compress.measuring.environment import environment
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.paired import interleaved
from compress.scaleout import dist
from compress.store.rows import Latency, Paired, ResultRow, config_hash, new_row_id, now_iso
from compress.training.evaluation import predict

PARITY_IMAGES = 32  # test images the ONNX export must reproduce before it is timed


@dataclass(frozen=True)
class Subject:
    """What to measure: the fp32 structure (counted) and the deployed artifact (timed and scored)."""

    fp32: nn.Module
    spec: ModelSpec
    artifact: Artifact
    image_size: int
    label: str = "model"  # for progress lines only

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)


@dataclass(frozen=True)
class RowInfo:
    """What the harness cannot see by looking at the model: where it came from."""

    dataset: str
    compressor: str
    config: dict[str, Any]
    seed: int
    command: str
    baseline_row_id: str | None = None
    finetune_epochs: int = 0
    best_epoch: int | None = None
    train_seconds: float = 0.0
    accuracy_before_finetune: float | None = None
    source_row_id: str | None = None
    control_row_id: str | None = None
    caveats: tuple[str, ...] = ()  # what a reader must know to read the row right (e.g. possible leakage)
    distributed: dict[str, Any] | None = None  # how it was trained (dist.World.record); None: nothing trained here


@dataclass(frozen=True)
class Counts:
    params: int
    nonzero: int
    macs: int
    conv_macs: int | None


@dataclass(frozen=True)
class PairWith:
    """The reference a candidate's speed-ups are timed against, interleaved (the baseline, or int8's fp32 source)."""

    row_id: str
    module: nn.Module | None = None  # PyTorch eager fp32 (None: no PyTorch pairing)
    onnx: Path | None = None  # its parity-checked ONNX file (None: no ONNX Runtime pairing)


@dataclass
class Timings:
    latency: dict[str, dict[int, Latency]]
    notes: dict[str, str]
    onnx_size: int | None = None
    parity: float | None = None
    paired: dict[str, dict[int, Paired]] = field(default_factory=dict)


def count(subject: Subject) -> Counts:
    """Theory: parameters and multiply-accumulates of the fp32 structure."""
    model = subject.fp32.cpu().eval()
    params, nonzero = measure.count_params(model)
    return Counts(params, nonzero, measure.count_macs(model, subject.shape),
                  measure.count_conv_macs(model, subject.shape))


def check_inputs(test_loader: Any | None, image_size: int) -> torch.Tensor:
    """Real test images for the ONNX parity check when there are any, a seeded batch otherwise."""
    if test_loader is not None:
        x, _ = next(iter(test_loader))
        return x[:PARITY_IMAGES]
    return torch.randn(8, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


Runner = Callable[[int], Callable[[], object]]  # batch size -> one timed call on a batch allocated beforehand


def time_runtime(runtime: str, cfg: LatencyConfig, timings: Timings, candidate: Runner, reference: Runner | None,
                 reference_row_id: str | None) -> None:
    """One runtime, every batch: alone, or interleaved with the reference for a paired speed-up."""
    for b in cfg.batches:
        if reference is None or reference_row_id is None:
            timings.latency.setdefault(runtime, {})[b] = time_calls(candidate(b), cfg, b)
        else:
            timings.paired.setdefault(runtime, {})[b], timings.latency.setdefault(runtime, {})[b] = \
                interleaved(reference(b), candidate(b), cfg, b, reference_row_id)


def time_torch(subject: Subject, cfg: LatencyConfig, timings: Timings, pair: PairWith | None) -> None:
    """PyTorch eager on the CPU (interleaved with the reference when there is one), and on the GPU."""
    module = subject.artifact.module
    timings.notes[TORCH_CUDA] = subject.artifact.gpu_note or ""
    if module is None:
        return
    if cfg.on(TORCH_CPU):
        ref = pair.module if pair is not None else None
        against = f", interleaved with {pair.row_id}" if pair and ref is not None else ""
        log(f"timing {subject.label} with PyTorch on CPU (batches {', '.join(map(str, cfg.batches))}{against})")
        cpu = torch.device("cpu")
        with measure.torch_threads(cfg.threads):
            time_runtime(TORCH_CPU, cfg, timings, lambda b: measure.torch_runner(module, subject.shape, b, cpu),
                         (lambda b: measure.torch_runner(ref, subject.shape, b, cpu)) if ref is not None else None,
                         pair.row_id if pair else None)
        if ref is not None:
            ref.cpu()
    if subject.artifact.gpu_note is None:
        gpu, timings.notes[TORCH_CUDA] = measure.gpu_latencies(module, subject.shape, cfg)
        if gpu:
            timings.latency[TORCH_CUDA] = gpu


def onnx_file(subject: Subject, cfg: LatencyConfig, timings: Timings, test_loader: Any | None,
              scratch: Path, keep_onnx: Path | None) -> Path | None:
    """The ONNX file ONNX Runtime times: the artifact's own, or a parity-checked export of the module."""
    art = subject.artifact
    if art.fp32_onnx is not None:  # int8 made from an fp32 ONNX file: the report compares their sizes
        timings.onnx_size = measure.file_size(art.fp32_onnx)
    if art.onnx is not None:
        return art.onnx
    if not cfg.onnx:
        return None
    if art.module is None or art.dtype != "float32":
        timings.notes[ORT_CPU] = f"n/a (the model is {art.backend}; only fp32 models are exported to ONNX)"
        return None
    path = keep_onnx or scratch / "model.onnx"
    log(f"exporting {subject.label} to ONNX and checking it against PyTorch")
    assert art.module is not None
    timings.parity = export.export_onnx(art.module, path, check_inputs(test_loader, subject.image_size))
    timings.onnx_size = measure.file_size(path)
    return path


def reference_onnx(pair: PairWith | None) -> Path | None:
    """The reference's ONNX file, when there is one to interleave with (ONNX Runtime and OpenVINO read it)."""
    return pair.onnx if pair is not None and pair.onnx is not None and Path(pair.onnx).exists() else None


def time_ort(path: Path | None, subject: Subject, cfg: LatencyConfig, timings: Timings,
             pair: PairWith | None) -> None:
    if path is None or not cfg.ort:
        return
    ref_onnx = reference_onnx(pair)
    log(f"timing {subject.label} with ONNX Runtime on CPU" + (f", interleaved with {pair.row_id}" if ref_onnx and pair
                                                               else ""))
    sess = export.session(path, cfg.threads)
    ref_sess = export.session(ref_onnx, cfg.threads) if ref_onnx else None
    time_runtime(ORT_CPU, cfg, timings, lambda b: export.ort_runner(sess, subject.shape, b),
                 (lambda b: export.ort_runner(ref_sess, subject.shape, b)) if ref_sess is not None else None,
                 pair.row_id if pair else None)


def openvino_file(subject: Subject, onnx: Path | None) -> tuple[Path | None, str | None]:
    """What OpenVINO times: an NNCF int8 IR, or the fp32 ONNX export; else None and why not."""
    art = subject.artifact
    if art.ir is not None:
        return art.ir, None
    if onnx is not None and art.dtype == "float32":
        return onnx, None
    return None, f"the model is {art.backend}; OpenVINO times fp32 exports and --backend openvino int8"


def time_openvino(onnx: Path | None, subject: Subject, cfg: LatencyConfig, timings: Timings,
                  pair: PairWith | None, test_loader: Any | None) -> None:
    """OpenVINO on the CPU, fp32 pinned (not its bf16 default), parity-checked; n/a with the reason if it cannot."""
    if not cfg.on(OPENVINO_CPU):
        return
    path, why = openvino_file(subject, onnx)
    why = openvino_cpu.missing() or why
    if why or path is None:
        timings.notes[OPENVINO_CPU] = f"n/a ({why})"
        return
    ref = reference_onnx(pair)
    log(f"timing {subject.label} with OpenVINO on CPU" + (f", interleaved with {pair.row_id}" if ref and pair else ""))
    try:
        if subject.artifact.module is not None:  # fp32: the file must reproduce PyTorch before it is timed
            openvino_cpu.parity(subject.artifact.module, path, check_inputs(test_loader, subject.image_size),
                                cfg.threads)
        time_runtime(OPENVINO_CPU, cfg, timings,
                     lambda b: openvino_cpu.runner(openvino_cpu.compile_file(path, cfg.threads, b), subject.shape, b),
                     (lambda b: openvino_cpu.runner(openvino_cpu.compile_file(ref, cfg.threads, b), subject.shape, b))
                     if ref is not None else None, pair.row_id if pair else None)
        timings.notes[OPENVINO_CPU] = f"OpenVINO {openvino_cpu.version()} {openvino_cpu.settings(cfg.threads)}"
    except CompressError as exc:
        timings.latency.pop(OPENVINO_CPU, None), timings.paired.pop(OPENVINO_CPU, None)
        timings.notes[OPENVINO_CPU] = f"n/a ({exc})"


def time_compiled(subject: Subject, cfg: LatencyConfig, timings: Timings, pair: PairWith | None,
                  test_loader: Any | None) -> None:
    """torch.compile (Inductor) on the CPU, parity-checked against eager; compile time in the notes, not the latency."""
    if not cfg.on(COMPILE_CPU):
        return
    module = subject.artifact.module
    if module is None:
        timings.notes[COMPILE_CPU] = f"n/a (the model is {subject.artifact.backend}, not a PyTorch module)"
        return
    reference = pair.module if pair is not None else None
    log(f"compiling {subject.label} with torch.compile (Inductor) and timing it on CPU"
        + (f", interleaved with {pair.row_id} (compiled too)" if pair and reference is not None else ""))
    try:
        with measure.torch_threads(cfg.threads):
            cand = compiled.Compiled(module, subject.shape)
            cand.check(check_inputs(test_loader, subject.image_size))
            ref = compiled.Compiled(reference, subject.shape) if reference is not None else None
            time_runtime(COMPILE_CPU, cfg, timings, cand.runner, ref.runner if ref else None,
                         pair.row_id if pair else None)
        timings.notes[COMPILE_CPU] = cand.note()
    except CompressError as exc:
        timings.latency.pop(COMPILE_CPU, None), timings.paired.pop(COMPILE_CPU, None)
        timings.notes[COMPILE_CPU] = f"n/a ({exc})"
    finally:
        torch._dynamo.reset()  # compiled graphs hold the model's weights; drop them with it


def score(subject: Subject, onnx: Path | None, test_loader: Any, device: torch.device,
          threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over the whole test split, from the deployed artifact itself."""
    module = subject.artifact.module
    if subject.artifact.ir is not None:
        return openvino_cpu.predict(subject.artifact.ir, test_loader, threads)
    if module is None:
        assert onnx is not None
        return export.predict(onnx, test_loader, threads)
    run_on = device if subject.artifact.gpu_note is None else torch.device("cpu")
    try:
        return predict(module.to(run_on), test_loader, run_on)
    finally:
        module.cpu()


def measure_row(subject: Subject, info: RowInfo, cfg: LatencyConfig, test_loader: Any | None,
                device: torch.device, row_id: str | None = None, keep_onnx: Path | None = None,
                pair: PairWith | None = None) -> tuple[ResultRow, np.ndarray | None]:
    """Every model goes through exactly this: count, time (each runtime; interleaved with `pair` for the
    speed-ups), watch the machine's load while timing, score, record the environment."""
    counts = count(subject)
    timings = Timings({}, {})
    if cfg.require_quiet:
        load.wait_until_quiet(cfg.quiet_timeout_s)
    before = load.read_counters()
    time_torch(subject, cfg, timings, pair)
    preds = true = None
    with tempfile.TemporaryDirectory(prefix="compress-onnx-") as tmp:
        onnx = onnx_file(subject, cfg, timings, test_loader, Path(tmp), keep_onnx)
        time_ort(onnx, subject, cfg, timings, pair)
        time_openvino(onnx, subject, cfg, timings, pair, test_loader)
        time_compiled(subject, cfg, timings, pair, test_loader)
        during = load.between(before, load.read_counters())
        if during is not None and during.busy:
            log(f"warning: timed while the machine was busy: {during.note()}; the figures may be slow")
        if test_loader is not None:
            preds, true = score(subject, onnx, test_loader, device, cfg.threads)
    return _row(subject, info, counts, timings, preds, true, row_id, cfg, during), preds


def _row(subject: Subject, info: RowInfo, counts: Counts, timings: Timings, preds: np.ndarray | None,
         true: np.ndarray | None, row_id: str | None, cfg: LatencyConfig, during: load.Load | None) -> ResultRow:
    art = subject.artifact
    correct = None if preds is None else preds == true
    return ResultRow(
        row_id=row_id or new_row_id(info.compressor, info.config), created=now_iso(), dataset=info.dataset,
        compressor=info.compressor, config=info.config, config_hash=config_hash(info.config),
        baseline_row_id=info.baseline_row_id, model_path=str(art.file), num_classes=subject.spec.num_classes,
        image_size=subject.image_size, params=counts.params, nonzero_params=counts.nonzero, macs=counts.macs,
        size_bytes=measure.file_size(art.file), latency=timings.latency, latency_notes=timings.notes,
        accuracy=None if correct is None else float(correct.mean()),
        accuracy_before_finetune=info.accuracy_before_finetune,
        test_images=0 if correct is None else len(correct), finetune_epochs=info.finetune_epochs,
        best_epoch=info.best_epoch, train_seconds=info.train_seconds, seed=info.seed,
        env={**environment(cfg.threads or measure.default_threads(), art.dtype), **measure.pinning(cfg.threads)},
        command=info.command, paired=timings.paired,
        load=None if during is None else {**asdict(during), "busy": during.busy},
        distributed=info.distributed or dist.current().record(None),
        onnx_size_bytes=timings.onnx_size, onnx_parity=timings.parity, backend=art.backend,
        source_row_id=info.source_row_id, control_row_id=info.control_row_id, conv_macs=counts.conv_macs,
        correct=None if correct is None else stats.encode(correct), caveats=list(info.caveats))
