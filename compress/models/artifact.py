"""What is deployed: a PyTorch module, an ONNX file or an OpenVINO IR, and how it runs.

The harness times and scores the artifact alone; params and MACs come from the fp32 structure it was made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Artifact:
    """A compressed model that is not an fp32 nn.Module, described by how it runs.

    Exactly one of `onnx` (run by ONNX Runtime), `ir` (an OpenVINO IR, run by OpenVINO) and
    `module` (run by PyTorch) is set; latency and accuracy come from it. Params and MACs still come from the fp32
    model it was made from: quantization changes the bytes per weight, not their number.
    """

    backend: str  # stated in the row, e.g. "onnxruntime int8 QDQ S8S8 per-channel (minmax)"
    file: Path  # the deployable file; its bytes are the size column
    onnx: Path | None = None
    module: nn.Module | None = None
    gpu_note: str | None = "n/a (CPU int8 backend)"  # None: also time it on the GPU when there is one
    dtype: str = "int8"
    fp32_onnx: Path | None = None  # the fp32 ONNX file it was quantized from, when there is one
    ir: Path | None = None  # an OpenVINO IR (.xml, weights in the .bin beside it)
    facts: dict[str, Any] = field(default_factory=dict)  # what the row records of how it was made (fp32_layers, ...)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.onnx, self.module, self.ir)) != 1:
            raise ValueError("an Artifact runs as exactly one of an ONNX file, an OpenVINO IR or a PyTorch module")

    @classmethod
    def fp32(cls, model: nn.Module, file: Path) -> "Artifact":
        """The ordinary case: an fp32 PyTorch model saved as a checkpoint."""
        return cls(backend="pytorch fp32", file=file, module=model, gpu_note=None, dtype="float32")
