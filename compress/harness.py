"""The one harness: a model in, one measured row out, the same steps for every model.

Counting (params, MACs) is theory, read off the fp32 structure. Timing and scoring are
measurement, and come from what is deployed alone (the `Artifact`): an int8 row is timed and
scored by its int8 session, never by the fp32 model it was made from.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress import dist, export, load, measure, stats
from compress.compressors import Artifact
from compress.measure import ORT_CPU, TORCH_CPU, TORCH_CUDA, Latency, LatencyConfig
from compress.models import ModelSpec
from compress.paired import Paired, interleaved
from compress.results import ResultRow, config_hash, environment, new_row_id, now_iso
from compress.session import log
from compress.train import predict

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


def time_torch(subject: Subject, cfg: LatencyConfig, timings: Timings, pair: PairWith | None) -> None:
    """PyTorch eager on the CPU (interleaved with the reference when there is one), and on the GPU."""
    module = subject.artifact.module
    timings.notes[TORCH_CUDA] = subject.artifact.gpu_note or ""
    if module is None:
        return
    against = f", interleaved with {pair.row_id}" if pair and pair.module is not None else ""
    log(f"timing {subject.label} with PyTorch on CPU (batches {', '.join(map(str, cfg.batches))}{against})")
    if pair is None or pair.module is None:
        timings.latency[TORCH_CPU] = measure.cpu_latencies(module, subject.shape, cfg)
    else:
        cpu = torch.device("cpu")
        with measure.torch_threads(cfg.threads):
            for b in cfg.batches:
                ref = measure.torch_runner(pair.module, subject.shape, b, cpu)
                timings.paired.setdefault(TORCH_CPU, {})[b], timings.latency.setdefault(TORCH_CPU, {})[b] = \
                    interleaved(ref, measure.torch_runner(module, subject.shape, b, cpu), cfg, b, pair.row_id)
        pair.module.cpu()
    if subject.artifact.gpu_note is None:
        gpu, timings.notes[TORCH_CUDA] = measure.gpu_latencies(module, subject.shape, cfg)
        if gpu:
            timings.latency[TORCH_CUDA] = gpu


def onnx_file(subject: Subject, cfg: LatencyConfig, timings: Timings, test_loader: Any | None,
              scratch: Path, keep_onnx: Path | None) -> Path | None:
    """The ONNX file ONNX Runtime times: the artifact's own, or a parity-checked export of the module."""
    art = subject.artifact
    if art.onnx is not None:
        timings.onnx_size = measure.file_size(art.fp32_onnx) if art.fp32_onnx else None
        return art.onnx
    if not cfg.ort:
        timings.notes[ORT_CPU] = "n/a (ONNX Runtime timing turned off)"
        return None
    if art.dtype != "float32":
        timings.notes[ORT_CPU] = f"n/a ({art.backend} runs in PyTorch only)"
        return None
    path = keep_onnx or scratch / "model.onnx"
    log(f"exporting {subject.label} to ONNX and checking it against PyTorch")
    assert art.module is not None
    timings.parity = export.export_onnx(art.module, path, check_inputs(test_loader, subject.image_size))
    timings.onnx_size = measure.file_size(path)
    return path


def time_ort(path: Path | None, subject: Subject, cfg: LatencyConfig, timings: Timings,
             pair: PairWith | None) -> None:
    if path is None:
        return
    if not cfg.ort:
        timings.notes[ORT_CPU] = "n/a (ONNX Runtime timing turned off)"
        return
    if pair is None or pair.onnx is None or not Path(pair.onnx).exists():
        log(f"timing {subject.label} with ONNX Runtime on CPU")
        timings.latency[ORT_CPU] = export.ort_latencies(path, subject.shape, cfg)
        return
    log(f"timing {subject.label} with ONNX Runtime on CPU, interleaved with {pair.row_id}")
    ref_sess, sess = export.session(pair.onnx, cfg.threads), export.session(path, cfg.threads)
    for b in cfg.batches:
        ref, cand = export.ort_runner(ref_sess, subject.shape, b), export.ort_runner(sess, subject.shape, b)
        timings.paired.setdefault(ORT_CPU, {})[b], timings.latency.setdefault(ORT_CPU, {})[b] = \
            interleaved(ref, cand, cfg, b, pair.row_id)


def score(subject: Subject, onnx: Path | None, test_loader: Any, device: torch.device,
          threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over the whole test split, from the deployed artifact itself."""
    module = subject.artifact.module
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
