"""The harness's value objects: what is measured, where it came from, what it is paired with, what was found.

`Measurement` is what every runtime's timing function receives: one object instead of the six
values the old `time_*` functions each took, and the one place the ONNX export that ONNX
Runtime and OpenVINO both read is made (once).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from compress.log import log
from compress.measuring import counting, onnx_export
from compress.measuring.paired import interleaved
from compress.measuring.timing import LatencyConfig, time_calls
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.store.rows import Latency, Memory, Paired, ResultRow

PARITY_IMAGES = 32  # test images an export must reproduce before it is timed

Runner = Callable[[int], Callable[[], object]]  # batch size -> one timed call on a batch allocated beforehand


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
    facts: dict[str, Any] = field(default_factory=dict)  # what the compressor recorded (Artifact.facts)

    @classmethod
    def remeasured(cls, row: ResultRow, baseline_row_id: str) -> "RowInfo":
        """A stored row's provenance, for measuring its model again beside another baseline (--from): what it
        was and how it was trained carry over; its control, caveats and training world stay with the old row."""
        kept = {f.name for f in fields(cls)} - {"baseline_row_id", "control_row_id", "caveats", "distributed", "facts"}
        return cls(**{name: getattr(row, name) for name in kept}, baseline_row_id=baseline_row_id)


@dataclass(frozen=True)
class PairWith:
    """The reference a candidate's speed-ups are timed against, interleaved (the baseline, or int8's fp32 source)."""

    row_id: str
    module: nn.Module | None = None  # PyTorch eager fp32 (None: no PyTorch pairing)
    onnx: Path | None = None  # its parity-checked ONNX file (None: no ONNX Runtime pairing)

    def existing_onnx(self) -> Path | None:
        """Its ONNX file when there is one to interleave with (ONNX Runtime and OpenVINO read it)."""
        return self.onnx if self.onnx is not None and Path(self.onnx).exists() else None


@dataclass
class Timings:
    latency: dict[str, dict[int, Latency]]
    notes: dict[str, str]
    onnx_size: int | None = None
    parity: float | None = None
    paired: dict[str, dict[int, Paired]] = field(default_factory=dict)
    loads: dict[str, Any] = field(default_factory=dict)  # runtime -> cpuload.Load while that runtime was timed
    memory: dict[str, dict[int, Memory]] = field(default_factory=dict)  # runtime -> batch -> peak (measuring.memory)
    memory_notes: dict[str, str] = field(default_factory=dict)

    def drop(self, runtime: str, why: str) -> None:
        """No figures for `runtime`, and why (a runtime that failed part-way keeps nothing it timed)."""
        self.latency.pop(runtime, None)
        self.paired.pop(runtime, None)
        self.notes[runtime] = f"n/a ({why})"


@dataclass
class Measurement:
    """One model being measured: what each runtime's timing and scoring function reads and fills in."""

    subject: Subject
    cfg: LatencyConfig
    test_loader: Any | None = None  # the test split: parity images and the accuracy pass (None: no accuracy)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # the accuracy pass's device
    pair: PairWith | None = None
    keep_onnx: Path | None = None  # where to keep the ONNX export (--export-onnx); else it goes in scratch
    temp_root: Path | None = None  # where temporary exports go (the workdir's tmp/; None: the system's)
    timings: Timings = field(default_factory=lambda: Timings({}, {}))
    scratch: Path = Path(".")  # a folder for this measurement's temporary files (the harness sets it)
    no_onnx: str | None = None  # why there is no ONNX file, when there is none to time
    _onnx: tuple[Path | None] | None = None  # the ONNX file, once looked for

    @property
    def module(self) -> nn.Module | None:
        return self.subject.artifact.module

    def check_inputs(self) -> torch.Tensor:
        """Real test images for parity checks when there are any, a seeded batch otherwise."""
        if self.test_loader is not None:
            x, _ = next(iter(self.test_loader))
            return x[:PARITY_IMAGES]
        size = self.subject.image_size
        return torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))

    def onnx(self) -> Path | None:
        """The ONNX file the ONNX-reading runtimes time: the artifact's own, or a parity-checked export, made once."""
        if self._onnx is None:
            self._onnx = (self._find_onnx(),)
        return self._onnx[0]

    def _find_onnx(self) -> Path | None:
        art = self.subject.artifact
        if art.fp32_onnx is not None:  # int8 made from an fp32 ONNX file: the report compares their sizes
            self.timings.onnx_size = counting.file_size(art.fp32_onnx)
        if art.onnx is not None:
            return art.onnx
        if not self.cfg.onnx:
            return None
        if art.module is None or art.dtype != "float32":
            self.no_onnx = f"the model is {art.backend}; only fp32 models are exported to ONNX"
            return None
        path = self.keep_onnx or self.scratch / "model.onnx"
        log(f"exporting {self.subject.label} to ONNX and checking it against PyTorch")
        self.timings.parity = onnx_export.export_onnx(art.module, path, self.check_inputs())
        self.timings.onnx_size = counting.file_size(path)
        return path

    def reference_onnx(self) -> Path | None:
        return self.pair.existing_onnx() if self.pair is not None else None

    def against(self, reference: object | None, extra: str = "") -> str:
        """", interleaved with <row>" for progress lines, when there is a reference to pair with."""
        return f", interleaved with {self.pair.row_id}{extra}" if self.pair and reference is not None else ""

    def time(self, runtime: str, candidate: Runner, reference: Runner | None) -> None:
        """Every batch on one runtime: alone, or interleaved with the reference for a paired speed-up."""
        ref_id = self.pair.row_id if self.pair is not None else None
        for b in self.cfg.batches:
            if reference is None or ref_id is None:
                self.timings.latency.setdefault(runtime, {})[b] = time_calls(candidate(b), self.cfg, b)
            else:
                self.timings.paired.setdefault(runtime, {})[b], self.timings.latency.setdefault(runtime, {})[b] = \
                    interleaved(reference(b), candidate(b), self.cfg, b, ref_id)
